#!/usr/bin/env bash
# The scheduled "newest versions" check (not CI's default): the same install and tests as scripts/test.sh, but
# with the newest releases that pyproject.toml allows instead of constraints.txt.  When it passes, refresh the
# constraints with:  python3 -m pip freeze --exclude-editable | grep -v '^torch==' > constraints.txt
set -euo pipefail
cd "$(dirname "$0")/.."
CLEM_BRIDGE_CONSTRAINTS="" exec ./scripts/test.sh "$@"

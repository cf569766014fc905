#!/usr/bin/env bash
# Installs everything the tests need (Python packages with the optional formats, at the tested versions of
# constraints.txt; Java + ImageJ 1 + Jython + Groovy + Chromium) and runs them.  scripts/test-latest.sh does the same with the newest releases instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v java >/dev/null || [ ! -f /usr/share/java/ij.jar ] || [ ! -f /usr/share/java/jython.jar ] \
   || ! command -v groovy >/dev/null || ! command -v chromium >/dev/null; then
  if command -v apt-get >/dev/null; then     # chromium: the batch report is opened in a headless browser
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq imagej jython groovy chromium >/dev/null
  else
    echo "warning: apt-get not available; JVM tests will be skipped" >&2
  fi
fi
python3 -m pip install -q torch==2.13.0             # the local CPU build (an unpinned torch pulls CUDA wheels)
python3 -m pip install -q ${CLEM_BRIDGE_CONSTRAINTS--c constraints.txt} -e ".[test,bench,formats]"
# one pytest worker per core (xdist), whole test modules per worker so module fixtures (servers, models) run once
exec python3 -m pytest -n auto --dist loadfile "$@"

"""Schemathesis against the live server's /openapi.json: generated requests never produce a 5xx."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from server_utils import running_server


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("schema") / "data", "--max-pixels", "100000",
                        "--max-upload-mb", "1") as url:
        yield schemathesis.openapi.from_url(url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    case.call_and_validate(checks=[not_a_server_error], timeout=30)

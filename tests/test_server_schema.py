"""Schemathesis against the app's /openapi.json (in process): generated requests never produce a 5xx."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from server_utils import BASE_URL, app_client


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    with app_client(tmp_path_factory.mktemp("schema") / "data", max_pixels=100_000, max_upload_mb=1) as c:
        async def app(scope, receive, send):       # schemathesis' own clients: the fixture runs the lifespan
            if scope["type"] != "lifespan":
                return await c.app(scope, receive, send)
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        yield schemathesis.openapi.from_asgi("/openapi.json", app, headers={"host": "127.0.0.1"})


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    response = case.call_and_validate(checks=[not_a_server_error], base_url=BASE_URL)
    assert response.status_code != 403, "the Host guard answered instead of the route"

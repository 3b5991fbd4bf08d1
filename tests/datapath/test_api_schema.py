"""Schemathesis against the read API's own OpenAPI document: generated requests (valid and
not) to every operation but the endless stream and the evidence request (which waits on an agent
through the broker, and answers 504 when none does: tests/datapath/test_api.py), with
an admin token, never get a 5xx, on SQLite and on PostgreSQL (which refuses more than SQLite:
NUL in text, out-of-range integers)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from pantau.central.api.app import create_app
from pantau.central.scope import Scope
from schemathesis.checks import not_a_server_error

from tests.datapath.api_world import build

RUNNER = "schemathesis-runner-7f3a"  # a name no generated DELETE is likely to revoke
EXAMPLES = 30  # per operation: the whole run stays well under a minute


def test_no_server_errors_on_generated_requests(storage_url):
    world = build(storage_url())
    headers = {"Authorization": f"Bearer {world.storage.add_token(RUNNER, 'admin', Scope())}"}
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(world.settings))
    tried = []
    try:
        operations = schema.exclude(path="/api/v1/stream").exclude(
            method="POST", path_regex="/evidence$"
        )
        for result in operations.get_all_operations():
            operation = result.ok()
            tried.append(operation.label)

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def no_5xx(case) -> None:
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            no_5xx()
    finally:
        world.storage.close()
    assert "GET /api/v1/counts" in tried and "POST /api/v1/tokens" in tried
    assert not any("stream" in label for label in tried)
    assert "GET /api/v1/alerts/{alert}/evidence" in tried
    assert "POST /api/v1/alerts/{alert}/evidence" not in tried

"""The REST API against its own OpenAPI document, property-based (schemathesis): for any
input the document allows, and inputs it does not, no 500 and every answer matches it."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.web.conftest import Web

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


EXAMPLES = 12  # per operation and mode: about a minute for the whole API


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_operation_matches_the_document(bare_web: Web, mode: GenerationMode) -> None:
    # driven through Hypothesis directly: schemathesis' pytest plugin predates pytest 9
    schema = schemathesis.openapi.from_url(f"{bare_web.url}/api/openapi.json")
    headers = bare_web.headers("operator")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case: Any) -> None:
            case.call_and_validate(base_url=bare_web.url, headers=headers, checks=CHECKS)

        check()


def test_the_document_lists_what_the_pages_use(bare_web: Web) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{bare_web.url}/api/openapi.json", timeout=10) as response:
        document = json.loads(response.read())
    for path in ("/api/status", "/api/tasks", "/api/stop_task/{task_id}", "/api/resources", "/api/nodes",
                 "/api/nodes/{node_id}", "/api/tasks/{task_id}", "/api/events", "/api/guide", "/api/grant",
                 "/api/deny", "/api/nodes/{node_id}/drain"):
        assert path in document["paths"], path

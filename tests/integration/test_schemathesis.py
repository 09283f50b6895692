"""schemathesis against the served OpenAPI document of a real stack (bounded examples).

Every operation of the document gets a few generated requests (hypothesis, no
shrinking, bounded count); each answer must be no 5xx other than a documented
504, carry a status code the document lists for that route, the declared content
type, and a body matching the declared schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from prometheus_client import CollectorRegistry
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from care_serve.server import BackgroundStack
from care_serve.settings import Settings
from tests.helpers.paths import BUNDLED_STORE

MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def served() -> Iterator[BackgroundStack]:
    settings_ = Settings(
        model_store=BUNDLED_STORE,
        http_port=0,
        grpc_port=0,
        enable_grpc=False,
        intra_op_threads=1,
        preprocess_threads=2,
        warmup_runs=0,
        admin_token="schemathesis-token",  # so generated calls cannot unload the models
        request_timeout_s=10,
    )
    with BackgroundStack(settings_, CollectorRegistry()) as stack:
        yield stack


def no_undocumented_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, except a 504 on a route that documents it."""
    status = response.status_code
    documented = case.operation.definition.raw.get("responses", {})
    if status >= 500 and not (status == 504 and "504" in documented):
        raise AssertionError(f"{case.operation.label} answered {status}: {response.text[:300]}")
    return None


CHECKS = [
    no_undocumented_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_api_conforms_to_its_openapi_document(served: BackgroundStack) -> None:
    # Not schema.parametrize(): its lazy fixture loader uses pytest internals that pytest 9
    # removed, so each operation's strategy is driven by hypothesis here.
    api = schemathesis.openapi.from_url(f"{served.http_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /classify", "POST /detect", "POST /segment", "GET /models/{name}"} <= labels
    tried: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            case.call_and_validate(checks=CHECKS, timeout=30)
            tried[case.operation.label] = tried.get(case.operation.label, 0) + 1

        run()
    assert set(tried) == labels, tried

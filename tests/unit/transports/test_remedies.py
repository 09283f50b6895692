"""Each transport says what to do about an error in its own words (routes, methods)."""

from __future__ import annotations

import pytest

from care_serve.errors import InvalidInput, NotFound, Remedy
from care_serve.transports.remedies import (
    client_message,
    grpc_remedy,
    rest_remedy,
    v2_grpc_remedy,
    v2_rest_remedy,
)

NOT_LOADED = NotFound("model 'm' is in the store but not loaded", remedy=Remedy("load", "m"))
WRONG_TASK = InvalidInput(
    "model 'c' is a classification model", remedy=Remedy("use_task", task="embedding")
)


@pytest.mark.parametrize(
    ("say", "not_loaded", "wrong_task"),
    [
        (rest_remedy, "(load it with POST /models/m/load)", "(use /embed)"),
        (grpc_remedy, "(load it with LoadModel)", "(use Embed)"),
        (v2_rest_remedy, "(load it with POST /v2/repository/models/m/load)", "embedding model"),
        (v2_grpc_remedy, "(load it with RepositoryModelLoad)", "embedding model"),
    ],
)
def test_each_transport_names_its_own_route_or_method(
    say: object, not_loaded: str, wrong_task: str
) -> None:
    assert client_message(NOT_LOADED, say).endswith(not_loaded)  # type: ignore[arg-type]
    assert wrong_task in client_message(WRONG_TASK, say)  # type: ignore[arg-type]


def test_another_version_and_no_model_named() -> None:
    other = NotFound("version 3 of model 'm' is not loaded", remedy=Remedy("load", "m", True))
    assert client_message(other, rest_remedy).endswith("POST /models/m/load?version=N)")
    assert client_message(NotFound("x", remedy=Remedy("load")), rest_remedy).endswith(
        "POST /models/{name}/load)"
    )
    assert client_message(NotFound("plain"), rest_remedy) == "plain"

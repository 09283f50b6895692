"""The parameters a v2 request may carry: every one the protocol and the stock clients send,
the task's own, and nothing else.

An unknown parameter (a typo such as ``score_treshold``, a REST query name such as
``top_k``, an extension this server does not have) is an ``InvalidInput`` that names it
and lists the accepted ones, as REST does for query parameters; it is never ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from care_serve.errors import InvalidInput

__all__ = [
    "INPUT_PARAMETERS",
    "LOAD_PARAMETERS",
    "OUTPUT_PARAMETERS",
    "REQUEST_PARAMETERS",
    "UNLOAD_PARAMETERS",
    "check_parameters",
]

# Request parameters of the protocol and of tritonclient (http and grpc): the binary tensor
# data extension's ``binary_data_output``, and the scheduling ones tritonclient sends when
# asked (``sequence_*``, ``priority``, ``timeout``), accepted and ignored (the models are
# stateless and have one queue; the deadline is X-Request-Timeout-Ms or the gRPC deadline).
# ``content_type`` is what KServe's and MLServer's codecs put on requests and tensors;
# accepted and ignored: the datatype and the input's name say what the data is.
REQUEST_PARAMETERS = (
    "binary_data_output",
    "priority",
    "timeout",
    "sequence_id",
    "sequence_start",
    "sequence_end",
    "content_type",
)
INPUT_PARAMETERS = ("binary_data_size", "content_type")  # binary tensor data extension (REST)
OUTPUT_PARAMETERS = ("binary_data", "classification", "content_type")
LOAD_PARAMETERS = ("version",)
UNLOAD_PARAMETERS = ("unload_dependents",)  # tritonclient always sends it; nothing depends


def check_parameters(
    what: str, given: Mapping[str, Any], accepted: Iterable[str], noun: str = "parameter"
) -> None:
    """``InvalidInput`` naming the parameters of ``given`` not ``accepted``, and those."""
    allowed = list(dict.fromkeys(accepted))
    unknown = sorted(set(given) - set(allowed))
    if not unknown:
        return
    names = ", ".join(map(repr, unknown))
    hint = (
        "; this server has no shared memory extension: send the tensor's data in the request"
        if any(name.startswith("shared_memory_") for name in unknown)
        else ""
    )
    raise InvalidInput(
        f"{what} does not take the {noun}{'s' if len(unknown) > 1 else ''} {names} "
        f"(accepted: {', '.join(allowed) or 'none'}){hint}"
    )

"""Tensors of the Open Inference Protocol: datatypes, JSON data and raw (binary) bytes.

One ``Tensor`` type for both transports. Raw bytes are little-endian, row-major,
without padding; a ``BYTES`` element is a 4-byte little-endian length followed by
its bytes (the binary tensor data extension over REST, ``raw_input_contents`` /
``raw_output_contents`` over gRPC). Every malformed tensor raises ``InvalidInput``
naming the tensor and what was expected.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from care_serve.errors import InvalidInput

__all__ = [
    "DATATYPES",
    "Tensor",
    "check_datatype",
    "check_shape",
    "from_json_data",
    "from_raw",
    "serialize_bytes",
    "to_json_data",
    "to_raw",
]

# Protocol datatype -> numpy dtype (little-endian). BYTES is an object array of ``bytes``.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"
KNOWN = (*DATATYPES, BYTES)
_LENGTH = struct.Struct("<I")


@dataclass
class Tensor:
    """A named tensor: ``data`` has ``shape``; for ``BYTES`` it holds ``bytes`` objects."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


def check_datatype(name: str, datatype: object) -> str:
    """``datatype`` if the protocol knows it, else ``InvalidInput`` listing the known ones."""
    if not isinstance(datatype, str) or datatype not in KNOWN:
        raise InvalidInput(
            f"input {name!r}: unknown datatype {datatype!r} (the protocol's datatypes: "
            f"{', '.join(KNOWN)})"
        )
    return datatype


def check_shape(name: str, shape: object) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints, else ``InvalidInput``."""
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(
            f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}"
        )
    return tuple(int(d) for d in shape)


def _count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def deserialize_bytes(name: str, raw: bytes | memoryview, count: int) -> list[bytes]:
    """``count`` length-prefixed elements that fill ``raw`` exactly."""
    view = memoryview(raw)
    out: list[bytes] = []
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise InvalidInput(
                f"input {name!r}: BYTES data ends inside an element's 4-byte length prefix"
            )
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + length > len(view):
            layout = (
                # The whole data is one file without its length: say how it is laid out.
                f" (in binary data a BYTES element is its length as 4 little-endian bytes, "
                f"then its bytes: for one file of {len(view)} bytes send the 4 bytes of its "
                f"length first, binary_data_size {len(view) + 4})"
                if not out and count == 1
                else ""
            )
            raise InvalidInput(
                f"input {name!r}: a BYTES element claims {length} bytes but only "
                f"{len(view) - pos} remain{layout}"
            )
        out.append(bytes(view[pos : pos + length]))
        pos += length
        if len(out) > count:
            break
    if len(out) != count:
        raise InvalidInput(
            f"input {name!r}: the shape holds {count} BYTES element(s) but the data has "
            f"{'more' if len(out) > count else len(out)}"
        )
    return out


def serialize_bytes(elements: Sequence[bytes]) -> bytes:
    """BYTES elements as length-prefixed raw bytes."""
    return b"".join(_LENGTH.pack(len(e)) + e for e in elements)


def _bytes_array(elements: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array.reshape(shape)


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview) -> Tensor:
    """A tensor from its raw bytes; the byte count must match the shape exactly."""
    count = _count(shape)
    if datatype == BYTES:
        return Tensor(
            name, datatype, shape, _bytes_array(deserialize_bytes(name, raw, count), shape)
        )
    dtype = DATATYPES[datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input {name!r}: {datatype} {list(shape)} needs {expected} bytes, got {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return Tensor(name, datatype, shape, array)


def _numbers(name: str, datatype: str, data: object) -> np.ndarray:
    dtype = DATATYPES[datatype]
    what = f"input {name!r}: data must be {datatype} numbers"
    try:
        given = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidInput(f"{what} in a (nested) list of one shape") from None
    kind = given.dtype.kind
    if given.size == 0:
        return given.astype(dtype).reshape(-1)
    if datatype == "BOOL":
        if kind != "b":
            raise InvalidInput(f"{what} (true/false), got {given.dtype} values")
        return given.reshape(-1)
    allowed = "biu" if dtype.kind in "iu" else "biuf"
    if kind not in allowed:
        raise InvalidInput(f"{what}, got {given.dtype} values")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if given.min() < info.min or given.max() > info.max:
            raise InvalidInput(f"{what} in [{info.min}, {info.max}]")
    return given.astype(dtype).reshape(-1)


def from_json_data(name: str, datatype: str, shape: tuple[int, ...], data: object) -> Tensor:
    """A tensor from the JSON ``data`` field (flat or nested, row-major)."""
    count = _count(shape)
    if datatype == BYTES:
        flat = np.asarray(data, dtype=object).reshape(-1) if isinstance(data, list) else None
        if flat is None or not all(isinstance(v, str) for v in flat):
            raise InvalidInput(
                f"input {name!r}: BYTES data in JSON must be a list of strings (send binary "
                "data such as images with the binary tensor data extension)"
            )
        elements = [v.encode("utf-8") for v in flat]
        if len(elements) != count:
            raise InvalidInput(
                f"input {name!r}: shape {list(shape)} holds {count} element(s), data has "
                f"{len(elements)}"
            )
        return Tensor(name, datatype, shape, _bytes_array(elements, shape))
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: data must be a list, got {type(data).__name__}")
    flat_numbers = _numbers(name, datatype, data)
    if flat_numbers.size != count:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} holds {count} element(s), data has "
            f"{flat_numbers.size}"
        )
    return Tensor(name, datatype, shape, flat_numbers.reshape(shape))


def to_raw(tensor: Tensor) -> bytes:
    """The tensor's raw bytes."""
    if tensor.datatype == BYTES:
        return serialize_bytes(list(tensor.data.reshape(-1)))
    return np.ascontiguousarray(tensor.data, dtype=DATATYPES[tensor.datatype]).tobytes()


def to_json_data(tensor: Tensor) -> list[Any]:
    """The tensor's elements as a flat JSON list (BYTES as UTF-8 strings)."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype == BYTES:
        return [bytes(v).decode("utf-8", errors="replace") for v in flat]
    values: list[Any] = flat.tolist()
    return values

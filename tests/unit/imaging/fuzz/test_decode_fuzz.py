"""A bounded fuzz run of the decode path in the suite, and every file fuzzing ever found.

Hypothesis mutates real files of every accepted format (byte flips, overwrites,
deletions, insertions, duplicated chunks, truncation) and checks the property of
``tests.unit.imaging.fuzz.target``. ``CARE_FUZZ_EXAMPLES`` sets the number of examples (the
suite's default keeps it to a few seconds); ``python -m tests.unit.imaging.fuzz.fuzz_decode``
runs a longer, coverage-guided campaign with atheris and writes what it finds to
``tests/fixtures/malformed/``, which the regression test below replays.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from care_serve.errors import InvalidInput
from care_serve.imaging.decode import decode_image
from tests.unit.imaging.fuzz.target import REGRESSIONS, check_decode, seed_files

SEEDS = seed_files()
EXAMPLES = int(os.environ.get("CARE_FUZZ_EXAMPLES", "300"))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "duplicate", "truncate"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(
                st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))])
            )
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "duplicate":
            chunk = data[at : at + draw(st.integers(1, 64))]
            data[at:at] = chunk
        else:
            del data[at:]
    return bytes(data)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=mutated(), reduce=st.booleans())
def test_mutated_images_decode_or_give_a_client_error(data: bytes, reduce: bool) -> None:
    check_decode(data, reduce_to=(8, 8) if reduce else None)


def test_every_seed_decodes() -> None:
    """The seeds themselves are valid (else the fuzzer would only test the header check)."""
    for data in SEEDS[:13]:
        check_decode(data)


@pytest.mark.parametrize("path", sorted(REGRESSIONS.iterdir()), ids=lambda p: p.name)
def test_files_fuzzing_found_are_client_errors(path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_image(path.read_bytes(), max_bytes=10**7, max_pixels=10**8)
    assert info.value.status_code in (400, 413)

"""A longer, coverage-guided fuzz campaign of the decode path (atheris), outside the suite.

    .venv/bin/pip install atheris
    .venv/bin/python -m tests.unit.imaging.fuzz.fuzz_decode -max_total_time=600

It starts from the seeds of ``tests.unit.imaging.fuzz.target`` (every accepted format, plus the
regression files), instruments Pillow's Python plugins (where crafted headers
raise odd exceptions) and checks the same property as the suite. A failing input
is written to ``tests/fixtures/malformed/`` (libFuzzer's ``crash-*`` file is
copied there under the exception's name) so the suite replays it for ever.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path


def main() -> None:
    import atheris  # a dev tool, not a dependency of the suite

    # Everything that imports Pillow is imported here, so its Python plugins are instrumented.
    with atheris.instrument_imports(include=["PIL", "care_serve.imaging.decode"]):
        from tests.unit.imaging.fuzz.target import REGRESSIONS, check_decode, seed_files

    def one_input(data: bytes) -> None:
        try:
            check_decode(data)
        except Exception as exc:
            name = f"fuzz_{type(exc).__name__}_{hashlib.sha1(data).hexdigest()[:10]}.bin"
            (REGRESSIONS / name).write_bytes(data)
            print(f"found {type(exc).__name__}: {exc}; written to {REGRESSIONS / name}")
            raise

    corpus = Path(tempfile.mkdtemp(prefix="care-fuzz-corpus-"))
    for i, seed in enumerate(seed_files()):
        (corpus / f"seed{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], *sys.argv[1:], str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

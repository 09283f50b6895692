"""Where things are: the repository, its bundled store and the test fixtures."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_STORE = ROOT / "model_store"
FIXTURES = ROOT / "tests" / "fixtures"
MALFORMED = FIXTURES / "malformed"
OFFICIAL_S0_CHECKPOINT = FIXTURES / "care_s0_official_fp16.pth.tar"

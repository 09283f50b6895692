"""Shared test helpers: fixture paths and the relative-error measure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL_S0_CHECKPOINT = FIXTURES / "care_s0_official_fp16.pth.tar"


def rel_error(out: object, ref: object) -> float:
    """``||out - ref|| / ||ref||`` for numpy arrays or torch tensors."""
    a = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, np.float64)
    b = np.asarray(ref.detach().cpu().numpy() if hasattr(ref, "detach") else ref, np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != reference {b.shape}"
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="session")
def official_s0_path() -> Path:
    return OFFICIAL_S0_CHECKPOINT


@pytest.fixture(scope="session")
def golden_input() -> np.ndarray:
    return np.load(FIXTURES / "care_s0_official_input.npy")

"""The relative-error measure every numerical check uses."""

from __future__ import annotations

import numpy as np


def rel_error(out: object, ref: object) -> float:
    """``||out - ref|| / ||ref||`` for numpy arrays or torch tensors."""
    a = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, np.float64)
    b = np.asarray(ref.detach().cpu().numpy() if hasattr(ref, "detach") else ref, np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != reference {b.shape}"
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))

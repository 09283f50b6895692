"""ONNX Runtime sessions with the options care-serve measured to be fastest (no torch import).

See ``docs/performance.md`` for the measurements behind each option.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from care_serve.settings import cpu_count

__all__ = ["create_onnx_session", "session_options"]


def session_options(
    threads: int | None = None,
    optimized_model_path: str | None = None,
    *,
    spinning: bool | None = None,
) -> Any:
    """``onnxruntime.SessionOptions``: all graph optimisations, ``threads`` intra-op threads.

    ``spinning=None`` keeps onnxruntime's default (workers spin, also after a
    run has returned). ``spinning=True`` lets workers busy-wait between the
    operators of a run but stops them as soon as the run returns
    (``session.force_spinning_stop``), so an idle session never steals cycles
    from image decoding, other sessions or other processes. ``spinning=False``
    lets idle workers sleep even inside a run. See ``docs/performance.md``.
    """
    import onnxruntime as ort

    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or cpu_count()
    opts.inter_op_num_threads = 1
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    if optimized_model_path:
        opts.optimized_model_filepath = optimized_model_path
    return opts


def create_onnx_session(
    path: str | os.PathLike[str],
    threads: int | None = None,
    *,
    spinning: bool = False,
    optimized_model_path: str | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for the model at ``path``.

    ``threads`` is the intra-op thread count (default: the cores available).
    ``spinning`` lets worker threads busy-wait between operators (see
    ``session_options``). ``optimized_model_path`` saves the graph as ORT
    optimised it (for inspection; it is specific to this CPU).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    opts = session_options(threads, optimized_model_path, spinning=spinning)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

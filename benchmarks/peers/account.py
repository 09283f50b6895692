"""Where care-serve's time and CPU go during a level: its own stage metrics and its threads.

``scrape_stages`` reads the sums of care-serve's stage histograms from ``/metrics``
(``care_inference_{request,preprocess,queue,compute,postprocess}_duration_seconds``,
over every model and protocol); the difference of two scrapes divided by the
requests answered in between is the mean wall time of each stage. The client's
mean latency minus the server's ``request`` stage is the time outside the data
plane (HTTP or gRPC parsing, the answer's encoding, the loopback, the client).
The CPU side is ``benchmarks.procfs.thread_cpu``: care-serve names its threads
(``care-request``: decode, preprocess, post-process; ``care-compute``: the batches,
onnxruntime's workers included; the main thread runs the event loop and keeps the
name ``python``, as do a few idle helper threads, counted with it).
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["STAGES", "THREAD_GROUPS", "scrape_stages", "stage_delta", "thread_group"]

STAGES = ("request", "preprocess", "queue", "compute", "postprocess")
_PREFIX = "care_inference_"
_SUFFIX = "_duration_seconds"

#: The thread names care-serve gives, and what each does (the rest: gRPC core and others).
THREAD_GROUPS = {
    "python": "event loop",
    "care-request": "decode + preprocess",
    "care-large": "decode + preprocess",
    "care-compute": "compute",
}


def thread_group(name: str) -> str:
    """The column a thread of care-serve counts in (``other`` for gRPC core and the rest)."""
    return THREAD_GROUPS.get(name, "other")


async def scrape_stages(metrics_url: str, timeout_s: float = 10.0) -> dict[str, float] | None:
    """Each stage's seconds summed since start, plus ``count`` (requests); None if unreadable."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            reply = await client.get(metrics_url)
        reply.raise_for_status()
    except httpx.HTTPError:
        return None
    sums = dict.fromkeys(STAGES, 0.0)
    sums["count"] = 0.0
    for family in text_string_to_metric_families(reply.text):
        stage = family.name.removeprefix(_PREFIX).removesuffix(_SUFFIX)
        if not family.name.startswith(_PREFIX) or stage not in sums:
            continue
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                sums[stage] += sample.value
            elif stage == "request" and sample.name.endswith("_count"):
                sums["count"] += sample.value
    return sums


def stage_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What happened between two scrapes (seconds per stage, and ``count``)."""
    return {key: after[key] - before[key] for key in after}

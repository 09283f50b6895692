"""Prometheus metrics of the serving path, declared once against a passed-in registry.

Names follow Triton's vocabulary (request counts by outcome, queue vs compute
time, execution counts) but as seconds-based histograms, so percentiles can be
computed. Labels: ``model``, ``version``, and ``protocol`` (rest | grpc | v2-rest | v2-grpc) where
a request is involved. The list is in ``docs/operations.md``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["BATCH_BUCKETS", "LATENCY_BUCKETS", "ServingMetrics"]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
REQUEST_LABELS = ("model", "version", "protocol")
MODEL_LABELS = ("model", "version")


class ServingMetrics:
    """All serving metrics, registered on ``registry`` (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "care_inference_requests",
            "Inference requests by outcome (success, invalid_input, not_found, overloaded, "
            "timeout, unavailable, error); key is the API key's name ('' without keys).",
            (*REQUEST_LABELS, "key", "outcome"),
            registry=registry,
        )
        self.request_duration = Histogram(
            "care_inference_request_duration_seconds",
            "End-to-end time of a request inside the server (decode to response).",
            REQUEST_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.preprocess_duration = Histogram(
            "care_inference_preprocess_duration_seconds",
            "Time decoding and preprocessing the image of a request.",
            REQUEST_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_duration = Histogram(
            "care_inference_queue_duration_seconds",
            "Time a request waited in the batch queue.",
            REQUEST_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute_duration = Histogram(
            "care_inference_compute_duration_seconds",
            "Backend time of the batch a request ran in (includes batch assembly).",
            REQUEST_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.postprocess_duration = Histogram(
            "care_inference_postprocess_duration_seconds",
            "Time turning a request's outputs into its result.",
            REQUEST_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "care_inference_batch_size",
            "Number of requests in each executed batch.",
            MODEL_LABELS,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.executions = Counter(
            "care_inference_executions",
            "Batches executed by the backend.",
            MODEL_LABELS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "care_inference_queue_depth",
            "Requests currently waiting in the model's batch queue.",
            MODEL_LABELS,
            registry=registry,
        )
        self.load_duration = Gauge(
            "care_model_load_duration_seconds",
            "Time the last load of the model took (weights, session, warm-up).",
            MODEL_LABELS,
            registry=registry,
        )
        self.model_ready = Gauge(
            "care_model_ready",
            "1 while the model version is loaded and serving, else 0.",
            MODEL_LABELS,
            registry=registry,
        )
        self.load_failures = Counter(
            "care_model_load_failures",
            "Failed loads of the model version (bad files, warm-up errors).",
            MODEL_LABELS,
            registry=registry,
        )
        self.rate_limited = Counter(
            "care_rate_limited_requests",
            "Requests refused with 429 / RESOURCE_EXHAUSTED by the rate limit, by API key name "
            "('' = clients without a key, limited by address).",
            ("key",),
            registry=registry,
        )
        self.auth_refused = Counter(
            "care_auth_refused_requests",
            "Requests refused for their credential: unauthenticated (401) or forbidden (403).",
            ("reason",),
            registry=registry,
        )
        self.load_error = Gauge(
            "care_model_load_error",
            "1 while the last load of the model version failed, else 0.",
            MODEL_LABELS,
            registry=registry,
        )
        # -- pipelines ----------------------------------------------------------------
        self.pipeline_requests = Counter(
            "care_pipeline_requests",
            "Pipeline runs by outcome (as care_inference_requests); protocol 'stream' for "
            "the frames of streams.",
            ("pipeline", "protocol", "outcome"),
            registry=registry,
        )
        self.pipeline_step_duration = Histogram(
            "care_pipeline_step_duration_seconds",
            "Time of each step of a pipeline run (decode, each model's step, crop, total).",
            ("pipeline", "step"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.pipeline_crops = Histogram(
            "care_pipeline_crops",
            "Boxes cropped and classified per pipeline run.",
            ("pipeline",),
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        # -- streams --------------------------------------------------------------------
        self.stream_frames = Counter(
            "care_stream_frames",
            "Frames of a stream: 'processed' (gave a result), 'dropped' (a newer frame came "
            "first, or the frame-rate cap), 'failed' (the pipeline or model refused it).",
            ("stream", "outcome"),
            registry=registry,
        )
        self.stream_latency = Histogram(
            "care_stream_latency_seconds",
            "Capture-to-event time of each processed frame (from the decoder to the event).",
            ("stream",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stream_reconnects = Counter(
            "care_stream_reconnects",
            "Times a stream's source was opened again after it failed or ended.",
            ("stream",),
            registry=registry,
        )
        self.stream_sink_failures = Counter(
            "care_stream_sink_failures",
            "Events a sink could not deliver (after its retries) or dropped (queue full).",
            ("stream", "sink"),
            registry=registry,
        )
        self.stream_up = Gauge(
            "care_stream_up",
            "1 while the stream's source delivers frames, else 0.",
            ("stream",),
            registry=registry,
        )

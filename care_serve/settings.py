"""Server settings: one object, every field an environment variable ``CARE_SERVE_<FIELD>``.

Command-line options of ``care-serve serve`` override the environment, which
overrides the defaults declared here. Thread rule: each loaded model runs its
backend with ``intra_op_threads`` threads (0 = the CPU cores divided by the
number of models loaded at start-up, at least 1) and one inter-op thread; a
core budget shared by all models (``care_serve.serving.core_budget``) lets batches run
only while their threads fit in the cores, so they never oversubscribe them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "Settings",
    "cpu_count",
    "decodable_formats",
    "default_image_formats",
    "default_model_store",
    "register_image_plugins",
]


def default_model_store() -> Path:
    """The bundled ``model_store/`` beside ``service/`` in a checkout, else ``./model_store``."""
    bundled = Path(__file__).resolve().parent.parent / "model_store"
    return bundled if bundled.is_dir() else Path("model_store")


def cpu_count() -> int:
    """CPU cores this process may use (honours affinity masks, e.g. containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# Common spellings of image formats, as Pillow names them.
FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "HEIC": "HEIF"}
# What allowed_image_formats accepts by default: those of them this Pillow decodes.
DEFAULT_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "HEIF", "AVIF")


_plugins_registered = False


def register_image_plugins() -> None:
    """Teach Pillow the decoders of optional packages, once: HEIF/HEIC from ``pillow-heif``
    (AVIF is Pillow's own when it was built with libavif)."""
    global _plugins_registered
    if _plugins_registered:
        return
    _plugins_registered = True
    try:
        import pillow_heif
    except ImportError:  # pragma: no cover - a platform without the wheel
        return
    pillow_heif.register_heif_opener()


def decodable_formats() -> set[str]:
    """The image formats (Pillow's names) this Pillow can open, optional plugins included."""
    from PIL import Image

    register_image_plugins()
    Image.init()
    return set(Image.OPEN)


def default_image_formats() -> list[str]:
    """``DEFAULT_IMAGE_FORMATS`` less those this platform cannot decode (e.g. no HEIF
    decoder): the default never stops the start; naming a missing format does."""
    available = decodable_formats()
    return [name for name in DEFAULT_IMAGE_FORMATS if name in available]


class Settings(BaseSettings):
    """Everything an operator can configure; documented in ``docs/operations.md``."""

    model_config = SettingsConfigDict(env_prefix="CARE_SERVE_", extra="forbid")

    # --- where and what to serve ---------------------------------------------------------
    model_store: Path = Field(
        default_factory=default_model_store, description="The model store directory."
    )
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"],
        description="Models to load at start-up (comma-separated; '*' = every model in the "
        "store, newest version; 'name:version' pins a version; empty = none).",
    )
    allow_empty_store: bool = Field(
        default=False,
        description="Start even when the model store does not exist or holds no model (it is "
        "refused otherwise); the server is then not ready until a model serves.",
    )
    model_control: Literal["explicit", "poll"] = Field(
        default="explicit",
        description="explicit = load/unload through the API (admin token); poll = watch the "
        "store: load new versions and models, reload changed ones, unload removed ones, every "
        "repository_poll_s (the load/unload API then answers 409).",
    )
    repository_poll_s: float = Field(
        default=15.0,
        gt=0,
        description="How often the watched store is scanned (model_control poll).",
    )
    backend: Literal["auto", "onnx", "pytorch"] = Field(
        default="auto", description="auto = the format in each manifest; onnx/pytorch force one."
    )

    # --- network -------------------------------------------------------------------------
    host: str = Field(
        default="127.0.0.1", description="Interface for REST and gRPC (0.0.0.0 = all)."
    )
    http_port: int = Field(default=8000, ge=0, le=65535, description="REST port (0 = a free port).")
    grpc_port: int = Field(
        default=50051, ge=0, le=65535, description="gRPC port (0 = a free port)."
    )
    enable_grpc: bool = Field(default=True, description="Start the gRPC server.")
    enable_docs: bool = Field(default=True, description="Serve the OpenAPI docs at /docs.")

    # --- security ------------------------------------------------------------------------
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) of the server: REST and gRPC speak TLS only. "
        "Re-read, with tls_key and tls_client_ca, on SIGHUP.",
    )
    tls_key: Path | None = Field(
        default=None, description="PEM private key of tls_cert (unencrypted)."
    )
    tls_client_ca: Path | None = Field(
        default=None,
        description="PEM CA certificate(s): mutual TLS, clients must present a certificate "
        "signed by one of them on both ports (needs tls_cert).",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="API key file (care-serve keys add): every request but health, readiness "
        "and (metrics_open) metrics needs 'Authorization: Bearer <key>'; re-read when it "
        "changes.",
    )
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        description="Requests per second each API key may make (a key's own --rate wins); "
        "without keys, per client address. Unset = no limit.",
    )
    rate_limit_burst: int | None = Field(
        default=None,
        ge=1,
        description="Requests a client may send at once before rate_limit applies "
        "(default: the rate rounded up, at least 1).",
    )
    metrics_open: bool = Field(
        default=True,
        description="GET /metrics needs no API key (for Prometheus); off = an infer key.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins whose pages may call the API from a browser (comma-separated, "
        "e.g. https://dash.local); empty = no CORS headers.",
    )

    # --- streams -------------------------------------------------------------------------
    streams: Path | None = Field(
        default=None,
        description='A JSON file of streams to start with the server ({"streams": [...]}, '
        "as in store.json); they run beside those of store.json.",
    )
    max_streams: int = Field(
        default=16, ge=0, le=256, description="At most this many streams run at once."
    )

    # --- threads -------------------------------------------------------------------------
    intra_op_threads: int = Field(
        default=0, ge=0, description="Backend threads per model; 0 = cores / models at start-up."
    )
    onnx_allow_spinning: Literal["off", "on", "auto"] = Field(
        default="auto",
        description="ONNX Runtime workers busy-wait between operators: auto (a second, "
        "spinning session of each model for lone requests, used while it measures faster; "
        "the weights are in memory twice); off; on (can help on dedicated cores, steals CPU "
        "from image decoding on shared ones).",
    )
    concurrent_batches: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Batches of one model computing at once while other requests are in the "
        "server, each on intra_op_threads / this many threads (a batch alone in the server gets "
        "them all); 0 = one per intra-op thread; 1 = one batch at a time. ONNX only (PyTorch "
        "runs one).",
    )
    preprocess_threads: int = Field(
        default=0, ge=0, description="Threads decoding and preprocessing images; 0 = the cores."
    )
    large_image_pixels: int = Field(
        default=4_194_304,
        ge=1,
        description="Images whose decode holds more pixels (a baseline JPEG decoded at reduced "
        "scale counts at its reduced size) are decoded and post-processed in a pool of their "
        "own with one thread, so they never hold the workers small images need.",
    )

    # --- requests ------------------------------------------------------------------------
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Default deadline of a request (queue + compute)."
    )
    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="Largest accepted encoded image (bytes)."
    )
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest accepted image width x height (bomb guard)."
    )
    allowed_image_formats: Annotated[list[str], NoDecode] = Field(
        default_factory=default_image_formats,
        description="Pillow formats accepted (comma-separated; JPG, TIF and HEIC are JPEG, TIFF "
        "and HEIF). Each must be one this Pillow decodes: checked at start. The default leaves "
        "out HEIF and AVIF where they cannot be decoded.",
    )
    reduced_decode: bool = Field(
        default=True,
        description="Fast preprocessing of large images, every task: JPEGs decoded at 1/2, 1/4 "
        "or 1/8 scale by the codec (DCT scaling) and other images shrunk by whole factors before "
        "the final resample, never below the size the model's resize needs; boxes and masks "
        "still map to the pixels sent. Off = exact: full resolution, bit for bit the offline "
        "preprocessing.",
    )
    max_output_pixels: int = Field(
        default=4_194_304,
        ge=1,
        description="Largest segmentation mask or overlay returned (width x height); larger "
        "images get a mask of the same aspect ratio within this size.",
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Largest v2 inference request (REST body or gRPC message), all images.",
    )
    max_top_k: int = Field(default=100, ge=1, description="Largest top_k a client may ask for.")

    # --- lifecycle -----------------------------------------------------------------------
    admin_token: SecretStr | None = Field(
        default=None,
        description="A shorthand admin credential: 'Authorization: Bearer <token>' may load "
        "and unload models, like an admin API key. Without it or an admin key, model control "
        "is off (403).",
    )
    warmup_runs: int = Field(
        default=2, ge=0, description="Warm-up batches run before a model is ready."
    )
    package_public_key: Path | None = Field(
        default=None,
        description="PEM Ed25519 public key (care-serve sign --generate-key writes it): a "
        "package with a signature (manifest.sig) loads only if it verifies with this key.",
    )
    require_signed_packages: bool = Field(
        default=False,
        description="Load only packages signed by package_public_key (which it needs); "
        "unsigned or badly signed ones are refused (422).",
    )
    graceful_shutdown_s: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM: how long in-flight requests may take to finish; the rest are "
        "answered 503 / UNAVAILABLE and the process exits within this plus one second.",
    )
    strict_readiness: bool = Field(
        default=True,
        description="Ready only while every model that should serve is serving (Triton's "
        "strict readiness); off = ready once start-up loading has finished.",
    )
    drain_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="How long an unload/reload waits for the old model's requests.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the server."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as text or as one JSON object per line."
    )
    access_log: bool = Field(
        default=True,
        description="One line per request (logger care_serve.access): request id, method and "
        "path or RPC, model, version, protocol, status, latency.",
    )

    @field_validator("models", "allowed_image_formats", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("onnx_allow_spinning", mode="before")
    @classmethod
    def _spinning_from_bool(cls, value: object) -> object:
        """The former boolean spellings (``1``/``true``/``0``/``false``) still work."""
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, str):
            lowered = value.strip().lower()
            return {
                "1": "on",
                "true": "on",
                "yes": "on",
                "0": "off",
                "false": "off",
                "no": "off",
            }.get(lowered, lowered)
        return value

    @field_validator("admin_token")
    @classmethod
    def _non_empty_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "admin_token is empty: give a token, or unset CARE_SERVE_ADMIN_TOKEN "
                "(model control is then off unless an admin API key exists)"
            )
        return value

    @model_validator(mode="after")
    def _signed_packages_need_a_key(self) -> Settings:
        if self.require_signed_packages and self.package_public_key is None:
            raise ValueError(
                "require_signed_packages needs package_public_key: give the PEM public key "
                "that checks the signatures (--package-public-key FILE, "
                "CARE_SERVE_PACKAGE_PUBLIC_KEY)"
            )
        return self

    @field_validator("allowed_image_formats")
    @classmethod
    def _decodable(cls, value: list[str]) -> list[str]:
        """Pillow's names (``JPG`` is ``JPEG``), each one this Pillow can decode."""
        available = decodable_formats()
        names = [FORMAT_ALIASES.get(v.upper(), v.upper()) for v in value]
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} cannot be decoded here; the formats this Pillow "
                f"decodes: {', '.join(sorted(available))}"
            )
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(
                "tls_cert and tls_key go together: give both (--tls-cert FILE --tls-key FILE) "
                "or neither"
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError(
                "tls_client_ca (mutual TLS) needs TLS: give --tls-cert and --tls-key too"
            )
        return self

    @property
    def tls(self) -> bool:
        """REST and gRPC speak TLS."""
        return self.tls_cert is not None

    def threads_per_model(self, n_models: int) -> int:
        """Intra-op threads for each model when ``n_models`` are loaded (the thread rule)."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, cpu_count() // max(1, n_models))

    def batch_slots(self, threads: int, weights_format: str) -> int:
        """How many batches of a model with ``threads`` intra-op threads compute at once."""
        if weights_format != "onnx":  # PyTorch's threads are process-wide: one batch
            return 1
        wanted = self.concurrent_batches or threads
        return max(1, min(wanted, threads))

    def preprocess_workers(self) -> int:
        return self.preprocess_threads or cpu_count()

"""The model package manifest (``manifest.json``), schema version 1.

A package is ``<store>/<name>/<version>/`` holding ``manifest.json``, the
weights file it names and, optionally, ``labels.txt`` (one class name per
line, in class-index order). The manifest says everything the server needs to
serve the weights: task, architecture, input size, preprocessing, labels,
batching, task-specific post-processing settings, a short model card and the
sha256 of every other file of the package (``files``; checked at load by
``care_serve.store.trust``). An optional detached signature ``manifest.sig``
signs the exact bytes of ``manifest.json``. The field reference is in
``docs/models.md``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from care_serve.task_registry import task_names

__all__ = [
    "LABELS_FILE",
    "MANIFEST_FILE",
    "NAME_PATTERN",
    "SCHEMA_VERSION",
    "SIGNATURE_FILE",
    "BatchingConfig",
    "HubSource",
    "InputSpec",
    "Manifest",
    "ModelCard",
    "Preprocessing",
    "validate_file_name",
    "validate_model_name",
    "validate_version",
]

MANIFEST_FILE = "manifest.json"
LABELS_FILE = "labels.txt"
SIGNATURE_FILE = "manifest.sig"  # detached ed25519 signature of manifest.json (optional)
SCHEMA_VERSION = 1
INPUT_MULTIPLE = 32

# A model name: starts with a letter or digit; letters, digits, '_', '-', '.'; at most 64
# characters; never '.' or '..'. It is used as a directory name inside the store, so it
# can never contain a path separator.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_HUB_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_VERSION = 999_999_999


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 characters from letters, digits, '_', '-' "
            "and '.', starting with a letter or digit (no '/', no '..')"
        )
    return name


def validate_version(version: int | str) -> int:
    """Return ``version`` as an int if it is a valid version (1..999999999), else raise."""
    text = str(version)
    if not text.isascii() or not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise ValueError(
            f"invalid model version {version!r}: versions are positive integers "
            f"(1 to {MAX_VERSION})"
        )
    return int(text)


def validate_file_name(value: str, field: str = "a package file name") -> str:
    """Return ``value`` if it is a plain file name a package may hold, else ``ValueError``."""
    if not isinstance(value, str) or not _FILE_RE.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{field} must be a plain file name inside the package directory (letters, digits, "
            f"'_', '-', '.'; no '/' and no '..'), got {value!r}"
        )
    return value


def _check_file_name(value: str | None, field: str) -> str | None:
    return None if value is None else validate_file_name(value, field)


def _check_sha256(value: str, field: str) -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise ValueError(f"{field} must be a sha256: 64 hex digits, got {value!r}")
    return value.lower()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """The network input: ``channels`` x ``height`` x ``width``, sides multiples of 32."""

    height: int = Field(default=224, description="Input height in pixels (a multiple of 32).")
    width: int = Field(default=224, description="Input width in pixels (a multiple of 32).")
    channels: Literal[3] = Field(default=3, description="Always 3 (RGB).")
    name: str = Field(default="input", description="The input tensor name of an ONNX model.")

    @model_validator(mode="after")
    def _multiple_of_32(self) -> InputSpec:
        for side in ("height", "width"):
            value = getattr(self, side)
            if value <= 0 or value % INPUT_MULTIPLE:
                raise ValueError(
                    f"input.{side} must be a positive multiple of {INPUT_MULTIPLE}, got {value}"
                )
        return self


class Preprocessing(_Strict):
    """How a decoded RGB image becomes the normalised CHW float32 input.

    ``center_crop`` (the ImageNet eval transform): resize the short side to
    ``resize_short_side`` (default ``floor(max(input side) / crop_pct)``), then crop
    the centre ``input.height x input.width`` (the crop size is the input size).
    ``resize``: stretch to the input size. ``letterbox``: scale to fit inside the
    input size keeping the aspect ratio and pad with ``pad_value``. Then scale to
    [0, 1] and normalise with ``mean``/``std`` per channel.
    """

    mode: Literal["center_crop", "resize", "letterbox"] = Field(
        default="center_crop", description="Geometry: center_crop, resize or letterbox."
    )
    resize_short_side: int | None = Field(
        default=None, description="center_crop: short side after resizing; default from crop_pct."
    )
    crop_pct: float = Field(
        default=0.875, gt=0.0, le=1.0, description="center_crop: crop size / resized short side."
    )
    interpolation: Literal["bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"] = Field(
        default="bicubic", description="Pillow resampling filter used for every resize."
    )
    mean: tuple[float, float, float] = Field(
        default=(0.485, 0.456, 0.406),
        description="Per-channel mean subtracted after scaling to [0, 1].",
    )
    std: tuple[float, float, float] = Field(
        default=(0.229, 0.224, 0.225),
        description="Per-channel std divided after subtracting the mean.",
    )
    pad_value: int = Field(
        default=114, ge=0, le=255, description="letterbox: grey level of the padding (0-255)."
    )

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v <= 0 for v in value):
            raise ValueError(f"preprocessing.std values must be > 0, got {value}")
        return value


class BatchingConfig(_Strict):
    """Dynamic batching knobs (Triton's names): a batch runs when it has
    ``max_batch_size`` requests or the oldest waited ``max_queue_delay_ms``.

    The default delay is 0, as in Triton: a request that finds the model idle
    runs at once, and requests that arrive while a batch computes queue up and
    run together as the next batch, so batches grow with the load by themselves.
    A delay only pays off when requests arrive faster than one batch computes
    but not in bursts; at one client it is added to every request's latency.
    """

    max_batch_size: int = Field(default=8, ge=1, le=256, description="Largest batch run at once.")
    max_queue_delay_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=10_000.0,
        description="Longest wait for more requests after the first.",
    )
    max_queue_size: int = Field(
        default=64, ge=1, le=100_000, description="Queued requests beyond this are refused (503)."
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list,
        description="Run as soon as the queue holds one of these sizes (optional).",
    )
    request_timeout_ms: float | None = Field(
        default=None,
        gt=0.0,
        description="Default per-request deadline; None uses the server setting.",
    )

    @model_validator(mode="after")
    def _preferred_within_max(self) -> BatchingConfig:
        bad = [s for s in self.preferred_batch_sizes if s < 1 or s > self.max_batch_size]
        if bad:
            raise ValueError(
                f"batching.preferred_batch_sizes must lie in 1..max_batch_size "
                f"({self.max_batch_size}); got {bad}"
            )
        return self


class HubSource(_Strict):
    """A checkpoint downloaded from the Hugging Face Hub, pinned to the commit it came from."""

    repo: str = Field(description="Hub repository, 'owner/name'.")
    filename: str = Field(min_length=1, description="File inside the hub repository.")
    revision: str = Field(
        description="The hub commit the file was downloaded at (40 hex digits): pass it to "
        "'care-serve pull --revision' to download exactly this file again."
    )
    requested: str = Field(
        default="main", min_length=1, description="The branch, tag or commit that was asked for."
    )

    @field_validator("repo")
    @classmethod
    def _valid_repo(cls, value: str) -> str:
        if not _HUB_REPO_RE.fullmatch(value):
            raise ValueError(f"hub repo must be 'owner/name', got {value!r}")
        return value

    @field_validator("revision")
    @classmethod
    def _valid_revision(cls, value: str) -> str:
        if not _COMMIT_RE.fullmatch(value):
            raise ValueError(
                f"hub revision must be a commit hash (40 lowercase hex digits), got {value!r}"
            )
        return value


class ModelCard(_Strict):
    """Where the weights come from and how good they are."""

    description: str = Field(
        default="", description="What the model does, in one or two sentences."
    )
    source: str = Field(
        default="", description="Where the weights came from (file, URL, training run)."
    )
    domain: str = Field(
        default="",
        description="What the model knows: the images its answers mean something for, e.g. "
        "'synthetic shapes: circles, squares, triangles' or 'photos, ImageNet-1k classes'. "
        "The page shows it next to every result.",
    )
    source_sha256: str | None = Field(default=None, description="sha256 of the source checkpoint.")
    hub: HubSource | None = Field(
        default=None, description="care-serve pull: the hub repo, file and commit downloaded."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Quality figures, e.g. {'top1': 0.78}."
    )
    license: str = Field(default="", description="License of the weights.")
    training_command: str | None = Field(
        default=None, description="Command that produced the weights."
    )
    notes: dict[str, Any] = Field(
        default_factory=dict, description="Anything else: export parity error, dataset, date."
    )


def check_task(name: str) -> str:
    """``name`` if it is a registered task, else ``ValueError`` listing the tasks."""
    if name not in task_names():
        raise ValueError(f"unknown task {name!r}; tasks are {', '.join(task_names())}")
    return name


class Manifest(_Strict):
    """One model package. ``name`` and ``version`` must match the package directory."""

    schema_version: Literal[1] = Field(default=1, description="Manifest schema version.")
    name: str = Field(description="Model name (NAME_PATTERN); the package's parent directory.")
    version: int = Field(description="Positive integer; the package directory name.")
    task: str = Field(
        description="The task: classification, detection, segmentation, embedding (any "
        "registered task, care_serve.task_registry).",
    )
    architecture: str = Field(description="Network variant, e.g. care_s0 or care_tiny.")
    format: Literal["onnx", "pytorch"] = Field(default="onnx", description="Weights format.")
    weights: str = Field(description="Weights file name inside the package directory.")
    num_classes: int = Field(
        ge=1,
        description="Width of the model's output: the classes it predicts (an embedding "
        "model: the length of its vectors).",
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="format pytorch: extra create_model overrides (e.g. distillation).",
    )
    input: InputSpec = Field(default_factory=InputSpec)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    labels: list[str] | None = Field(
        default=None, description="Class names inline, in index order."
    )
    labels_file: str | None = Field(
        default=None, description="Or: a file with one class name a line."
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    outputs: list[str] = Field(
        default_factory=lambda: ["logits"], min_length=1, description="Model output names."
    )
    postprocessing: dict[str, Any] = Field(
        default_factory=dict, description="Task-specific settings (thresholds, NMS, strides)."
    )
    model_card: ModelCard = Field(default_factory=ModelCard)
    files: dict[str, str] | None = Field(
        default=None,
        description="sha256 (lowercase hex) of every package file but manifest.json and "
        "manifest.sig, by file name; written by write_package, checked at load. None: an "
        "unverified package written before digests existed.",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return validate_model_name(value)

    @field_validator("version", mode="before")
    @classmethod
    def _valid_version(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"version must be a positive integer, got {value!r}")
        return validate_version(value)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return check_task(value)

    @field_validator("weights")
    @classmethod
    def _valid_weights(cls, value: str) -> str:
        checked = _check_file_name(value, "weights")
        assert checked is not None
        return checked

    @field_validator("labels_file")
    @classmethod
    def _valid_labels_file(cls, value: str | None) -> str | None:
        return _check_file_name(value, "labels_file")

    @field_validator("files")
    @classmethod
    def _valid_files(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        checked = {}
        for name, digest in value.items():
            validate_file_name(name, "each name in files")
            if name in (MANIFEST_FILE, SIGNATURE_FILE):
                raise ValueError(f"files must not list {name} (it cannot hold its own digest)")
            checked[name] = _check_sha256(digest, f"files[{name!r}]")
        return checked

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.labels is not None and self.labels_file is not None:
            raise ValueError("give either labels (inline) or labels_file, not both")
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise ValueError(
                f"labels has {len(self.labels)} entries but num_classes is {self.num_classes}"
            )
        needed = max(self.input.height, self.input.width)
        if self.preprocessing.mode == "center_crop" and self.resize_short_side < needed:
            raise ValueError(
                f"preprocessing.resize_short_side ({self.resize_short_side}) must be at least the "
                f"larger input side ({needed}) for center_crop"
            )
        return self

    @property
    def resize_short_side(self) -> int:
        """The center_crop short side: explicit, or ``floor(max input side / crop_pct)``."""
        if self.preprocessing.resize_short_side is not None:
            return self.preprocessing.resize_short_side
        side = max(self.input.height, self.input.width)
        return int(side / self.preprocessing.crop_pct)

"""What the detection and segmentation tasks share: letterbox preprocessing and config checks.

Dense tasks always letterbox: the image keeps its aspect ratio, is resized with
the manifest's ``preprocessing.interpolation`` and centred on the
``input.width x input.height`` canvas, and the padding is the normalisation
mean, i.e. exactly 0 after normalising (what the training pipeline does; the
classification-only ``pad_value`` is not used). It calls
``care_serve.imaging.letterbox.preprocess``, so with ``bilinear`` the served
input equals the training/evaluation input bit for bit. The returned
``DenseMeta`` is a ``PreprocessMeta`` that also carries the exact
``LetterboxMeta`` (for mapping boxes and masks back) and the decoded image
(for the overlays).

With ``reduced_decode`` (the fast path) a large JPEG is decoded at the smallest
1/2, 1/4 or 1/8 scale that is still at least the letterboxed size (other formats
are decoded in full and resized as above). The letterbox is always computed for
the size the client sent, so boxes and masks map back to its pixels exactly as
on the exact path; the overlays are drawn on the reduced image.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ValidationError

from care_serve.errors import InvalidInput, ModelStoreError
from care_serve.imaging.decode import DecodedImage
from care_serve.imaging.letterbox import (
    REDUCING_GAP,
    LetterboxMeta,
    fit_within,
    make_letterbox_meta,
    preprocess,
)
from care_serve.imaging.preprocess import RESAMPLING, PreprocessMeta
from care_serve.settings import Settings
from care_serve.store.manifest import Manifest
from care_serve.tasks.base import Task

__all__ = ["DenseMeta", "DenseTask", "letterbox_preprocess", "parse_config"]

C = TypeVar("C", bound=BaseModel)


@dataclass(frozen=True)
class DenseMeta(PreprocessMeta):
    """``PreprocessMeta`` plus the exact letterbox and the decoded RGB image."""

    letterbox: LetterboxMeta
    image: Image.Image = field(repr=False, compare=False)


def letterbox_preprocess(
    image: Image.Image,
    manifest: Manifest,
    *,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, DenseMeta]:
    """RGB image -> normalised ``(3, H, W)`` float32 letterboxed input + ``DenseMeta``.

    ``size``: the ``(width, height)`` sent, when ``image`` is a reduced-scale decode.
    """
    pre = manifest.preprocessing
    out, lb = preprocess(
        image,
        (manifest.input.width, manifest.input.height),
        mean=pre.mean,
        std=pre.std,
        resample=RESAMPLING[pre.interpolation],
        orig_size=size,
    )
    meta = DenseMeta(
        orig_width=lb.orig_width,
        orig_height=lb.orig_height,
        input_width=lb.input_width,
        input_height=lb.input_height,
        scale_x=lb.scale_x,
        scale_y=lb.scale_y,
        offset_x=float(lb.pad_left),
        offset_y=float(lb.pad_top),
        letterbox=lb,
        image=image,
    )
    return out, meta


def parse_config(model: type[C], manifest: Manifest) -> C:
    """The manifest's ``postprocessing`` validated as ``model`` (``ModelStoreError`` if bad)."""
    try:
        return model.model_validate(manifest.postprocessing)
    except ValidationError as exc:
        problems = "; ".join(
            f"postprocessing.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise ModelStoreError(
            f"{manifest.name}/{manifest.version}: bad {manifest.task} settings in the manifest: "
            f"{problems} (accepted keys: {', '.join(model.model_fields)})"
        ) from None


def parse_number(
    params: Mapping[str, Any],
    name: str,
    default: float,
    low: float,
    high: float,
    *,
    integer: bool = False,
) -> float:
    """Parameter ``name`` as a number in ``[low, high]`` (``InvalidInput`` naming the range)."""
    value = params.get(name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    shown = f"{int(low)} to {int(high)}" if integer else f"[{low:g}, {high:g}]"
    message = f"{name} must be {kind} in {shown}, got {value!r}"
    number: float
    if isinstance(value, bool):
        raise InvalidInput(message)
    if isinstance(value, numbers.Integral if integer else numbers.Real):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip()) if integer else float(value.strip())
        except ValueError:
            raise InvalidInput(message) from None
    else:
        raise InvalidInput(message)
    if not low <= number <= high:  # also rejects NaN
        raise InvalidInput(message)
    return int(number) if integer else number


class DenseTask(Task):
    """Base of the dense tasks: checks the manifest once, letterboxes every image."""

    #: how many outputs the network has (checked against ``manifest.outputs``).
    num_outputs: int = 1

    def __init__(self, manifest: Manifest, labels: list[str], settings: Settings) -> None:
        super().__init__(manifest, labels, settings)
        where = f"{manifest.name}/{manifest.version}"
        if manifest.preprocessing.mode != "letterbox":
            raise ModelStoreError(
                f"{where}: {manifest.task} models need preprocessing.mode 'letterbox', the "
                f"manifest says {manifest.preprocessing.mode!r}"
            )
        if len(manifest.outputs) != self.num_outputs:
            raise ModelStoreError(
                f"{where}: a {manifest.task} model has {self.num_outputs} output(s), the "
                f"manifest names {manifest.outputs}"
            )
        if len(labels) != manifest.num_classes:
            raise ModelStoreError(
                f"{where}: {len(labels)} labels for num_classes={manifest.num_classes}"
            )

    def decode_size(self, width: int, height: int) -> tuple[int, int]:
        """The letterboxed size: decoding smaller would only add upsampling."""
        lb = make_letterbox_meta(
            width, height, self.manifest.input.width, self.manifest.input.height
        )
        return lb.resized_width, lb.resized_height

    def preprocess(self, image: DecodedImage) -> tuple[np.ndarray, DenseMeta]:
        """Letterbox; the meta keeps the image for overlays, shrunk to ``max_output_pixels``.

        A request then holds at most that many pixels between its stages, not the
        full decoded image (a 40-Mpx image is 120 MB).
        """
        fast = self.fast_preprocess
        array, meta = letterbox_preprocess(
            image.image, self.manifest, size=(image.width, image.height)
        )
        src = image.image
        size = fit_within(src.width, src.height, self.settings.max_output_pixels)
        if size != src.size:
            if fast:  # a whole-factor box shrink: the overlay is for people, not the network
                factor = 2
                while -(-src.width // factor) * -(-src.height // factor) > size[0] * size[1]:
                    factor += 1
                small = src.reduce(factor)
            else:
                small = src.resize(size, Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
            meta = dataclasses.replace(meta, image=small)
        return array, meta

    def tensor_meta(self) -> DenseMeta:
        """An identity letterbox: boxes and masks are in network-input pixels.

        There is no original image, so an overlay would be drawn on black.
        """
        w, h = self.manifest.input.width, self.manifest.input.height
        lb = make_letterbox_meta(w, h, w, h)
        return DenseMeta(
            w, h, w, h, 1.0, 1.0, 0.0, 0.0, letterbox=lb, image=Image.new("RGB", (w, h))
        )

"""The detector and segmenter networks: shapes, losses, checkpoint loading, fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from care_serve.errors import CheckpointError
from care_serve.models.detection import CAREDetector, assign_targets, make_points_torch
from care_serve.models.fuse import fuse_model
from care_serve.models.segmentation import IGNORE_INDEX, CARESegmenter, segmentation_loss
from care_serve.postprocess.detection import make_points
from tests.helpers.numerics import rel_error
from tests.helpers.paths import FIXTURES

# Tiny tensors: one torch thread (see the fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("single_thread_torch")

SIZES = [(1, 64, 64), (2, 96, 160), (1, 224, 128)]


def randomise_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that folding them is actually tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


@pytest.fixture(scope="module")
def detector() -> CAREDetector:
    torch.manual_seed(0)
    return randomise_batchnorms(CAREDetector("care_tiny", num_classes=3)).eval()  # type: ignore[return-value]


@pytest.fixture(scope="module")
def segmenter() -> CARESegmenter:
    torch.manual_seed(0)
    return randomise_batchnorms(CARESegmenter("care_tiny", num_classes=4)).eval()  # type: ignore[return-value]


@pytest.mark.parametrize("size", SIZES)
@torch.no_grad()
def test_detector_output_shapes(detector: CAREDetector, size: tuple[int, int, int]) -> None:
    b, h, w = size
    cls_logits, box_ltrb = detector(torch.randn(b, 3, h, w))
    n = make_points(h, w)[0].shape[0]
    assert cls_logits.shape == (b, n, 3) and box_ltrb.shape == (b, n, 4)
    assert bool((box_ltrb >= 0).all())


@pytest.mark.parametrize("size", SIZES)
@torch.no_grad()
def test_segmenter_output_shapes(segmenter: CARESegmenter, size: tuple[int, int, int]) -> None:
    b, h, w = size
    assert segmenter(torch.randn(b, 3, h, w)).shape == (b, 4, h // 4, w // 4)


def test_inputs_must_be_multiples_of_32(detector: CAREDetector, segmenter: CARESegmenter) -> None:
    for model in (detector, segmenter):
        with pytest.raises(ValueError, match="multiples of 32"):
            model(torch.randn(1, 3, 64, 72))


def test_constructor_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="known variants"):
        CAREDetector("care_s9")
    with pytest.raises(ValueError, match="num_classes"):
        CAREDetector("care_tiny", num_classes=0)
    with pytest.raises(ValueError, match="background"):
        CARESegmenter("care_tiny", num_classes=1)


def test_points_agree_between_torch_and_numpy() -> None:
    points, strides, _ = make_points_torch((96, 160), (8, 16, 32), torch.device("cpu"))
    ref_points, ref_strides = make_points(96, 160)
    np.testing.assert_array_equal(points.numpy(), ref_points)
    np.testing.assert_array_equal(strides.numpy(), ref_strides)


def test_every_box_gets_a_positive_point() -> None:
    points, strides, levels = make_points_torch((128, 128), (8, 16, 32), torch.device("cpu"))
    gt = torch.tensor(
        [
            [10.0, 10.0, 16.0, 15.0],
            [2.0, 100.0, 126.0, 126.0],
            [40.0, 30.0, 90.0, 100.0],
            [0, 0, 128, 128],
        ]
    )
    matched = assign_targets(points, strides, levels, gt, ((0, 64), (64, 128), (128, 1e8)), 2.5)
    assert set(matched[matched >= 0].tolist()) == {0, 1, 2, 3}
    # Every positive point lies inside the box it is assigned to.
    pos = matched >= 0
    boxes = gt[matched[pos]]
    p = points[pos]
    assert bool(((p > boxes[:, :2]) & (p < boxes[:, 2:])).all())


def _detection_batch() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 96, generator=g)
    targets = [
        {"boxes": torch.tensor([[8.0, 10.0, 40.0, 50.0], [50.0, 20.0, 90.0, 60.0]]),
         "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]  # fmt: skip
    return images, targets


def test_detection_loss_decreases_and_checks_labels() -> None:
    torch.manual_seed(0)
    model = CAREDetector("care_tiny", num_classes=3).train()
    images, targets = _detection_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        out = model.forward_loss(images, targets)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
        assert float(out["num_pos"]) > 0
    assert losses[-1] < 0.8 * losses[0], losses
    bad = [dict(targets[0], labels=torch.tensor([0, 3])), targets[1]]
    with pytest.raises(ValueError, match="labels must be in"):
        model.forward_loss(images, bad)
    with pytest.raises(ValueError, match="targets for a batch"):
        model.forward_loss(images, targets[:1])


def test_segmentation_loss_decreases_and_ignores_padding() -> None:
    torch.manual_seed(0)
    model = CARESegmenter("care_tiny", num_classes=3).train()
    g = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, 64, 64, generator=g)
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    masks[:, 10:40, 20:50] = 1
    masks[1, 30:60, 40:60] = 2
    masks[:, :8] = IGNORE_INDEX
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        out = model.forward_loss(images, masks)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.9 * losses[0], losses
    # The loss is the mean cross-entropy over the labelled pixels only.
    model.eval()
    with torch.no_grad():
        logits = model(images)
        up = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear")
        labelled = masks != IGNORE_INDEX
        per_pixel = -torch.log_softmax(up, dim=1).gather(1, masks.clamp(max=2)[:, None])[:, 0]
        ref = per_pixel[labelled].mean()
        assert rel_error(model.loss(logits, masks)["loss"], ref) <= 1e-5
    with pytest.raises(ValueError, match="mask values"):
        model.loss(logits, torch.full((2, 64, 64), 3, dtype=torch.long))


def test_hard_pixel_loss_averages_the_hardest_share_of_labelled_pixels() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 16, 16, generator=g)
    masks = torch.randint(0, 3, (2, 64, 64), generator=g)
    masks[0, :10] = IGNORE_INDEX
    up = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear")
    labelled = masks != IGNORE_INDEX
    per_pixel = -torch.log_softmax(up, dim=1).gather(1, masks.clamp(max=2)[:, None])[:, 0]
    losses = per_pixel[labelled].sort(descending=True).values
    for fraction in (0.1, 0.25, 0.5):
        ref = losses[: math.ceil(fraction * losses.numel())].mean()
        got = segmentation_loss(logits, masks, hard_fraction=fraction)["loss"]
        assert rel_error(got, ref) <= 1e-5, fraction
    plain = segmentation_loss(logits, masks)["loss"]
    assert rel_error(segmentation_loss(logits, masks, hard_fraction=1.0)["loss"], plain) <= 1e-6
    assert segmentation_loss(logits, masks, hard_fraction=0.25)["loss"] > plain
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"hard_fraction must be in \(0, 1\]"):
            segmentation_loss(logits, masks, hard_fraction=bad)


@torch.no_grad()
def test_backbones_load_an_official_checkpoint(official_s0_path, golden_input: np.ndarray) -> None:
    x = torch.from_numpy(golden_input[:1])
    det = CAREDetector("care_s0", num_classes=2, backbone_checkpoint=official_s0_path).eval()
    stages = det.backbone.forward_intermediates(x)
    for i, out in enumerate(stages, start=1):
        ref = np.load(FIXTURES / f"care_s0_official_stage{i}.npy")[:1]
        assert rel_error(out, ref) <= 1e-5, f"stage {i}"
    assert det(x)[0].shape == (1, 28 * 28 + 14 * 14 + 7 * 7, 2)
    seg = CARESegmenter("care_s0", num_classes=2, backbone_checkpoint=official_s0_path)
    seg_state = seg.backbone.state_dict()
    for key, value in det.backbone.state_dict().items():
        assert torch.equal(seg_state[key], value), key
    with pytest.raises(CheckpointError, match="does not fit"):
        CAREDetector("care_tiny", num_classes=2, backbone_checkpoint=official_s0_path)


@torch.no_grad()
def test_fused_networks_match(detector: CAREDetector, segmenter: CARESegmenter) -> None:
    x = torch.randn(2, 3, 64, 96)
    fused_det = fuse_model(detector)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused_det.modules())
    for out, ref in zip(fused_det(x), detector(x), strict=True):
        assert rel_error(out, ref) <= 1e-5
    fused_seg = fuse_model(segmenter)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused_seg.modules())
    assert rel_error(fused_seg(x), segmenter(x)) <= 1e-5

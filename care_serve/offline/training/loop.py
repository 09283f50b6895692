"""The training loop: AdamW, warm-up + cosine learning rate, periodic resumable checkpoints.

A step's batch is a pure function of ``(seed, step)``: the sample order of an
epoch comes from ``default_rng([seed, 1, epoch])`` and the augmentation from
``default_rng([seed, 2, step])``. So the training state is just the model, the
optimizer and the step count, and a resumed run continues exactly where the
interrupted one was.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from care_serve.errors import CheckpointError
from care_serve.offline.training.preprocess import CachedDataset
from care_serve.offline.training.task import TrainTask

__all__ = [
    "TrainConfig",
    "TrainResult",
    "batch_indices",
    "learning_rate",
    "load_network_weights",
    "train_loop",
]

STATE_VERSION = 1
# Fields that must be equal for --resume to continue a run.
RESUME_KEYS = (
    "task",
    "arch",
    "input_size",
    "steps",
    "batch_size",
    "lr",
    "seed",
    "num_classes",
    "crop",
    "hard_pixels",
)


@dataclass
class TrainConfig:
    """Hyper-parameters of one run."""

    task: str
    arch: str
    input_size: tuple[int, int]
    steps: int
    num_classes: int
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 0
    checkpoint_every: int = 100
    grad_clip: float = 5.0
    augment: bool = True
    crop: int | None = None
    hard_pixels: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


@dataclass
class TrainResult:
    """Per-step losses (of the whole run, resumed parts included) and the wall time of this call."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to 1% of it."""
    warmup = min(cfg.warmup_steps, max(cfg.steps // 5, 1))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = (step - warmup) / max(cfg.steps - warmup, 1)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def batch_indices(num_samples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The sample indices of ``step``: epoch-wise shuffles, last partial batch dropped."""
    batch_size = min(batch_size, num_samples)
    per_epoch = num_samples // batch_size
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, 1, epoch]).permutation(num_samples)
    return order[k * batch_size : (k + 1) * batch_size]


def _save_state(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    losses: list[float],
) -> None:
    state = {
        "version": STATE_VERSION,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "config": cfg.to_dict(),
        "losses": list(losses),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_state(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"--resume: no training state at {path}; run once without --resume first "
            "(or pass the same --work-dir as the interrupted run)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read training state {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"{path} is not a care-serve training state (version {STATE_VERSION})"
        )
    saved, now = state["config"], cfg.to_dict()
    diff = [
        f"{k}: saved {saved.get(k)!r}, now {now[k]!r}"
        for k in RESUME_KEYS
        if saved.get(k) != now[k]
    ]
    if diff:
        raise CheckpointError(
            f"--resume: the saved run at {path} used other settings ({'; '.join(diff)}); "
            "resume with the same arguments, or start afresh without --resume"
        )
    return state


def load_network_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load every weight of ``model`` from a training state (``train_state.pt``) or a state dict.

    For starting a run from a trained network of the same task, architecture and
    class count (e.g. fine-tuning a detector at another input size): unlike
    ``--init-checkpoint``, the heads are taken too. Keys and shapes must match.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read network weights {path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a care-serve training state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict (expected a train_state.pt or weights)")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = [
        f"{k}: file {tuple(state[k].shape)}, network {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or misshapen:
        parts = [
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", misshapen),
            )
            if keys
        ]
        raise CheckpointError(
            f"the weights in {path} do not fit this network ({'; '.join(parts)}): give a run "
            "of the same task, --arch and class count"
        )
    model.load_state_dict(state)


def train_loop(
    model: nn.Module,
    task: TrainTask,
    data: CachedDataset,
    cfg: TrainConfig,
    state_path: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` steps, saving the state every ``checkpoint_every``.

    ``stop_after`` ends the call after that many steps of this call (the state
    is saved), as an interruption would; a later ``resume=True`` call continues.
    """
    from tqdm import tqdm

    state_path = Path(state_path)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "gamma" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or "gamma" in n]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    result = TrainResult()
    start = 0
    if resume:
        state = _load_state(state_path, cfg)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        result.losses = [float(v) for v in state["losses"]]
        result.resumed_from = start
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    model.train()
    t0 = time.perf_counter()
    smoothed = result.losses[-1] if result.losses else None
    bar = tqdm(
        range(start, end),
        initial=start,
        total=cfg.steps,
        desc=f"train {cfg.task}",
        disable=not progress,
    )
    for step in bar:
        lr = learning_rate(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        rng = np.random.default_rng([cfg.seed, 2, step])
        batch = task.make_batch(
            data, batch_indices(len(data), cfg.batch_size, cfg.seed, step), rng, cfg.augment
        )
        loss = task.loss(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training diverged at step {step} (loss {loss.item()}); lower --lr"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        value = float(loss.item())
        result.losses.append(value)
        smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
        bar.set_postfix(loss=f"{smoothed:.4f}", lr=f"{lr:.2e}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == end:
            _save_state(state_path, model, opt, cfg, done, result.losses)
    bar.close()
    result.seconds = time.perf_counter() - t0
    model.eval()
    return result

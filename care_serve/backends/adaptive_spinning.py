"""Spinning by measurement: for a lone request, run the session that is faster on this machine.

onnxruntime decides at session creation whether its intra-op workers busy-wait
between operators ("spinning"); a run cannot switch. Spinning shortens a lone
request on idle cores and lengthens it on shared ones, where the busy-waiting
workers lose their cores to the neighbours (docs/performance.md measured both:
it depends on the machine, not on the server's own queue). So
``onnx_allow_spinning=auto`` keeps two sessions of the same model:

- a batch that runs while other requests are in the server (any model) takes
  the sleeping session: spinning would steal the cores that decode them;
- a batch of one image that is alone takes the session a ``SpinChooser`` picks:
  the one whose recent lone runs were faster (median wall time), and every
  ``explore_every``-th lone run the other one, so the choice follows the machine.

The second session costs memory (the weights twice) and is only made in ``auto``.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from care_serve.backends.base import Backend

__all__ = ["AdaptiveSpinningBackend", "SpinChooser"]

log = logging.getLogger(__name__)


class SpinChooser:
    """Picks spinning or not for lone runs from their measured wall times.

    Until each side has ``warmup`` samples the sides alternate. Then the side
    with the lower median of its last ``window`` samples wins, except that
    every ``explore_every``-th choice goes to the other side so its figure
    stays current. Once chosen, a side keeps winning until the other is faster
    by more than ``margin`` (a share of its median), so near-equal sides do not
    flip back and forth. Thread-safe.
    """

    def __init__(
        self, window: int = 9, warmup: int = 3, explore_every: int = 16, margin: float = 0.05
    ) -> None:
        if window < 1 or warmup < 1 or warmup > window or explore_every < 2:
            raise ValueError(
                "need window >= warmup >= 1 and explore_every >= 2, got "
                f"window={window}, warmup={warmup}, explore_every={explore_every}"
            )
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {margin}")
        self.warmup, self.explore_every, self.margin = warmup, explore_every, margin
        self._best: bool | None = None
        self._samples: dict[bool, deque[float]] = {
            True: deque(maxlen=window),
            False: deque(maxlen=window),
        }
        self._choices = 0
        self._lock = threading.Lock()

    def median(self, spinning: bool) -> float | None:
        """Median wall time (s) of the recent lone runs of one side; None before any."""
        with self._lock:
            samples = list(self._samples[spinning])
        return statistics.median(samples) if samples else None

    def preferred(self) -> bool | None:
        """The side that measures faster (True = spinning); None until both are warmed up."""
        with self._lock:
            return self._preferred()

    def _preferred(self) -> bool | None:
        spin, sleep = self._samples[True], self._samples[False]
        if len(spin) < self.warmup or len(sleep) < self.warmup:
            return None
        medians = {True: statistics.median(spin), False: statistics.median(sleep)}
        if self._best is None:
            self._best = medians[True] < medians[False]
        elif medians[not self._best] < (1.0 - self.margin) * medians[self._best]:
            self._best = not self._best
        return self._best

    def choose(self) -> bool:
        """The side the next lone run should take (True = the spinning session)."""
        with self._lock:
            self._choices += 1
            best = self._preferred()
            if best is None:
                return len(self._samples[True]) < len(self._samples[False])
            if self._choices % self.explore_every == 0:
                return not best
            return best

    def record(self, spinning: bool, seconds: float) -> bool | None:
        """The wall time of a lone run on one side; returns ``preferred()`` after it."""
        with self._lock:
            self._samples[spinning].append(seconds)
            return self._preferred()


class AdaptiveSpinningBackend:
    """Two sessions of one model, spinning and sleeping; see the module docstring.

    ``alone`` says whether the batch about to run is the only request in the
    server; ``label`` names the model in the log line written when the choice
    changes. ``run`` is called from the model's one compute thread.
    """

    def __init__(
        self,
        spinning: Backend,
        sleeping: Backend,
        alone: Callable[[], bool],
        chooser: SpinChooser | None = None,
        label: str = "model",
    ) -> None:
        self._spinning, self._sleeping, self._alone = spinning, sleeping, alone
        self.chooser = chooser or SpinChooser()
        self.name = f"{sleeping.name}, spinning when alone and measured faster"
        self.output_names = list(sleeping.output_names)
        self._preferred: bool | None = None
        self._label = label

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.shape[0] != 1 or not self._alone():
            return self._sleeping.run(batch)
        spin = self.chooser.choose()
        started = time.perf_counter()
        out = (self._spinning if spin else self._sleeping).run(batch)
        preferred = self.chooser.record(spin, time.perf_counter() - started)
        if preferred is not None and preferred != self._preferred:
            self._preferred = preferred
            log.info(
                "%s: lone requests now take the %s session (median %.1f ms spinning, "
                "%.1f ms sleeping)",
                self._label,
                "spinning" if preferred else "sleeping",
                1e3 * (self.chooser.median(True) or 0.0),
                1e3 * (self.chooser.median(False) or 0.0),
            )
        return out

    def close(self) -> None:
        self._spinning.close()
        self._sleeping.close()

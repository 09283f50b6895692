"""``onnx_allow_spinning=auto``: a spinning session for lone requests while it measures faster."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from care_serve.backends import adaptive_spinning
from care_serve.backends.adaptive_spinning import AdaptiveSpinningBackend, SpinChooser
from care_serve.settings import Settings
from tests.helpers.numerics import rel_error
from tests.helpers.stacks import serving_stack


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeBackend:
    """Takes ``seconds`` of the fake clock per run and says which one ran."""

    def __init__(self, label: float, seconds: float, clock: FakeClock) -> None:
        self.label, self.seconds, self.clock = label, seconds, clock
        self.name, self.output_names = f"fake {label}", ["out"]
        self.runs: list[int] = []
        self.closed = False

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.clock.now += self.seconds
        self.runs.append(batch.shape[0])
        return {"out": np.full((batch.shape[0], 1), self.label, np.float32)}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(adaptive_spinning.time, "perf_counter", fake)
    return fake


def test_chooser_alternates_until_warm_then_prefers_the_faster_and_keeps_exploring() -> None:
    chooser = SpinChooser(window=5, warmup=2, explore_every=4)
    times = {True: 0.010, False: 0.020}  # spinning is faster here
    picks = []
    for _ in range(4):  # warm-up: the sides take turns
        spin = chooser.choose()
        picks.append(spin)
        chooser.record(spin, times[spin])
    assert sorted(picks) == [False, False, True, True]
    assert chooser.preferred() is True
    picks = []
    for _ in range(12):
        spin = chooser.choose()
        picks.append(spin)
        chooser.record(spin, times[spin])
    # every 4th choice (counted from the first) explores the slower side
    assert picks.count(False) == 3 and picks.count(True) == 9
    assert chooser.median(True) == pytest.approx(0.010)


def test_chooser_follows_the_machine_when_spinning_becomes_slow() -> None:
    chooser = SpinChooser(window=3, warmup=1, explore_every=2)
    times = {True: 0.005, False: 0.020}
    for _ in range(6):
        spin = chooser.choose()
        chooser.record(spin, times[spin])
    assert chooser.preferred() is True
    times[True] = 0.080  # neighbours arrived: spinning now loses its cores
    for _ in range(12):
        spin = chooser.choose()
        chooser.record(spin, times[spin])
    assert chooser.preferred() is False


def test_chooser_keeps_its_side_while_the_other_is_not_clearly_faster() -> None:
    chooser = SpinChooser(window=3, warmup=3, explore_every=2, margin=0.05)
    for seconds in (0.0100, 0.0100, 0.0100):
        chooser.record(True, seconds)
    for seconds in (0.0105, 0.0105, 0.0105):
        chooser.record(False, seconds)
    assert chooser.preferred() is True
    for _ in range(3):  # sleeping now 2 % faster: inside the margin, no flip
        chooser.record(False, 0.0098)
    assert chooser.preferred() is True
    for _ in range(3):  # 10 % faster: it wins
        chooser.record(False, 0.0090)
    assert chooser.preferred() is False


def test_chooser_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="window >= warmup"):
        SpinChooser(window=2, warmup=3)
    with pytest.raises(ValueError, match="explore_every >= 2"):
        SpinChooser(explore_every=1)
    with pytest.raises(ValueError, match="margin"):
        SpinChooser(margin=1.0)


def test_backend_spins_only_for_a_lone_batch_of_one(clock: FakeClock) -> None:
    spinning, sleeping = FakeBackend(1.0, 0.004, clock), FakeBackend(0.0, 0.012, clock)
    alone = [True]
    backend = AdaptiveSpinningBackend(
        spinning, sleeping, lambda: alone[0], SpinChooser(window=5, warmup=2, explore_every=8)
    )
    one = np.zeros((1, 3, 4, 4), np.float32)
    answers = [float(backend.run(one)["out"][0, 0]) for _ in range(12)]
    assert answers[:4].count(1.0) == 2  # warm-up: two runs each
    assert answers[4:].count(1.0) == 7  # then spinning (faster), one exploration of the other
    assert backend.chooser.preferred() is True
    spun = len(spinning.runs)
    backend.run(np.zeros((2, 3, 4, 4), np.float32))  # a batch of two: never spins
    alone[0] = False
    backend.run(one)  # other requests in the server: never spins
    assert len(spinning.runs) == spun and sleeping.runs[-2:] == [2, 1]
    assert backend.output_names == ["out"] and "fake 0.0" in backend.name
    backend.close()
    assert spinning.closed and sleeping.closed


@pytest.mark.parametrize(
    ("given", "expected"),
    [("1", "on"), ("true", "on"), (True, "on"), ("0", "off"), (False, "off"), ("AUTO", "auto")],
)
def test_spinning_setting_takes_the_old_boolean_spellings(given: object, expected: str) -> None:
    assert Settings(onnx_allow_spinning=given).onnx_allow_spinning == expected  # type: ignore[arg-type]


def test_spinning_setting_says_what_it_accepts() -> None:
    with pytest.raises(ValidationError, match="'off', 'on' or 'auto'"):
        Settings(onnx_allow_spinning="sometimes")  # type: ignore[arg-type]


def _jpeg() -> bytes:
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def answers_off() -> Iterator[list[float]]:
    with serving_stack(models=["shapes-classifier"], onnx_allow_spinning="off") as stack:
        reply = httpx.post(f"{stack.http_url}/classify?top_k=3", files={"image": _jpeg()})
        assert reply.status_code == 200, reply.text
        yield [p["probability"] for p in reply.json()["predictions"]]


def test_auto_serves_the_same_answers_and_measures_both_sessions(
    answers_off: list[float],
) -> None:
    with serving_stack(models=["shapes-classifier"], onnx_allow_spinning="auto") as stack:
        loaded = stack.stack.manager.representative("shapes-classifier")
        assert loaded is not None
        wide = loaded.backend.wide
        assert isinstance(wide, AdaptiveSpinningBackend)
        for _ in range(8):  # one client after another: each request is alone
            reply = httpx.post(f"{stack.http_url}/classify?top_k=3", files={"image": _jpeg()})
            assert reply.status_code == 200, reply.text
            scores = [p["probability"] for p in reply.json()["predictions"]]
            assert rel_error(np.asarray(scores), np.asarray(answers_off)) < 1e-5
        chooser = wide.chooser
        assert chooser.median(True) is not None and chooser.median(False) is not None
        assert stack.stack.manager._images_in_flight == 0

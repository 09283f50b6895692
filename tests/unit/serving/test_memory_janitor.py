"""The memory janitor trims the heap only when RSS has grown and nothing is in flight."""

from __future__ import annotations

import asyncio

from care_serve.serving.memory import (
    SETTLE_TRIMS,
    MemoryJanitor,
    release_garbage_and_free_memory,
    rss_mb,
)


class World:
    def __init__(self) -> None:
        self.rss = 500.0
        self.inflight = 0
        self.trims = 0

    def trim(self) -> None:
        self.trims += 1
        self.rss = 510.0  # what the OS got back


def test_it_trims_once_rss_has_grown_and_the_server_is_idle() -> None:
    world = World()
    janitor = MemoryJanitor(lambda: world.inflight, trim=world.trim, rss=lambda: world.rss)

    async def main() -> list[bool]:
        results = [await janitor.check()]  # at rest: nothing to do
        world.rss, world.inflight = 800.0, 2
        results.append(await janitor.check())  # grown, but requests are running
        world.inflight = 0
        results.append(await janitor.check())  # grown and idle: trim
        results.append(await janitor.check())  # back at rest
        world.rss = 530.0
        results.append(await janitor.check())  # less than 5 % above the last trim (510)
        world.rss = 540.0
        results.append(await janitor.check())  # 5 % or more: trim
        return results

    assert asyncio.run(main()) == [False, False, True, False, False, True]
    assert world.trims == janitor.trims == 2


def test_a_failing_trim_is_logged_not_raised() -> None:
    def broken() -> None:
        raise OSError("no")

    janitor = MemoryJanitor(lambda: 0, trim=broken, rss=iter([100.0, 900.0]).__next__)
    assert asyncio.run(janitor.check()) is False


def test_rss_is_read_from_proc() -> None:
    value = rss_mb()
    assert value is not None and 10 < value < 100_000


class _Holder:
    """A request-like object that ends up in a reference cycle with a large buffer."""

    def __init__(self) -> None:
        self.buffer = bytearray(8 * 2**20)
        self.me = self


def test_the_release_frees_cyclic_garbage_the_collector_has_not_reached() -> None:
    import gc
    import weakref

    enabled = gc.isenabled()
    gc.disable()  # as in an idle server: nothing allocates, so no collection runs
    try:
        holder = _Holder()
        alive = weakref.ref(holder)
        del holder
        assert alive() is not None  # only the cycle keeps it
        release_garbage_and_free_memory()
        assert alive() is None
    finally:
        if enabled:
            gc.enable()


def test_a_trim_that_leaves_rss_grown_keeps_the_resting_level_for_a_few_tries() -> None:
    """A trim while a large message is still being received must not make its size the
    new resting level; growth that stays through SETTLE_TRIMS trims does become it."""
    world = World()
    janitor = MemoryJanitor(lambda: 0, trim=lambda: None, rss=lambda: world.rss)

    async def main() -> list[bool]:
        world.rss = 800.0  # garbage and a message in transit: the trim frees nothing
        results = [await janitor.check()]
        world.rss = 505.0  # freed by the time of the next check: nothing more to do
        results.append(await janitor.check())
        world.rss = 700.0  # a lasting growth (say, a model loaded)
        results += [await janitor.check() for _ in range(SETTLE_TRIMS + 1)]
        return results

    assert asyncio.run(main()) == [True, False] + [True] * SETTLE_TRIMS + [False]

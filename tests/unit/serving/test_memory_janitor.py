"""The memory janitor trims the heap only when RSS has grown and nothing is in flight."""

from __future__ import annotations

import asyncio

from care_serve.serving.memory import MemoryJanitor, rss_mb


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
        results.append(await janitor.check())  # less than 32 MB above the last trim
        return results

    assert asyncio.run(main()) == [False, False, True, False, False]
    assert world.trims == janitor.trims == 1


def test_a_failing_trim_is_logged_not_raised() -> None:
    def broken() -> None:
        raise OSError("no")

    janitor = MemoryJanitor(lambda: 0, trim=broken, rss=iter([100.0, 900.0]).__next__)
    assert asyncio.run(janitor.check()) is False


def test_rss_is_read_from_proc() -> None:
    value = rss_mb()
    assert value is not None and 10 < value < 100_000

"""The streams of a server: started from the configuration, added and removed at run time.

Streams of ``store.json`` and of ``--streams FILE`` start with the server; the
API adds and removes others (with the admin credential; they are not written
back to any file). A camera being down is a state of its stream, never of the
server: readiness does not depend on streams.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from care_serve.errors import ConfigurationError, Conflict, NotFound, validation_problems
from care_serve.serving.data_plane import DataPlane
from care_serve.store.streams import StreamSpec
from care_serve.streams.stream import Stream, StreamStatus

__all__ = ["StreamManager", "read_streams_file"]

log = logging.getLogger(__name__)


class _StreamsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    streams: tuple[StreamSpec, ...] = ()


def read_streams_file(path: Path) -> tuple[StreamSpec, ...]:
    """The streams of a ``--streams`` file, or ``ConfigurationError`` saying what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(
            f"streams file {path} (--streams): not readable JSON ({exc})"
        ) from None
    if isinstance(data, list):
        data = {"streams": data}
    try:
        return _StreamsFile.model_validate(data).streams
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise ConfigurationError(f"streams file {path} (--streams): {problems}") from None


class StreamManager:
    """Every running stream, by name."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.settings = plane.settings
        self._streams: dict[str, Stream] = {}
        self._from_file: tuple[StreamSpec, ...] = ()

    def check(self) -> None:
        """Read ``--streams`` before the server starts: a bad file stops the start."""
        if self.settings.streams is not None:
            self._from_file = read_streams_file(self.settings.streams)

    async def start(self) -> None:
        """Start the streams of ``store.json`` and of ``--streams``."""
        specs = [*self.plane.manager.config.streams, *self._from_file]
        for spec in specs:
            problem = self.target_problem(spec)
            if problem:
                log.warning("stream %s: %s; its frames fail until it exists", spec.name, problem)
            try:
                await self.add(spec, check_target=False)
            except Conflict as exc:
                log.error("stream %s not started: %s", spec.name, exc.message)

    async def stop(self) -> None:
        """Stop every stream."""
        for name in list(self._streams):
            stream = self._streams.pop(name)
            await stream.stop()

    def target_problem(self, spec: StreamSpec) -> str | None:
        """Why the stream's pipeline or model does not exist (None when it does)."""
        if spec.pipeline is not None:
            if spec.pipeline not in self.plane.pipelines.specs():
                known = ", ".join(sorted(self.plane.pipelines.specs())) or "none"
                return f"no pipeline named {spec.pipeline!r} (pipelines: {known})"
            return None
        assert spec.model is not None
        if self.plane.manager.serving_task(spec.model) is None:
            serving = ", ".join(self.plane.serving_models()) or "none"
            return f"no model named {spec.model!r} is serving (serving: {serving})"
        return None

    async def add(self, spec: StreamSpec, *, check_target: bool = True) -> StreamStatus:
        """Start a stream; ``Conflict`` when the name is taken or the limit reached."""
        if spec.name in self._streams:
            raise Conflict(f"a stream named {spec.name!r} exists; remove it first or pick a name")
        if len(self._streams) >= self.settings.max_streams:
            raise Conflict(
                f"{len(self._streams)} streams run, the limit (--max-streams) is "
                f"{self.settings.max_streams}; remove one first"
            )
        if check_target:
            problem = self.target_problem(spec)
            if problem is not None:
                raise NotFound(problem)
        stream = Stream(spec, self.plane, self.plane.metrics)
        self._streams[spec.name] = stream
        await stream.start()
        log.info(
            "stream %s: %s -> %s at most %.3g fps, %d sinks",
            spec.name,
            stream.describe_source(),
            spec.target,
            spec.max_fps,
            len(spec.sinks),
        )
        return stream.status()

    async def remove(self, name: str) -> StreamStatus:
        """Stop and forget stream ``name``."""
        stream = self.get(name)
        del self._streams[name]
        await stream.stop()
        log.info("stream %s removed", name)
        return stream.status()

    def get(self, name: str) -> Stream:
        stream = self._streams.get(name)
        if stream is None:
            known = ", ".join(sorted(self._streams)) or "none"
            raise NotFound(f"no stream named {name!r}; streams: {known}")
        return stream

    def list(self) -> list[StreamStatus]:
        return [self._streams[name].status() for name in sorted(self._streams)]

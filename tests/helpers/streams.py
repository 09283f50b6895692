"""Talking to a test stack's streams: add, read state, collect server-sent events."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from care_serve.server import BackgroundStack
from tests.helpers.scenes import SCENES, ShapeScene
from tests.helpers.stacks import ADMIN
from tests.helpers.waiting import wait_for

__all__ = ["StreamClient", "scene_of"]


def scene_of(result: dict[str, Any], scenes: tuple[ShapeScene, ...] = SCENES) -> str | None:
    """The scene whose labels a pipeline result shows (detector and classifier agreeing)."""
    detections = result.get("detections", [])
    labels = sorted(d["label"] for d in detections)
    named = sorted(
        d["classification"]["predictions"][0]["label"]
        for d in detections
        if d.get("classification")
    )
    if labels != named:
        return None
    matches = [s.name for s in scenes if s.labels == labels]
    return matches[0] if len(matches) == 1 else None


class StreamClient:
    """The REST stream API of one stack (the admin credential is ``tests.helpers.stacks.ADMIN``)."""

    def __init__(self, stack: BackgroundStack) -> None:
        self.url = stack.http_url
        self.http = httpx.Client(base_url=self.url, timeout=15)

    def add(self, **spec: Any) -> httpx.Response:
        return self.http.post("/streams", json=spec, headers=ADMIN)

    def remove(self, name: str) -> httpx.Response:
        return self.http.delete(f"/streams/{name}", headers=ADMIN)

    def status(self, name: str) -> dict[str, Any]:
        answer = self.http.get(f"/streams/{name}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def wait_state(self, name: str, state: str, timeout_s: float = 30.0) -> dict[str, Any]:
        wait_for(lambda: self.status(name)["state"] == state, f"{name} {state}", timeout_s)
        return self.status(name)

    def events(self, name: str, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """The next ``count`` events of stream ``name`` over SSE (fails after ``timeout_s``)."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        with self.http.stream(
            "GET", f"/streams/{name}/events", timeout=httpx.Timeout(timeout_s, read=timeout_s)
        ) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data:"):
                    found.append(json.loads(line[5:]))
                if len(found) >= count or time.monotonic() > deadline:
                    break
        assert len(found) >= count, f"{len(found)} of {count} events within {timeout_s} s"
        return found

    def close(self) -> None:
        for stream in self.http.get("/streams").json()["streams"]:
            self.remove(stream["name"])
        self.http.close()

"""Streams over REST: list, add (admin), remove (admin), events (SSE), frame and preview."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from care_serve.errors import NotFound
from care_serve.store.streams import STREAM_NAME_PATTERN, StreamSpec
from care_serve.streams.manager import StreamManager
from care_serve.streams.stream import StreamStatus
from care_serve.transports.rest.routers.inference import errors

__all__ = ["router"]

router = APIRouter(tags=["streams"])

NameP = Path(description="The stream's name.", pattern=STREAM_NAME_PATTERN, max_length=64)
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing a quiet feed
BOUNDARY = "care-serve-frame"


class StreamList(BaseModel):
    streams: list[StreamStatus]


def _streams(request: Request) -> StreamManager:
    manager: StreamManager = request.app.state.streams
    return manager


@router.get("/streams", response_model=StreamList, summary="Every stream and its state")
async def list_streams(request: Request) -> StreamList:
    return StreamList(streams=_streams(request).list())


@router.post(
    "/streams",
    response_model=StreamStatus,
    status_code=201,
    responses=errors(400, 401, 403, 404, 409),
    summary="Start a stream (admin credential)",
)
async def add_stream(request: Request, spec: StreamSpec) -> StreamStatus:
    return await _streams(request).add(spec)


@router.get(
    "/streams/{name}",
    response_model=StreamStatus,
    responses=errors(404),
    summary="One stream: state, fps in and out, dropped frames, lag, sinks",
)
async def get_stream(request: Request, name: str = NameP) -> StreamStatus:
    return _streams(request).get(name).status()


@router.delete(
    "/streams/{name}",
    response_model=StreamStatus,
    responses=errors(401, 403, 404),
    summary="Stop and remove a stream (admin credential)",
)
async def remove_stream(request: Request, name: str = NameP) -> StreamStatus:
    return await _streams(request).remove(name)


@router.get(
    "/streams/{name}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **errors(404)},
    summary="The stream's events as server-sent events (one 'data:' line per event)",
)
async def stream_events(request: Request, name: str = NameP) -> StreamingResponse:
    stream = _streams(request).get(name)

    async def feed() -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        with stream.subscription() as events:
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    continue
                if event is None:
                    return
                data = event.model_dump_json()
                yield f"id: {event.frame}\nevent: frame\ndata: {data}\n\n".encode()

    return StreamingResponse(
        feed(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/streams/{name}/frame.jpg",
    responses={200: {"content": {"image/jpeg": {}}}, **errors(404)},
    summary="The newest processed frame with its boxes and labels drawn",
)
async def stream_frame(request: Request, name: str = NameP) -> Response:
    stream = _streams(request).get(name)
    jpeg = await stream.frame_jpeg()
    if jpeg is None:
        raise NotFound(f"stream {name!r} has processed no frame yet (state {stream.state})")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get(
    "/streams/{name}/preview.mjpeg",
    responses={
        200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}},
        **errors(404),
    },
    summary="A live MJPEG preview of the processed frames, boxes and labels drawn",
)
async def stream_preview(request: Request, name: str = NameP) -> StreamingResponse:
    stream = _streams(request).get(name)

    async def parts() -> AsyncIterator[bytes]:
        jpeg = await stream.frame_jpeg()
        while not stream.stopped:
            if jpeg is not None:
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n"
                )
                yield head.encode() + jpeg + b"\r\n"
            jpeg = await stream.next_frame_jpeg(KEEPALIVE_S)
            if jpeg is None and await request.is_disconnected():
                return

    return StreamingResponse(
        parts(),
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store"},
    )

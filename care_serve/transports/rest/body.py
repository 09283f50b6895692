"""Reading the image of a request: a multipart file field or the raw body, size-limited."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from care_serve.errors import InvalidInput, PayloadTooLarge

__all__ = ["FILE_FIELDS", "read_image_bytes", "read_limited"]

FILE_FIELDS = ("file", "image")
MULTIPART_OVERHEAD = 64 * 1024


async def read_limited(request: Request, limit: int, setting: str = "max_image_bytes") -> bytes:
    """The whole body, or ``PayloadTooLarge`` naming ``setting`` once it passes ``limit``."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(
            f"request body is {length} bytes; the limit is {limit} bytes ({setting})"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes ({setting})")
    return bytes(body)


async def read_image_bytes(request: Request, max_bytes: int) -> bytes:
    """The image bytes of ``request`` (multipart field ``file``/``image`` or raw body)."""
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith("multipart/form-data"):
        return await read_limited(request, max_bytes)
    body = await read_limited(request, max_bytes + MULTIPART_OVERHEAD)

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=2, max_fields=16)
    except Exception as exc:  # malformed multipart
        raise InvalidInput(f"cannot parse the multipart body: {exc}") from None
    try:
        parts = [(name, part) for name in FILE_FIELDS for part in form.getlist(name)]
        if len(parts) > 1:
            raise InvalidInput(
                f"send exactly one image: the multipart body has {len(parts)} image fields "
                f"({', '.join(name for name, _ in parts)}); use one field "
                f"{' or '.join(map(repr, FILE_FIELDS))}"
            )
        for name, part in parts:
            if isinstance(part, UploadFile):
                data = await part.read()
                if len(data) > max_bytes:
                    raise PayloadTooLarge(
                        f"image is {len(data)} bytes; the limit is {max_bytes} bytes"
                    )
                return data
            raise InvalidInput(f"multipart field {name!r} must be a file upload, not text")
    finally:
        await form.close()
    raise InvalidInput(
        f"multipart body has no file field named {' or '.join(map(repr, FILE_FIELDS))}"
    )

"""Reading the image of a request: a multipart file field or the raw body, size-limited."""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from care_serve.errors import InvalidInput, PayloadTooLarge

__all__ = ["FILE_FIELDS", "read_image_bytes", "read_limited"]

FILE_FIELDS = ("file", "image")
MULTIPART_OVERHEAD = 64 * 1024  # bytes of a multipart body besides its image
MAX_MULTIPART_PARTS = 18  # the image and a few other fields at most


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
    return await _MultipartImage(request.headers.get("content-type", ""), max_bytes).read(request)


class _MultipartImage:
    """The one image of a multipart body, parsed as it arrives.

    The image (the first part named ``file`` or ``image``, a file upload) may have
    ``max_bytes`` bytes (``max_image_bytes``), everything else in the body (other fields,
    part headers, boundaries) ``MULTIPART_OVERHEAD``. An image over its limit is measured,
    not kept, until it ends or the body passes both limits together, so the 413 quotes the
    image's size and the setting it exceeds; the body is never held beyond those limits.
    """

    def __init__(self, content_type: str, max_bytes: int) -> None:
        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            raise InvalidInput("cannot parse the multipart body: its Content-Type has no boundary")
        self.max_bytes = max_bytes
        self.image = bytearray()
        self.image_size = 0  # bytes of the image part so far (kept only up to max_bytes)
        self.image_ended = False
        self.in_image = False
        self.names: list[str] = []  # the image-named parts, in order
        self.parts = 0
        self.ended = False
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    async def read(self, request: Request) -> bytes:
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                self.parser.write(chunk)
                if received - self.image_size > MULTIPART_OVERHEAD:
                    raise PayloadTooLarge(
                        f"the multipart body has more than {MULTIPART_OVERHEAD} bytes besides "
                        "the image (other fields, part headers); send the image alone in a "
                        f"field {' or '.join(map(repr, FILE_FIELDS))}"
                    )
                if self.image_size > self.max_bytes and (
                    self.image_ended or received > self.max_bytes + MULTIPART_OVERHEAD
                ):
                    raise PayloadTooLarge(
                        f"image is {'' if self.image_ended else 'more than '}{self.image_size} "
                        f"bytes; the limit is {self.max_bytes} bytes (max_image_bytes)"
                    )
            self.parser.finalize()
        except InvalidInput:
            raise
        except Exception as exc:  # malformed multipart
            raise InvalidInput(f"cannot parse the multipart body: {exc}") from None
        if not self.names:
            raise InvalidInput(
                f"multipart body has no file field named {' or '.join(map(repr, FILE_FIELDS))}"
            )
        if not self.ended:
            raise InvalidInput("cannot parse the multipart body: it ends before its last boundary")
        return bytes(self.image)

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_MULTIPART_PARTS:
            raise InvalidInput(
                f"cannot parse the multipart body: more than {MAX_MULTIPART_PARTS} parts"
            )
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("latin-1")
        self.in_image = name in FILE_FIELDS
        if not self.in_image:
            return
        self.names.append(name)
        if len(self.names) > 1:
            raise InvalidInput(
                f"send exactly one image: the multipart body has {len(self.names)} image fields "
                f"({', '.join(self.names)}); use one field "
                f"{' or '.join(map(repr, FILE_FIELDS))}"
            )
        if b"filename" not in options:
            raise InvalidInput(f"multipart field {name!r} must be a file upload, not text")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_image:
            return
        self.image_size += end - start
        if self.image_size <= self.max_bytes:
            self.image += data[start:end]
        elif self.image:
            self.image = bytearray()  # over the limit: measured from now on, not kept

    def _part_end(self) -> None:
        if self.in_image:
            self.image_ended = True
        self.in_image = False

    def _end(self) -> None:
        self.ended = True

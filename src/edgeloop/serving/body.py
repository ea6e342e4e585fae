"""Request bodies: read at most ``limit`` bytes, and undo ``Content-Encoding`` (gzip, deflate).

The limit is checked twice: against ``Content-Length`` before a byte is read, and while the body
streams in (a chunked body has no length). A compressed body is inflated in one bounded call,
so a small "zip bomb" cannot expand past the limit either.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

from edgeloop.serving.errors import BadRequestError, PayloadTooLargeError

# zlib's wbits: 16 + MAX_WBITS reads a gzip header, MAX_WBITS a zlib (RFC 1950) stream; HTTP's
# "deflate" is the zlib format (RFC 9110 8.4.1.2).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed.

    Raises:
        PayloadTooLargeError: the body (or what it inflates to) exceeds ``limit`` bytes.
        BadRequestError: a bad Content-Length, an unknown Content-Encoding or a corrupt stream.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequestError(f"Content-Length {declared[:40]!r} is not a byte count")
        if int(declared) > limit:
            raise _too_large(int(declared), limit)
    chunks, size, more = [], 0, True
    while more:  # ASGI messages straight from the server: no stream generator in between
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise BadRequestError("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    return body if encoding in ("", "identity") else _inflate(body, encoding, limit)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise BadRequestError(
            f"Content-Encoding {encoding[:40]!r} is not supported; expected gzip or deflate",
            hint="send the body uncompressed, or gzip/deflate-compressed",
        )
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequestError(f"the {encoding} body is corrupt: {exc}") from exc
    if len(data) > limit or inflater.unconsumed_tail:
        raise _too_large(len(data), limit, note=f" once {encoding}-decompressed")
    return data


def _too_large(size: int, limit: int, note: str = "") -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is {'over ' if note else ''}{size} bytes{note}, above the server's "
        f"limit of {limit} bytes",
        hint="send smaller batches, or start the server with a larger --max-body-mb",
    )

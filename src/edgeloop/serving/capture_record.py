"""A captured row as a record: its tensors kept as arrays until a sink encodes them.

:class:`Kept` is what :class:`~edgeloop.serving.capture_sink.Capturer` hands its sinks: the
record's fields, the row's tensors (not yet encoded) and its exact encoded size, known before
the encoding, which sinks do off the event loop (base64 of the little-endian bytes in JSON).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

Record = dict[str, Any]
Array = np.ndarray[Any, Any]


def iso_utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


# What iso_utc writes ("2026-12-07T09:52:04.590+00:00") is this long for every year from 1000
# to 9999: a kept row's size is known before its time is written (Kept.at, written off the loop).
_ISO_LEN = len(iso_utc(0.0))
_ISO_PLACEHOLDER = "0" * _ISO_LEN


def one_row(array: Array, row: int, rows: int) -> Array:
    """One row of a tensor (batch axis 1), little-endian and C-ordered. A batch of ``rows``
    rows is copied from (the request's arrays are not kept alive by a capture of one of its
    rows); a batch of one, already little-endian and C-ordered, is that row: it is kept as it
    is (the request is done with it; a copy would cost as much as the row)."""
    one = array[row : row + 1] if array.ndim else array.reshape(1)
    if rows == 1 and one.flags.c_contiguous and one.dtype.byteorder in "=<|":
        return one
    return np.array(one, dtype=one.dtype.newbyteorder("<"), order="C", copy=True)


def _b64_len(nbytes: int) -> int:
    return 4 * ((nbytes + 2) // 3)


class Kept:
    """A kept row, its tensors not yet encoded: :meth:`record` and :meth:`encoded` do that
    work (the base64 of the inputs, the JSON), so a sink runs them off the event loop.

    A tensor in the record: ``{"name", "datatype", "shape", "b64"}``, its values as base64 of
    their little-endian bytes (4x smaller than a JSON list of floats, ~20x cheaper to encode;
    decode with ``np.frombuffer(base64.b64decode(t["b64"]), t["datatype"]).reshape(t["shape"])``).
    ``size`` is the exact length of :meth:`encoded`, known before encoding.
    """

    __slots__ = ("at", "head", "size", "tensors")

    def __init__(
        self, head: Record, tensors: dict[str, list[tuple[str, Array]]], at: float | None = None
    ) -> None:
        self.head = head
        self.tensors = tensors
        self.at = at  # written as the record's "at" (RFC 3339) by record() / encoded()
        shell = {**head, **{key: [_shell(n, a) for n, a in ts] for key, ts in tensors.items()}}
        if at is not None:
            shell["at"] = _ISO_PLACEHOLDER
        self.size = len(orjson.dumps(shell)) + sum(
            _b64_len(a.nbytes) for ts in tensors.values() for _, a in ts
        )

    def _fields(self) -> Record:
        out = dict(self.head)
        if self.at is not None:
            out["at"] = iso_utc(self.at)
        return out

    def record(self) -> Record:
        """The whole record, tensors encoded (call it off the event loop)."""
        out = self._fields()
        for key, ts in self.tensors.items():
            out[key] = [{**_shell(n, a), "b64": _b64(a).decode()} for n, a in ts]
        return out

    def encoded(self) -> bytes:
        """:meth:`record` as JSON (``size`` bytes). The base64 goes into the JSON as it is
        (a fragment: base64 needs no escaping), not through a str and orjson's escaping scan."""
        out = self._fields()
        for key, ts in self.tensors.items():
            out[key] = [{**_shell(n, a), "b64": orjson.Fragment(b'"' + _b64(a) + b'"')}
                        for n, a in ts]  # fmt: skip
        return orjson.dumps(out)


def _b64(array: Array) -> bytes:
    """The base64 of a C-ordered array's bytes, read in place (no copy of the bytes first)."""
    return base64.b64encode(array.data.cast("B"))


def _shell(name: str, array: Array) -> dict[str, Any]:
    return {"name": name, "datatype": array.dtype.str, "shape": list(array.shape), "b64": ""}

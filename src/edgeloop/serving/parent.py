"""A parent tier: another Open Inference Protocol v2 server that a cascade escalates to.

Rows go up as a JSON infer request (the part of the protocol every v2 server speaks) and come
back as JSON tensors. The client has a finite timeout and is created on first use in the
server's event loop. Every way the parent can fail (unreachable, timed out, an error status, an
answer that is not a v2 infer response) is a :class:`TransportError`, which the cascade turns
into a counted fallback.

A parent that failed is skipped for a while (a circuit breaker): 1 s after the first failure,
doubling with each failure in a row up to 30 s. While skipped, a call fails at once instead of
waiting out the timeout, so a hung parent costs one request the timeout, not every request.
When the pause is over one call probes the parent (others still skip); a success closes the
breaker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
import orjson

from edgeloop.core.errors import TransportError
from edgeloop.core.tls import client_verify
from edgeloop.serving.oip import DATATYPES

_DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}
_HINT = "check the parent tier is up (GET .../v2/health/ready) and serves that model"


class ParentTier:
    """POSTs rows to ``url`` (``.../v2/models/NAME[/versions/V]/infer``)."""

    def __init__(
        self, url: str, timeout_s: float, *, pause_s: float = 1.0, max_pause_s: float = 30.0
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.pause_s = pause_s
        self.max_pause_s = max_pause_s
        self.failures = 0  # in a row
        self._skip_until = 0.0
        self._probing = False
        self._last_error = ""
        self._client: httpx.AsyncClient | None = None

    def _check_breaker(self) -> None:
        now = time.monotonic()
        if self.failures and (now < self._skip_until or self._probing):
            wait = max(0.0, self._skip_until - now)
            raise TransportError(
                f"parent tier {self.url} skipped for another {wait:.1f} s after "
                f"{self.failures} failure(s) in a row (last: {self._last_error})",
                hint=_HINT,
            )

    def _failed(self, exc: TransportError) -> None:
        self.failures += 1
        pause = min(self.max_pause_s, self.pause_s * 2 ** (self.failures - 1))
        self._skip_until = time.monotonic() + pause
        self._last_error = exc.message

    async def infer(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray]:
        """The parent's outputs for ``feeds``.

        Raises:
            TransportError: the parent is unreachable, timed out, answered an error status or
                something that is not an infer response, or it is skipped after failing.
        """
        self._check_breaker()
        self._probing = self.failures > 0
        try:
            outputs = await self._post(feeds)
        except TransportError as exc:
            self._failed(exc)
            raise
        finally:
            self._probing = False
        self.failures = 0
        return outputs

    async def _post(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray]:
        if self._client is None:
            # A parent over HTTPS is checked against the process's CA bundle (core/tls.py).
            verify = client_verify(control=False)
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), verify=verify)
        body = orjson.dumps({"inputs": [_tensor(n, v) for n, v in feeds.items()]})
        try:
            response = await self._client.post(
                self.url, content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise TransportError(
                f"parent tier {self.url} did not answer: {type(exc).__name__}: {exc}",
                hint=_HINT,
            ) from exc
        if response.status_code != 200:
            raise TransportError(
                f"parent tier {self.url} answered {response.status_code}: {response.text[:200]!r}",
                hint=_HINT,
            )
        return decode_outputs(self.url, response.content)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _tensor(name: str, value: np.ndarray[Any, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(value.shape),
        "datatype": _DATATYPE_OF[value.dtype.newbyteorder("<")],
        "data": value.reshape(-1).tolist(),
    }


def decode_outputs(url: str, content: bytes) -> dict[str, np.ndarray]:
    """The tensors of a JSON infer response (pure).

    Raises:
        TransportError: not JSON, no ``outputs`` list, or a tensor whose datatype, shape and
            data do not fit together.
    """
    try:
        doc = orjson.loads(content)
        outputs = {}
        for entry in doc["outputs"]:
            dtype = DATATYPES[entry["datatype"]]
            outputs[entry["name"]] = np.asarray(entry["data"], dtype=dtype).reshape(entry["shape"])
        return outputs
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TransportError(
            f"parent tier {url} answered something that is not a JSON infer response: "
            f"{type(exc).__name__}: {exc}",
            hint="the parent must speak Open Inference Protocol v2 with JSON outputs",
        ) from exc

"""A parent tier: another Open Inference Protocol v2 server that a cascade escalates to.

Rows go up as a JSON infer request (the part of the protocol every v2 server speaks) and come
back as JSON tensors. The client has a finite timeout and is created on first use in the
server's event loop. Every way the parent can fail (unreachable, timed out, an error status, an
answer that is not a v2 infer response) is a :class:`TransportError`, which the cascade turns
into a counted fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
import orjson

from edgeloop.core.errors import TransportError
from edgeloop.serving.oip import DATATYPES

_DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}
_HINT = "check the parent tier is up (GET .../v2/health/ready) and serves that model"


class ParentTier:
    """POSTs rows to ``url`` (``.../v2/models/NAME[/versions/V]/infer``)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    async def infer(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray]:
        """The parent's outputs for ``feeds``.

        Raises:
            TransportError: the parent is unreachable, timed out, answered an error status or
                something that is not an infer response.
        """
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s))
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

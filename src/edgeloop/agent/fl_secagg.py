"""A node's side of secure aggregation: the four messages of a round, from the control plane's
step documents (:mod:`edgeloop.control.fl_secagg` writes them).

The node's secrets (two X25519 private keys and its self-mask seed) are made at ``advertise``
and stay in this process's memory until the round ends; an agent restarted mid-round has lost
them and simply drops out of that round (the others recover the sum without it). Numpy and
``cryptography`` only: no torch in the agent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError
from edgeloop.federated.secagg import (
    ClientSecrets,
    FixedPoint,
    KeyAdvert,
    UnmaskRequest,
    advertise,
    mask_input,
    share_keys,
    unmask_response,
    weighted_input,
)


def _adverts(doc: Mapping[str, Any]) -> list[KeyAdvert]:
    return [
        KeyAdvert(int(a["index"]), base64.b64decode(a["cipher_public"]),
                  base64.b64decode(a["mask_public"]))
        for a in doc["adverts"]
    ]  # fmt: skip


def _inbox(doc: Mapping[str, Any]) -> dict[int, bytes]:
    return {int(k): base64.b64decode(v) for k, v in doc["inbox"].items()}


class SecAggClient:
    """This node's secrets per (task, round); one round at a time."""

    def __init__(self) -> None:
        self._round: tuple[str, int] | None = None
        self._secrets: ClientSecrets | None = None

    def _mine(self, key: tuple[str, int]) -> ClientSecrets:
        if self._round != key or self._secrets is None:
            raise DataError(
                f"no SecAgg keys for round {key[1]} of task {key[0]} (the agent restarted?)",
                hint="this node drops out of the round; the others finish it",
            )
        return self._secrets

    def advertise(self, key: tuple[str, int], doc: Mapping[str, Any]) -> bytes:
        """Fresh keys for this round; the body: the two public keys (64 bytes)."""
        self._secrets, advert = advertise(int(doc["index"]))
        self._round = key
        return advert.cipher_public + advert.mask_public

    def share(self, key: tuple[str, int], doc: Mapping[str, Any]) -> bytes:
        """Shares of this node's seeds, sealed per peer: ``{"recipient": base64}``."""
        bundle = share_keys(self._mine(key), _adverts(doc), int(doc["threshold"]))
        sealed = {str(v): base64.b64encode(b).decode() for v, b in bundle.sealed.items()}
        return json.dumps(sealed).encode()

    def mask(
        self,
        key: tuple[str, int],
        doc: Mapping[str, Any],
        weights: npt.NDArray[np.float64],
        num_samples: int,
    ) -> bytes:
        """y = encode([n x, n]) + masks, as little-endian uint64."""
        encoded = weighted_input(
            weights, num_samples, FixedPoint(int(doc["frac_bits"])), int(doc["clients"])
        )
        masked = mask_input(self._mine(key), _adverts(doc), _inbox(doc), encoded)
        return np.asarray(masked.vector, dtype="<u8").tobytes()

    def unmask(self, key: tuple[str, int], doc: Mapping[str, Any]) -> bytes:
        """Shares of the survivors' self-mask seeds and of the dropped clients' mask keys."""
        request = UnmaskRequest(frozenset(doc["survivors"]), frozenset(doc["dropped"]))
        answer = unmask_response(
            self._mine(key), _adverts(doc), _inbox(doc), request, int(doc["threshold"])
        )
        self._round, self._secrets = None, None  # the round is over for this node
        return json.dumps({
            "self_mask_shares": {str(k): str(v) for k, v in answer.self_mask_shares.items()},
            "key_shares": {str(k): str(v) for k, v in answer.key_shares.items()},
        }).encode()  # fmt: skip

"""The server side of SecAgg: relay sealed shares, then unmask only the sum.

The server never holds an individual input in the clear: it sees y_u (masked), sealed shares it
cannot open, and, after masking, shares of b_u for survivors and of s_u^SK for clients that
dropped before sending y_u: never both for one client (enforced by :class:`UnmaskRequest`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeloop.core.errors import ConfigError, TransportError
from edgeloop.federated.secagg import shamir
from edgeloop.federated.secagg.client import pairwise_sign
from edgeloop.federated.secagg.encoding import Ring
from edgeloop.federated.secagg.masks import MASK_LABEL, agree, prg
from edgeloop.federated.secagg.messages import (
    KeyAdvert,
    MaskedInput,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
)


def route_shares(bundles: Sequence[ShareBundle]) -> dict[int, dict[int, bytes]]:
    """Each recipient's inbox: sender -> sealed shares. Senders here are U2."""
    inboxes: dict[int, dict[int, bytes]] = {}
    for bundle in bundles:
        for recipient, sealed in bundle.sealed.items():
            inboxes.setdefault(recipient, {})[bundle.sender] = sealed
    return inboxes


def unmask_request(shared: Sequence[int], masked: Sequence[MaskedInput]) -> UnmaskRequest:
    """Survivors sent y_u; the dropped shared keys (U2) but sent no y_u."""
    survivors = frozenset(m.sender for m in masked)
    if not survivors <= set(shared):
        raise ConfigError(
            f"masked inputs from {sorted(survivors - set(shared))} who shared no keys"
        )
    return UnmaskRequest(survivors, frozenset(shared) - survivors)


def _collect(
    responses: Sequence[UnmaskResponse], threshold: int
) -> tuple[dict[int, dict[int, int]], dict[int, dict[int, int]]]:
    if len(responses) < threshold:
        raise TransportError(
            f"{len(responses)} clients answered the unmasking request, fewer than the "
            f"threshold t={threshold}: the sum cannot be recovered",
            hint="fail the round; the masked inputs reveal nothing and are discarded",
        )
    b: dict[int, dict[int, int]] = {}
    s: dict[int, dict[int, int]] = {}
    for r in responses:
        for u, share in r.self_mask_shares.items():
            b.setdefault(u, {})[r.sender] = share
        for u, share in r.key_shares.items():
            s.setdefault(u, {})[r.sender] = share
    return b, s


def unmask_sum(
    adverts: Sequence[KeyAdvert],
    masked: Sequence[MaskedInput],
    request: UnmaskRequest,
    responses: Sequence[UnmaskResponse],
    threshold: int,
) -> Ring:
    """sum_{u in survivors} x_u  (mod 2^64).

    sum y_u = sum x_u + sum PRG(b_u) + the pairwise masks between survivors and dropped
    clients (masks between two survivors cancel). Remove PRG(b_u) from reconstructed b_u and
    each survivor-dropped mask from the dropped client's reconstructed s_u^SK.

    Raises:
        TransportError: fewer than t responses, or a client with fewer than t shares.
    """
    b_shares, s_shares = _collect(responses, threshold)
    keys = {a.index: a for a in adverts}
    if not masked:
        raise TransportError("no masked inputs arrived", hint="fail the round")
    size = masked[0].vector.size
    for m in masked:
        if m.vector.size != size or m.vector.dtype != np.uint64:
            raise ConfigError(
                f"masked input of client {m.sender} has {m.vector.size} {m.vector.dtype} values,"
                f" expected {size} uint64"
            )
    total = np.zeros(size, dtype=np.uint64)
    for m in masked:
        total = total + np.asarray(m.vector, dtype=np.uint64)
    for u in sorted(request.survivors):
        seed = shamir.reconstruct(b_shares.get(u, {}), threshold)
        total = total - prg(seed.to_bytes(32, "big"), size)
    for d in sorted(request.dropped):
        secret = shamir.reconstruct(s_shares.get(d, {}), threshold).to_bytes(32, "big")
        for v in sorted(request.survivors):
            mask = prg(agree(secret, keys[v].mask_public, MASK_LABEL), size)
            # survivor v added sign(v, d) * PRG(s_vd); take it back out
            total = total - mask if pairwise_sign(v, d) > 0 else total + mask
    return total

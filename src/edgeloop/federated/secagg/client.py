"""The client side of SecAgg as pure functions from messages to messages (plus its secrets).

Secrets stay in :class:`ClientSecrets`, which never leaves the node. Randomness for keys and
seeds comes from the OS (``cryptography`` and ``os.urandom``): masks must be unpredictable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from edgeloop.core.errors import ConfigError, TransportError
from edgeloop.federated.secagg import shamir
from edgeloop.federated.secagg.encoding import Ring
from edgeloop.federated.secagg.masks import MASK_LABEL, SHARE_LABEL, agree, open_sealed, prg, seal
from edgeloop.federated.secagg.messages import (
    KeyAdvert,
    MaskedInput,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
)


@dataclass(frozen=True, slots=True)
class ClientSecrets:
    index: int
    cipher_private: bytes
    mask_private: bytes
    self_seed: bytes  # b_u


def _keypair() -> tuple[bytes, bytes]:
    key = X25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return private, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def advertise(index: int) -> tuple[ClientSecrets, KeyAdvert]:
    """Round 0: fresh key pairs (c_u, s_u) and self-mask seed b_u; publish the public keys."""
    c_sk, c_pk = _keypair()
    s_sk, s_pk = _keypair()
    return ClientSecrets(index, c_sk, s_sk, os.urandom(32)), KeyAdvert(index, c_pk, s_pk)


def _peers(adverts: Sequence[KeyAdvert], threshold: int) -> dict[int, KeyAdvert]:
    peers = {a.index: a for a in adverts}
    if len(peers) != len(adverts):
        raise ConfigError("key adverts repeat a client index")
    if len(peers) < threshold:
        raise TransportError(
            f"{len(peers)} clients advertised keys, SecAgg needs the threshold t={threshold}",
            hint="fail the round; too few clients are online",
        )
    return peers


def share_keys(me: ClientSecrets, adverts: Sequence[KeyAdvert], threshold: int) -> ShareBundle:
    """Round 1: t-of-n shares of b_u and s_u^SK, sealed for each peer (own share included)."""
    peers = _peers(adverts, threshold)
    b_shares = shamir.split(shamir.from_bytes(me.self_seed), threshold, sorted(peers))
    s_shares = shamir.split(shamir.from_bytes(me.mask_private), threshold, sorted(peers))
    sealed = {}
    for v, advert in peers.items():
        key = agree(me.cipher_private, advert.cipher_public, SHARE_LABEL)
        plain = shamir.to_bytes(b_shares[v]) + shamir.to_bytes(s_shares[v])
        sealed[v] = seal(key, plain, me.index, v)
    return ShareBundle(me.index, sealed)


def pairwise_sign(u: int, v: int) -> int:
    """+1 if u < v else -1: the two masks of a pair cancel in the sum."""
    return 1 if u < v else -1


def mask_input(
    me: ClientSecrets,
    adverts: Sequence[KeyAdvert],
    inbox: Mapping[int, bytes],
    encoded: Ring,
) -> MaskedInput:
    """Round 2: y_u = x_u + PRG(b_u) + sum_{v in U2, v != u} sign(u, v) PRG(s_uv)  (mod 2^64).

    ``inbox`` holds the sealed shares addressed to this client; their senders are U2, the
    clients whose pairwise masks are applied.
    """
    peers = {a.index: a for a in adverts}
    strangers = sorted(set(inbox) - set(peers))
    if strangers:
        raise ConfigError(
            f"shares from clients {strangers}, who advertised no keys",
            hint="pass the same key adverts the shares were made with",
        )
    x = np.asarray(encoded, dtype=np.uint64)
    y = x + prg(me.self_seed, x.size)
    for v in sorted(inbox):
        if v == me.index:
            continue
        seed = agree(me.mask_private, peers[v].mask_public, MASK_LABEL)
        mask = prg(seed, x.size)
        y = y + mask if pairwise_sign(me.index, v) > 0 else y - mask
    return MaskedInput(me.index, y)


def unmask_response(
    me: ClientSecrets,
    adverts: Sequence[KeyAdvert],
    inbox: Mapping[int, bytes],
    request: UnmaskRequest,
    threshold: int,
) -> UnmaskResponse:
    """Round 3: reveal b-shares of survivors and s-shares of dropped clients, never both.

    Raises:
        TransportError: fewer than t survivors (revealing would not help and is refused).
    """
    if len(request.survivors) < threshold:
        raise TransportError(
            f"{len(request.survivors)} clients sent masked inputs, fewer than t={threshold}",
            hint="the round cannot be unmasked; fail it",
        )
    peers = {a.index: a for a in adverts}
    b_out, s_out = {}, {}
    for v, sealed in inbox.items():
        if v not in request.survivors and v not in request.dropped:
            continue
        key = agree(me.cipher_private, peers[v].cipher_public, SHARE_LABEL)
        plain = open_sealed(key, sealed, v, me.index)
        size = shamir.SHARE_BYTES
        if v in request.survivors:
            b_out[v] = shamir.from_bytes(plain[:size])
        else:
            s_out[v] = shamir.from_bytes(plain[size:])
    return UnmaskResponse(me.index, b_out, s_out)

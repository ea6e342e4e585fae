"""The messages of one SecAgg round (Bonawitz et al. 2017, Fig. 4, semi-honest variant).

Clients are numbered 1..n (their Shamir share points). The server only relays and sums:

0. AdvertiseKeys   client -> server -> all: :class:`KeyAdvert` (two X25519 public keys)
1. ShareKeys       client -> server -> each peer: :class:`ShareBundle` (sealed Shamir shares
                   of its self-mask seed b_u and its mask private key s_u, one per peer)
2. MaskedInput     client -> server: :class:`MaskedInput` y_u = x_u + PRG(b_u) + pairwise masks
3. Unmasking       server -> clients: :class:`UnmaskRequest` (who sent y, who dropped);
                   client -> server: :class:`UnmaskResponse` (b-shares of survivors, s-shares of
                   the dropped, never both for one client)

Every field is bytes, ints or a uint64 vector, so the HTTP wiring only moves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edgeloop.core.errors import ConfigError
from edgeloop.federated.secagg.encoding import Ring


@dataclass(frozen=True, slots=True)
class KeyAdvert:
    index: int
    cipher_public: bytes  # c_u^PK: agrees the keys that seal shares
    mask_public: bytes  # s_u^PK: agrees the pairwise mask seeds

    def __post_init__(self) -> None:
        if self.index < 1 or len(self.cipher_public) != 32 or len(self.mask_public) != 32:
            raise ConfigError(f"bad key advert from client {self.index}: index >= 1, 32-byte keys")


@dataclass(frozen=True, slots=True)
class ShareBundle:
    sender: int
    sealed: Mapping[int, bytes]  # recipient -> AES-GCM(b-share || s-share)


@dataclass(frozen=True, slots=True)
class MaskedInput:
    sender: int
    vector: Ring


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    survivors: frozenset[int]  # sent a masked input: remove their self masks
    dropped: frozenset[int]  # shared keys but sent no masked input: remove their pairwise masks

    def __post_init__(self) -> None:
        if self.survivors & self.dropped:
            raise ConfigError(
                f"clients {sorted(self.survivors & self.dropped)} are both survivors and dropped",
                hint="a client is in exactly one set; asking both would unmask its input",
            )


@dataclass(frozen=True, slots=True)
class UnmaskResponse:
    sender: int
    self_mask_shares: Mapping[int, int]  # survivor -> share of b_survivor
    key_shares: Mapping[int, int]  # dropped -> share of s_dropped^SK

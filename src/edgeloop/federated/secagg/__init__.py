"""Secure aggregation (Bonawitz et al. 2017): the server learns only the sum of client inputs.

Pairwise masks from X25519 key agreement expanded by an AES-CTR PRG, self masks, Shamir t-of-n
sharing of both seeds for dropout recovery, fixed-point encoding into Z_(2^64). Semi-honest
(honest-but-curious server) variant: no signatures on the messages; a malicious server that
lies about who dropped is out of scope (the paper's active-security round adds signatures).
"""

from __future__ import annotations

from edgeloop.federated.secagg.client import (
    ClientSecrets,
    advertise,
    mask_input,
    share_keys,
    unmask_response,
)
from edgeloop.federated.secagg.encoding import FixedPoint
from edgeloop.federated.secagg.messages import (
    KeyAdvert,
    MaskedInput,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
)
from edgeloop.federated.secagg.server import route_shares, unmask_request, unmask_sum
from edgeloop.federated.secagg.session import fedavg_from_sum, run_round, weighted_input

__all__ = [
    "ClientSecrets",
    "FixedPoint",
    "KeyAdvert",
    "MaskedInput",
    "ShareBundle",
    "UnmaskRequest",
    "UnmaskResponse",
    "advertise",
    "fedavg_from_sum",
    "mask_input",
    "route_shares",
    "run_round",
    "share_keys",
    "unmask_request",
    "unmask_response",
    "unmask_sum",
    "weighted_input",
]

"""FedAvg through SecAgg, and the whole protocol run in one process (tests, the benchmark).

For FedAvg the server needs sum_k n_k x_k and sum_k n_k: each client masks the vector
[n_k * x_k, n_k], so even the sample counts are seen only as a total.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError
from edgeloop.federated.secagg import client, server
from edgeloop.federated.secagg.encoding import FixedPoint, Ring
from edgeloop.federated.secagg.messages import MaskedInput


def weighted_input(
    weights: npt.ArrayLike, num_samples: int, encoding: FixedPoint, clients: int
) -> Ring:
    """encode([n * x, n]) for a sum over ``clients``."""
    x = np.asarray(weights, dtype=np.float64).reshape(-1)
    return encoding.encode(np.append(num_samples * x, float(num_samples)), clients)


def fedavg_from_sum(total: Ring, encoding: FixedPoint) -> tuple[npt.NDArray[np.float64], float]:
    """(sum n x / sum n, sum n) from the unmasked sum of :func:`weighted_input` vectors.

    Raises:
        DataError: the total sample count is not positive.
    """
    decoded = encoding.decode(total)
    count = float(decoded[-1])
    if count <= 0:
        raise DataError(f"secure sum holds {count} samples; nothing to average")
    return decoded[:-1] / count, count


def run_round(
    inputs: Mapping[int, Ring],
    threshold: int,
    *,
    drop_before_masking: Collection[int] = (),
    drop_after_masking: Collection[int] = (),
) -> tuple[Ring, dict[int, MaskedInput]]:
    """Every message of one round passed in memory; returns the unmasked sum and what the
    server received as masked inputs.

    Clients in ``drop_before_masking`` share keys, then vanish before sending y_u (their input
    is not in the sum); clients in ``drop_after_masking`` send y_u, then never answer the
    unmasking request (their input is in the sum).

    Raises:
        TransportError: fewer than t clients left at some step.
    """
    if set(drop_before_masking) & set(drop_after_masking):
        raise DataError("a client cannot drop both before and after masking")
    secrets, adverts = {}, []
    for index in sorted(inputs):
        secrets[index], advert = client.advertise(index)
        adverts.append(advert)
    bundles = [client.share_keys(secrets[i], adverts, threshold) for i in sorted(inputs)]
    inboxes = server.route_shares(bundles)
    masked = {
        i: client.mask_input(secrets[i], adverts, inboxes[i], inputs[i])
        for i in sorted(inputs)
        if i not in drop_before_masking
    }
    request = server.unmask_request([b.sender for b in bundles], list(masked.values()))
    responses = [
        client.unmask_response(secrets[i], adverts, inboxes[i], request, threshold)
        for i in sorted(masked)
        if i not in drop_after_masking
    ]
    total = server.unmask_sum(adverts, list(masked.values()), request, responses, threshold)
    return total, masked

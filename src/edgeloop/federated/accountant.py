"""epsilon(delta) of a DP-FedAvg task, from Google's ``dp-accounting`` (not a hand-written formula).

Each round is a Poisson-subsampled Gaussian mechanism: every client takes part with probability
q = clients per round / population, and the mean is noised with multiplier z (McMahan et al.
2018). T rounds compose; the RDP accountant (Mironov 2017; Mironov, Talwar, Zhang 2019 for the
subsampled Gaussian) converts the composition into epsilon at the given delta.

Orders are the integers 2..64 and 128..1024: for integer orders the library uses the exact
binomial expansion, which always converges (fractional orders near 1 may fail to converge for
some q, z and are then skipped with a log line); the result can be a little looser than with
fractional orders (e.g. 7.97 instead of 7.90 for q=0.1, z=1, T=100, delta=1e-5).

``dp-accounting`` is the ``fl`` extra; it is imported only when an epsilon is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeloop.core.errors import ConfigError, require

ORDERS: tuple[float, ...] = (*(float(a) for a in range(2, 65)), 128.0, 256.0, 512.0, 1024.0)


def _dp_accounting(module: str = "dp_accounting") -> Any:
    return require(module, "fl", "accounting the privacy loss of DP-FedAvg")


@dataclass(frozen=True, slots=True)
class PrivacyAccountant:
    """The mechanism of one round: z, q and the target delta."""

    noise_multiplier: float
    sampling_rate: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and 0 < self.sampling_rate <= 1 and 0 < self.delta < 1):
            raise ConfigError(
                f"accountant needs z > 0, 0 < q <= 1, 0 < delta < 1; got z="
                f"{self.noise_multiplier} q={self.sampling_rate} delta={self.delta}",
                hint="q = clients per round / population; delta well below 1/population",
            )

    @classmethod
    def for_fleet(
        cls, noise_multiplier: float, per_round: int, population: int, delta: float = 1e-5
    ) -> PrivacyAccountant:
        """q = per_round / population."""
        if not 0 < per_round <= population:
            raise ConfigError(f"need 0 < per_round <= population, got {per_round}/{population}")
        return cls(noise_multiplier, per_round / population, delta)

    def epsilon(self, rounds: int) -> float:
        """epsilon after ``rounds`` rounds (0.0 for none)."""
        if rounds < 0:
            raise ConfigError(f"rounds must be >= 0, got {rounds}")
        if rounds == 0:
            return 0.0
        dpa = _dp_accounting()
        rdp = _dp_accounting("dp_accounting.rdp.rdp_privacy_accountant")
        acc = rdp.RdpAccountant(list(ORDERS))
        event = dpa.PoissonSampledDpEvent(
            self.sampling_rate, dpa.GaussianDpEvent(self.noise_multiplier)
        )
        acc.compose(event, rounds)
        return float(acc.get_epsilon(self.delta))


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """Would the next round stay within ``target_epsilon``? With the numbers that decide it."""

    allowed: bool
    rounds_done: int
    epsilon_now: float
    epsilon_after: float
    target_epsilon: float


def check_next_round(
    accountant: PrivacyAccountant, rounds_done: int, target_epsilon: float
) -> BudgetCheck:
    """A pure "would this round exceed the target?" check; the caller refuses when not allowed."""
    if target_epsilon <= 0:
        raise ConfigError(f"target epsilon must be > 0, got {target_epsilon}")
    now = accountant.epsilon(rounds_done)
    after = accountant.epsilon(rounds_done + 1)
    return BudgetCheck(after <= target_epsilon, rounds_done, now, after, target_epsilon)


def max_rounds(accountant: PrivacyAccountant, target_epsilon: float, limit: int = 10_000) -> int:
    """The most rounds whose epsilon stays <= target (binary search; epsilon grows with T)."""
    if accountant.epsilon(1) > target_epsilon:
        return 0
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if accountant.epsilon(mid) <= target_epsilon:
            lo = mid
        else:
            hi = mid - 1
    return lo

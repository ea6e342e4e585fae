"""A/B splits: proportions follow the weights, a key always lands on the same arm; flag parsing."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.core.errors import ConfigError
from edgeloop.serving.routing import Router, Routing, Split, parse_shadow, parse_split, sticky_point


def test_unkeyed_requests_split_by_weight_with_a_fixed_seed() -> None:
    routing = Routing(Split((("1", 80.0), ("2", 20.0))))
    draws = _replay(routing, seed=7, n=4000)
    counts = Counter(draws)
    # Binomial(4000, 0.2): sd = 25 requests, so +-100 is 4 sd.
    assert abs(counts["2"] - 800) < 100 and counts["1"] + counts["2"] == 4000
    assert _replay(routing, seed=7, n=4000) == draws  # the same seed repeats the run


def _replay(routing: Routing, seed: int, n: int) -> list[str]:
    router = Router(seed=seed)
    return [router.choose(routing, "2", None) for _ in range(n)]


def test_keyed_requests_are_sticky_and_spread_over_both_arms() -> None:
    routing = Routing(Split((("1", 50.0), ("2", 50.0))))
    router = Router(seed=1)
    first = {f"user-{i}": router.choose(routing, "2", f"user-{i}") for i in range(400)}
    for _ in range(3):
        assert all(router.choose(routing, "2", k) == v for k, v in first.items())
    assert Router(seed=99).choose(routing, "2", "user-3") == first["user-3"]  # seed-free
    shares = Counter(first.values())
    assert shares["1"] > 150 and shares["2"] > 150


def test_without_a_split_the_latest_version_answers() -> None:
    assert Router(seed=0).choose(Routing(), "7", "any-key") == "7"


@settings(deadline=None)  # no per-example time limit: a loaded CI machine stalls at will
@given(st.text(max_size=64))
def test_sticky_point_is_in_the_unit_interval(key: str) -> None:
    point = sticky_point(key)
    assert 0.0 <= point < 1.0
    assert sticky_point(key) == point


@settings(deadline=None)  # no per-example time limit: a loaded CI machine stalls at will
@given(st.lists(st.floats(0.01, 100.0), min_size=1, max_size=5), st.floats(0.0, 0.999999))
def test_pick_returns_an_arm_of_the_split(weights: list[float], point: float) -> None:
    split = Split(tuple((str(i + 1), w) for i, w in enumerate(weights)))
    assert split.pick(point) in split.versions


def test_parse_split_and_shadow() -> None:
    assert parse_split("cnn=1:90,2:10") == ("cnn", Split((("1", 90.0), ("2", 10.0))))
    assert parse_shadow("cnn=3") == ("cnn", "3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cnn", "--ab 'cnn' has no '='"),
        ("cnn=1", "--ab arm '1' is not VERSION:WEIGHT"),
        ("cnn=1:x", "--ab arm '1:x' is not VERSION:WEIGHT"),
        ("cnn=1:0", "version '1' has weight 0.0; weights must be positive"),
        ("cnn=1:5,1:5", "names a version twice"),
        ("../x=1:5", "model name '../x' is not a valid name"),
    ],
)
def test_bad_split_flags_name_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_split(text)


def test_bad_shadow_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match="must name one version"):
        parse_shadow("cnn=1,2")

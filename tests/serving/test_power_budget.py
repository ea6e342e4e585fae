"""The power budget in the server: stated figures pick the variant, marked stated; a budget
change switches it and is counted; a meter's reading replaces a stated figure as measured.

The meter is the real RAPL probe reading a counter file the test writes (this machine has no
meter) with a clock the test steps, so the measured watts are known exactly.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from anyio.from_thread import start_blocking_portal
from prometheus_client.parser import text_string_to_metric_families
from tests.serving.harness import Harness
from tests.serving.models import make_repository
from tests.tiny_models import make_linear_onnx
from typer.testing import CliRunner

from edgeloop.bench.power import NullProbe, PowerProbe, RaplProbe, RaplZone
from edgeloop.cli.serve import serve
from edgeloop.core.errors import ConfigError
from edgeloop.serving import Catalog, ServerConfig, create_app, scan
from edgeloop.serving.power import STATED_SOURCE, StatedPower, parse_variant_power

FEATURES = [0.1, 0.2, 0.3, 0.4]
NO_METER = "test: no meter on purpose"


@pytest.fixture
def clf(tmp_path: Path) -> Path:
    """Model ``clf`` version 1 with variants ``default`` and ``int8``."""
    model_dir = make_repository(tmp_path, "clf", {1: 1})
    make_linear_onnx(model_dir / "1" / "model.int8.onnx", seed=2)
    return model_dir


def _config(budget: float, **figures: float) -> ServerConfig:
    stated = tuple(StatedPower(v, w) for v, w in figures.items())
    # A long interval: the tests close meter intervals themselves.
    return ServerConfig(power_budget_w=budget, variant_power=stated, power_interval_s=3600)


@contextlib.contextmanager
def _serving(paths: list[Path], config: ServerConfig, probe: PowerProbe) -> Iterator[Harness]:
    with start_blocking_portal(backend="asyncio") as portal:
        catalog = Catalog(scan(paths), config, power_probe=probe)
        app = create_app(catalog)
        portal.call(catalog.start)
        harness = Harness(portal, app)
        try:
            yield harness
        finally:
            portal.call(harness.client.aclose)
            portal.call(harness.server.service.drain)
            portal.call(catalog.stop)


def _put(s: Harness, model: str, body: Any) -> httpx.Response:
    return s.portal.call(lambda: s.client.put(f"/v2/models/{model}/power-budget", json=body))


def _variant(s: Harness) -> str:
    return str(s.post("/predict", json={"features": FEATURES}).json()["variant"])


def _switches(s: Harness) -> float:
    for family in text_string_to_metric_families(s.metrics()):
        for sample in family.samples:
            if sample.name == "edgeloop_variant_switches_total":
                assert sample.labels["policy"] == "power"
                return sample.value
    raise AssertionError("no edgeloop_variant_switches_total")


def test_stated_figures_pick_the_best_variant_within_budget_and_say_stated(clf: Path) -> None:
    with _serving([clf], _config(3.0, default=4.0, int8=2.0), NullProbe(NO_METER)) as s:
        variant = _variant(s)
        policy = s.get("/v2/models/clf/policy").json()
        meta = s.get("/v2/models/clf").json()["parameters"]
    assert variant == "int8" and policy["variant"] == "int8" and policy["load"] is None
    power = policy["power"]
    assert power["budget_w"] == 3.0 and power["governed"] is True
    assert power["meter"] == f"none: {NO_METER}; the figures stay stated"
    assert power["decision"]["variant"] == "int8" and power["decision"]["within_budget"]
    assert power["decision"]["basis"] == "stated"
    assert sorted(
        (f["variant"], f["watts"], f["basis"], f["source"]) for f in power["figures"]
    ) == [
        ("default", 4.0, "stated", STATED_SOURCE),
        ("int8", 2.0, "stated", STATED_SOURCE),
    ]
    assert meta["power"]["decision"]["basis"] == "stated"


def test_budget_changes_switch_the_variant_and_are_counted(clf: Path) -> None:
    with _serving([clf], _config(3.0, default=4.0, int8=2.0), NullProbe(NO_METER)) as s:
        first, switches_before = _variant(s), _switches(s)
        raised = _put(s, "clf", {"watts": 5})
        after_raise = _variant(s)
        lowered = _put(s, "clf", {"watts": 1.5})
        after_lower = _variant(s)
        switches = _switches(s)
    assert (first, switches_before) == ("int8", 0)
    assert raised.status_code == 200 and raised.json()["power"]["budget_w"] == 5.0
    assert after_raise == "default"
    # Nothing fits 1.5 W: the lowest-drawing variant serves, marked over budget.
    decision = lowered.json()["power"]["decision"]
    assert after_lower == "int8" and decision["within_budget"] is False
    assert switches == 2


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"watts": -1}, 400, "-1 is not a positive number of watts"),
        ({"watts": "lots"}, 400, "'lots' is not a positive number of watts"),
        ({"watts": True}, 400, "True is not a positive number of watts"),
        ({"budget": 3}, 400, "has no 'watts'"),
    ],
)
def test_a_bad_budget_is_refused_and_changes_nothing(
    clf: Path, body: Any, status: int, message: str
) -> None:
    with _serving([clf], _config(3.0, default=4.0, int8=2.0), NullProbe(NO_METER)) as s:
        r = _put(s, "clf", body)
        budget = s.get("/v2/models/clf/policy").json()["power"]["budget_w"]
    assert r.status_code == status and message in r.json()["error"]
    assert budget == 3.0


def test_budget_for_an_unknown_model_or_one_without_a_policy(clf: Path, linear: Path) -> None:
    with _serving([clf], _config(3.0, default=4.0, int8=2.0), NullProbe(NO_METER)) as s:
        missing = _put(s, "nope", {"watts": 3})
    assert missing.status_code == 404 and "'nope' is not served" in missing.json()["error"]
    with _serving([linear], ServerConfig(), NullProbe(NO_METER)) as s:
        none = _put(s, "linear", {"watts": 3})
        policy = s.get("/v2/models/linear/policy").json()
    assert none.status_code == 409 and "'linear' has no power policy" in none.json()["error"]
    assert policy["power"] is None and policy["variant"] == "default"


def test_a_single_variant_model_is_not_governed(linear: Path) -> None:
    with _serving([linear], _config(3.0, default=4.0), NullProbe(NO_METER)) as s:
        power = s.get("/v2/models/linear/policy").json()["power"]
    assert power["governed"] is False and "decision" not in power


class _Clock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def _set_counter(path: Path, value: int) -> None:
    """Replace the counter file atomically, as the kernel's reads are: the probe's poller
    thread reads it meanwhile and must never see it truncated and not yet written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    tmp.replace(path)


def test_a_meter_reading_replaces_the_stated_figure_as_measured(clf: Path, tmp_path: Path) -> None:
    counter, clock = tmp_path / "energy_uj", _Clock()
    _set_counter(counter, 0)
    probe = RaplProbe((RaplZone("package-0", counter, 2**32),), clock=clock)
    with _serving([clf], _config(3.0, default=2.5, int8=1.0), probe) as s:
        sampler = s.catalog.sampler
        assert sampler is not None
        assert [_variant(s) for _ in range(3)] == ["default"] * 3
        _set_counter(counter, 4000000)  # 4 J over the next 1 s: 4 W while default served
        clock.ns += 1_000_000_000
        reading = s.call(sampler.sample)
        after = _variant(s)
        _set_counter(counter, 5000000)  # 1 W while int8 served that request
        clock.ns += 1_000_000_000
        s.call(sampler.sample)
        _set_counter(counter, 13000000)  # an idle interval (8 W) is not int8's: not recorded
        clock.ns += 1_000_000_000
        idle = s.call(sampler.sample)
        policy = s.get("/v2/models/clf/policy").json()["power"]
        switches = _switches(s)
    assert reading.watts == pytest.approx(4.0) and reading.source == "rapl (package-0)"
    figures = {f["variant"]: f for f in policy["figures"]}
    assert figures["default"]["basis"] == "measured" and figures["default"]["watts"] == 4.0
    assert figures["default"]["source"] == "rapl (package-0)"
    assert (figures["int8"]["basis"], figures["int8"]["watts"]) == ("measured", 1.0)
    assert idle.watts == pytest.approx(8.0) and sampler.recorded == 2
    assert after == "int8" and switches == 1 and policy["meter"] == "RaplProbe"


# -- flags -----------------------------------------------------------------------------------------

cli = typer.Typer()
cli.command()(serve)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("int8=-1", "'int8=-1': -1 W is negative"),
        ("int8=lots", "'int8=lots' is not \\[MODEL:\\]VARIANT=WATTS"),
        ("int8", "'int8' is not \\[MODEL:\\]VARIANT=WATTS"),
    ],
)
def test_bad_variant_power_flags_name_the_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_variant_power(text)


def test_variant_power_for_one_model_overrides_the_general_figure() -> None:
    assert parse_variant_power("clf:int8=2.5") == StatedPower("int8", 2.5, "clf")
    assert parse_variant_power(" int8 = 1 ") == StatedPower("int8", 1.0, None)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--power-budget-w", "-2"], "power_budget_w=-2.0 \\(expected > 0 watts\\)"),
        (["--power-budget-w", "0"], "power_budget_w=0.0 \\(expected > 0 watts\\)"),
        (["--variant-power", "int8=1"], "--variant-power without --power-budget-w"),
        (
            ["--power-budget-w", "3", "--variant-power", "other:int8=1"],
            "--variant-power names model\\(s\\) 'other', which are not served",
        ),
        (["--power-budget-w", "3", "--variant-power", "int8=-0.5"], "-0.5 W is negative"),
    ],
)
def test_bad_power_flags_stop_the_server_before_it_listens(
    clf: Path, flags: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, [str(clf), "--port", "0", *flags])
    assert isinstance(result.exception, ConfigError), result.output
    assert re.search(message, result.exception.message)


def test_a_figure_for_a_variant_the_model_lacks_is_refused_at_load(clf: Path) -> None:
    config = ServerConfig(power_budget_w=3.0, variant_power=(StatedPower("fp16", 1.0, "clf"),))
    message = r"names variant\(s\) \['fp16'\] of model 'clf'"
    with pytest.raises(ConfigError, match=message), _serving([clf], config, NullProbe(NO_METER)):
        pass

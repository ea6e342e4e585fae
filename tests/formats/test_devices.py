"""Device profiles and fit checks: real file sizes against vendor-published memory figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.tiny_models import make_linear_onnx

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.formats.convert import exporters
from edgeloop.formats.devices import KB, PROFILES, check_fit, device
from edgeloop.pipeline.convert import targets_for


def test_every_profile_cites_its_vendor_and_names_known_targets() -> None:
    known = {e.name for e in exporters()} | {"onnx"}
    names = {p.name for p in PROFILES}
    assert {"rpi4", "rpi5", "jetson-orin-nano", "coral-dev-board", "esp32-s3"} <= names
    assert {"stm32-m4", "stm32-m7", "x86-gateway"} <= names
    for p in PROFILES:
        assert p.source.startswith("https://"), p.name
        assert set(p.targets) <= known, p.name
        assert p.microcontroller == (p.targets == ("tflm",)), p.name


def test_a_model_too_big_for_a_cortex_m4_says_by_how_much(tmp_path: Path) -> None:
    # 200,000 x 3 float weights: a real 2.4 MB file against the STM32F446RE's 512 KB of flash.
    model = make_linear_onnx(tmp_path / "big.onnx", features=200_000, classes=3)
    size = model.stat().st_size
    fit = check_fit(device("stm32-m4"), flash_needed=size, ram_needed=100 * KB, ram_basis="arena")
    assert not fit.fits
    assert fit.flash_short == size - 512 * KB
    assert fit.ram_short == 0
    summary = fit.summary()
    assert summary.startswith("does not fit stm32-m4: flash needs")
    assert f"{(size - 512 * KB) / 1024 / 1024:.2f} MB short" in summary


def test_ram_shortfall_is_reported_separately() -> None:
    fit = check_fit(device("esp32-s3"), flash_needed=1000, ram_needed=600 * KB, ram_basis="arena")
    assert (fit.flash_short, fit.ram_short) == (0, 88 * KB)
    assert "RAM needs 600.0 KB (arena), has 512.0 KB (88.0 KB short)" in fit.summary()
    ok = check_fit(device("stm32-m7"), flash_needed=70_000, ram_needed=10_000, ram_basis="arena")
    assert ok.fits and ok.summary().startswith("fits stm32-m7")


def test_unknown_device_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError, match=r"known devices: rpi4, rpi5, jetson-orin-nano"):
        device("arduino-uno")


def test_negative_sizes_are_refused() -> None:
    with pytest.raises(ConfigError):
        check_fit(device("rpi4"), flash_needed=-1, ram_needed=None, ram_basis="")


def test_a_device_picks_its_preferred_target() -> None:
    assert targets_for(device("stm32-m4")) == ["tflm"]
    assert targets_for(device("coral-dev-board")) == ["edgetpu"]
    assert targets_for(device("jetson-orin-nano")) == ["tensorrt"]
    assert targets_for(device("x86-gateway")) == ["openvino"]


def test_convert_list_prints_targets_and_devices_as_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgeloop.cli.app", "convert", "--list", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"EDGELOOP_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert [t["name"] for t in body["targets"]] == [
        "tflite",
        "tflite-int8",
        "tflm",
        "openvino",
        "coreml",
        "tensorrt",
        "edgetpu",
    ]
    assert {d["name"] for d in body["devices"]} == {p.name for p in PROFILES}

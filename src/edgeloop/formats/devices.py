"""Device profiles: real edge devices, their vendor-published memory figures, and fit checks.

Every figure in :data:`PROFILES` is copied from the vendor page named in ``source``; they are
used only to check whether a converted model fits (flash for the model bytes, RAM for what it
needs while running), never reported as a measurement. Where a board ships in several memory
sizes the profile names the one it describes (``variant``), usually the smallest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeloop.core.errors import ConfigError, NotFoundError

KB = 1024
MB = 1024 * KB
GB = 1024 * MB


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """One device: memory for the model at rest (``flash_bytes``) and while running (``ram_bytes``).

    ``targets`` are the conversion targets the device takes, the preferred one first.
    """

    name: str
    title: str
    variant: str
    cpu: str
    ram_bytes: int
    flash_bytes: int
    accelerators: tuple[str, ...]
    targets: tuple[str, ...]
    microcontroller: bool
    source: str

    def __post_init__(self) -> None:
        if self.ram_bytes < 1 or self.flash_bytes < 1 or not self.targets:
            raise ConfigError(f"device profile {self.name!r} needs RAM, flash and a target")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "variant": self.variant,
            "cpu": self.cpu,
            "ram_bytes": self.ram_bytes,
            "flash_bytes": self.flash_bytes,
            "accelerators": list(self.accelerators),
            "targets": list(self.targets),
            "microcontroller": self.microcontroller,
            "source": self.source,
        }


PROFILES: tuple[DeviceProfile, ...] = (
    DeviceProfile(
        "rpi4",
        "Raspberry Pi 4 Model B",
        "1 GB LPDDR4 (also sold with 2, 4, 8 GB); storage on microSD (16 GB assumed)",
        "Broadcom BCM2711, 4x Cortex-A72 @ 1.8 GHz",
        1 * GB,
        16 * GB,
        (),
        ("tflite-int8", "tflite", "onnx", "openvino"),
        False,
        "https://www.raspberrypi.com/products/raspberry-pi-4-model-b/specifications/",
    ),
    DeviceProfile(
        "rpi5",
        "Raspberry Pi 5",
        "2 GB LPDDR4X (also 4, 8, 16 GB); storage on microSD (16 GB assumed)",
        "Broadcom BCM2712, 4x Cortex-A76 @ 2.4 GHz",
        2 * GB,
        16 * GB,
        (),
        ("tflite-int8", "tflite", "onnx", "openvino"),
        False,
        "https://www.raspberrypi.com/products/raspberry-pi-5/",
    ),
    DeviceProfile(
        "jetson-orin-nano",
        "NVIDIA Jetson Orin Nano Developer Kit",
        "8 GB LPDDR5 shared by CPU and GPU; storage on microSD / NVMe (64 GB assumed)",
        "6x Cortex-A78AE + 1024-core Ampere GPU with 32 Tensor Cores",
        8 * GB,
        64 * GB,
        ("Ampere GPU (TensorRT)",),
        ("tensorrt", "onnx"),
        False,
        "https://www.nvidia.com/en-us/autonomous-machines/embedded-systems/jetson-orin/",
    ),
    DeviceProfile(
        "coral-dev-board",
        "Coral Dev Board",
        "1 GB LPDDR4, 8 GB eMMC",
        "NXP i.MX 8M, 4x Cortex-A53 + Edge TPU (4 TOPS int8)",
        1 * GB,
        8 * GB,
        ("Edge TPU",),
        ("edgetpu", "tflite-int8"),
        False,
        "https://coral.ai/docs/dev-board/datasheet/",
    ),
    DeviceProfile(
        "esp32-s3",
        "Espressif ESP32-S3 (ESP32-S3-WROOM-1-N8 module)",
        "512 KB on-chip SRAM, 8 MB quad-SPI flash in the module; no PSRAM",
        "2x Xtensa LX7 @ 240 MHz with vector instructions",
        512 * KB,
        8 * MB,
        (),
        ("tflm",),
        True,
        "https://www.espressif.com/sites/default/files/documentation/esp32-s3_datasheet_en.pdf",
    ),
    DeviceProfile(
        "stm32-m4",
        "STMicroelectronics STM32F446RE (Cortex-M4)",
        "128 KB SRAM, 512 KB flash",
        "Cortex-M4F @ 180 MHz",
        128 * KB,
        512 * KB,
        (),
        ("tflm",),
        True,
        "https://www.st.com/en/microcontrollers-microprocessors/stm32f446re.html",
    ),
    DeviceProfile(
        "stm32-m7",
        "STMicroelectronics STM32H743ZI (Cortex-M7)",
        "1 MB RAM (incl. 192 KB TCM), 2 MB flash",
        "Cortex-M7 @ 480 MHz",
        1 * MB,
        2 * MB,
        (),
        ("tflm",),
        True,
        "https://www.st.com/en/microcontrollers-microprocessors/stm32h743zi.html",
    ),
    DeviceProfile(
        "x86-gateway",
        "Intel NUC 13 Pro (NUC13ANHi5)",
        "8 GB DDR4-3200 as configured (takes up to 64 GB); 256 GB SSD as configured",
        "Intel Core i5-1340P",
        8 * GB,
        256 * GB,
        ("Intel Iris Xe GPU (OpenVINO)",),
        ("openvino", "onnx"),
        False,
        "https://www.intel.com/content/www/us/en/products/sku/233101/"
        "intel-nuc-13-pro-kit-nuc13anhi5/specifications.html",
    ),
)


def device(name: str) -> DeviceProfile:
    """The profile called ``name``.

    Raises:
        NotFoundError: no such profile (the message lists the known ones).
    """
    for profile in PROFILES:
        if profile.name == name:
            return profile
    raise NotFoundError(
        f"device {name!r} has no profile; known devices: {', '.join(p.name for p in PROFILES)}",
        hint="`edgeloop convert --list` shows the devices and the targets each takes",
    )


@dataclass(frozen=True, slots=True)
class FitCheck:
    """Whether a model needing ``flash_needed`` / ``ram_needed`` bytes fits ``device``.

    A shortfall is how many bytes are missing (0 when it fits); ``ram_needed`` is None when
    it was not measured, and then RAM is not judged.
    """

    device: str
    flash_needed: int
    flash_available: int
    ram_needed: int | None
    ram_available: int
    ram_basis: str

    @property
    def flash_short(self) -> int:
        return max(0, self.flash_needed - self.flash_available)

    @property
    def ram_short(self) -> int:
        return 0 if self.ram_needed is None else max(0, self.ram_needed - self.ram_available)

    @property
    def fits(self) -> bool:
        return self.flash_short == 0 and self.ram_short == 0

    def summary(self) -> str:
        """One line a person reads: fits, or what is short and by how much."""
        if self.fits:
            ram = "RAM not judged" if self.ram_needed is None else f"RAM {_kb(self.ram_needed)}"
            return (
                f"fits {self.device}: flash {_kb(self.flash_needed)} of "
                f"{_kb(self.flash_available)}, {ram} of {_kb(self.ram_available)}"
            )
        parts = []
        if self.flash_short:
            parts.append(
                f"flash needs {_kb(self.flash_needed)}, has {_kb(self.flash_available)} "
                f"({_kb(self.flash_short)} short)"
            )
        if self.ram_short and self.ram_needed is not None:
            parts.append(
                f"RAM needs {_kb(self.ram_needed)} ({self.ram_basis}), has "
                f"{_kb(self.ram_available)} ({_kb(self.ram_short)} short)"
            )
        return f"does not fit {self.device}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "fits": self.fits,
            "flash_needed": self.flash_needed,
            "flash_available": self.flash_available,
            "flash_short": self.flash_short,
            "ram_needed": self.ram_needed,
            "ram_available": self.ram_available,
            "ram_short": self.ram_short,
            "ram_basis": self.ram_basis,
            "summary": self.summary(),
        }


def check_fit(
    profile: DeviceProfile, *, flash_needed: int, ram_needed: int | None, ram_basis: str
) -> FitCheck:
    """Compare a model's needs with ``profile`` (pure)."""
    if flash_needed < 0 or (ram_needed is not None and ram_needed < 0):
        raise ConfigError(f"negative sizes: flash {flash_needed}, RAM {ram_needed}")
    return FitCheck(
        profile.name, flash_needed, profile.flash_bytes, ram_needed, profile.ram_bytes, ram_basis
    )


def _kb(n: int) -> str:
    if n >= MB:
        return f"{n / MB:.2f} MB"
    return f"{n / KB:.1f} KB"

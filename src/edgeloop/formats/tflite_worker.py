"""Runs inside the converter environment: torch ExportedProgram (.pt2) -> .tflite with litert-torch.

This file is executed by path with the converter environment's Python (``python
tflite_worker.py ...``), so it imports nothing from edgeloop: only torch, numpy and litert-torch.
litert-torch pins packages (``typing-extensions<4.13`` through ``xdsl``) that would downgrade
a serving environment, which is why it lives in an environment of its own.

INT8 is PT2E static quantization with litert-torch's quantizer: per-channel symmetric int8
weights, int8 activations calibrated on the given samples, so every compute op runs on
integers (the full-integer model TFLM and the Edge TPU compiler need).

Prints one JSON object on the last line of stdout; exits 2 with the error on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any


def _convert(program: str, out: str, calibration: str, int8: bool) -> dict[str, Any]:
    import importlib

    import numpy as np
    import torch

    # Imported by name: these exist only in the converter environment, not where edgeloop is
    # type-checked.
    litert_torch = importlib.import_module("litert_torch")

    exported = torch.export.load(program)
    samples = np.load(calibration)
    example = (torch.from_numpy(np.ascontiguousarray(samples[:1])),)
    module = exported.module()
    if not int8:
        edge = litert_torch.convert(module, example)
    else:
        pt2e = importlib.import_module("litert_torch.quantize.pt2e_quantizer")
        quant_config = importlib.import_module("litert_torch.quantize.quant_config")
        ao = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")

        config = pt2e.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
        quantizer = pt2e.PT2EQuantizer().set_global(config)
        prepared = ao.prepare_pt2e(module, quantizer)
        with torch.no_grad():
            # The program was exported with batch 1, so calibration feeds one sample at a time.
            for row in samples:
                prepared(torch.from_numpy(np.ascontiguousarray(row[None])))
        converted = ao.convert_pt2e(prepared, fold_quantize=False)
        edge = litert_torch.convert(
            converted, example, quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer)
        )
    edge.export(out)
    import importlib.metadata as md

    return {
        "output": out,
        "int8": int8,
        "calibration_samples": len(samples) if int8 else 0,
        "tools": {
            "litert-torch": md.version("litert-torch"),
            "litert-converter": md.version("litert-converter"),
            "torch": torch.__version__,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--program", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--calibration", required=True)
    parser.add_argument("--int8", action="store_true")
    args = parser.parse_args()
    try:
        # litert-torch reports progress on stdout; stdout must carry only the result.
        with contextlib.redirect_stdout(sys.stderr):
            result = _convert(args.program, args.out, args.calibration, args.int8)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{type(exc).__name__}: {first}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

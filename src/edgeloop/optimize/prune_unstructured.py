"""``prune-unstructured``: magnitude pruning of single weights, with a fine-tune schedule.

The smallest-magnitude weights of every convolution and dense layer are set to zero -- ranked
over all layers together (``scope="global"``) or within each layer (``scope="layer"``) -- in
``steps`` rounds following the cubic schedule of Zhu & Gupta (2017, arXiv:1710.01878):
after round k of n the sparsity is ``s * (1 - (1 - k/n)**3)``, so most weights go early while
the network is still redundant, and each round is followed by ``epochs`` of fine-tuning with
the pruned weights held at zero (``torch.nn.utils.prune`` masks).

What it buys, honestly: the file keeps its dense layout (ONNX Runtime's dense kernels run
exactly as many multiply-adds), so there is NO speed-up; the zeros make the file compress well,
which is what the variant reports (zstd size before and after, :mod:`.sparsity`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from edgeloop.core.errors import ConfigError
from edgeloop.optimize.base import ModelSource, Variant, register
from edgeloop.optimize.finetune import (
    FineTuneOptimizer,
    check_range,
    checkpoint_beside,
    fine_tune_or_keep,
)
from edgeloop.optimize.pruned_checkpoint import save_module
from edgeloop.optimize.sparsity import (
    SparsityCount,
    array_sparsity,
    compressed_size,
    onnx_weight_sparsity,
)
from edgeloop.training.zoo import deployable

METHOD = "prune-unstructured"
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
Weighted = nn.Conv1d | nn.Conv2d | nn.Linear


class PruneScope(StrEnum):
    GLOBAL = "global"  # one magnitude threshold over all layers
    LAYER = "layer"  # the same sparsity in every layer


def cubic_schedule(sparsity: float, steps: int) -> list[float]:
    """Target sparsity after each of ``steps`` rounds (cubic schedule, Zhu & Gupta 2017)."""
    return [sparsity * (1.0 - (1.0 - k / steps) ** 3) for k in range(1, steps + 1)]


def prunable(module: nn.Module) -> list[Weighted]:
    """The layers whose weights are pruned: every convolution and dense layer."""
    return [m for m in module.modules() if isinstance(m, _WEIGHTED)]


def _zero_smallest(values: torch.Tensor, count: int) -> torch.Tensor:
    """A 0/1 mask of ``values``' shape with the ``count`` smallest magnitudes at 0."""
    mask = torch.ones(values.numel())
    # A stable sort breaks ties (weights already at zero) by position: exactly `count` go.
    order = torch.sort(values.detach().abs().flatten(), stable=True).indices
    mask[order[:count]] = 0.0
    return mask.view_as(values)


def masks_for(layers: list[Weighted], sparsity: float, scope: PruneScope) -> list[torch.Tensor]:
    """The masks zeroing ``sparsity`` of the weights, by magnitude, within ``scope``."""
    weights = [layer.weight.detach() for layer in layers]
    if scope is PruneScope.LAYER:
        return [_zero_smallest(w, round(sparsity * w.numel())) for w in weights]
    flat = torch.cat([w.flatten() for w in weights])
    mask = _zero_smallest(flat, round(sparsity * flat.numel()))
    sizes = [w.numel() for w in weights]
    return [m.view_as(w) for m, w in zip(torch.split(mask, sizes), weights, strict=True)]


def weight_sparsity(module: nn.Module) -> SparsityCount:
    """Zeros among the weights of the prunable layers of ``module`` (after masks are made
    permanent)."""
    total = SparsityCount(0, 0)
    for layer in prunable(module):
        total = total + array_sparsity(layer.weight.detach().numpy())
    return total


@register(METHOD)
class UnstructuredPruner(FineTuneOptimizer):
    """Zero the smallest weights to reach ``sparsity`` (0 < sparsity < 1) in ``steps`` rounds.

    ``epochs`` of fine-tuning follow each round (0: prune only). ``scope`` is ``"global"`` (one
    threshold) or ``"layer"`` (the same sparsity in each layer).

    Raises:
        ConfigError: a setting out of range (the message names it and the allowed range).
    """

    name = METHOD
    least_epochs = 0

    def __init__(
        self,
        sparsity: float = 0.8,
        scope: PruneScope | str = PruneScope.GLOBAL,
        steps: int = 3,
        epochs: int = 3,
        lr: float = 1e-3,
        batch_size: int = 64,
        patience: int = 3,
        seed: int = 0,
    ) -> None:
        check_range(METHOD, "sparsity", sparsity, 0.0, 1.0)
        try:
            self.scope = PruneScope(scope)
        except ValueError:
            known = ", ".join(s.value for s in PruneScope)
            raise ConfigError(
                f"method {METHOD!r}: scope {scope!r} is not known; expected one of {known}"
            ) from None
        if isinstance(steps, bool) or not (isinstance(steps, int) and 1 <= steps <= 50):
            raise ConfigError(
                f"method {METHOD!r}: steps {steps!r} is out of range; expected an integer 1..50"
            )
        self.sparsity = float(sparsity)
        self.steps = steps
        self.set_schedule(epochs=epochs, lr=lr, batch_size=batch_size, patience=patience, seed=seed)

    def apply(self, source: ModelSource, out: Path) -> Variant:
        """Prune and fine-tune the checkpoint of ``source``; write the dense ONNX ``out``.

        Raises:
            ConfigError: not fitted, or no checkpoint.
            NotFoundError, UntrustedArtifactError: a missing or corrupt checkpoint.
            ConversionError: the export failed.
        """
        self.fitted_splits()
        module, arch = self.load_parent(source)
        layers = prunable(module)
        config = self.schedule()
        rounds: list[dict[str, Any]] = []
        for target in cubic_schedule(self.sparsity, self.steps):
            for layer, mask in zip(layers, masks_for(layers, target, self.scope), strict=True):
                prune.custom_from_mask(layer, "weight", mask)  # type: ignore[no-untyped-call]
            rounds.append(
                {"target_sparsity": target, **fine_tune_or_keep(self, module, arch, config)}
            )
            for layer in layers:
                # Make the zeros part of the weight itself (drops the mask and its hook).
                prune.remove(layer, "weight")  # type: ignore[no-untyped-call]
        self.export(deployable(module, arch), out)
        ckpt = save_module(checkpoint_beside(out), module, arch, fit=config)
        parent_size, size = compressed_size(source.onnx), compressed_size(out)
        extra = {
            "weight_sparsity": weight_sparsity(module).to_dict(),
            "onnx_weight_sparsity": onnx_weight_sparsity(out).to_dict(),
            "parent_size": parent_size.to_dict(),
            "size": size.to_dict(),
            "zstd_smaller_x": parent_size.zstd_bytes / size.zstd_bytes,
            "val_score": self.val_score(module),
            "val_split": self.val_split(),
            "rounds": rounds,
        }
        return self.variant(
            source,
            out,
            checkpoint=ckpt,
            settings={"schedule": "cubic (Zhu & Gupta 2017)", "importance": "|w|"},
            extra=extra,
            notes=(
                "dense file, zeroed weights: no speed-up is claimed (ONNX Runtime's dense kernels "
                "do the same work); the benefit is the zstd-compressed size",
            ),
        )

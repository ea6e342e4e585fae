"""``prune-structured``: remove whole channels, so the exported model is smaller and faster.

Removing output channel c of a convolution also removes input channel c of every layer that
reads it, the matching BatchNorm entries, and -- through a flatten or a residual add -- whatever
else is coupled to it. Tracking that by hand is where channel pruning goes wrong, so the
dependency graph comes from Torch-Pruning (Fang et al., "DepGraph: Towards Any Structural
Pruning", CVPR 2023; ``pip install torch-pruning``): each coupled group is ranked by the L2 norm
of its weights and the weakest ``ratio`` of every layer's channels are removed physically (the
tensors shrink). The output layer keeps its width. A fine-tune on the train split then recovers
accuracy, early-stopping on the val split.

The pruned module no longer matches its ArchConfig; its checkpoint records the new layer
widths (:mod:`.pruned_checkpoint`) so it reloads without pickling the module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeloop.core.errors import ConfigError, require
from edgeloop.optimize.base import ModelSource, Variant, register
from edgeloop.optimize.finetune import (
    FineTuneOptimizer,
    check_range,
    checkpoint_beside,
    fine_tune_or_keep,
)
from edgeloop.optimize.pruned_checkpoint import LayerKind, layer_shapes, save_module
from edgeloop.training.fit import FitConfig
from edgeloop.training.zoo import ArchConfig, deployable

METHOD = "prune-structured"
EXTRA = "optimize"
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
_WEIGHTED_KINDS = (LayerKind.CONV1D, LayerKind.CONV2D, LayerKind.LINEAR)


def output_layer(module: nn.Module) -> nn.Module:
    """The last convolution or dense layer: its width is the model's output, never pruned."""
    layers = [m for m in module.modules() if isinstance(m, _WEIGHTED)]
    if not layers:
        raise ConfigError(
            f"{type(module).__name__} has no convolution or dense layer to prune",
            hint="prune-structured works on the zoo arches (mlp, cnn, ds-cnn, cnn1d, autoencoder)",
        )
    return layers[-1]


def prune_channels(module: nn.Module, example: torch.Tensor, ratio: float) -> dict[str, Any]:
    """Remove ``ratio`` of the channels of every prunable layer of ``module`` (in place).

    Returns the multiply-accumulate and parameter counts before and after, counted by
    Torch-Pruning on ``example`` (counts, not timings).

    Raises:
        MissingDependencyError: torch-pruning is not installed.
    """
    tp = require("torch_pruning", EXTRA, "Structured (channel) pruning")
    module.eval()
    macs_before, params_before = tp.utils.count_ops_and_params(module, example)
    pruner = tp.pruner.MetaPruner(
        module,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[output_layer(module)],
    )
    pruner.step()
    macs_after, params_after = tp.utils.count_ops_and_params(module, example)
    return {
        "macs_before": int(macs_before),
        "macs_after": int(macs_after),
        "parameters_before": int(params_before),
        "parameters_after": int(params_after),
    }


def channel_widths(module: nn.Module) -> dict[str, int]:
    """Output channels / features of each convolution and dense layer, by layer name."""
    return {s.name: s.outputs for s in layer_shapes(module) if s.kind in _WEIGHTED_KINDS}


@register(METHOD)
class StructuredPruner(FineTuneOptimizer):
    """Remove ``ratio`` (0 < ratio < 1) of the channels of every layer but the output one.

    Then fine-tune for at most ``epochs`` epochs (0: prune only) with Adam at ``lr``.

    Raises:
        ConfigError: a setting out of range (the message names it and the allowed range).
    """

    name = METHOD
    least_epochs = 0

    def __init__(
        self,
        ratio: float = 0.5,
        epochs: int = 10,
        lr: float = 1e-3,
        batch_size: int = 64,
        patience: int = 3,
        seed: int = 0,
    ) -> None:
        check_range(METHOD, "ratio", ratio, 0.0, 1.0)
        self.ratio = float(ratio)
        self.set_schedule(epochs=epochs, lr=lr, batch_size=batch_size, patience=patience, seed=seed)

    def apply(self, source: ModelSource, out: Path) -> Variant:
        """Prune channels of the checkpoint of ``source``, fine-tune, write ONNX ``out``.

        Raises:
            ConfigError: not fitted, or no checkpoint.
            MissingDependencyError: torch-pruning is not installed.
            NotFoundError, UntrustedArtifactError: a missing or corrupt checkpoint.
            ConversionError: the export failed.
        """
        self.fitted_splits()
        module, arch = self.load_parent(source)
        widths_before = channel_widths(module)
        counts = prune_channels(module, torch.from_numpy(self.example()), self.ratio)
        config = self.schedule()
        tuned = fine_tune_or_keep(self, module, arch, config)
        return self._finish(
            source,
            out,
            module,
            arch,
            config,
            {
                **counts,
                **tuned,
                "channels_before": widths_before,
                "channels_after": channel_widths(module),
            },
        )

    def _finish(
        self,
        source: ModelSource,
        out: Path,
        module: nn.Module,
        arch: ArchConfig,
        config: FitConfig | None,
        extra: dict[str, Any],
    ) -> Variant:
        self.export(deployable(module, arch), out)
        ckpt = save_module(checkpoint_beside(out), module, arch, fit=config)
        extra["val_score"] = self.val_score(module)
        extra["val_split"] = self.val_split()
        return self.variant(
            source,
            out,
            checkpoint=ckpt,
            settings={"importance": "group L2 magnitude", "output_layer": "kept"},
            extra=extra,
            packages=("torch-pruning",),
            notes=(
                "channels are removed physically: the ONNX file has smaller tensors; "
                "multiply-accumulate counts are Torch-Pruning's counts, latency is for "
                "`edgeloop bench` to measure",
            ),
        )

"""INT8 fake quantization of a zoo classifier, in the scheme ONNX Runtime's INT8 kernels run.

Weights: int8, symmetric, range [-127, 127] (the restricted range keeps u8 x s8 products clear
of the 16-bit saturation of VNNI-less CPUs), scale = max|w| / 127 per output channel or per
tensor. Activations: uint8, asymmetric, per tensor, range from an exponential moving average of
the batch min / max while training (Jacob et al. 2018, arXiv:1712.05877, section 3), frozen in
eval. The range always holds 0 so that zero padding and ReLU's zeros are exact.

In training mode the fake quantizers are ``torch.fake_quantize_*``: rounding in the forward pass,
the straight-through estimator in the backward pass (gradient 1 inside the range, 0 outside;
Bengio et al. 2013, arXiv:1308.3432). In eval mode (and so in the exported graph) they are the
``quantized_decomposed`` quantize / dequantize ops, which torch's ONNX exporter writes as
QuantizeLinear / DequantizeLinear pairs -- the QDQ format ONNX Runtime fuses into QLinearConv /
QGemm. BatchNorm is folded into the convolution before training, as the exporter folds it too:
the weights trained with fake quantization are exactly the weights that get quantized.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

# Imported for its side effect: it registers torch.ops.quantized_decomposed.*, the ops
# torch's ONNX exporter writes as QuantizeLinear / DequantizeLinear.
import torch.ao.quantization.fx._decomposed
from torch import nn
from torch.nn import functional as F  # noqa: N812  (torch's own convention)
from torch.nn.utils.fusion import fuse_conv_bn_eval

from edgeloop.core.errors import ConfigError

QD: Any = torch.ops.quantized_decomposed
W_MAX = 127  # int8 weights in [-127, 127]
A_MAX = 255  # uint8 activations in [0, 255]
EMA_MOMENTUM = 0.1  # weight of the newest batch in the running activation range
_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
# Layers whose output values are a subset of their input values: a quantized input stays on
# the same grid, so no new quantizer is needed after them (ORT moves the DQ across them).
_KEEPS_GRID = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
# Layers that compute new values (averages): their output needs its own quantizer.
_NEW_VALUES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AvgPool2d)


class ActQuant(nn.Module):
    """Per-tensor uint8 fake quantization of an activation with a learned (EMA) range."""

    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # +inf / -inf mark "no range seen yet"; buffers, so fit() restoring the best epoch's
        # state restores the ranges that went with its weights.
        self.register_buffer("lo", torch.tensor(math.inf))
        self.register_buffer("hi", torch.tensor(-math.inf))
        # Set by freeze(): plain numbers, so the exporter writes constants, not graph inputs.
        self.fixed: tuple[float, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.fixed = None
            self._observe(x.detach())
        scale, zero = self.fixed or self.qparams()
        if self.training:
            return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, A_MAX)
        q = QD.quantize_per_tensor(x, scale, zero, 0, A_MAX, torch.uint8)
        out: torch.Tensor = QD.dequantize_per_tensor(q, scale, zero, 0, A_MAX, torch.uint8)
        return out

    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min(), x.max()
        if not bool(torch.isfinite(self.lo)):
            self.lo.copy_(lo)
            self.hi.copy_(hi)
        else:
            self.lo.lerp_(lo, EMA_MOMENTUM)
            self.hi.lerp_(hi, EMA_MOMENTUM)

    def qparams(self) -> tuple[float, int]:
        """(scale, zero point) of the current range, widened to hold 0.

        Raises:
            ConfigError: no batch has been observed yet (the range is empty).
        """
        if not bool(torch.isfinite(self.lo)):
            raise ConfigError(
                "an activation quantizer has no range yet: run training batches through the "
                "model (calibrate) before evaluating it",
            )
        lo, hi = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        scale = max((hi - lo) / A_MAX, 1e-8)
        zero = min(max(round(-lo / scale), 0), A_MAX)
        return scale, zero


class QuantLayer(nn.Module):
    """A Conv1d / Conv2d / Linear whose weight is fake-quantized to int8 in every forward."""

    def __init__(self, layer: nn.Conv1d | nn.Conv2d | nn.Linear, per_channel: bool) -> None:
        super().__init__()
        if isinstance(layer, _CONV) and layer.padding_mode != "zeros":
            raise ConfigError(
                f"qat handles zero-padded convolutions; got padding_mode={layer.padding_mode!r}"
            )
        self.layer = layer
        self.per_channel = per_channel
        # Set by freeze(): per-channel scales as a constant tensor, a per-tensor scale as a
        # plain float, so the exporter writes constants, not ops on the weight.
        self.fixed: torch.Tensor | float | None = None

    def weight_scale(self) -> torch.Tensor:
        """max|w| / 127, per output channel (shape (C,)) or for the whole tensor (shape ())."""
        w = self.layer.weight.detach()
        amax = w.abs().flatten(1).amax(dim=1) if self.per_channel else w.abs().amax()
        return (amax / W_MAX).clamp(min=1e-8)

    def quantized_weight(self) -> torch.Tensor:
        w = self.layer.weight
        fixed = None if self.training else self.fixed
        if self.per_channel:
            scale = fixed if isinstance(fixed, torch.Tensor) else self.weight_scale()
            zeros = torch.zeros(len(scale), dtype=torch.int32)
            if self.training:
                return torch.fake_quantize_per_channel_affine(w, scale, zeros, 0, -W_MAX, W_MAX)
            z64 = zeros.to(torch.int64)
            q = QD.quantize_per_channel(w, scale, z64, 0, -W_MAX, W_MAX, torch.int8)
            out: torch.Tensor = QD.dequantize_per_channel(
                q, scale, z64, 0, -W_MAX, W_MAX, torch.int8
            )
            return out
        s = fixed if isinstance(fixed, float) else float(self.weight_scale())
        if self.training:
            return torch.fake_quantize_per_tensor_affine(w, s, 0, -W_MAX, W_MAX)
        q = QD.quantize_per_tensor(w, s, 0, -W_MAX, W_MAX, torch.int8)
        out = QD.dequantize_per_tensor(q, s, 0, -W_MAX, W_MAX, torch.int8)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, layer = self.quantized_weight(), self.layer
        if isinstance(layer, nn.Linear):
            return F.linear(x, w, layer.bias)
        conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
        out: torch.Tensor = conv(
            x, w, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups
        )
        return out


def freeze(module: nn.Module) -> nn.Module:
    """Fix every quantizer's scale and zero point as constants (for export); eval mode.

    Training mode clears an activation quantizer's fixed range again (its range moves).
    """
    module.eval()
    for m in module.modules():
        if isinstance(m, ActQuant):
            m.fixed = m.qparams()
        elif isinstance(m, QuantLayer):
            scale = m.weight_scale().clone()
            m.fixed = scale if m.per_channel else float(scale)
    return module


def _leaves(module: nn.Module, arch_name: str) -> list[nn.Module]:
    if not isinstance(module, nn.Sequential) or any(
        isinstance(m, nn.Sequential) for m in module.children()
    ):
        raise ConfigError(
            f"qat handles flat nn.Sequential classifiers (zoo arches mlp, cnn, ds-cnn, cnn1d); "
            f"arch {arch_name!r} builds {type(module).__name__}",
            hint="use static-int8 (post-training quantization) for this model",
        )
    return list(module.children())


def quantize_module(module: nn.Module, *, per_channel: bool, arch_name: str = "?") -> nn.Sequential:
    """A fake-quantized copy of the classifier ``module`` (in eval mode, BN folded);
    ``module`` itself is left as it is.

    Quantizers go on the model input, on each weight layer's output (after its ReLU) except the
    last one (the logits stay float for the softmax), and after each averaging layer that feeds
    a weight layer.

    Raises:
        ConfigError: a module that is not a flat ``nn.Sequential`` or holds a layer not handled.
    """
    leaves = _leaves(copy.deepcopy(module), arch_name)
    weights = [i for i, m in enumerate(leaves) if isinstance(m, (*_CONV, nn.Linear))]
    last = weights[-1] if weights else -1
    out: list[nn.Module] = [ActQuant()]
    on_grid, i = True, 0
    while i < len(leaves):
        m = leaves[i]
        if isinstance(m, (*_CONV, nn.Linear)):
            after = leaves[i + 1] if i + 1 < len(leaves) else None
            if isinstance(m, _CONV) and isinstance(after, _BN):
                m = fuse_conv_bn_eval(m.eval(), after.eval())
                i += 1
            if not on_grid:
                out.append(ActQuant())
            out.append(QuantLayer(m, per_channel))
            if i + 1 < len(leaves) and isinstance(leaves[i + 1], nn.ReLU):
                out.append(leaves[i + 1])
                i += 1
            on_grid = i < last
            if on_grid:
                out.append(ActQuant())
        elif isinstance(m, _KEEPS_GRID):
            out.append(m)
        elif isinstance(m, _NEW_VALUES):
            out.append(m)
            # Quantize right here, before any dropout: in training, dropout rescales by
            # 1 / (1 - p) and would widen the observed range beyond what eval ever sees.
            on_grid = i < last
            if on_grid:
                out.append(ActQuant())
        else:
            raise ConfigError(
                f"qat cannot quantize layer {i} ({type(m).__name__}) of arch {arch_name!r}",
                hint="use static-int8 (post-training quantization) for this model",
            )
        i += 1
    return nn.Sequential(*out).eval()


@torch.no_grad()
def calibrate(module: nn.Module, x: torch.Tensor, batch_size: int = 64) -> None:
    """Set every activation range from ``x`` (train samples), batch by batch, weights unchanged.

    The module is in train mode only for the ranges' sake; BatchNorm was folded away, dropout
    changes no range statistics that matter here. Its mode is restored.
    """
    was_training = module.training
    module.train()
    try:
        for start in range(0, len(x), batch_size):
            module(x[start : start + batch_size])
    finally:
        module.train(was_training)


def float_weights(quantized: nn.Sequential, original: nn.Module) -> nn.Module:
    """Write the fine-tuned float weights back into ``original``'s layout (its checkpoint form).

    A conv whose BatchNorm was folded keeps the folded weight; the BatchNorm becomes the
    identity plus the folded bias (mean 0, var 1 - eps, gamma 1, beta = bias), so ``original``
    computes exactly what the fine-tuned float network computes, and it fits its ArchConfig.
    """
    layers = [m.layer for m in quantized.children() if isinstance(m, QuantLayer)]
    targets = [m for m in original.children() if isinstance(m, (*_CONV, nn.Linear))]
    children = list(original.children())
    with torch.no_grad():
        for trained, target in zip(layers, targets, strict=True):
            target.weight.copy_(trained.weight)
            index = children.index(target)
            bn = children[index + 1] if index + 1 < len(children) else None
            if isinstance(bn, _BN) and trained.bias is not None:
                bn.weight.fill_(1.0)
                bn.bias.copy_(trained.bias)
                bn.running_mean.zero_()  # type: ignore[union-attr]
                bn.running_var.fill_(1.0 - bn.eps)  # type: ignore[union-attr]
            elif trained.bias is not None and target.bias is not None:
                target.bias.copy_(trained.bias)
    return original.eval()

"""The networks of the zoo: small convolutional and dense nets sized for edge devices.

Each builder takes an :class:`~edgeloop.training.zoo.ArchConfig` (already validated, so the
sample shape fits the net) and returns a freshly initialised module. Classifiers output
logits of shape (N, num_classes); the autoencoder outputs a reconstruction of its input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from edgeloop.training.zoo import ArchConfig


def mlp(c: ArchConfig) -> nn.Module:
    hidden = 4 * c.width
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(c.input_shape), hidden),
        nn.ReLU(),
        nn.Dropout(c.dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(c.dropout),
        nn.Linear(hidden, c.num_classes),
    )


def _conv_bn(cin: int, cout: int, kernel: int | tuple[int, int], **kw: Any) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU()]


def cnn(c: ArchConfig) -> nn.Module:
    w = c.width
    return nn.Sequential(
        *_conv_bn(c.input_shape[0], w, 3, padding=1),
        *_conv_bn(w, 2 * w, 3, padding=1),
        nn.MaxPool2d(2),
        *_conv_bn(2 * w, 2 * w, 3, padding=1),
        # Global pooling keeps the head independent of the image size.
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(c.dropout),
        nn.Linear(2 * w, c.num_classes),
    )


def ds_cnn(c: ArchConfig) -> nn.Module:
    # DS-CNN of Zhang et al., "Hello Edge: Keyword Spotting on Microcontrollers" (2017,
    # arXiv:1711.07128): a strided 10x4 conv over (time, frequency), then depthwise-separable
    # blocks (3x3 depthwise + 1x1 pointwise), global average pooling and one dense layer.
    w = c.width
    layers = _conv_bn(c.input_shape[0], w, (10, 4), stride=2, padding=(5, 1))
    for _ in range(4):
        layers += _conv_bn(w, w, 3, padding=1, groups=w)
        layers += _conv_bn(w, w, 1)
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(c.dropout),
        nn.Linear(w, c.num_classes),
    )


def _conv1d_bn(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    pad = kernel // 2
    return [nn.Conv1d(cin, cout, kernel, padding=pad, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]


def cnn1d(c: ArchConfig) -> nn.Module:
    w = c.width
    return nn.Sequential(
        *_conv1d_bn(c.input_shape[0], w, 5),
        *_conv1d_bn(w, 2 * w, 5),
        nn.MaxPool1d(2),
        *_conv1d_bn(2 * w, 2 * w, 3),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Dropout(c.dropout),
        nn.Linear(2 * w, c.num_classes),
    )


class Autoencoder(nn.Module):
    """Dense autoencoder: flatten -> 2w -> w/2 (bottleneck) -> 2w -> input shape.

    Trained on normal samples only; a sample it reconstructs badly is unlike the normal data.
    """

    def __init__(self, input_shape: tuple[int, ...], width: int, dropout: float) -> None:
        super().__init__()
        features, hidden, latent = math.prod(input_shape), 2 * width, max(2, width // 2)
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, latent),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.ReLU(),
            nn.Linear(hidden, features),
            nn.Unflatten(1, input_shape),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.decoder(self.encoder(x))
        return out


class AnomalyScorer(nn.Module):
    """Wraps an autoencoder so the model answers with the anomaly score itself.

    Output: shape (N,), the per-sample mean squared reconstruction error; higher = more anomalous.
    """

    def __init__(self, autoencoder: Autoencoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recon: torch.Tensor = self.autoencoder(x)
        err = (recon - x) ** 2
        return err.flatten(1).mean(dim=1)


class Probabilities(nn.Module):
    """Wraps a classifier so the model answers with class probabilities (softmax of the logits)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(x)
        return torch.softmax(logits, dim=1)

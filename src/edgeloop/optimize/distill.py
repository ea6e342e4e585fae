"""``distill``: train a smaller student on a teacher's softened outputs (knowledge distillation).

The loss (Hinton, Vinyals & Dean 2015, arXiv:1503.02531) mixes the teacher's soft targets with
the labels::

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
         + (1 - alpha) * cross_entropy(student, labels)

A temperature T > 1 spreads the teacher's probability over the wrong classes, which carries how
the teacher generalises ("a 7 looks a bit like a 1"); T^2 keeps the soft term's gradients on
the scale of the hard term's as T changes.

Whether the teacher helped is measured, not assumed: the same student (same arch, same seed,
so the same initial weights and batch order, same epochs and early stopping) is trained again
with alpha = 0 -- labels only -- and written beside the variant as ``NAME.no-teacher.onnx``; the
variant records both students' val accuracy, and a benchmark measures both files on the test
split.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812  (torch's own convention)

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Splits
from edgeloop.optimize.base import ModelSource, Variant, register
from edgeloop.optimize.finetune import (
    CLASSIFIER_ARCHES,
    FineTuneOptimizer,
    check_range,
    checkpoint_beside,
)
from edgeloop.optimize.pruned_checkpoint import save_module
from edgeloop.training.fit import FitConfig
from edgeloop.training.metrics import predict_logits
from edgeloop.training.zoo import ArchConfig, build, deployable, parameter_count

METHOD = "distill"


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al.'s loss; plain cross-entropy when ``teacher`` is None or ``alpha`` is 0."""
    hard = F.cross_entropy(logits, labels)
    if teacher is None or alpha == 0.0:
        return hard
    t = temperature
    soft = F.kl_div(
        F.log_softmax(logits / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean"
    )
    return alpha * t * t * soft + (1.0 - alpha) * hard


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[torch.Tensor]:
    order = torch.from_numpy(rng.permutation(n))
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if len(idx) > 1:  # BatchNorm cannot normalise one sample in train mode
            yield idx


def _val_loss(module: nn.Module, splits: Splits) -> float:
    logits = torch.from_numpy(predict_logits(module, splits.val.x))
    return float(F.cross_entropy(logits, torch.from_numpy(splits.val.y.astype(np.int64))))


def train_student(
    arch: ArchConfig,
    splits: Splits,
    config: FitConfig,
    teacher_logits: torch.Tensor | None,
    *,
    temperature: float,
    alpha: float,
) -> tuple[nn.Module, int, int]:
    """Train ``build(arch)`` from seed ``config.seed``; returns (student, epochs run, best epoch).

    Early-stops on the val cross-entropy and keeps the best epoch's weights, as
    :func:`edgeloop.training.fit` does. The caller's global RNG state is left untouched.
    """
    x = torch.from_numpy(np.ascontiguousarray(splits.train.x, dtype=np.float32))
    y = torch.from_numpy(splits.train.y.astype(np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        student = build(arch)
        opt = torch.optim.Adam(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        rng = np.random.default_rng(config.seed)
        best, best_state, best_epoch, stale, epoch = math.inf, student.state_dict(), 0, 0, 0
        for epoch in range(1, config.epochs + 1):
            student.train()
            for idx in _batches(len(x), config.batch_size, rng):
                soft = None if teacher_logits is None else teacher_logits[idx]
                loss = distillation_loss(student(x[idx]), y[idx], soft, temperature, alpha)
                opt.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)
                opt.step()
            val = _val_loss(student, splits)
            if val < best:
                best, best_epoch, stale = val, epoch, 0
                best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    break
        student.load_state_dict(best_state)
    return student.eval(), epoch, best_epoch


@register(METHOD)
class Distiller(FineTuneOptimizer):
    """Distill the checkpoint (teacher) into a student of width ``width_ratio`` x the teacher's.

    ``student_arch`` defaults to the teacher's arch. ``temperature`` > 0 softens both outputs;
    ``alpha`` in [0, 1] weighs the teacher's soft targets against the labels.

    Raises:
        ConfigError: a setting out of range (the message names it and the allowed range).
    """

    name = METHOD
    arches = CLASSIFIER_ARCHES

    def __init__(
        self,
        temperature: float = 4.0,
        alpha: float = 0.7,
        width_ratio: float = 0.5,
        student_arch: str | None = None,
        epochs: int = 30,
        lr: float = 3e-3,
        batch_size: int = 64,
        patience: int = 5,
        seed: int = 0,
    ) -> None:
        check_range(METHOD, "temperature", temperature, 0.0, 100.0)
        check_range(METHOD, "alpha", alpha, 0.0, 1.0, closed=True)
        check_range(METHOD, "width_ratio", width_ratio, 0.0, 1.0)
        if student_arch is not None and student_arch not in CLASSIFIER_ARCHES:
            raise ConfigError(
                f"method {METHOD!r}: student_arch {student_arch!r} is not a classifier arch; "
                f"expected one of {', '.join(CLASSIFIER_ARCHES)}"
            )
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.width_ratio = float(width_ratio)
        self.student_arch = student_arch
        self.set_schedule(epochs=epochs, lr=lr, batch_size=batch_size, patience=patience, seed=seed)

    def _student(self, teacher: nn.Module, arch: ArchConfig) -> ArchConfig:
        student = ArchConfig(
            self.student_arch or arch.arch,
            arch.input_shape,
            arch.num_classes,
            width=max(1, round(arch.width * self.width_ratio)),
            dropout=arch.dropout,
        )
        small, big = parameter_count(build(student)), parameter_count(teacher)
        if small >= big:
            raise ConfigError(
                f"method {METHOD!r}: the student ({student.arch}, width {student.width}) has "
                f"{small} parameters, not fewer than the teacher's {big}",
                hint="lower width_ratio or pick a smaller student_arch",
            )
        return student

    def apply(self, source: ModelSource, out: Path) -> Variant:
        """Train the student with and without the teacher; write both, return the distilled one.

        Raises:
            ConfigError: not fitted, no checkpoint, a non-classifier teacher, or a student that is
                not smaller than the teacher.
            NotFoundError, UntrustedArtifactError: a missing or corrupt checkpoint.
            ConversionError: the export failed.
        """
        splits = self.fitted_splits()
        teacher, arch = self.load_parent(source)
        student_arch = self._student(teacher, arch)
        config = self.required_schedule()
        # The teacher is fixed (eval mode, no dropout): its logits are computed once.
        soft = torch.from_numpy(predict_logits(teacher, splits.train.x))
        runs = {
            name: train_student(
                student_arch, splits, config, logits, temperature=self.temperature, alpha=alpha
            )
            for name, logits, alpha in (("student", soft, self.alpha), ("no_teacher", None, 0.0))
        }
        baseline_path = out.with_name(f"{out.stem}.no-teacher.onnx")
        self.export(deployable(runs["no_teacher"][0], student_arch), baseline_path)
        self.export(deployable(runs["student"][0], student_arch), out)
        ckpt = save_module(checkpoint_beside(out), runs["student"][0], student_arch, fit=config)
        extra: dict[str, Any] = {
            "val_split": self.val_split(),
            "teacher": self._figures(teacher, arch),
            **{name: self._figures(m, student_arch, e, b) for name, (m, e, b) in runs.items()},
        }
        extra["no_teacher"]["output"] = str(baseline_path)
        extra["no_teacher"]["parity_vs_teacher"] = self.measure_parity(
            source.onnx, baseline_path
        ).to_dict()
        return self.variant(
            source,
            out,
            checkpoint=ckpt,
            settings={"student": student_arch.to_dict(), "loss": "Hinton et al. 2015"},
            extra=extra,
            notes=(
                f"the same student trained without the teacher (alpha=0, same seed and epochs) is "
                f"{baseline_path.name}; compare both on the test split with `edgeloop bench`",
            ),
        )

    def _figures(
        self,
        module: nn.Module,
        arch: ArchConfig,
        epochs: int | None = None,
        best: int | None = None,
    ) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "arch": arch.to_dict(),
            "parameters": parameter_count(module),
            "val_accuracy": self.val_score(module),
        }
        if epochs is not None:
            figures.update(epochs_run=epochs, best_epoch=best)
        return figures

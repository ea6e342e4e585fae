"""Model optimization that is measured, not guessed: quantization, pruning, QAT, distillation.

Every optimizer follows :class:`edgeloop.optimize.base.Optimizer` and yields a
:class:`~edgeloop.optimize.base.Variant`; :mod:`edgeloop.bench` measures each variant.
"""

from edgeloop.optimize.base import ModelSource, Optimizer, Variant, create, known_methods, register

__all__ = ["ModelSource", "Optimizer", "Variant", "create", "known_methods", "register"]

"""A typed registry by name (STYLE habit 8) for strategies and selectors.

Asking for an unknown name raises :class:`NotFoundError` listing the known names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Generic, TypeVar

from edgeloop.core.errors import ConfigError, NotFoundError

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories of one kind (``what``: "strategy", "selector") keyed by name."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register a factory under ``name``.

        Raises:
            ConfigError: the name is already taken.
        """

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ConfigError(f"a federated {self._what} named {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return add

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._factories))

    def create(self, name: str, **params: object) -> T:
        """Build the entry registered as ``name`` with its parameters.

        Raises:
            NotFoundError: unknown name (the message lists the known ones).
            ConfigError: a parameter the entry does not take (the message lists the ones it does).
        """
        factory = self._factories.get(name)
        if factory is None:
            raise NotFoundError(
                f"no federated {self._what} named {name!r}; known: {', '.join(self.names())}",
                hint=f"pick one of: {', '.join(self.names())}",
            )
        signature = inspect.signature(factory)
        try:
            signature.bind(**params)
        except TypeError as exc:
            raise ConfigError(
                f"federated {self._what} {name!r} does not take {sorted(params)}: {exc}",
                hint=f"its parameters: {', '.join(signature.parameters) or 'none'}",
            ) from None
        return factory(**params)

"""One error tree (STYLE.md habit 5, issue 17): every exception class defined in ``src/``
derives from :class:`EdgeError`, so each carries its exit code and HTTP status.

Read from the source (no import of every module: that would pull torch and cost seconds): a
class is an exception when a base is a builtin exception, a library class named ``...Error``
or ``...Exception``, or an exception class of ``src/``; it must reach ``EdgeError`` through
classes of ``src/``."""

from __future__ import annotations

import ast
import builtins
import ssl
from pathlib import Path

from edgeloop.core.errors import TransportError
from edgeloop.core.tls import PinMismatchError

SRC = Path(__file__).resolve().parents[2] / "src" / "edgeloop"
BUILTIN = {
    n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)
}


def _classes() -> dict[str, tuple[str, list[str]]]:
    """Class name -> (where, the last name of each base)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for file in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.ClassDef):
                bases = [b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "")
                         for b in node.bases]  # fmt: skip
                found[node.name] = (f"{file.relative_to(SRC)}:{node.lineno}", bases)
    return found


def test_every_exception_class_in_src_is_an_edge_error() -> None:
    classes = _classes()

    def reaches(name: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == goal:
            return True
        bases = classes.get(name, ("", []))[1]
        return name not in seen and any(reaches(b, goal, seen | {name}) for b in bases)

    def is_exception(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name not in classes:  # a library's class
            return name in BUILTIN or name.endswith(("Error", "Exception"))
        bases = classes[name][1]
        return name not in seen and any(is_exception(b, seen | {name}) for b in bases)

    assert len(classes) > 300 and "EdgeError" in classes  # the walk saw the package
    outside = [
        f"{name} ({classes[name][0]})"
        for name in classes
        if name != "EdgeError" and is_exception(name) and not reaches(name, "EdgeError")
    ]
    assert outside == []


def test_a_pin_mismatch_is_an_ssl_error_and_a_transport_error() -> None:
    # was: ssl.SSLCertVerificationError only (no exit code, no HTTP status, no hint)
    error = PinMismatchError("the certificate is not the pinned one", hint="re-enroll")
    assert isinstance(error, ssl.SSLCertVerificationError)  # HTTP clients still wrap it
    assert isinstance(error, TransportError) and error.hint == "re-enroll"
    assert str(error) == "the certificate is not the pinned one\n  hint: re-enroll"

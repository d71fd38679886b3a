"""Learning-with-noisy-labels methods.

Every module in this package except ``base`` defines one method and registers it with
``@register_method``; all of them are imported here, so adding a method is adding one file.
"""

import difflib
import importlib
import pkgutil

from ..errors import UserError
from .base import METHODS, Method, register_method

__all__ = ["METHODS", "Method", "register_method", "get_method", "candidate_readers", "usable_methods"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def get_method(name: str) -> type[Method]:
    """Returns the registered method class called `name`.

    Raises UserError listing the known methods when there is none, with the closest name
    (ignoring case) as a suggestion.
    """
    if name not in METHODS:
        close = difflib.get_close_matches(name.lower(), sorted(METHODS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"--method {name!r}: unknown; {hint}choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def candidate_readers() -> str:
    """Returns the names of the methods that learn from candidate-label sets, comma-separated."""
    return ", ".join(name for name, cls in sorted(METHODS.items()) if cls.reads_candidates)


def usable_methods(features: str) -> list[str]:
    """Returns the names of the methods that can train on `features` (``finetune`` or ``frozen``), sorted."""
    return sorted(name for name, cls in METHODS.items() if features == "frozen" or not cls.needs_embeddings)

"""Learning-with-noisy-labels methods. Each module registers one method on import."""

from . import ce  # noqa: F401  (registers the method)
from .base import METHODS, Method, register_method

__all__ = ["METHODS", "Method", "register_method", "get_method"]


def get_method(name: str) -> type[Method]:
    """Returns the registered method class called `name`.

    Raises UserError listing the known methods when there is none.
    """
    from ..errors import UserError

    if name not in METHODS:
        raise UserError(f"--method {name!r}: unknown; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]

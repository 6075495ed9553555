"""Learning methods, one file each, all on the shared loop in ``training.loop``."""

from training.methods import supervised  # noqa: F401  (registers itself)
from training.methods.base import METHODS, Method, get_method, register

__all__ = ["METHODS", "Method", "get_method", "register"]

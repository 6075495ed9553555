"""Learning methods, one file each, all on the shared loop in ``training.loop``."""

from training.methods import dividemix, fixmatch, mean_teacher, noisy_student, supervised  # noqa: F401  (register)
from training.methods.base import METHODS, Method, get_method, register

__all__ = ["METHODS", "Method", "get_method", "register"]

"""Learning methods, one file each, all on the shared loop in ``training.loop``.

Every module in this package is imported by ``discover()``; each registers its method
with ``@register``. Adding a method is adding a file.
"""

from training.methods.base import METHODS, Method, discover, get_method, register

discover()

__all__ = ["METHODS", "Method", "discover", "get_method", "register"]

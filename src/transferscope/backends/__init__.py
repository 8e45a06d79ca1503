"""Model backends behind one interface: effnet-lite, hf, torch (user modules), random, raw."""

from transferscope.backends import effnet_lite, hf, simple, zoo  # noqa: F401  (registration)
from transferscope.backends.base import Backend, create_backend, list_backends, register_backend

__all__ = ["Backend", "create_backend", "list_backends", "register_backend"]

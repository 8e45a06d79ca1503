"""Model backends behind one contract: effnet-lite, hf, torch (user modules), timm,
torchvision, random twins and the raw input. See :mod:`transferscope.backends.base`."""

from transferscope.backends import effnet_lite, hf, simple, zoo  # noqa: F401  (registration)
from transferscope.backends.base import (
    BACKENDS,
    Backend,
    FinetunableBackend,
    Preprocessing,
    check_model_name,
    create_backend,
    list_backends,
    register_backend,
)

__all__ = ["BACKENDS", "Backend", "FinetunableBackend", "Preprocessing", "check_model_name",
           "create_backend", "list_backends", "register_backend"]

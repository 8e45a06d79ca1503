"""Model backends behind one contract: effnet-lite, hf, torch (user modules), timm,
torchvision, wordllama, the package's shipped models (zoo), random twins and the raw input.
See :mod:`transferscope.backends.base`."""

from transferscope.backends import effnet_lite, hf, shipped, simple, wordllama, zoo  # noqa: F401
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

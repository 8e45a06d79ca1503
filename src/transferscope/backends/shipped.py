"""``zoo:<name>``: the small models the package ships (:mod:`transferscope.zoo`: three LeNet-5s
and a small BERT, the demo's sources), by name, so that what ``tscope demo`` shows can be
ranked, advised on and fine-tuned like any model."""

from __future__ import annotations

from transferscope.backends.base import create_backend, register_backend


@register_backend("zoo")
def _shipped(name):
    """The backend of ``zoo:<name>``: the shipped file's ``torch:`` or ``hf:`` model, named as
    given (tables and stores show ``zoo:<name>``)."""
    from transferscope.zoo import zoo_model

    backend = create_backend(zoo_model(name.arg) + (f"@{name.size}" if name.size else ""))
    backend.name = name.text
    return backend

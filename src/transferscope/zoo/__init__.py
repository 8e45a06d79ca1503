"""Small models shipped with the package, for the demo (``tscope demo``): two LeNet-5 sources
of 250 KB each, trained by ``benchmarks/make_zoo.py`` on the offline ``mnist5k`` digits.

- ``lenet-mnist``: trained on the 10 digit classes (selected on held-out digits): a source
  that transfers to other digit data;
- ``lenet-shuffled``: trained on the same kind of images with their labels shuffled once, to
  memorisation (Zhang et al., ICLR 2017): features fitted to noise, a source that does not.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
ZOO = {"lenet-mnist": "lenet-mnist.safetensors", "lenet-shuffled": "lenet-shuffled.safetensors"}


def zoo_model(name: str) -> str:
    """The ``torch:`` model name of a shipped model (see the module docstring).

    Parameters
    ----------
    name : str
        ``"lenet-mnist"`` or ``"lenet-shuffled"``.

    Returns
    -------
    str
        ``torch:<package>/zoo/lenet.py:lenet@<package>/zoo/<name>.safetensors``.
    """
    from transferscope.errors import InputError

    if name not in ZOO:
        raise InputError(f"Expected a shipped model among {', '.join(ZOO)}, got {name!r}")
    return f"torch:{HERE / 'lenet.py'}:lenet@{HERE / ZOO[name]}"

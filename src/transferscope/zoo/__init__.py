"""Small models shipped with the package, for the demo (``tscope demo``), built by
``benchmarks/make_zoo.py`` offline:

- ``lenet-mnist`` (250 KB): LeNet-5 trained on the 10 digit classes of ``mnist5k`` (selected
  on held-out digits): a source that transfers to other digit data;
- ``lenet-shuffled`` (250 KB): the same kind of images with their labels shuffled once, trained
  to memorisation (Zhang et al., ICLR 2017): features fitted to noise, whose linear probe falls
  below a random network's. On the benchmark's image targets it never beat scratch beyond its
  interval; on the demo's digits full fine-tuning from it matched scratch at twice scratch's
  budget (README, "The transfer benchmark");
- ``lenet-relabelled`` (250 KB): LeNet-5 trained on 7 successive tasks, each 1,000 of those
  images with fresh random labels: a network that has lost its plasticity (Dohare et al.,
  Nature 2024), fitting only 74 % of its last task's labels, with many units that never fire
  on the demo's digits; on them full fine-tuning from it loses to scratch (-0.33, NEGATIVE;
  README, "The transfer benchmark"); a benchmark source too, on the Fashion-MNIST targets
  (``benchmarks/shipped-images-relabelled.toml``: NEGATIVE on 3 of its 4 cells);
- ``bert-shuffled`` (1.5 MB, a Hugging Face folder): the text benchmark's small BERT (2 blocks
  of width 64, MiniLM's WordPiece vocabulary cut to 4,000 tokens) trained to memorise 1,500
  fortunes of five categories the demo's target does not use, their labels shuffled once; on
  the demo's text target it loses to scratch (-0.10, NEGATIVE).
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
ZOO = {"lenet-mnist": "lenet-mnist.safetensors", "lenet-shuffled": "lenet-shuffled.safetensors",
       "lenet-relabelled": "lenet-relabelled.safetensors", "bert-shuffled": "bert-shuffled"}


def zoo_model(name: str) -> str:
    """The model name of a shipped model (see the module docstring).

    Parameters
    ----------
    name : str
        ``"lenet-mnist"``, ``"lenet-shuffled"``, ``"lenet-relabelled"`` or ``"bert-shuffled"``.

    Returns
    -------
    str
        ``torch:<package>/zoo/lenet.py:lenet@<package>/zoo/<name>.safetensors`` for a LeNet,
        ``hf:<package>/zoo/<name>`` for a Hugging Face folder.
    """
    from transferscope.errors import InputError

    if name not in ZOO:
        raise InputError(f"Expected a shipped model among {', '.join(ZOO)}, got {name!r}")
    if not ZOO[name].endswith(".safetensors"):
        return f"hf:{HERE / ZOO[name]}"
    return f"torch:{HERE / 'lenet.py'}:lenet@{HERE / ZOO[name]}"

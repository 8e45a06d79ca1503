"""The study spec: a TOML file naming targets, sources, strategies, data fractions, seeds,
metrics and budgets. Validated in one place, with one-line errors.

    name = "ucr-transfer"
    targets = ["ucr:GunPoint", "ucr:ArrowHead"]
    sources = ["pretrained:fcn-ArrowHead", "effnet-lite:0"]   # model names, or pretrain entries
    strategies = ["full"]
    fractions = [0.25, 1.0]
    seeds = 3
    metrics = ["logme", "hscore_reg", "linear_probe", "knn"]
    db = "sqlite:///ucr-transfer.db"
    splits = 5                   # K-fold cross-validation (1: one split; default: by size)
    check_budget = false         # also the baseline at twice the budget
    # val_data = {"ucr:GunPoint" = "gunpoint-val.npz"}   # a target's own validation set
    # test_data = {"ucr:GunPoint" = "gunpoint-test.npz"} # ... and test set (then splits = 1)
    # width = "none"             # the feature transform before scoring (rank --width; pca:32)

    [train]                      # TrainConfig fields
    epochs = 30
    [strategy_options.full]      # per-strategy options
    lr = 1e-3
    [[pretrain]]                 # a source trained here first (torch: models)
    name = "fcn-ArrowHead"
    model = "torch:examples/fcn.py:fcn"
    data = "ucr:ArrowHead"
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from transferscope.config import DEFAULT_SEEDS, TrainConfig
from transferscope.errors import InputError
from transferscope.finetune.strategies import make_strategy
from transferscope.metrics import model_metrics
from transferscope.metrics.width import DEFAULT_WIDTH, check_width
from transferscope.registry import check_options, check_types, suggest
from transferscope.scoring import DEFAULT_METRICS


@dataclass
class PretrainSpec:
    """A ``[[pretrain]]`` entry: a ``torch:`` model trained from scratch on ``data`` first;
    its checkpoint becomes the source ``pretrained:<name>``."""

    name: str
    model: str  # a torch:<file.py>:<factory> model, trained from scratch on data
    data: str
    layer: str | None = None
    epochs: int = 60
    batch_size: int = 16
    lr: float = 1e-3
    patience: int = 15
    seed: int = 0


@dataclass
class Budgets:
    """``[budgets]``: ``max_runs`` (refuse larger grids: a typo in a grid is expensive),
    ``per_class`` (subsample each target), ``subsamples`` (behind the score intervals)."""

    max_runs: int = 5000
    per_class: int | None = None
    subsamples: int = 20


@dataclass
class StudySpec:
    """A study: the grid targets x sources x strategies x fractions x seeds, its metrics,
    training settings, pretraining entries and budgets (see the module docstring).

    The evaluation protocol is ``tscope finetune``'s, so the two share runs: ``splits``
    (``None``: 5-fold cross-validation for a target of fewer than 1000 samples without a test
    set, else one split, :func:`transferscope.finetune.run.resolve_folds`; ``1``: one split;
    ``K >= 2``: K folds, each seed a repetition with its own folds), ``check_budget`` (also
    the baseline arm at twice the budget, arm ``"<baseline> x2 budget"``), and ``val_data`` /
    ``test_data``: target name -> the dataset (name or path) used as that target's validation
    / test set. ``width`` is the feature transform every source gets before it is scored
    (:mod:`transferscope.metrics.width`).
    """

    name: str
    targets: list
    sources: list
    strategies: list = field(default_factory=lambda: ["full"])
    fractions: list = field(default_factory=lambda: [1.0])
    seeds: int = DEFAULT_SEEDS
    metrics: list = field(default_factory=lambda: list(DEFAULT_METRICS))
    baseline: str = "scratch"
    layer: str | None = None
    exclude_self: bool = True  # skip a pretrained source on its own pretraining data
    db: str = "sqlite:///tscope.db"
    artifacts: str | None = None  # folder for pretrained checkpoints (default: beside the spec)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy_options: dict = field(default_factory=dict)
    pretrain: list = field(default_factory=list)
    budgets: Budgets = field(default_factory=Budgets)
    splits: int | None = None
    check_budget: bool = False
    val_data: dict = field(default_factory=dict)
    test_data: dict = field(default_factory=dict)
    width: str = DEFAULT_WIDTH
    path: Path | None = None

    def scoring(self) -> dict:
        """What a scoring run's identity records (``RunConfig.scoring``): the metrics, the
        subsamples behind their intervals and the width transform."""
        return {"metrics": list(self.metrics), "subsamples": self.budgets.subsamples,
                "width": self.width}

    @property
    def artifacts_dir(self) -> Path:
        """Where pretrained checkpoints go (``artifacts``, or ``<name>-artifacts`` beside the
        spec file)."""
        if self.artifacts:
            return Path(self.artifacts)
        base = self.path.parent if self.path is not None else Path.cwd()
        return base / f"{self.name}-artifacts"


def _fields(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _build(cls, table: dict, where: str):
    if not isinstance(table, dict):
        raise InputError(f"Expected a table for {where}, got {type(table).__name__}")
    check_options(where, table, _fields(cls))
    check_types(where, cls, table)
    try:
        return cls(**table)
    except TypeError as exc:
        raise InputError(f"Expected the required keys of {where}: {exc}") from None


def _names(value, key: str) -> list:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InputError(f"Expected a non-empty list for {key!r}, got {value!r}; the study "
                         "grid would be empty")
    if len(set(map(str, value))) != len(value):
        raise InputError(f"Expected distinct entries in {key!r}, got {value}")
    return value


def parse_spec(table: dict, path: Path | None = None) -> StudySpec:
    """A validated :class:`StudySpec` from a parsed TOML table (one-line errors)."""
    table = dict(table)
    known = _fields(StudySpec)
    known.pop("path")
    check_options("the study spec", table, known)
    for key in ("name", "targets", "sources"):
        if key not in table:
            raise InputError(f"Expected {key!r} in the study spec, got keys {sorted(table)}")
    check_types("the study spec", StudySpec,
                {k: v for k, v in table.items() if k not in ("train", "budgets", "pretrain")})
    name = table["name"]
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"Expected a study name of letters, digits, - and _, got {name!r}")
    table["targets"] = _names(table["targets"], "targets")
    table["sources"] = _names(table["sources"], "sources")
    table["strategies"] = _names(table.get("strategies", ["full"]), "strategies")
    fractions = _names(table.get("fractions", [1.0]), "fractions")
    if not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions):
        raise InputError(f"Expected numbers in (0, 1] for fractions, got {fractions}; e.g. "
                         "fractions = [0.25, 1.0]")
    table["fractions"] = [float(f) for f in fractions]
    table["metrics"] = _names(table.get("metrics", list(DEFAULT_METRICS)), "metrics")
    table["train"] = _build(TrainConfig, table.get("train", {}), "[train]")
    table["budgets"] = _build(Budgets, table.get("budgets", {}), "[budgets]")
    table["pretrain"] = [_build(PretrainSpec, t, f"[[pretrain]] #{i + 1}")
                         for i, t in enumerate(table.get("pretrain", []))]
    spec = StudySpec(**table, path=path)
    validate(spec)
    return spec


def load_spec(path) -> StudySpec:
    """Read and validate a study spec (TOML file)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from transferscope.errors import require

        tomllib = require("tomli", "study", "reading study specs on Python 3.10",
                          install="pip install tomli")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Expected a study spec file (TOML), got {str(p)!r}, which does not "
                         "exist")
    try:
        table = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"Expected valid TOML in {p}, got: {exc}") from None
    return parse_spec(table, p.resolve())


def validate(spec: StudySpec) -> None:
    """Everything that can be checked before any training: names, options, grid size."""
    from transferscope.backends import check_model_name

    if spec.seeds < 1:
        raise InputError(f"Expected seeds >= 1, got {spec.seeds}")
    bad = [f for f in spec.fractions if not 0 < f <= 1]
    if bad:
        raise InputError(f"Expected fractions in (0, 1], got {bad}")
    if spec.splits is not None and spec.splits < 1:
        raise InputError(f"Expected splits a whole number >= 1, got {spec.splits}; e.g. "
                         "splits = 5 (5-fold cross-validation) or splits = 1 (one split)")
    for key in ("val_data", "test_data"):
        table = getattr(spec, key)
        for target, name in table.items():
            if target not in spec.targets:
                raise InputError(f"Expected {key} only for the study's targets "
                                 f"({', '.join(map(str, spec.targets))}), got "
                                 f"{target!r}{suggest(target, spec.targets)}")
            if not isinstance(name, str) or not name:
                raise InputError(f"Expected a dataset name or path for {key} of {target!r}, "
                                 f"got {name!r}; e.g. {key} = {{\"{target}\" = \"val.npz\"}}")
    if spec.test_data and spec.splits is not None and spec.splits >= 2:
        raise InputError(f"Expected splits = 1 (or none) with test_data (the given test set is "
                         f"the test part), got splits = {spec.splits}; drop one of them")
    model_metrics(spec.metrics, "a study")  # leep / nce too: NaN for sources without a head
    spec.width = check_width(spec.width)
    pre = {p.name: p for p in spec.pretrain}
    if len(pre) != len(spec.pretrain):
        raise InputError("Expected distinct [[pretrain]] names, got duplicates")
    for p in spec.pretrain:
        if not p.model.startswith("torch:"):
            raise InputError(f"Expected a torch:<file.py>:<factory> model to pretrain, got "
                             f"{p.model!r} ({p.name}); other models come pretrained")
    for s in spec.sources:
        name = check_model_name(s, extra=("pretrained",))
        if name.is_pretrained_entry and name.arg not in pre:
            raise InputError(f"Expected a [[pretrain]] entry named {name.arg!r} for source "
                             f"{s!r}, got entries {sorted(pre)}")
    for name in [*spec.strategies, spec.baseline]:
        make_strategy(name, **spec.strategy_options.get(name, {}))  # unknown names, options
    unknown = set(spec.strategy_options) - set(spec.strategies) - {spec.baseline}
    if unknown:
        raise InputError(f"Expected [strategy_options] only for the study's strategies "
                         f"{spec.strategies + [spec.baseline]}, got {sorted(unknown)}")
    n = (sum(max_folds(spec, t) for t in spec.targets) * len(spec.sources)
         * len(spec.strategies) * len(spec.fractions) * spec.seeds)
    if n > spec.budgets.max_runs:
        raise InputError(f"Expected at most budgets.max_runs = {spec.budgets.max_runs} "
                         f"transfer runs, got a grid of {n} (seeds x folds each; with splits "
                         "unset a target may get 5 folds); shrink the grid or raise the budget")


def max_folds(spec: StudySpec, target: str) -> int:
    """Runs per seed of one arm on ``target`` (its folds, or 1), at most: with ``splits``
    unset, the folds a small target gets (the size is known only once it is loaded)."""
    from transferscope.finetune.run import AUTO_FOLDS

    if spec.splits is None:
        return 1 if target in spec.test_data else AUTO_FOLDS
    return max(spec.splits, 1)

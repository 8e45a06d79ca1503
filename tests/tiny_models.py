"""Tiny real models shared by the tests (built from the libraries' own config classes)."""

import json
from pathlib import Path

import torch

#: the words every tiny BERT tokenizer knows (tests build their texts from them)
WORDS = ["a", "good", "bad", "film", "the", "plot", "dull", "acting", "great", "cast", "weak",
         "end", "cat", "dog", "sat", "on", "mat", "runs", ".", ",", "!", "?"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tiny_vit(folder, processor: bool = True) -> str:
    """A 2-layer ViT (32 px, 16 wide) and, with ``processor``, its image processor, saved to
    ``folder``; returns the ``hf:`` model name."""
    import transformers

    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16,
                                 num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=32)
    torch.manual_seed(0)
    transformers.ViTModel(cfg).save_pretrained(folder)
    if processor:
        transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return f"hf:{folder}"


#: family -> (config class, config options, model class, classifier class) of a tiny image model
IMAGE_FAMILIES = {
    "vit": ("ViTConfig", dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=32),
            "ViTModel", "ViTForImageClassification"),
    "dinov2": ("Dinov2Config", dict(image_size=32, patch_size=8, hidden_size=16,
                                    num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2),
               "Dinov2Model", "Dinov2ForImageClassification"),
    "convnext": ("ConvNextConfig", dict(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1]),
                 "ConvNextModel", "ConvNextForImageClassification"),
    "resnet": ("ResNetConfig", dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                    layer_type="basic"),
               "ResNetModel", "ResNetForImageClassification"),
    "swin": ("SwinConfig", dict(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1],
                                num_heads=[1, 2], window_size=4),
             "SwinModel", "SwinForImageClassification"),
}


def save_tiny_image_model(folder, family: str, *, classifier: bool = False,
                          num_labels: int = 3) -> str:
    """A tiny image model of ``family`` (see :data:`IMAGE_FAMILIES`: 2 blocks or stages, 32 px)
    with the image processor its hub checkpoints use, saved to ``folder``; with ``classifier``
    the ``*ForImageClassification`` class of ``num_labels`` labels. Returns the ``hf:`` name."""
    import transformers

    cfg_name, options, model_name, head_name = IMAGE_FAMILIES[family]
    cfg = getattr(transformers, cfg_name)(**options, **({"num_labels": num_labels}
                                                          if classifier else {}))
    torch.manual_seed(0)
    getattr(transformers, head_name if classifier else model_name)(cfg).save_pretrained(folder)
    if family in ("convnext", "resnet"):
        proc = transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    elif family == "dinov2":
        proc = transformers.BitImageProcessor(size={"shortest_edge": 36},
                                              crop_size={"height": 32, "width": 32})
    else:
        proc = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    proc.save_pretrained(folder)
    return f"hf:{folder}"


def write_bert_tokenizer(folder, **options):
    """A BertTokenizer over :data:`WORDS`, saved to ``folder``; returns it."""
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    tok = transformers.BertTokenizer(str(folder / "vocab.txt"), **options)
    tok.save_pretrained(folder)
    return tok


def save_tiny_bert(folder, *, classifier: bool = False, num_labels: int = 3, seed: int = 0) -> str:
    """A 2-layer BERT (16 wide) with its tokenizer (:data:`WORDS`), saved to ``folder``; with
    ``classifier`` a BertForSequenceClassification of ``num_labels`` labels. Returns the
    ``hf:`` name."""
    import transformers

    write_bert_tokenizer(folder)
    cfg = transformers.BertConfig(vocab_size=len(SPECIAL + WORDS), hidden_size=16,
                                  num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64,
                                  **({"num_labels": num_labels} if classifier else {}))
    torch.manual_seed(seed)
    cls = transformers.BertForSequenceClassification if classifier else transformers.BertModel
    cls(cfg).save_pretrained(folder)
    return f"hf:{folder}"


def save_tiny_sentence_transformer(folder, *, pooling="cls", dense: int = 0,
                                   normalize: bool = True, dense_format: str = "safetensors",
                                   activation: str = "torch.nn.modules.activation.Tanh",
                                   prompt: str = "", include_prompt: bool = True,
                                   max_seq_length: int = 12) -> str:
    """A sentence-transformers folder around :func:`save_tiny_bert`, written by hand:
    ``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json`` (``pooling``: a
    mode name or a tuple of them), with ``dense`` > 0 a ``2_Dense`` module of that many outputs
    (weights as ``dense_format``: safetensors or a torch.save .bin), with ``normalize`` a
    Normalize module, with ``prompt`` a default prompt. Returns the ``hf:`` name."""
    folder = Path(folder)
    save_tiny_bert(folder)
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    (folder / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": max_seq_length, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 16, "pooling_mode": pooling,
         "include_prompt": include_prompt}))
    if dense:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense",
                        "type": "sentence_transformers.models.Dense"})
        (folder / "2_Dense").mkdir()
        (folder / "2_Dense" / "config.json").write_text(json.dumps(
            {"in_features": 16 * (1 if isinstance(pooling, str) else len(pooling)),
             "out_features": dense, "bias": True, "activation_function": activation}))
        gen = torch.Generator().manual_seed(1)
        n_in = 16 * (1 if isinstance(pooling, str) else len(pooling))
        state = {"linear.weight": torch.randn(dense, n_in, generator=gen) * 0.3,
                 "linear.bias": torch.randn(dense, generator=gen) * 0.1}
        if dense_format == "safetensors":
            from safetensors.torch import save_file

            save_file(state, str(folder / "2_Dense" / "model.safetensors"))
        else:
            torch.save(state, folder / "2_Dense" / "pytorch_model.bin")
    if normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)),
                        "path": f"{len(modules)}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (folder / f"{len(modules) - 1}_Normalize").mkdir()
    (folder / "modules.json").write_text(json.dumps(modules))
    st_cfg = {"prompts": {"query": prompt}, "default_prompt_name": "query"} if prompt else {}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_cfg))
    return f"hf:{folder}"


def write_clip_tokenizer(folder):
    """A CLIPTokenizer over a handful of byte-pair merges (:data:`WORDS` and their letters),
    saved to ``folder``; returns it."""
    import transformers

    folder = Path(folder)
    letters = sorted({c for w in WORDS for c in w})
    vocab = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters]
    vocab += [w + "</w>" for w in WORDS if len(w) > 1]
    merges = []
    for w in WORDS:  # merge each word left to right into one token
        if len(w) < 2:
            continue
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            vocab.append(parts[0] + parts[1])
            parts = [parts[0] + parts[1], *parts[2:]]
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges))
                                       + "\n")
    tok = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.save_pretrained(folder)
    return tok


def save_tiny_two_tower(folder, family: str = "clip") -> str:
    """A tiny two-tower model (``"clip"`` or ``"siglip"``: 2-layer towers, 16 wide, 32 px)
    with its image processor and a tokenizer (CLIP: byte-pair; SigLIP: a BertTokenizer that,
    like SigLIP's own, gives no attention mask), saved to ``folder``. Returns the ``hf:``
    name."""
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if family == "clip":
        tok = write_clip_tokenizer(folder)
        text = dict(vocab_size=len(tok), bos_token_id=0, eos_token_id=1, pad_token_id=1)
    else:
        tok = write_bert_tokenizer(folder, model_input_names=["input_ids"])
        text = dict(vocab_size=len(tok), bos_token_id=2, eos_token_id=3, pad_token_id=0)
    text.update(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=16)
    vision = dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                  num_hidden_layers=2, num_attention_heads=2)
    torch.manual_seed(0)
    if family == "clip":
        cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)
        transformers.CLIPModel(cfg).save_pretrained(folder)
        transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                        crop_size={"height": 32, "width": 32}
                                        ).save_pretrained(folder)
    else:
        cfg = transformers.SiglipConfig(text_config=text, vision_config=vision)
        transformers.SiglipModel(cfg).save_pretrained(folder)
        transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return f"hf:{folder}"

"""Tiny real models shared by the tests (built from the libraries' own config classes)."""

import torch


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

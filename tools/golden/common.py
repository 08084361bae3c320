"""Helpers shared by the fixture generators. Fixtures are built from configs, never downloaded."""

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
ASSETS = ROOT / "assets"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def seed_all(seed: int):
    import torch

    torch.manual_seed(seed)


def rerandomise(module, seed: int):
    """Give every parameter non-trivial values, so a missing transpose, a swapped norm scale and
    bias or a skipped bias shows up: weights randn / sqrt(fan_in), norm scales 1 + 0.1 randn,
    biases and norm shifts 0.1 randn, embeddings 0.5 randn."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            is_norm = "norm" in name or "layer_norm" in name or "ln_" in name
            if leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif is_norm and p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embedding" in name and p.dim() == 2:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = max(1, p[0].numel()) if p.dim() > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)


def write_json(path: Path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def save_tensors(path: Path, tensors: dict, dtype=None):
    """safetensors with contiguous CPU tensors (optionally cast)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v
    save_file(out, str(path))


def key_shapes(module) -> dict:
    """Parameter and persistent buffer names with shapes, as a checkpoint of this module holds them."""
    return {k: list(v.shape) for k, v in module.state_dict().items()}

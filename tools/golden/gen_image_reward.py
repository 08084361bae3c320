"""ImageReward fixtures (run in the ImageReward venv, requirements-imagereward.txt): a tiny
random-weight ImageReward built from the package's own classes (BLIP's ViT and its BERT with
cross-attention, the reward MLP), saved as `ImageReward.pt` is (a state dict with `blip.*` and
`mlp.*`), with a `med_config.json` and a small synthetic WordPiece `vocab.txt` (bert-base-uncased's
special-token layout); the package's `score_gard` on real photos; BertTokenizer ids; and the
full-size key list. The BERT tokenizer is built from the file, never downloaded.

Writes tests/fixtures/image_reward/:
  tiny/ImageReward.pt, tiny/med_config.json, tiny/vocab.txt
  outputs.safetensors   ids, masks, pixels, rewards; tokenizer ids of hard prompts
  cases.json            prompts
  keys_image_reward_v1.json   full-size parameter names and shapes (no weights)
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from skimage import data
from transformers import BertTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from common import FIXTURES, key_shapes, rerandomise, save_tensors, write_json  # noqa: E402

import ImageReward.models.BLIP.blip_pretrain as blip_pretrain  # noqa: E402
from ImageReward.ImageReward import MLP, ImageReward  # noqa: E402
from ImageReward.models.BLIP.med import BertConfig, BertModel  # noqa: E402
from ImageReward.models.BLIP.vit import VisionTransformer  # noqa: E402

OUT = FIXTURES / "image_reward"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
PROMPTS = ["an astronaut in a white suit", "a cat sitting on a chair"]
HARD = [
    "A RED circle, above a blue square.",
    "Café au lait! naïve résumé",
    "東京の夜景 and a cat",
    "supercalifragilisticexpialidocious sitting",
    "a " * 40 + "chair",
    "",
    "[DEC] a cat [ENC]",
]
WORDS = ("a an the of in on above below white red blue green suit cat sit chair astronaut photo horse "
         "circle square ride moon , . ! ? ' - cafe au lait naive resume and").split()


def vocab():
    toks = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    toks += WORDS + ["##ting", "##s", "##er", "##ing"] + list("abcdefghijklmnopqrstuvwxyz")
    toks += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + ["東", "京"]
    return toks


def tokenizer(path):
    tok = BertTokenizer(str(path), do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


def med_config(vocab_size, encoder_width):
    return {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 96,
            "layer_norm_eps": 1e-12, "max_position_embeddings": 40, "model_type": "bert", "num_attention_heads": 4,
            "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": vocab_size,
            "encoder_width": encoder_width, "add_cross_attention": True}


class Tiny(torch.nn.Module):
    """ImageReward's module tree at tiny sizes (ImageReward.__init__ builds ViT-L and downloads a
    tokenizer); its `score_gard` runs on it unchanged."""

    def __init__(self, med_path):
        super().__init__()
        self.device = "cpu"
        self.blip = torch.nn.Module()
        self.blip.visual_encoder = VisionTransformer(img_size=32, patch_size=16, embed_dim=128, depth=2, num_heads=2)
        cfg = BertConfig.from_json_file(str(med_path))
        cfg.encoder_width = 128
        self.blip.text_encoder = BertModel(config=cfg, add_pooling_layer=False)
        self.blip.vision_proj = torch.nn.Linear(128, 16)
        self.blip.text_proj = torch.nn.Linear(64, 16)
        self.mlp = MLP(64)
        self.mean, self.std = 0.16717362830052426, 1.0333394966054072


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    tiny = OUT / "tiny"
    tiny.mkdir(parents=True)
    (tiny / "vocab.txt").write_text("\n".join(vocab()) + "\n")
    tok = tokenizer(tiny / "vocab.txt")
    (tiny / "med_config.json").write_text(json.dumps(med_config(len(tok), 768), indent=1) + "\n")
    torch.manual_seed(5)
    model = Tiny(tiny / "med_config.json").eval()
    rerandomise(model, 5)
    torch.save(model.state_dict(), tiny / "ImageReward.pt")

    t = {}
    enc = tok(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    t["input_ids"], t["attention_mask"] = enc.input_ids, enc.attention_mask
    hard = tok(HARD, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    t["hard_ids"] = hard.input_ids
    photos = {"astronaut": data.astronaut(), "chelsea": data.chelsea()}
    for k, p in photos.items():
        t[f"photo.{k}"] = torch.from_numpy(p.copy()).permute(2, 0, 1)
    # The package's preprocessing is CLIP's (Resize, CenterCrop, Normalize); on float64 images.
    pixels = []
    for p in photos.values():
        x = torch.from_numpy(p.copy()).permute(2, 0, 1).double() / 255
        x = TF.resize(x, 32, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, [32, 32])
        pixels.append(TF.normalize(x, MEAN, STD).float())
    t["pixels"] = torch.stack(pixels)
    # What the package itself does: PIL resize of the 8-bit photo (its `_transform`), rounded.
    pil = ImageReward.__init__.__globals__["_transform"](32)
    t["pixels_pil"] = torch.stack([pil(Image.fromarray(p)) for p in photos.values()])
    with torch.no_grad():
        t["image_embeds"] = model.blip.visual_encoder(t["pixels"])
        t["rewards"] = ImageReward.score_gard(model, enc.input_ids, enc.attention_mask, t["pixels"]).squeeze(-1)
        t["rewards_pil"] = ImageReward.score_gard(model, enc.input_ids, enc.attention_mask, t["pixels_pil"]).squeeze(-1)
        text = model.blip.text_encoder(enc.input_ids, attention_mask=enc.attention_mask,
                                       encoder_hidden_states=t["image_embeds"],
                                       encoder_attention_mask=torch.ones(t["image_embeds"].shape[:-1], dtype=torch.long),
                                       return_dict=True)
        t["text_hidden"] = text.last_hidden_state
    save_tensors(OUT / "outputs.safetensors", t)
    write_json(OUT / "cases.json", {"prompts": PROMPTS, "hard": HARD, "vocab_size": len(tok)})
    print("rewards", t["rewards"].tolist())

    # Full size: ImageReward itself (its tokenizer download patched out), without weights.
    blip_pretrain.init_tokenizer = lambda: None
    full_med = OUT / "med_config_v1.json"
    full_med.write_text(json.dumps({**med_config(30524, 768), "hidden_size": 768, "intermediate_size": 3072,
                                    "max_position_embeddings": 512, "num_attention_heads": 12,
                                    "num_hidden_layers": 12}, indent=1) + "\n")
    # Built on the CPU (its ViT's init calls .item(), which meta tensors refuse): ~2 GB, seconds.
    full = ImageReward(med_config=str(full_med))
    keys = key_shapes(full)
    full_med.unlink()
    n = sum(int(np.prod(s)) for s in keys.values())
    write_json(OUT / "keys_image_reward_v1.json", {"class": "ImageReward (image-reward 1.5)", "parameters": n, "keys": keys})
    print("ImageReward v1", n, "parameters")


if __name__ == "__main__":
    main()

"""Text encoder fixtures: tiny random CLIP text encoders of both SDXL kinds, their outputs on real
tokenizations, SDXL prompt embeddings from diffusers' `encode_prompt`, and the full-size key lists.

Writes tests/fixtures/text/:
  text_encoder/    config.json + model.safetensors        (CLIPTextModel, quick_gelu, f32, keys in the
                   SDXL repository's layout: `text_model.` prefix and the legacy position_ids buffer)
  text_encoder_2/  config.json + model.fp16.safetensors   (CLIPTextModelWithProjection, gelu, f16 file;
                   the reference runs in f32 on the f16-rounded weights)
  encoder_outputs.safetensors   input ids and every output of both encoders
  prompt_embeds.safetensors     encode_prompt results for several cases (see CASES)
  cases.json                    prompts of every case
  keys_sdxl_text_encoder.json / keys_sdxl_text_encoder_2.json   full-size parameter names and shapes
"""

import json

import torch
from common import ASSETS, FIXTURES, key_shapes, rerandomise, save_tensors, write_json
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

OUT = FIXTURES / "text"
TOK = ASSETS / "clip-tokenizer"

PROMPTS = [
    "a red circle above a blue square",
    "an astronaut riding a horse on the moon, highly detailed!",
    "",
    "東京の夜景 🎉 <|endoftext|> wow!!",
]
NEGATIVE = ["blurry, low quality", "", "text!", "watermark"]
PROMPTS_2 = ["a photo", "a painting", "a sketch!", "a render"]


def tiny_config(hidden, intermediate, heads, act, eos):
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=3,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        layer_norm_eps=1e-5,
        projection_dim=24,
        bos_token_id=49406,
        eos_token_id=eos,
        pad_token_id=1,
    )


def build_encoders():
    torch.manual_seed(0)
    enc1 = CLIPTextModel(tiny_config(32, 72, 4, "quick_gelu", 2)).eval()
    enc2 = CLIPTextModelWithProjection(tiny_config(40, 88, 5, "gelu", 49407)).eval()
    rerandomise(enc1, 1)
    rerandomise(enc2, 2)
    # The second encoder is stored in f16: round its weights so the f32 reference uses exactly them.
    with torch.no_grad():
        for p in enc2.parameters():
            p.copy_(p.half().float())
    return enc1, enc2


def save_encoders(enc1, enc2):
    d1, d2 = OUT / "text_encoder", OUT / "text_encoder_2"
    for d, enc in ((d1, enc1), (d2, enc2)):
        d.mkdir(parents=True, exist_ok=True)
        enc.config.save_pretrained(d)
    # transformers 4 layout, as in the SDXL repository: `text_model.` prefix + position_ids buffer.
    sd1 = {f"text_model.{k}": v for k, v in enc1.state_dict().items()}
    sd1["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    save_tensors(d1 / "model.safetensors", sd1)
    save_tensors(d2 / "model.fp16.safetensors", enc2.state_dict(), dtype=torch.float16)


def ids(tokenizer, prompts):
    return tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def encoder_outputs(enc1, enc2, tok1, tok2):
    out = {}
    for name, enc, tok in (("text_encoder", enc1, tok1), ("text_encoder_2", enc2, tok2)):
        input_ids = ids(tok, PROMPTS)
        r = enc(input_ids, output_hidden_states=True)
        out[f"{name}.input_ids"] = input_ids
        for i, h in enumerate(r.hidden_states):
            out[f"{name}.hidden_states.{i}"] = h
        out[f"{name}.last_hidden_state"] = r.last_hidden_state
        if name == "text_encoder":
            out[f"{name}.pooler_output"] = r.pooler_output
        else:
            out[f"{name}.text_embeds"] = r.text_embeds
    save_tensors(OUT / "encoder_outputs.safetensors", out)


CASES = {
    # name: (encode_prompt kwargs, force_zeros_for_empty_prompt)
    "no_negative": (dict(prompt=PROMPTS), True),
    "negative": (dict(prompt=PROMPTS, negative_prompt=NEGATIVE), True),
    "prompt_2_clip_skip_1": (dict(prompt=PROMPTS, prompt_2=PROMPTS_2, negative_prompt=NEGATIVE, clip_skip=1), True),
    "no_negative_no_zeros": (dict(prompt=PROMPTS), False),
}


@torch.no_grad()
def prompt_embeds(enc1, enc2, tok1, tok2):
    from diffusers import StableDiffusionXLPipeline

    out = {}
    for name, (kwargs, zeros) in CASES.items():
        pipe = StableDiffusionXLPipeline(
            vae=None,
            text_encoder=enc1,
            text_encoder_2=enc2,
            tokenizer=tok1,
            tokenizer_2=tok2,
            unet=None,
            scheduler=None,
            force_zeros_for_empty_prompt=zeros,
            add_watermarker=False,
        )
        pe, npe, pooled, npooled = pipe.encode_prompt(
            device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=True, **kwargs
        )
        out[f"{name}.prompt_embeds"] = pe
        out[f"{name}.negative_prompt_embeds"] = npe
        out[f"{name}.pooled_prompt_embeds"] = pooled
        out[f"{name}.negative_pooled_prompt_embeds"] = npooled
    save_tensors(OUT / "prompt_embeds.safetensors", out)
    cases = {
        name: {**{k: v for k, v in kwargs.items()}, "force_zeros_for_empty_prompt": zeros}
        for name, (kwargs, zeros) in CASES.items()
    }
    write_json(OUT / "cases.json", cases)


def full_size_keys():
    """SDXL base 1.0 text_encoder / text_encoder_2 configs, built without weights."""
    common = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, eos_token_id=2)
    configs = {
        "keys_sdxl_text_encoder.json": (
            CLIPTextModel,
            CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           hidden_act="quick_gelu", projection_dim=768, **common),
        ),
        "keys_sdxl_text_encoder_2.json": (
            CLIPTextModelWithProjection,
            CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                           hidden_act="gelu", projection_dim=1280, **common),
        ),
    }
    for file, (cls, cfg) in configs.items():
        with torch.device("meta"):
            model = cls(cfg)
        write_json(OUT / file, {"class": cls.__name__, "transformers": "5.24.0", "keys": key_shapes(model)})


def main():
    enc1, enc2 = build_encoders()
    save_encoders(enc1, enc2)
    tok1 = CLIPTokenizer.from_pretrained(str(TOK / "tokenizer"))
    tok2 = CLIPTokenizer.from_pretrained(str(TOK / "tokenizer_2"))
    encoder_outputs(enc1, enc2, tok1, tok2)
    prompt_embeds(enc1, enc2, tok1, tok2)
    full_size_keys()
    print("text fixtures written to", OUT)


if __name__ == "__main__":
    main()

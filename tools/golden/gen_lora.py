"""LoRA fixtures: a PEFT LoRA on the tiny UNet of gen_unet.py (attention projections, the
transformer's proj_in, the feed-forward output and the resnets' conv1, so linear and conv
adapters), saved as diffusers' SDXL pipeline saves LoRA weights (PEFT keys under `unet.`, the
adapter config as `lora_adapter_metadata`) and converted to kohya keys by diffusers' own
converter; the UNet's output with the adapter at scale 1 and 0.5 (computed in float64).

Writes tests/fixtures/lora/:
  pytorch_lora_weights.safetensors   diffusers / PEFT layout, r 4, lora_alpha 8
  kohya.safetensors                  the same adapter, `lora_unet_*.lora_down/lora_up/alpha`
  outputs.safetensors                input, output at scale 1 (`out`) and 0.5 (`out_half`)
"""

import torch
from common import FIXTURES, save_tensors
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
from diffusers.utils.peft_utils import scale_lora_layers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

OUT = FIXTURES / "lora"
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "ff.net.2", "conv1"]


@torch.no_grad()
def main():
    torch.manual_seed(0)  # PEFT's gaussian init of lora_A draws from the global generator.
    unet = UNet2DConditionModel.from_pretrained(FIXTURES / "unet" / "tiny").eval()
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=TARGETS)
    unet.add_adapter(config)
    gen = torch.Generator().manual_seed(11)
    for name, p in unet.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero; give it values so the adapter acts.
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))

    peft_sd = get_peft_model_state_dict(unet)
    StableDiffusionXLPipeline.save_lora_weights(
        OUT,
        unet_lora_layers=convert_state_dict_to_diffusers(peft_sd),
        # target_modules is a set: sorted, so that the file is byte-stable.
        unet_lora_adapter_metadata={**config.to_dict(), "target_modules": sorted(TARGETS)},
        safe_serialization=True,
    )
    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in peft_sd.items()})
    for key in list(kohya):
        if key.endswith(".lora_down.weight"):
            kohya[key.replace(".lora_down.weight", ".alpha")] = torch.tensor(8.0)
    save_tensors(OUT / "kohya.safetensors", kohya)

    b, h, w = 2, 8, 12
    sample = torch.randn(b, 4, h, w, generator=gen)
    context = torch.randn(b, 9, 32, generator=gen)
    text_embeds = torch.randn(b, 16, generator=gen)
    time_ids = torch.tensor([[64, 96, 0, 0, 64, 96], [1024, 768, 16, 8, 896, 640]], dtype=torch.float32)
    t = torch.tensor([999.0, 37.0])
    # The outputs in float64 (the adapter unmerged, as PEFT runs it): the exact values that a
    # merged float32 UNet approximates.
    unet = unet.double()
    cond = {"text_embeds": text_embeds.double(), "time_ids": time_ids.double()}
    args = (sample.double(), t.double(), context.double())
    out = unet(*args, added_cond_kwargs=cond).sample.float()
    scale_lora_layers(unet, 0.5)
    out_half = unet(*args, added_cond_kwargs=cond).sample.float()
    save_tensors(OUT / "outputs.safetensors", {
        "sample": sample, "timestep": t, "encoder_hidden_states": context,
        "text_embeds": text_embeds, "time_ids": time_ids, "out": out, "out_half": out_half,
    })
    print("lora fixtures written to", OUT, "-", len(peft_sd), "tensors")


if __name__ == "__main__":
    main()

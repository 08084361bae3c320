"""diffusers/torch side of `cargo bench -p sharpen-tests --bench unet`: the same UNet config,
inputs and thread count; prints one JSON line of median seconds.

Usage: python unet_torch.py CONFIG_JSON BATCH HEIGHT WIDTH TOKENS REPEATS THREADS
"""

import json
import statistics
import sys
import time

import torch
from diffusers import UNet2DConditionModel


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    config_path, batch, height, width, tokens, repeats, threads = sys.argv[1:]
    batch, height, width, tokens, repeats, threads = map(int, (batch, height, width, tokens, repeats, threads))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = json.load(open(config_path))
    unet = UNet2DConditionModel(**config)
    text_dim = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    sample = torch.randn(batch, 4, height, width)
    t = torch.tensor([999.0, 500.0][:batch] + [10.0] * max(0, batch - 2))
    context = torch.randn(batch, tokens, config["cross_attention_dim"])
    added = {"text_embeds": torch.randn(batch, text_dim), "time_ids": torch.randn(batch, 6)}

    def forward():
        with torch.no_grad():
            unet(sample, t, context, added_cond_kwargs=added)

    def forward_backward():
        unet.zero_grad(set_to_none=True)
        out = unet(sample, t, context, added_cond_kwargs=added).sample
        out.pow(2).mean().backward()

    result = {
        "forward_s": median_time(forward, repeats),
        "forward_backward_s": median_time(forward_backward, repeats),
        "parameters": sum(p.numel() for p in unet.parameters()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

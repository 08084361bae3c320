"""diffusers/torch side of the GPU UNet benchmark (tools/bench/gpu_unet.sh): the same config
(written by `sharpen-bench unet --write-config`), random weights, the same input shapes and dtype;
times the forward pass with CUDA synchronisation and reports torch's peak memory.

Usage: python unet_gpu_torch.py CONFIG_JSON --size 1024 --batch 2 --dtype bf16 [--backward]
Prints a short table, then one JSON line.
"""

import argparse
import json
import statistics
import time

import torch
from diffusers import UNet2DConditionModel


def timed(fn, warmup, repeats):
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--tokens", type=int, default=77)
    p.add_argument("--dtype", default="bf16", choices=["f32", "bf16", "f16"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--backward", action="store_true")
    a = p.parse_args()
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[a.dtype]
    config = json.load(open(a.config))
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel.from_config(config).to(dtype)
    params = sum(p.numel() for p in unet.parameters())
    memory_after_load = torch.cuda.memory_reserved()
    b, latent = a.batch, a.size // 8
    text_dim = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    dev = "cuda"
    sample = torch.randn(b, 4, latent, latent, device=dev, dtype=dtype)
    t = torch.tensor([999.0 - (i * 499.0) % 999.0 for i in range(b)], device=dev)
    context = torch.randn(b, a.tokens, config["cross_attention_dim"], device=dev, dtype=dtype)
    added = {
        "text_embeds": torch.randn(b, text_dim, device=dev, dtype=dtype),
        "time_ids": torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]] * b, device=dev, dtype=dtype),
    }

    def forward():
        with torch.no_grad():
            unet(sample, t, context, added_cond_kwargs=added)

    torch.cuda.reset_peak_memory_stats()
    first, fwd = timed(forward, a.warmup, a.repeats)
    peak_alloc, peak_reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    result = {
        "preset_parameters": params, "batch": b, "size": a.size, "dtype": a.dtype,
        "forward_ms": fwd * 1e3, "first_forward_s": first,
        "memory_after_load": memory_after_load,
        "peak_allocated_forward": peak_alloc, "peak_reserved_forward": peak_reserved,
        "torch": torch.__version__, "device": torch.cuda.get_device_name(),
    }
    if a.backward:
        def forward_backward():
            unet.zero_grad(set_to_none=True)
            out = unet(sample, t, context, added_cond_kwargs=added).sample
            out.float().pow(2).mean().backward()

        torch.cuda.reset_peak_memory_stats()
        _, fb = timed(forward_backward, a.warmup, a.repeats)
        result["forward_backward_ms"] = fb * 1e3
        result["peak_reserved_backward"] = torch.cuda.max_memory_reserved()
    gib = 1 << 30
    print(f"diffusers UNet: {params} parameters, {b} x {a.size}px, {a.dtype}, torch {torch.__version__}, {result['device']}")
    print(f"forward: {fwd * 1e3:.2f} ms (first {first:.1f} s); peak allocated {peak_alloc / gib:.2f} GiB, reserved {peak_reserved / gib:.2f} GiB")
    if a.backward:
        print(f"forward+backward: {result['forward_backward_ms']:.2f} ms; peak reserved {result['peak_reserved_backward'] / gib:.2f} GiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Scheduler goldens: timesteps, sigmas, init_noise_sigma and every step of full sampling loops with
SDXL's scheduler config (30 and 50 steps), for DDIM (eta 0 and 1), DDPM, Euler, Euler ancestral and
DPM-Solver++ 2M (with and without Karras sigmas). Model outputs are fixed random tensors; the noise of
stochastic steps is drawn here and replayed (the samplers' own noise draw is patched), so nothing
depends on torch's RNG inside diffusers.

Writes tests/fixtures/schedulers/goldens.safetensors and cases.json.
"""

import torch
from common import FIXTURES, save_tensors, write_json
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler)
from diffusers.schedulers import scheduling_ddpm, scheduling_euler_ancestral_discrete

OUT = FIXTURES / "schedulers"

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
SDXL = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

SAMPLERS = {
    "ddim": (DDIMScheduler, {}, {"eta": 0.0}),
    "ddim_eta1": (DDIMScheduler, {}, {"eta": 1.0}),
    "ddpm": (DDPMScheduler, {}, {}),
    "euler": (EulerDiscreteScheduler, {}, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}, {}),
}
SHAPE = (1, 4, 4, 6)


class Replay:
    """Stands in for diffusers' randn_tensor: returns the stored noise in order."""

    def __init__(self, noises):
        self.noises = list(noises)
        self.used = 0

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        n = self.noises[self.used]
        self.used += 1
        assert tuple(n.shape) == tuple(shape), (n.shape, shape)
        return n.clone().to(dtype or n.dtype)


@torch.no_grad()
def main():
    gen = torch.Generator().manual_seed(8)
    out, cases = {}, {}
    for steps in (30, 50):
        for name, (cls, extra_config, step_kwargs) in SAMPLERS.items():
            key = f"{name}.{steps}"
            sched = cls.from_config({**SDXL, **extra_config})
            sched.set_timesteps(steps)
            x = torch.randn(SHAPE, generator=gen) * sched.init_noise_sigma
            model_outputs = torch.randn((steps, *SHAPE), generator=gen)
            noises = torch.randn((steps, *SHAPE), generator=gen)
            replay = Replay(noises)
            scheduling_ddpm.randn_tensor = replay
            scheduling_euler_ancestral_discrete.randn_tensor = replay
            samples, inputs, x0s = [x], [], []
            for i, t in enumerate(sched.timesteps):
                inputs.append(sched.scale_model_input(x, t))
                kwargs = dict(step_kwargs)
                if cls is DDIMScheduler and kwargs.get("eta", 0) > 0:
                    kwargs["variance_noise"] = noises[i]
                res = sched.step(model_outputs[i], t, x, **kwargs)
                x = res.prev_sample
                samples.append(x)
                x0 = getattr(res, "pred_original_sample", None)
                x0s.append(x0 if x0 is not None else torch.full(SHAPE, float("nan")))
            out[f"{key}.timesteps"] = sched.timesteps.to(torch.float64)
            if hasattr(sched, "sigmas"):
                out[f"{key}.sigmas"] = torch.as_tensor(sched.sigmas).to(torch.float64)
            out[f"{key}.init_noise_sigma"] = torch.tensor([float(sched.init_noise_sigma)], dtype=torch.float64)
            out[f"{key}.model_outputs"] = model_outputs
            out[f"{key}.noises"] = noises
            out[f"{key}.samples"] = torch.stack(samples)
            out[f"{key}.scaled_inputs"] = torch.stack(inputs)
            out[f"{key}.pred_original"] = torch.stack(x0s)
            cases[key] = {"sampler": name, "steps": steps, "class": cls.__name__, "config": {**SDXL, **extra_config},
                          "step_kwargs": step_kwargs, "noise_draws": replay.used}
    # The schedule itself.
    s = DDPMScheduler.from_config(SDXL)
    out["schedule.betas"] = s.betas.to(torch.float64)
    out["schedule.alphas_cumprod"] = s.alphas_cumprod.to(torch.float64)
    save_tensors(OUT / "goldens.safetensors", out)
    write_json(OUT / "cases.json", cases)
    print("scheduler goldens written to", OUT)


if __name__ == "__main__":
    main()

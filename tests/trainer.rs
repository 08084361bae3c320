//! One SFT Diffusion-Sharpening step on the tiny SDXL pipeline (real tiny UNet, VAE and text
//! encoders, JPEG compressibility reward): every UNet parameter gets a finite gradient, the
//! rollout scores every step of every trajectory, and the step is deterministic.

use burn::backend::Autodiff;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use sdxl_text::PromptBatch;
use sdxl_unet::AddedCond;
use sharpen_pipeline::SdxlPipeline;
use sharpen_rewards::{JpegReward, JpegRewardKind};
use sharpen_schedulers::{Sampler, SamplerKind};
use sharpen_tests::{fixture, TestBackend as B};
use sharpen_trainer::{sft_step, SftInputs, StepModels, TextCond, TrajectoryConfig, VaeDecoder};
use sharpen_weights::unet::load_unet;
use sharpen_weights::LoadOptions;

type AD = Autodiff<B>;

#[test]
fn sft_step_on_the_tiny_sdxl_pipeline() {
    let device = Default::default();
    let dir = fixture("pipeline/tiny-sdxl");
    let pipe = SdxlPipeline::<B>::load(&dir, &LoadOptions::default(), &device).unwrap();
    let train = load_unet::<AD>(&dir.join("unet"), &LoadOptions::default(), &device).unwrap();
    let prompts = ["a red circle", "two blue squares"];
    let embeds = pipe
        .text_encoders
        .encode(&pipe.tokenizers, PromptBatch::new(&prompts), None)
        .unwrap();
    let time_ids = Tensor::<B, 1>::from_floats([32.0, 32.0, 0.0, 0.0, 32.0, 32.0], &device)
        .unsqueeze::<2>()
        .repeat_dim(0, prompts.len());
    let cond = TextCond {
        context: embeds.prompt_embeds,
        added: Some(AddedCond {
            text_embeds: embeds.pooled_prompt_embeds,
            time_ids,
        }),
    };
    let sampler = Sampler::new(SamplerKind::Ddim { eta: 0.0 }, &pipe.scheduler, 25);
    let decoder = VaeDecoder { vae: &pipe.vae };
    let reward = JpegReward {
        kind: JpegRewardKind::Compressibility,
    };
    let models = StepModels {
        train: &train,
        rollout: &pipe.unet,
        decoder: &decoder,
        reward: &reward,
        sampler: &sampler,
    };
    let config = TrajectoryConfig::default();
    let rows = prompts.len() * config.n;
    // One fixed draw: clean latents, noises, timestep.
    let noise = |shape: [usize; 4], seed: u64| {
        B::seed(&device, seed);
        Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device)
    };
    let x0 = noise([prompts.len(), 4, 4, 4], 1);
    let eps = noise([rows, 4, 4, 4], 2);
    let run = || {
        sft_step::<AD, _, _, _>(
            &models,
            &config,
            SftInputs {
                x0: x0.clone(),
                eps: eps.clone(),
                cond: &cond,
                prompts: &prompts,
                t: vec![500; prompts.len()],
            },
        )
        .unwrap()
    };

    let step = run();
    for r in 0..rows {
        assert_eq!(step.rollout.timesteps.row(r), &[500, 460, 420]);
    }
    assert_eq!(step.rollout.step_rewards.len(), rows);
    for r in &step.rollout.step_rewards {
        assert_eq!(r.len(), 3);
        assert!(r.iter().all(|v| v.is_finite() && *v < 0.0), "{r:?}");
    }
    let loss = step.loss.clone().into_scalar();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    let grads = GradientsParams::from_grads(step.loss.backward(), &train);
    assert_eq!(
        grads.len(),
        train.num_params_tensors(),
        "every UNet parameter"
    );

    let again = run();
    assert_eq!(again.rollout, step.rollout, "same inputs, same rollout");
    assert_eq!(again.loss.into_scalar(), loss, "same inputs, same loss");
}

trait CountTensors {
    fn num_params_tensors(&self) -> usize;
}

impl<M: Module<AD>> CountTensors for M {
    fn num_params_tensors(&self) -> usize {
        struct Count(usize);
        impl burn::module::ModuleVisitor<AD> for Count {
            fn visit_float<const D: usize>(&mut self, _: &burn::module::Param<Tensor<AD, D>>) {
                self.0 += 1;
            }
        }
        let mut c = Count(0);
        self.visit(&mut c);
        c.0
    }
}

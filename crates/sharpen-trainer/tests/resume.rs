//! Checkpoints resume exactly: 3 optimizer steps, a checkpoint, a new process's worth of state
//! rebuilt from disk, 3 more steps give the same weights and metrics, bit for bit, as 6
//! uninterrupted steps. An interrupted checkpoint write leaves the previous one loadable.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use sdxl_unet::{AddedCond, UNet2DConditionModel, UNetConfig};
use sharpen_schedulers::{PredictionType, SchedulerConfig};
use sharpen_trainer::train::lr::LrSchedule;
use sharpen_trainer::train::run_dir::{RunDir, RunDirError};
use sharpen_trainer::{standard_loss, OptimConfig, TextCond, Trainer};
use sharpen_weights::unet::{load_unet, save_unet};
use sharpen_weights::LoadOptions;

type AD = Autodiff<Flex>;

fn config() -> OptimConfig {
    OptimConfig {
        lr: 1e-3,
        accumulation: 2,
        schedule: LrSchedule::WarmupCosine {
            warmup_steps: 2,
            total_steps: 6,
            min_ratio: 0.1,
        },
        ..Default::default()
    }
}

fn load(dir: &Path) -> UNet2DConditionModel<AD> {
    load_unet::<AD>(dir, &LoadOptions::default(), &Default::default()).unwrap()
}

fn save(dir: &Path, unet: &UNet2DConditionModel<AD>) -> Result<(), RunDirError> {
    save_unet(&dir.join("unet"), unet).map_err(|e| RunDirError::Invalid {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })
}

fn t<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<AD, D> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// Runs optimizer steps until `until`, checkpointing every 3; every draw comes from the run's
/// random stream.
fn train(trainer: &mut Trainer<AD, UNet2DConditionModel<AD>>, run: &RunDir, until: usize) {
    let schedule = SchedulerConfig::sdxl_base_1_0().schedule;
    let c = UNetConfig::tiny_sdxl();
    while trainer.state.step < until {
        let rng = trainer.rng();
        let x0 = t(rng.normals(2 * 4 * 8 * 8), [2, 4, 8, 8]);
        let eps = t(rng.normals(2 * 4 * 8 * 8), [2, 4, 8, 8]);
        let steps = [rng.below(1000), rng.below(1000)];
        let cond = TextCond {
            context: t(
                rng.normals(2 * 4 * c.cross_attention_dim),
                [2, 4, c.cross_attention_dim],
            ),
            added: Some(AddedCond {
                text_embeds: t(rng.normals(2 * 16), [2, 16]),
                time_ids: t([64.0, 64.0, 0.0, 0.0, 64.0, 64.0].repeat(2), [2, 6]),
            }),
        };
        trainer.state.data_cursor += 2;
        let loss = standard_loss(
            trainer.model(),
            &schedule,
            PredictionType::Epsilon,
            x0,
            eps,
            &steps,
            &cond,
        );
        let value = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), trainer.model());
        if let Some(report) = trainer.accumulate(grads).unwrap() {
            run.append_metrics(&serde_json::json!({
                "step": report.step, "loss": value, "lr": report.lr, "grad_norm": report.grad_norm,
            }))
            .unwrap();
            if report.step % 3 == 0 {
                trainer.save(run, save).unwrap();
            }
        }
    }
}

fn weights(unet: &UNet2DConditionModel<AD>) -> Vec<(String, TensorData)> {
    sharpen_weights::module_tensors(unet, &|k: &str| k.to_string())
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let init = tmp.path().join("init");
    save_unet(
        &init,
        &UNet2DConditionModel::<AD>::new(&UNetConfig::tiny_sdxl(), &Default::default()),
    )
    .unwrap();

    let run_a = RunDir::create(tmp.path().join("a")).unwrap();
    let mut a = Trainer::new(load(&init), config(), 42);
    train(&mut a, &run_a, 6);

    let run_b = RunDir::create(tmp.path().join("b")).unwrap();
    {
        let mut b = Trainer::new(load(&init), config(), 42);
        // Step 4 runs but the process dies before the next checkpoint (step 6): its metrics
        // line must go, its weights are lost.
        train(&mut b, &run_b, 4);
    }
    let checkpoint = run_b.latest().unwrap().expect("a checkpoint");
    assert!(checkpoint.ends_with("step-000003"));
    let mut b = Trainer::resume(
        &checkpoint,
        load(&checkpoint.join("unet")),
        config(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(b.state.step, 3);
    assert_eq!(
        b.state.data_cursor, 12,
        "3 steps x 2 micro-batches x 2 examples"
    );
    run_b.truncate_metrics(b.state.step).unwrap();
    train(&mut b, &run_b, 6);

    let (wa, wb) = (weights(a.model()), weights(b.model()));
    assert_eq!(wa.len(), wb.len());
    for ((ka, da), (kb, db)) in wa.iter().zip(&wb) {
        assert_eq!(ka, kb);
        assert_eq!(da, db, "{ka}: resumed weights differ");
    }
    let ma = std::fs::read_to_string(run_a.metrics_path()).unwrap();
    let mb = std::fs::read_to_string(run_b.metrics_path()).unwrap();
    assert_eq!(ma.lines().count(), 6);
    assert_eq!(ma, mb, "metrics of the resumed run");
    // The weights did change.
    assert_ne!(weights(&load(&init)), wa);
}

#[test]
fn an_interrupted_checkpoint_write_keeps_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::create(tmp.path()).unwrap();
    let mut trainer = Trainer::new(
        UNet2DConditionModel::<AD>::new(&UNetConfig::tiny_sdxl(), &Default::default()),
        config(),
        1,
    );
    train(&mut trainer, &run, 3);
    let good = run.latest().unwrap().unwrap();
    // A write that dies half way: some files written, then an error.
    trainer.state.step = 6;
    let err = trainer
        .save(&run, |dir, m| {
            save(dir, m)?;
            Err(RunDirError::Invalid {
                path: dir.to_path_buf(),
                message: "disk full".into(),
            })
        })
        .unwrap_err();
    assert!(err.to_string().contains("disk full"));
    assert_eq!(
        run.latest().unwrap().unwrap(),
        good,
        "latest still points at step 3"
    );
    assert!(
        !good.with_file_name("step-000006").exists(),
        "no half checkpoint under the final name"
    );
    let resumed = Trainer::resume(
        &good,
        load(&good.join("unet")),
        config(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(resumed.state.step, 3);
}

#[test]
fn ema_averages_the_weights_after_every_step() {
    let tmp = tempfile::tempdir().unwrap();
    let init = tmp.path().join("init");
    save_unet(
        &init,
        &UNet2DConditionModel::<AD>::new(&UNetConfig::tiny_sdxl(), &Default::default()),
    )
    .unwrap();
    let run = RunDir::create(tmp.path().join("ema")).unwrap();
    let cfg = OptimConfig {
        ema_decay: Some(0.5),
        ..config()
    };
    assert!(OptimConfig {
        ema_decay: Some(1.0),
        ..config()
    }
    .validate()
    .is_err());
    let mut trainer = Trainer::new(load(&init), cfg, 7);
    let w0 = weights(trainer.model());
    train(&mut trainer, &run, 1);
    let w1 = weights(trainer.model());
    train(&mut trainer, &run, 2);
    let w2 = weights(trainer.model());
    let ema = sharpen_weights::module_tensors(trainer.ema().unwrap(), &|k: &str| k.to_string());
    assert_eq!(ema.len(), w0.len());
    let mut moved = false;
    for (i, (key, e)) in ema.iter().enumerate() {
        let v = |d: &TensorData| d.to_vec::<f32>().unwrap();
        let (a, b, c, e) = (v(&w0[i].1), v(&w1[i].1), v(&w2[i].1), v(e));
        for j in 0..e.len() {
            // ema2 = 0.5 (0.5 w0 + 0.5 w1) + 0.5 w2
            let want = 0.25 * a[j] + 0.25 * b[j] + 0.5 * c[j];
            assert!(
                (e[j] - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{key}[{j}]"
            );
        }
        moved |= a != c;
    }
    assert!(moved, "the weights changed, so the average means something");
}

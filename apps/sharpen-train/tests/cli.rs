//! `sharpen-train` end to end on the tiny SDXL pipeline: a run writes metrics and checkpoints;
//! an interrupted-and-resumed run equals an uninterrupted one; bad configs name the field.

use std::path::Path;

mod common;

use common::{
    assert_same_training, config, metrics, ok, train, train_in, uninterrupted_and_resumed,
    with_rlhf, workspace,
};

fn weights(run: &Path, step: &str) -> Vec<u8> {
    std::fs::read(
        run.join("checkpoints")
            .join(step)
            .join("unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap()
}

#[test]
fn every_method_runs_and_writes_metrics_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    for method in [
        "standard",
        "sharpen-sft",
        "sharpen-rlhf",
        "ddpo",
        "diffusion-dpo",
    ] {
        let cfg = config(tmp.path(), method, "");
        let run = tmp.path().join(format!("run-{method}"));
        ok(&train_in(&cfg, &run, &[]));
        let lines = metrics(&run);
        assert_eq!(lines.len(), 4, "{method}");
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["step"], i + 1);
            for key in ["loss", "lr", "grad_norm"] {
                assert!(
                    l[key].as_f64().is_some_and(f64::is_finite),
                    "{method}: {key} in {l}"
                );
            }
            let has_reward = l["reward_mean"].as_f64().is_some();
            assert_eq!(has_reward, method != "standard", "{method}: {l}");
            if has_reward {
                assert!(l["reward_best"].as_f64() >= l["reward_mean"].as_f64());
                assert!(l["reward_worst"].as_f64() <= l["reward_mean"].as_f64());
            }
            // The online generations' reward: sharpen-rlhf's own curve (a JPEG reward is < 0).
            let generations = l["generation_reward_mean"].as_f64();
            assert_eq!(
                generations.is_some_and(|g| g < 0.0),
                method == "sharpen-rlhf",
                "{method}: {l}"
            );
            assert!(l.get("generation_reward_mean").is_some(), "{l}");
        }
        let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
        assert_eq!(latest, "step-000004");
        assert!(run
            .join("checkpoints/step-000002/unet/config.json")
            .is_file());
        assert!(run.join("config.toml").is_file());
        assert!(run.join("metrics.png").is_file());
        for step in ["000000", "000002", "000004"] {
            let png = run.join(format!("samples/step-{step}.png"));
            assert!(png.is_file(), "{method}: {}", png.display());
            assert!(png.with_extension("json").is_file());
        }
        // The validation samples scored with the run's reward at each of those steps.
        let validation: Vec<serde_json::Value> =
            std::fs::read_to_string(run.join("validation.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        let steps: Vec<u64> = validation
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [0, 2, 4], "{method}");
        for v in &validation {
            let scores = v["scores"].as_array().unwrap();
            assert_eq!(scores.len(), 4, "{method}: 4 prompts x 1 seed");
            let mean = scores.iter().map(|s| s.as_f64().unwrap()).sum::<f64>() / 4.0;
            assert!((v["reward_mean"].as_f64().unwrap() - mean).abs() < 1e-9);
            assert!(mean < 0.0, "JPEG compressibility is minus a size: {v}");
        }
    }
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    for (method, rlhf) in [
        ("sharpen-rlhf", ""),
        ("ddpo", ""),
        // Ranking by the generations and fresh re-noising draw and score differently.
        (
            "sharpen-rlhf",
            "select = \"generation\"\nrenoise = \"fresh\"",
        ),
    ] {
        resumed_equals_uninterrupted(method, rlhf);
    }
}

fn resumed_equals_uninterrupted(method: &str, rlhf: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), method, "caption_dropout = 0.3");
    with_rlhf(&cfg, rlhf);
    let cfg = cfg.to_str().unwrap();
    let (a, b) = uninterrupted_and_resumed(tmp.path(), cfg, |b| {
        let again = train(&["--config", cfg, "--output-dir", b.to_str().unwrap()]);
        assert!(
            !again.status.success(),
            "a second fresh run into the same folder is refused"
        );
        assert!(String::from_utf8_lossy(&again.stderr).contains("--resume latest"));
    });
    assert_eq!(metrics(&a), metrics(&b), "{method}");
    let validation = |run: &Path| std::fs::read_to_string(run.join("validation.jsonl")).unwrap();
    assert_eq!(validation(&a), validation(&b), "{method}");
    assert_eq!(
        weights(&a, "step-000004"),
        weights(&b, "step-000004"),
        "{method}: bit-identical weights"
    );
    assert_ne!(
        weights(&a, "step-000002"),
        weights(&a, "step-000004"),
        "training moved the weights"
    );
}

#[test]
fn bad_configs_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (extra, needle) in [
        ("caption_dropout = 1.5", "caption_dropout"),
        ("checkpoint_every = 0", "checkpoint_every"),
        ("learning_rate = 3", "learning_rate"),
        ("kl_weight = -1", "kl_weight"),
        ("[trajectory]\nmax_timestep = 0", "trajectory.max_timestep"),
        (
            "[shard]\nrank = 2\nworld_size = 2",
            "rank 2 of world_size 2",
        ),
        (
            "train_text_encoders = true\ngradient_checkpointing = true",
            "gradient_checkpointing",
        ),
    ] {
        let cfg = config(tmp.path(), "standard", extra);
        let out = train_in(&cfg, &tmp.path().join("x"), &[]);
        assert!(!out.status.success(), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{extra}: {err}");
    }
    for (method, extra, needle) in [
        ("ddpo", "[trajectory]\nn = 1", "trajectory.n"),
        ("diffusion-dpo", "[trajectory]\nn = 1", "trajectory.n"),
        (
            "ddpo",
            "[ddpo]\ntrain_timesteps = 0",
            "ddpo.train_timesteps",
        ),
        ("diffusion-dpo", "[dpo]\nbeta = 0", "dpo.beta"),
    ] {
        let cfg = config(tmp.path(), method, extra);
        let out = train_in(&cfg, &tmp.path().join("x"), &[]);
        assert!(!out.status.success(), "{method}: {extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{method} {extra}: {err}");
    }
    let cfg = config(tmp.path(), "sharpen-rlhf", "");
    with_rlhf(&cfg, "select = \"best\"");
    let out = train_in(&cfg, &tmp.path().join("x"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("select"), "{err}");
    let out = train(&["--config", "no/such.toml"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such.toml"));
}

#[test]
fn image_folders_and_prompt_files_feed_training() {
    let tmp = tempfile::tempdir().unwrap();
    let data = workspace().join("tests/fixtures/data");
    for (case, method, section, steps) in [
        (
            "sharpen-sft",
            format!(
                "kind = \"image-folder\"\npath = \"{}\"\nrandom_flip = true\nshuffle = false",
                data.join("imagefolder_txt").display()
            ),
            "5",
        ),
        (
            "standard",
            format!(
                "kind = \"image-folder\"\npath = \"{}\"",
                data.join("imagefolder_metadata").display()
            ),
            "2",
        ),
        (
            "sharpen-rlhf",
            format!(
                "kind = \"prompts\"\npath = \"{}\"",
                data.join("prompts/drawbench.csv").display()
            ),
            "2",
        ),
        (
            "standard",
            format!(
                "kind = \"webdataset\"\npath = \"{}\"\nshuffle = false",
                data.join("webdataset").display()
            ),
            "5",
        ),
        (
            "standard",
            format!(
                "kind = \"journeydb\"\nannotations = \"{}\"\nimages = \"{}\"\nshuffle = false",
                data.join("journeydb/train_anno.jsonl").display(),
                data.join("journeydb/imgs").display()
            ),
            "5",
        ),
        (
            "sharpen-sft",
            format!(
                "kind = \"parquet\"\npath = \"{}\"\nshuffle = false",
                data.join("parquet").display()
            ),
            "5",
        ),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (m, s, n))| (i, m, s, n))
    {
        let cfg = config(tmp.path(), method, "");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("kind = \"shapes\"", &section);
        std::fs::write(&cfg, text).unwrap();
        let run = tmp.path().join(format!("run-{case}"));
        let out = train_in(&cfg, &run, &["--steps", steps]);
        ok(&out);
        assert_eq!(
            metrics(&run).len(),
            steps.parse::<usize>().unwrap(),
            "{method}"
        );
        if steps == "5" {
            // Rows 0..4 of the 4-row folder (and of the 4-item shards, JourneyDB and Parquet samples):
            // row 2 (broken.png) fails to decode once and row 3 stands in for it.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("skipped 1 corrupt images"), "{err}");
        }
    }
    // A prompt list cannot feed an image method.
    let cfg = config(tmp.path(), "standard", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "kind = \"shapes\"",
        &format!(
            "kind = \"prompts\"\npath = \"{}\"",
            data.join("prompts/prompts.txt").display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let out = train_in(&cfg, &tmp.path().join("x"), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("config field `data`"));
}

#[test]
fn gradient_checkpointing_trains_like_plain_autodiff() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = config(tmp.path(), "standard", "");
    let run_plain = tmp.path().join("plain");
    ok(&train_in(&plain, &run_plain, &["--steps", "3"]));
    let ckpt_dir = tmp.path().join("c");
    std::fs::create_dir_all(&ckpt_dir).unwrap();
    let ckpt = config(&ckpt_dir, "standard", "gradient_checkpointing = true");
    let run_ckpt = tmp.path().join("ckpt");
    ok(&train_in(&ckpt, &run_ckpt, &["--steps", "3"]));
    assert_same_training(&run_plain, &run_ckpt, &["loss", "grad_norm"]);
    // sharpen-sft and sharpen-rlhf: the same rollouts and selections, the chain of m UNet calls
    // recomputed block by block in backward (also with detached steps); the baselines: the same
    // samples, the trained calls (DDPO's guided pairs of calls per step) recomputed likewise.
    for (i, (method, extra)) in [
        ("sharpen-sft", ""),
        ("sharpen-sft", "[trajectory]\ndetach_between_steps = true"),
        ("sharpen-rlhf", ""),
        ("ddpo", ""),
        ("diffusion-dpo", "[dpo]\nbeta = 50.0"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("traj{i}"));
        std::fs::create_dir_all(dir.join("c")).unwrap();
        let plain = config(&dir, method, extra);
        let ckpt = config(
            &dir.join("c"),
            method,
            &format!("gradient_checkpointing = true\n{extra}"),
        );
        // beta 2500 (Diffusion-DPO's 5000) turns float rounding of the losses (1e-7) into 1e-4
        // of the loss.
        // DDPO with guidance: two trained calls per step. (The JPEG reward is a whole number
        // of bytes: float rounding of the weights can move one sample across a byte, which with
        // guided RLHF rollouts happened to reorder a pair; so RLHF keeps the default.)
        let guidance = if method == "ddpo" {
            "rollout_cfg = 2.0"
        } else {
            ""
        };
        for cfg in [&plain, &ckpt] {
            with_rlhf(cfg, &format!("beta = 25.0\n{guidance}"));
        }
        ok(&train_in(&plain, &dir.join("plain"), &["--steps", "3"]));
        ok(&train_in(&ckpt, &dir.join("ckpt"), &["--steps", "3"]));
        // DDPO's objective at the sampling weights is zero up to rounding: its gradient is the
        // check.
        let keys: &[&str] = match method {
            "ddpo" => &["grad_norm", "reward_mean"],
            _ => &["loss", "grad_norm", "reward_mean"],
        };
        assert_same_training(&dir.join("plain"), &dir.join("ckpt"), keys);
    }
    let vae = config(&ckpt_dir, "autoencoder", "gradient_checkpointing = true");
    let out = train_in(&vae, &tmp.path().join("x"), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("config field `gradient_checkpointing`"));
}

fn file(run: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(run.join(rel)).unwrap_or_else(|e| panic!("{}: {e}", run.join(rel).display()))
}

#[test]
fn pretraining_trains_the_vae_then_the_unet_with_its_text_encoders() {
    let tmp = tempfile::tempdir().unwrap();
    // Stage 1: the VAE alone; the exported pipeline carries the measured scaling factor.
    let cfg = config(tmp.path(), "autoencoder", "kl_weight = 1e-4");
    let vae_run = tmp.path().join("vae");
    ok(&train_in(&cfg, &vae_run, &[]));
    assert_eq!(metrics(&vae_run).len(), 4);
    let source = workspace().join("tests/fixtures/pipeline/tiny-sdxl");
    let vae_file = "vae/diffusion_pytorch_model.safetensors";
    assert_ne!(
        file(&vae_run, &format!("checkpoints/step-000004/{vae_file}")),
        file(&source, vae_file),
        "the VAE trained"
    );
    assert!(
        !vae_run.join("checkpoints/step-000004/unet").exists(),
        "only the VAE is trained"
    );
    let exported = vae_run.join("pipeline");
    assert_eq!(
        file(&exported, "unet/diffusion_pytorch_model.safetensors"),
        file(&source, "unet/diffusion_pytorch_model.safetensors"),
        "untrained parts are copied"
    );
    let vae_config: serde_json::Value =
        serde_json::from_slice(&file(&exported, "vae/config.json")).unwrap();
    let factor = vae_config["scaling_factor"].as_f64().unwrap();
    assert!(
        factor.is_finite() && factor > 0.0 && factor != 0.13025,
        "{factor}"
    );
    assert!(
        vae_run.join("samples/step-000004.png").is_file(),
        "reconstructions"
    );

    // Stage 2: UNet + text encoders from stage 1's pipeline; stopping and resuming changes nothing.
    let extra = format!(
        "train_text_encoders = true\ncaption_dropout = 0.2\nmodel = \"{}\"",
        exported.display()
    );
    let cfg = config(tmp.path(), "standard", &extra);
    let text = std::fs::read_to_string(&cfg).unwrap();
    // `config` wrote the fixture's model line first; the override comes from `extra`.
    let text = text
        .replacen(&format!("model = \"{}\"\n", source.display()), "", 1)
        .replace("accumulation = 1\n", "accumulation = 1\nema_decay = 0.9\n");
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap();
    let (a, b) = uninterrupted_and_resumed(tmp.path(), cfg, |_| {});
    assert_eq!(metrics(&a), metrics(&b));
    for part in [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder_2/model.safetensors",
    ] {
        let at = |run: &Path| file(run, &format!("checkpoints/step-000004/{part}"));
        let ema = |run: &Path| file(run, &format!("checkpoints/step-000004/ema/{part}"));
        assert_eq!(at(&a), at(&b), "{part}: bit-identical after resume");
        assert_eq!(ema(&a), ema(&b), "{part}: EMA bit-identical after resume");
        assert_ne!(at(&a), file(&exported, part), "{part} trained");
        assert_ne!(ema(&a), at(&a), "{part}: the EMA lags the weights");
        assert_eq!(
            file(&a, &format!("pipeline/{part}")),
            ema(&a),
            "{part}: the EMA is exported"
        );
    }
    assert_eq!(
        file(&a, &format!("pipeline/{vae_file}")),
        file(&exported, vae_file)
    );
}

#[test]
fn the_main_job_runs_on_the_shipped_shapes_model() {
    // The README's first command with its default config, shortened to 2 steps.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("main");
    let out = train(&[
        "--output-dir",
        run.to_str().unwrap(),
        "--steps",
        "2",
        "--seed",
        "3",
    ]);
    ok(&out);
    // It ends with the validation reward's paired change and its interval over the 32 seeds.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at step 2: paired change") && err.contains("(95% CI over 32 seeds;"),
        "{err}"
    );
    let lines = metrics(&run);
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let r = l["reward_mean"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&r),
            "the shapes reward is partial credit: {l}"
        );
    }
    for step in ["000000", "000002"] {
        assert!(run.join(format!("samples/step-{step}.png")).is_file());
    }
    // 8 prompts x 32 seeds scored by the shapes reward before training and at the end.
    let validation = std::fs::read_to_string(run.join("validation.jsonl")).unwrap();
    let validation: Vec<serde_json::Value> = validation
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(validation.len(), 2);
    for v in &validation {
        let scores = v["scores"].as_array().unwrap();
        assert_eq!(scores.len(), 256);
        assert!(scores
            .iter()
            .all(|s| (0.0..=1.0).contains(&s.as_f64().unwrap())));
    }
    assert!(run.join("pipeline/model_index.json").is_file());
    assert!(run.join("metrics.png").is_file());
}

#[test]
fn dry_run_checks_and_plans_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "sharpen-sft", "");
    let run = tmp.path().join("run");
    let out = train_in(&cfg, &run, &["--dry-run"]);
    ok(&out);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("reward queries: at most 9 per step, 36 in all"),
        "{plan}"
    );
    assert!(
        plan.contains("4 x 1 micro-batches of 1 = 4 examples"),
        "{plan}"
    );
    // The memory plan: what the method backpropagates through (sharpen-sft: the selected
    // trajectory's m = 3 steps of one row per prompt) and the optimizer's share.
    for line in [
        "estimated peak memory:",
        "UNet activations (3 call(s) x 1 row(s), 4x4)",
        "AdamW state (2 x f32)",
    ] {
        assert!(plan.contains(line), "{line}: {plan}");
    }
    assert!(!run.exists(), "a dry run writes nothing");
    // What a real run would trip over fails the dry run too, naming it.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "kind = \"shapes\"",
        "kind = \"image-folder\"\npath = \"no/such/folder\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = train(&["--config", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/folder"));
}

#[test]
fn a_fresh_run_refuses_a_folder_that_holds_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "standard", "");
    let run = tmp.path().join("run");
    ok(&train_in(&cfg, &run, &["--steps", "2"]));
    let before = std::fs::read(run.join("metrics.jsonl")).unwrap();
    // The same command again would append a second run's metrics to the first's.
    let out = train_in(&cfg, &run, &["--steps", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&run.display().to_string()) && err.contains("--resume latest"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), before);
    // Continuing it is what the message says.
    ok(&train_in(&cfg, &run, &["--resume", "latest"]));
    assert_eq!(metrics(&run).len(), 4);
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "standard", "");
    let run = tmp.path().join("run");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sharpen-train"))
        .args(["--config", cfg.to_str().unwrap(), "--output-dir"])
        .arg(&run)
        .args(["--steps", "100000"])
        .current_dir(workspace())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs sharpen-train");
    // Interrupt once it has trained a step.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(true, |t| t.is_empty()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "stopped before training"
        );
        assert!(std::time::Instant::now() < deadline, "no step within 120 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted at step"), "{err}");
    let step = metrics(&run).len();
    assert!(
        run.join("checkpoints/latest").is_file(),
        "a checkpoint was saved"
    );
    // It resumes from there to its end (exit 0).
    let more = (step + 1).to_string();
    let resumed = train_in(&cfg, &run, &["--resume", "latest", "--steps", &more]);
    ok(&resumed);
    assert_eq!(metrics(&run).len(), step + 1);
}

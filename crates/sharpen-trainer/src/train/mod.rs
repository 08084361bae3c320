//! The optimizer loop's machinery, model-agnostic: AdamW with a learning-rate schedule, gradient
//! accumulation and global-norm clipping, and checkpoints (optimizer state, step, random stream,
//! data position) that resume bit-exactly.

pub mod ema;
pub mod grads;
pub mod ids;
pub mod lr;
pub mod rng;
pub mod run_dir;
pub mod sync;

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use self::lr::LrSchedule;
use self::rng::RunRng;
use self::run_dir::{read_state, RunDir, RunDirError, TrainState};
use self::sync::{Peer, SyncError};

/// AdamW and the step around it (method.md section 6 defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub lr: f64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Global-norm clipping (None: off).
    pub max_grad_norm: Option<f64>,
    /// Micro-batches per optimizer step; gradients are averaged over them.
    pub accumulation: usize,
    pub schedule: LrSchedule,
    /// Keep an exponential moving average of the weights with this decay (e.g. 0.999); None: off.
    pub ema_decay: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            accumulation: 1,
            schedule: LrSchedule::Constant,
            ema_decay: None,
        }
    }
}

impl OptimConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("lr must be a positive number, got {}", self.lr));
        }
        if self.accumulation == 0 {
            return Err("accumulation must be at least 1".into());
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return Err(format!("ema_decay must be in [0, 1), got {d}"));
            }
        }
        if let Some(n) = self.max_grad_norm {
            if !(n.is_finite() && n > 0.0) {
                return Err(format!("max_grad_norm must be positive, got {n}"));
            }
        }
        Ok(())
    }

    fn adamw(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(self.beta1)
            .with_beta_2(self.beta2)
            .with_epsilon(self.eps)
            .with_weight_decay(self.weight_decay)
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Optimizer steps done, this one included.
    pub step: usize,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

pub struct Trainer<B: AutodiffBackend, M: AutodiffModule<B>> {
    model: Option<M>,
    ema: Option<M::InnerModule>,
    optim: OptimizerAdaptor<AdamW, M, B>,
    accumulator: GradientsAccumulator<M>,
    accumulated: usize,
    /// Data-parallel group (`None`: this process trains alone).
    peer: Option<Peer<B::InnerBackend>>,
    pub config: OptimConfig,
    pub state: TrainState,
}

type OptimRecord<B, M> = <OptimizerAdaptor<AdamW, M, B> as Optimizer<M, B>>::Record;

impl<B: AutodiffBackend, M: AutodiffModule<B>> Trainer<B, M> {
    /// A fresh run. Parameter ids are derived from module paths (see [`ids::with_path_ids`]) so
    /// that saved optimizer state finds its parameters after a reload.
    pub fn new(model: M, config: OptimConfig, seed: u64) -> Self {
        let model = ids::with_path_ids(model);
        Self {
            ema: config.ema_decay.map(|_| model.valid()),
            model: Some(model),
            optim: config.adamw().init(),
            accumulator: GradientsAccumulator::new(),
            accumulated: 0,
            peer: None,
            config,
            state: TrainState {
                step: 0,
                rng: RunRng::new(seed),
                data_cursor: 0,
                elapsed_s: 0.0,
            },
        }
    }

    pub fn model(&self) -> &M {
        self.model.as_ref().expect("model present between steps")
    }

    /// The moving average of the weights (when `ema_decay` is set).
    pub fn ema(&self) -> Option<&M::InnerModule> {
        self.ema.as_ref()
    }

    /// Replaces the moving average (resuming: the one saved with the checkpoint). Its parameter
    /// ids are re-derived from module paths, as the live model's are.
    pub fn set_ema(&mut self, ema: M::InnerModule) {
        self.ema = Some(ids::with_path_ids(ema));
    }

    /// Trains as one peer of a data-parallel group: gradients are averaged over the group
    /// before every optimizer step.
    pub fn with_peer(mut self, peer: Peer<B::InnerBackend>) -> Self {
        self.peer = Some(peer);
        self
    }

    pub fn peer(&self) -> Option<&Peer<B::InnerBackend>> {
        self.peer.as_ref()
    }

    pub fn rng(&mut self) -> &mut RunRng {
        &mut self.state.rng
    }

    /// The learning rate of the next optimizer step.
    pub fn next_lr(&self) -> f64 {
        self.config.lr * self.config.schedule.factor(self.state.step)
    }

    /// Adds one micro-batch's gradients. After `accumulation` of them: averages (over the
    /// micro-batches, then over the data-parallel group), clips to the global norm, and takes an
    /// optimizer step, returning what it did.
    pub fn accumulate(&mut self, grads: GradientsParams) -> Result<Option<StepReport>, SyncError> {
        let model = self.model.as_ref().expect("model present between steps");
        self.accumulator.accumulate(model, grads);
        self.accumulated += 1;
        if self.accumulated < self.config.accumulation {
            return Ok(None);
        }
        let mut grads = self.accumulator.grads();
        if self.accumulated > 1 {
            grads::scale::<B, M>(self.model(), &mut grads, 1.0 / self.accumulated as f64);
        }
        self.accumulated = 0;
        if let Some(peer) = &self.peer {
            peer.all_reduce_grads::<B, M>(self.model(), &mut grads)?;
        }
        let grad_norm = match self.config.max_grad_norm {
            Some(max) => grads::clip_global_norm::<B, M>(self.model(), &mut grads, max),
            None => grads::global_norm::<B, M>(self.model(), &grads),
        };
        let lr = self.next_lr();
        let model = self.model.take().expect("model present between steps");
        let model = self.optim.step(lr, model, grads);
        if let (Some(decay), Some(ema)) = (self.config.ema_decay, self.ema.take()) {
            self.ema = Some(ema::update(ema, &model.valid(), decay));
        }
        self.model = Some(model);
        self.state.step += 1;
        Ok(Some(StepReport {
            step: self.state.step,
            lr,
            grad_norm,
        }))
    }

    /// Writes a checkpoint of the run into `run` (`save_model` writes the weights into the
    /// checkpoint's directory).
    pub fn save(
        &self,
        run: &RunDir,
        save_model: impl FnOnce(&Path, &M) -> Result<(), RunDirError>,
    ) -> Result<PathBuf, RunDirError> {
        let record = self.optim.to_record();
        let bytes = BinBytesRecorder::<FullPrecisionSettings>::default()
            .record(record, ())
            .map_err(|e| RunDirError::Invalid {
                path: run.root.clone(),
                message: format!("serialising the optimizer state: {e:?}"),
            })?;
        run.save_checkpoint(&self.state, |dir| {
            save_model(dir, self.model())?;
            run_dir::write_atomic(&dir.join("optimizer.bin"), &bytes)
        })
    }

    /// Resumes from `checkpoint`: `model` holds the weights the caller loaded from it; the
    /// optimizer state, step, random stream and data position come from the checkpoint.
    pub fn resume(
        checkpoint: &Path,
        model: M,
        config: OptimConfig,
        device: &B::Device,
    ) -> Result<Self, RunDirError> {
        let state = read_state(checkpoint)?;
        let path = checkpoint.join("optimizer.bin");
        let bytes = std::fs::read(&path).map_err(|source| RunDirError::Io {
            path: path.clone(),
            source,
        })?;
        let record: OptimRecord<B, M> = BinBytesRecorder::<FullPrecisionSettings>::default()
            .load(bytes, device)
            .map_err(|e| RunDirError::Invalid {
                path: path.clone(),
                message: format!("not this run's optimizer state: {e:?}"),
            })?;
        let mut trainer = Self::new(model, config, 0);
        trainer.optim = trainer.optim.load_record(record);
        trainer.state = state;
        Ok(trainer)
    }
}

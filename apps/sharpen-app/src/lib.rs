//! Shared by the `sharpen-*` binaries: which burn backend and device a run uses, logging setup,
//! PNG line charts, folder copies, means with confidence intervals, ordered parallel maps and a
//! run's `validation.jsonl`.
//!
//! Architecture Invariant: this crate and the apps are the only places that name a backend type.
//! Libraries stay generic over `B: Backend`.

mod device;
mod files;
mod logging;
pub mod par;
pub mod plot;
pub mod stats;
pub mod validation;

#[cfg(feature = "cuda-untuned")]
pub use device::CudaBackend;
pub use device::{resolve_device, resolve_devices, CpuBackend, DeviceArg, ResolvedDevice};
pub use files::copy_tree;
pub use logging::init_logging;

//! `--device cpu|cuda[:N]` and the fallback to the CPU when no GPU can be used.

use std::fmt;
use std::str::FromStr;

/// The CPU backend of every run: burn's pure-Rust `flex` backend.
pub type CpuBackend = burn::backend::Flex;

/// The GPU backend, compiled in with the `cuda` cargo feature.
#[cfg(feature = "cuda-untuned")]
pub type CudaBackend = burn::backend::Cuda;

/// What the user asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    /// A CUDA device by ordinal (`cuda` means `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(index) => index
                    .parse()
                    .map(Self::Cuda)
                    .map_err(|_| format!("invalid CUDA device ordinal in `{s}`: expected cuda:N")),
                None => Err(format!(
                    "unknown device `{s}`: expected cpu, cuda or cuda:N"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The device a run actually uses, after checking what this binary and machine can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedDevice {
    Cpu,
    #[cfg(feature = "cuda-untuned")]
    Cuda(usize),
}

impl ResolvedDevice {
    pub fn describe(&self) -> String {
        match self {
            Self::Cpu => "cpu (burn flex backend)".to_string(),
            #[cfg(feature = "cuda-untuned")]
            Self::Cuda(i) => format!("cuda:{i} (burn CUDA backend)"),
        }
    }
}

/// Resolves `--device`: a CUDA request falls back to the CPU, with a warning that says why, when
/// the binary was built without the `cuda` feature or no usable GPU is present. Never panics.
pub fn resolve_device(requested: DeviceArg) -> ResolvedDevice {
    match requested {
        DeviceArg::Cpu => ResolvedDevice::Cpu,
        DeviceArg::Cuda(index) => match cuda_unavailable_reason(index) {
            None => cuda_device(index),
            Some(reason) => {
                tracing::warn!(
                    "--device {requested} requested but {reason}; falling back to the CPU"
                );
                ResolvedDevice::Cpu
            }
        },
    }
}

/// Resolves `--devices` (data-parallel training) strictly: every device must be usable, with no
/// fallback, and all of one kind (the peers share one backend); a CUDA device may appear once.
/// Several `cpu` entries are allowed (peers on the CPU, used to test the data-parallel path).
/// The error names the device and why.
pub fn resolve_devices(requested: &[DeviceArg]) -> Result<Vec<ResolvedDevice>, String> {
    if requested.is_empty() {
        return Err("--devices: no device given".to_string());
    }
    let mut out = Vec::with_capacity(requested.len());
    for (i, &device) in requested.iter().enumerate() {
        if let DeviceArg::Cuda(index) = device {
            if let Some(reason) = cuda_unavailable_reason(index) {
                return Err(format!("--devices: {device} is not available: {reason}"));
            }
            if requested[..i].contains(&device) {
                return Err(format!("--devices: {device} is listed twice"));
            }
        }
        if std::mem::discriminant(&device) != std::mem::discriminant(&requested[0]) {
            return Err(format!(
                "--devices: {device} and {} are of different kinds; data-parallel peers share one backend",
                requested[0]
            ));
        }
        out.push(match device {
            DeviceArg::Cpu => ResolvedDevice::Cpu,
            DeviceArg::Cuda(index) => cuda_device(index),
        });
    }
    Ok(out)
}

#[cfg(feature = "cuda-untuned")]
fn cuda_device(index: usize) -> ResolvedDevice {
    if cfg!(feature = "cuda") {
        tracing::info!(
            "burn's CUDA backend tunes each new kernel shape on first use (minutes for a full SDXL \
             UNet); the results are cached under the workspace's target/ folder for later runs. \
             Builds with the `cuda-untuned` feature skip the tuning."
        );
    } else {
        tracing::info!("CUDA without autotuning (`cuda-untuned` build): default kernels");
    }
    ResolvedDevice::Cuda(index)
}

#[cfg(not(feature = "cuda-untuned"))]
fn cuda_device(_index: usize) -> ResolvedDevice {
    unreachable!("cuda_unavailable_reason always gives a reason without the cuda feature")
}

#[cfg(not(feature = "cuda-untuned"))]
fn cuda_unavailable_reason(_index: usize) -> Option<String> {
    Some("this binary was built without CUDA support (rebuild with `--features cuda`)".to_string())
}

/// Probes the CUDA driver directly through cudarc (the library burn's CUDA runtime loads), so that
/// a machine without a driver or GPU is detected before burn touches it.
#[cfg(feature = "cuda-untuned")]
fn cuda_unavailable_reason(index: usize) -> Option<String> {
    use cudarc::driver::{result, sys};
    // SAFETY: only tries to dlopen the driver library; no driver call is made when it is absent.
    if !unsafe { sys::is_culib_present() } {
        return Some("no CUDA driver library (libcuda) was found on this machine".to_string());
    }
    if let Err(e) = result::init() {
        return Some(format!("the CUDA driver failed to initialise ({e:?})"));
    }
    match result::device::get_count() {
        Err(e) => Some(format!("the CUDA driver could not count devices ({e:?})")),
        Ok(0) => Some("the CUDA driver reports no GPU".to_string()),
        Ok(n) if index >= n as usize => Some(format!(
            "cuda:{index} does not exist (this machine has {n} GPU(s): cuda:0..cuda:{})",
            n - 1
        )),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_arguments() {
        assert_eq!("cpu".parse::<DeviceArg>(), Ok(DeviceArg::Cpu));
        assert_eq!("CUDA".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(3)));
        let err = "tpu".parse::<DeviceArg>().unwrap_err();
        assert!(err.contains("tpu") && err.contains("cpu, cuda"), "{err}");
        assert!("cuda:x"
            .parse::<DeviceArg>()
            .unwrap_err()
            .contains("cuda:x"));
    }

    #[test]
    fn cpu_request_stays_on_cpu() {
        assert_eq!(resolve_device(DeviceArg::Cpu), ResolvedDevice::Cpu);
    }

    /// The machines that run the tests have no GPU: a CUDA request must fall back, not panic,
    /// with and without the `cuda` feature.
    #[test]
    fn cuda_request_without_gpu_falls_back_to_cpu() {
        let reason = cuda_unavailable_reason(0);
        if let Some(reason) = reason {
            assert!(!reason.is_empty());
            assert_eq!(resolve_device(DeviceArg::Cuda(0)), ResolvedDevice::Cpu);
        }
        // A device ordinal no machine has is always refused.
        assert!(cuda_unavailable_reason(4096).is_some());
        assert_eq!(resolve_device(DeviceArg::Cuda(4096)), ResolvedDevice::Cpu);
    }

    #[test]
    fn data_parallel_devices_are_resolved_strictly() {
        let two_cpus = resolve_devices(&[DeviceArg::Cpu, DeviceArg::Cpu]).unwrap();
        assert_eq!(two_cpus, vec![ResolvedDevice::Cpu, ResolvedDevice::Cpu]);
        // No fallback: a device ordinal no machine has is an error naming it.
        let err = resolve_devices(&[DeviceArg::Cuda(4096)]).unwrap_err();
        assert!(
            err.contains("cuda:4096") && err.contains("not available"),
            "{err}"
        );
        let err = resolve_devices(&[DeviceArg::Cpu, DeviceArg::Cuda(4096)]).unwrap_err();
        assert!(err.contains("cuda:4096"), "{err}");
        assert!(resolve_devices(&[]).unwrap_err().contains("no device"));
    }
}

//! Device selection: CUDA when available, else CPU, overridable by the user.
//!
//! Libraries never pick a device themselves (docs/architecture.md, "Tensors"): the binaries resolve a
//! [`DeviceChoice`] once, from a flag or the [`DEVICE_VAR`] environment variable, and pass the resulting
//! [`tch::Device`] down.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use tch::{Cuda, Device};

/// Environment variable read by [`device_from_env`]: `auto`, `cpu`, `cuda` or `cuda:N`.
pub const DEVICE_VAR: &str = "DIEM_DEVICE";

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA device when one is available, else the CPU.
    #[default]
    Auto,
    /// The CPU, even when a GPU is present.
    Cpu,
    /// The CUDA device with this index; an error when it does not exist.
    Cuda(usize),
}

/// A device request that cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// The text is not `auto`, `cpu`, `cuda` or `cuda:N`.
    #[error("invalid device {value:?}: expected `auto`, `cpu`, `cuda` or `cuda:N`")]
    Parse {
        /// The text that was given.
        value: String,
    },
    /// A CUDA device was requested that this machine or this libtorch build does not have.
    #[error("device cuda:{index} requested but {available} CUDA device(s) are available to libtorch")]
    CudaUnavailable {
        /// The requested index.
        index: usize,
        /// How many CUDA devices libtorch sees.
        available: usize,
    },
    /// [`DEVICE_VAR`] holds an invalid value.
    #[error("environment variable {var}: {source}")]
    Env {
        /// The variable's name.
        var: &'static str,
        /// What is wrong with its value.
        source: Box<DeviceError>,
    },
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "" | "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|i| i.parse::<usize>().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceError::Parse { value: s.to_string() }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceChoice {
    /// Resolves the choice against what libtorch sees on this machine.
    pub fn resolve(self) -> Result<Device, DeviceError> {
        self.resolve_with(cuda_device_count())
    }

    /// Resolves the choice given the number of visible CUDA devices (separated out for testing).
    pub fn resolve_with(self, cuda_devices: usize) -> Result<Device, DeviceError> {
        match self {
            Self::Auto if cuda_devices > 0 => Ok(Device::Cuda(0)),
            Self::Auto | Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(index) if index < cuda_devices => Ok(Device::Cuda(index)),
            Self::Cuda(index) => Err(DeviceError::CudaUnavailable { index, available: cuda_devices }),
        }
    }
}

/// Number of CUDA devices that libtorch can use (0 for a CPU-only build or a machine without GPU).
pub fn cuda_device_count() -> usize {
    if Cuda::is_available() {
        usize::try_from(Cuda::device_count()).unwrap_or(0)
    } else {
        0
    }
}

/// The paths of the files this process has mapped (its shared libraries among them), read from
/// `/proc/self/maps`. `None` where the platform has no such file (not Linux).
fn mapped_libraries() -> Option<Vec<PathBuf>> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mut libs: Vec<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    libs.sort();
    libs.dedup();
    Some(libs)
}

/// Whether this process has `libtorch_cuda.so` loaded, i.e. whether libtorch's CUDA runtime can register
/// itself. A binary linked without it (rustc's `--as-needed` drops it; the `diem-build` crate keeps it)
/// reports no CUDA device even on a GPU machine. `None` where the loaded libraries cannot be listed (not
/// Linux).
pub fn cuda_runtime_loaded() -> Option<bool> {
    let libs = mapped_libraries()?;
    Some(libs.iter().any(|p| p.file_name().is_some_and(|n| n == "libtorch_cuda.so")))
}

/// Whether the libtorch this process runs on ships `libtorch_cuda.so` beside the loaded `libtorch_cpu.so`
/// (a CUDA build, such as the PyPI wheel). `None` where the loaded libraries cannot be listed or
/// `libtorch_cpu.so` is not among them.
pub fn libtorch_has_cuda() -> Option<bool> {
    let libs = mapped_libraries()?;
    let cpu = libs.iter().find(|p| p.file_name().is_some_and(|n| n == "libtorch_cpu.so"))?;
    Some(cpu.with_file_name("libtorch_cuda.so").is_file())
}

/// The device named by [`DEVICE_VAR`], or [`DeviceChoice::Auto`] when it is unset.
pub fn device_from_env() -> Result<Device, DeviceError> {
    let choice = match std::env::var(DEVICE_VAR) {
        Ok(value) => value
            .parse::<DeviceChoice>()
            .map_err(|e| DeviceError::Env { var: DEVICE_VAR, source: Box::new(e) })?,
        Err(_) => DeviceChoice::Auto,
    };
    choice.resolve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("".parse(), Ok(DeviceChoice::Auto));
        assert_eq!(" CPU ".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert!(matches!("cuda:x".parse::<DeviceChoice>(), Err(DeviceError::Parse { .. })));
        assert!(matches!("tpu".parse::<DeviceChoice>(), Err(DeviceError::Parse { .. })));
        for choice in [DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Cuda(2)] {
            assert_eq!(choice.to_string().parse(), Ok(choice));
        }
    }

    #[test]
    fn resolution_prefers_cuda_and_refuses_missing_devices() {
        assert_eq!(DeviceChoice::Auto.resolve_with(0), Ok(Device::Cpu));
        assert_eq!(DeviceChoice::Auto.resolve_with(2), Ok(Device::Cuda(0)));
        assert_eq!(DeviceChoice::Cpu.resolve_with(2), Ok(Device::Cpu));
        assert_eq!(DeviceChoice::Cuda(1).resolve_with(2), Ok(Device::Cuda(1)));
        assert_eq!(
            DeviceChoice::Cuda(2).resolve_with(2),
            Err(DeviceError::CudaUnavailable { index: 2, available: 2 })
        );
    }

    #[test]
    fn resolve_agrees_with_libtorch() {
        let device = DeviceChoice::Auto.resolve().unwrap();
        assert_eq!(device.is_cuda(), tch::Cuda::is_available());
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
    }
}

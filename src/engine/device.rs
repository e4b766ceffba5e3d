//! The device an [`crate::Engine`] runs on, chosen at run time.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Where the models run.
///
/// ```
/// use spire::Device;
/// assert_eq!("cuda:1".parse::<Device>()?, Device::Cuda(1));
/// assert_eq!(Device::Emulator.to_string(), "emulator");
/// # Ok::<(), spire::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU reference backend (always available).
    #[default]
    Cpu,
    /// NVIDIA GPU `ordinal` (a build with the `cuda` feature and a driver).
    Cuda(usize),
    /// The CUDA kernels on the CPU through spire's emulator (the `emulator` feature): slow, for
    /// checking the GPU path without a GPU.
    Emulator,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
            Device::Emulator => write!(f, "emulator"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    /// `cpu`, `cuda` (GPU 0), `cuda:N`, or `emulator`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidRequest(format!("unknown device `{s}`: use cpu, cuda, cuda:N or emulator"));
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "emulator" => Ok(Device::Emulator),
            _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).ok_or_else(bad),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        for (text, device) in [("cpu", Device::Cpu), ("cuda:3", Device::Cuda(3)), ("emulator", Device::Emulator)] {
            assert_eq!(text.parse::<Device>().unwrap(), device);
            assert_eq!(device.to_string(), text);
        }
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert!("tpu".parse::<Device>().unwrap_err().to_string().contains("cpu, cuda"));
    }
}

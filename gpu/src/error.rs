//! What can go wrong on the device path. The executor turns `Unsupported`, `OutOfDeviceMemory`
//! and the device failures into a CPU fallback; the value errors (`DivideByZero`,
//! `ArithmeticOverflow`) are the query's own and reach the client as the CPU's would.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GpuError {
    /// An expression, type or aggregate the device pipeline does not implement.
    #[error("not supported on the device: {0}")]
    Unsupported(String),
    /// The CUDA driver library could not be loaded, there is no device, or creating its context
    /// failed: the reason the probe gives.
    #[error("no GPU: {0}")]
    NoDevice(String),
    /// libnvrtc is not on the library path (nor at SHOAL_NVRTC_LIBRARY).
    #[error("NVRTC is not available: {0}")]
    NvrtcMissing(String),
    /// NVRTC rejected a generated kernel: a bug in the code generator, with NVRTC's log.
    #[error("kernel {kernel} failed to compile: {log}")]
    KernelCompile { kernel: String, log: String },
    /// A CUDA driver call failed while running a kernel or moving data.
    #[error("CUDA driver error during {during}: {message}")]
    Driver {
        during: &'static str,
        message: String,
    },
    /// A batch needs more device memory than the node's budget leaves.
    #[error("the batch needs {needed} bytes of device memory and {available} are left")]
    OutOfDeviceMemory { needed: usize, available: usize },
    /// A partial aggregate met more distinct groups than its hash table holds.
    #[error("more than {capacity} groups in one batch")]
    TooManyGroups { capacity: usize },
    #[error("Divide by zero error")]
    DivideByZero,
    #[error("Arithmetic overflow: {0}")]
    ArithmeticOverflow(String),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

impl GpuError {
    /// Errors that say something about the data (the CPU would fail the same way), as opposed to
    /// the device path's own limits, after which the CPU runs the batch instead.
    pub fn is_query_error(&self) -> bool {
        matches!(
            self,
            GpuError::DivideByZero | GpuError::ArithmeticOverflow(_)
        )
    }

    pub(crate) fn driver(during: &'static str, error: impl std::fmt::Display) -> Self {
        GpuError::Driver {
            during,
            message: error.to_string(),
        }
    }
}

//! Finding the GPU: a probe that never panics and says why there is none, and the node's one
//! device handle (context, stream, loaded kernels, memory budget) when there is.
//!
//! cudarc loads libcuda at run time and panics when it is missing, so the probe checks the
//! library first and runs each driver call under `catch_unwind`.

use std::collections::HashMap;
use std::panic::catch_unwind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use parking_lot::Mutex;

use crate::error::GpuError;

/// What the probe found.
#[derive(Debug, Clone)]
pub enum DeviceProbe {
    Present(DeviceInfo),
    /// Why not: no driver library, no device, or the context could not be created.
    Absent(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
    /// Peak memory bandwidth from the memory clock and bus width (bytes/s), when reported.
    pub memory_bandwidth: Option<f64>,
}

impl DeviceProbe {
    pub fn describe(&self) -> String {
        match self {
            DeviceProbe::Present(info) => format!(
                "{} (compute {}.{}, {} MiB)",
                info.name,
                info.compute_capability.0,
                info.compute_capability.1,
                info.total_memory >> 20
            ),
            DeviceProbe::Absent(reason) => format!("no GPU: {reason}"),
        }
    }
}

/// The node's device, opened on first use; `Err` carries the probe's reason.
pub fn device() -> Result<Arc<CudaDevice>, GpuError> {
    static DEVICE: OnceLock<Result<Arc<CudaDevice>, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| open_device().map(Arc::new))
        .clone()
        .map_err(GpuError::NoDevice)
}

/// Probes for a GPU without ever panicking.
pub fn probe() -> DeviceProbe {
    match device() {
        Ok(device) => DeviceProbe::Present(device.info.clone()),
        Err(GpuError::NoDevice(reason)) => DeviceProbe::Absent(reason),
        Err(other) => DeviceProbe::Absent(other.to_string()),
    }
}

fn open_device() -> Result<CudaDevice, String> {
    // SAFETY: only probes whether libcuda can be opened.
    let driver = catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() });
    if !matches!(driver, Ok(true)) {
        return Err("the CUDA driver library (libcuda.so) is not installed".to_string());
    }
    let count = catch_unwind(CudaContext::device_count)
        .map_err(|_| "the CUDA driver could not be loaded".to_string())?
        .map_err(|e| format!("the CUDA driver failed to initialise: {e}"))?;
    if count < 1 {
        return Err("the CUDA driver reports no device".to_string());
    }
    let context = catch_unwind(|| CudaContext::new(0))
        .map_err(|_| "creating a CUDA context panicked".to_string())?
        .map_err(|e| format!("creating a CUDA context failed: {e}"))?;
    let info = DeviceInfo {
        name: context.name().unwrap_or_else(|_| "CUDA device".to_string()),
        compute_capability: context
            .compute_capability()
            .map_err(|e| format!("reading the compute capability failed: {e}"))?,
        total_memory: context
            .total_mem()
            .map_err(|e| format!("reading the device memory size failed: {e}"))?,
        memory_bandwidth: peak_bandwidth(&context),
    };
    let bytes_from_env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    // Half of the memory for queries' own buffers, a fifth for resident columns.
    let budget = bytes_from_env("SHOAL_GPU_MEMORY_BUDGET").unwrap_or(info.total_memory / 2);
    let resident_bytes =
        bytes_from_env("SHOAL_GPU_RESIDENT_BYTES").unwrap_or(info.total_memory / 5);
    let stream = context.default_stream();
    calibrate_transfer(&stream);
    Ok(CudaDevice {
        arch: nvrtc_arch(info.compute_capability),
        info,
        context,
        stream,
        functions: Mutex::new(HashMap::new()),
        budget: MemoryBudget::new(budget),
        resident_bytes,
    })
}

fn peak_bandwidth(context: &CudaContext) -> Option<f64> {
    use cudarc::driver::sys::CUdevice_attribute as A;
    let clock_khz = context
        .attribute(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)
        .ok()?;
    let bus_bits = context
        .attribute(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)
        .ok()?;
    // Double data rate: two transfers per clock.
    (clock_khz > 0 && bus_bits > 0).then(|| 2.0 * clock_khz as f64 * 1e3 * bus_bits as f64 / 8.0)
}

/// Times one 64 MiB host→device copy, the cost model's first transfer rate.
fn calibrate_transfer(stream: &Arc<CudaStream>) {
    let bytes = vec![0u8; 64 << 20];
    let started = std::time::Instant::now();
    let copied = stream
        .clone_htod(&bytes)
        .and_then(|slice| stream.synchronize().map(|_| slice));
    if copied.is_ok() {
        crate::cost_model().record_transfer(bytes.len() as u64, started.elapsed());
    }
}

/// The NVRTC `--gpu-architecture` for a compute capability (PTX, JIT-compiled by the driver).
pub fn nvrtc_arch(compute_capability: (i32, i32)) -> &'static str {
    match compute_capability {
        (major, _) if major >= 10 => "compute_100",
        (9, _) => "compute_90",
        (8, 9) => "compute_89",
        (8, 6..) => "compute_86",
        (8, _) => "compute_80",
        (7, 5..) => "compute_75",
        _ => "compute_70",
    }
}

/// The node's GPU: one context and stream, and the kernels loaded into it.
pub struct CudaDevice {
    pub info: DeviceInfo,
    pub arch: &'static str,
    pub(crate) context: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    /// (module source, kernel name) → loaded function.
    functions: Mutex<HashMap<(String, &'static str), CudaFunction>>,
    pub budget: MemoryBudget,
    /// Device memory that input columns of resident chunks may keep (see `crate::resident`).
    pub resident_bytes: usize,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("info", &self.info)
            .finish()
    }
}

impl CudaDevice {
    /// The kernel `name` of the module compiled from `source`, compiling and loading it the first
    /// time. Returns the compile time it cost (zero when cached).
    pub(crate) fn function(
        &self,
        source: &str,
        name: &'static str,
    ) -> Result<(CudaFunction, std::time::Duration), GpuError> {
        let key = (source.to_string(), name);
        if let Some(f) = self.functions.lock().get(&key) {
            return Ok((f.clone(), std::time::Duration::ZERO));
        }
        let compiled = crate::nvrtc::compile(source, self.arch, name)?;
        let module: Arc<CudaModule> = self
            .context
            .load_module((*compiled.ptx).clone())
            .map_err(|e| GpuError::driver("loading a kernel module", e))?;
        let function = module
            .load_function(name)
            .map_err(|e| GpuError::driver("finding a kernel", e))?;
        self.functions.lock().insert(key, function.clone());
        Ok((function, compiled.compile_time))
    }
}

/// Device memory this node lets queries use at once; a batch that does not fit is split, and
/// one that still does not fit runs on the CPU.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

/// Memory reserved from the budget until dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    pub fn reserve(&self, bytes: usize) -> Result<Reservation<'_>, GpuError> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let available = self.limit.saturating_sub(used);
            if bytes > available {
                return Err(GpuError::OutOfDeviceMemory {
                    needed: bytes,
                    available,
                });
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Reservation {
                        budget: self,
                        bytes,
                    })
                }
                Err(now) => used = now,
            }
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answers_without_panicking_and_says_why() {
        match probe() {
            DeviceProbe::Present(info) => assert!(info.total_memory > 0),
            DeviceProbe::Absent(reason) => assert!(!reason.is_empty()),
        }
    }

    #[test]
    fn the_budget_refuses_what_does_not_fit_and_frees_on_drop() {
        let budget = MemoryBudget::new(100);
        let first = budget.reserve(60).unwrap();
        let refused = budget.reserve(50).unwrap_err();
        assert!(matches!(
            refused,
            GpuError::OutOfDeviceMemory {
                needed: 50,
                available: 40
            }
        ));
        drop(first);
        assert!(budget.reserve(100).is_ok());
    }
}

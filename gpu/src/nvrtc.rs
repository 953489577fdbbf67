//! Run-time compilation of generated kernels with NVRTC, cached per (architecture, source).
//!
//! libnvrtc is loaded when first needed. cudarc looks it up by name on the library path; a node
//! (or CI, with the `nvidia-cuda-nvrtc-cu12` wheel) can name the file instead with
//! `SHOAL_NVRTC_LIBRARY`: it is opened first, and the dynamic loader then answers cudarc's lookup
//! by its soname with that copy. cudarc panics when the library is missing, so its presence is
//! checked before any call and every call is wrapped in `catch_unwind`.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use parking_lot::Mutex;

use crate::error::GpuError;

/// The environment variable naming libnvrtc's file, for machines where it is not on the path.
pub const NVRTC_LIBRARY_ENV: &str = "SHOAL_NVRTC_LIBRARY";

/// Opens libnvrtc from `path` for the rest of the process, so that cudarc's lookup by soname finds
/// it (for a library outside the loader's path, such as the PyPI wheel's).
pub fn load_library(path: &std::path::Path) -> Result<(), GpuError> {
    // SAFETY: libnvrtc's initialisers only set up the library itself.
    let opened = unsafe {
        libloading::os::unix::Library::open(
            Some(path),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
        )
    };
    match opened {
        // Kept loaded for the life of the process: cudarc resolves its symbols in it.
        Ok(library) => {
            std::mem::forget(library);
            Ok(())
        }
        Err(e) => Err(GpuError::NvrtcMissing(format!("{}: {e}", path.display()))),
    }
}

/// Whether libnvrtc can be used, loading it from `SHOAL_NVRTC_LIBRARY` when that is set; the
/// error says why not. Only success is remembered, so a library loaded later is found.
pub fn nvrtc_available() -> Result<(), GpuError> {
    static AVAILABLE: OnceLock<()> = OnceLock::new();
    if AVAILABLE.get().is_some() {
        return Ok(());
    }
    if let Some(path) = std::env::var_os(NVRTC_LIBRARY_ENV) {
        load_library(std::path::Path::new(&path))?;
    }
    // SAFETY: only probes whether the library can be opened.
    let present =
        catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false);
    if !present {
        return Err(GpuError::NvrtcMissing(format!(
            "libnvrtc.so.12 is not on the library path; install the CUDA toolkit, or the PyPI \
             wheel nvidia-cuda-nvrtc-cu12 and set {NVRTC_LIBRARY_ENV} to its libnvrtc.so.12"
        )));
    }
    let _ = AVAILABLE.set(());
    Ok(())
}

/// A compiled module and what compiling it cost (zero when it came from the cache).
pub struct Compiled {
    pub ptx: Arc<Ptx>,
    pub compile_time: Duration,
}

type Cache = Mutex<HashMap<(String, String), Arc<Ptx>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Whether `source` was compiled for `arch` already.
pub fn is_cached(source: &str, arch: &'static str) -> bool {
    cache()
        .lock()
        .contains_key(&(arch.to_string(), source.to_string()))
}

/// Compiles `source` for `arch` (`compute_90`...), or returns the module compiled before.
/// `kernel` names the module in errors.
pub fn compile(source: &str, arch: &'static str, kernel: &str) -> Result<Compiled, GpuError> {
    let key = (arch.to_string(), source.to_string());
    if let Some(ptx) = cache().lock().get(&key) {
        return Ok(Compiled {
            ptx: ptx.clone(),
            compile_time: Duration::ZERO,
        });
    }
    nvrtc_available()?;
    let started = Instant::now();
    let options = CompileOptions {
        arch: Some(arch),
        // No fused multiply-add: a*b+c rounds twice, as on the CPU.
        fmad: Some(false),
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        // Decimals are 128-bit integers on the device too.
        options: vec!["--std=c++17".to_string(), "--device-int128".to_string()],
        ..Default::default()
    };
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        cudarc::nvrtc::compile_ptx_with_opts(source, options)
    }))
    .map_err(|_| GpuError::NvrtcMissing("libnvrtc failed to load".to_string()))?;
    let ptx = match compiled {
        Ok(ptx) => Arc::new(ptx),
        Err(CompileError::CompileError { log, .. }) => {
            return Err(GpuError::KernelCompile {
                kernel: kernel.to_string(),
                log: log.to_string_lossy().into_owned(),
            })
        }
        Err(other) => {
            return Err(GpuError::KernelCompile {
                kernel: kernel.to_string(),
                log: other.to_string(),
            })
        }
    };
    cache().lock().insert(key, ptx.clone());
    Ok(Compiled {
        ptx,
        compile_time: started.elapsed(),
    })
}

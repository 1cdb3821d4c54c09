//! Loading ONNX Runtime (`libonnxruntime.so.1.31.1`) at run time and the process-wide environment.
//!
//! jmdc links ONNX Runtime dynamically (`ort` with `load-dynamic`): the library is found and
//! loaded once per process by [`init_onnxruntime`] / [`init_onnxruntime_with`], which also builds
//! the single [`ort::environment::Environment`] every session is created in.
//!
//! Where the library is looked for, in order:
//! 1. the explicit path (from the configuration file), if given;
//! 2. the `ORT_DYLIB_PATH` environment variable, if set;
//! 3. well-known places: next to the current executable, `<exe_dir>/../lib/jmdc/`, `/usr/lib/jmdc/`,
//!    and the repository cache `.cache/onnxruntime/<arch>/` searched upward from the current
//!    directory and from the executable's directory (that is where `scripts/fetch-onnxruntime.sh`
//!    puts it, so `cargo test` and `make demo` find it).
//!
//! An explicit path or `ORT_DYLIB_PATH` that fails to load is an error (no silent fallback).
//!
//! ## Threads
//! By default the environment owns one **global intra-op thread pool** shared by all sessions
//! (per-session pools off) with spinning disabled. With per-session pools, every one of the
//! dozens of per-layer sessions spins its own workers and a chained model on a small CPU can
//! run 20× slower than the fused one; a shared pool avoids that trap. See [`RuntimeOptions`].

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

/// The ONNX Runtime version jmdc is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

/// File name of the library inside the wheel and in the cache.
pub const ORT_LIB_FILE: &str = "libonnxruntime.so.1.31.1";

/// Environment variable naming the library explicitly (same name `ort` uses).
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// How to obtain the library; appended to every "not found" error.
pub const FETCH_HINT: &str =
    "get libonnxruntime.so.1.31.1 with scripts/fetch-onnxruntime.sh (or set ORT_DYLIB_PATH)";

/// Errors from loading ONNX Runtime. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No library file found in any of the places tried.
    #[error("ONNX Runtime library not found (tried: {}); {FETCH_HINT}", join_paths(.tried))]
    NotFound {
        /// Every candidate path that was looked at.
        tried: Vec<PathBuf>,
    },
    /// A library file was found but could not be loaded (not a library, wrong version, ...).
    #[error("failed to load ONNX Runtime from {} ({source_desc}): {message}; {FETCH_HINT}", path.display())]
    Load {
        /// The file that failed.
        path: PathBuf,
        /// Where the path came from ("explicit path", "ORT_DYLIB_PATH", "well-known place").
        source_desc: &'static str,
        /// The loader's message.
        message: String,
    },
    /// The library loaded but the environment could not be created.
    #[error("ONNX Runtime environment setup failed: {0}")]
    Environment(String),
    /// [`environment`] was called before a successful [`init_onnxruntime`].
    #[error("ONNX Runtime is not initialised: call jmdc_core::runtime::init_onnxruntime first")]
    NotInitialised,
    /// Creating session options failed.
    #[error("ONNX Runtime session options: {0}")]
    Session(String),
}

fn join_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Process-wide runtime settings, fixed by the first successful initialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Threads of the shared intra-op pool (when `global_thread_pool`), or the default per-session
    /// intra-op threads otherwise. `1` runs every operator on the calling thread (no workers);
    /// `0` lets ONNX Runtime pick (one per core). Default: 1.
    pub intra_op_threads: usize,
    /// One intra-op thread pool shared by all sessions (per-session pools disabled). Default: true.
    pub global_thread_pool: bool,
    /// Let idle pool workers spin. Faster under constant load, burns CPU otherwise. Default: false.
    pub allow_spinning: bool,
    /// Graph optimisation level for every session (0 = none, 1 = basic, 2 = extended, 3 = all).
    /// Default: 3.
    pub optimization_level: u8,
    /// Environment name used in ONNX Runtime's logs.
    pub name: String,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            intra_op_threads: 1,
            global_thread_pool: true,
            allow_spinning: false,
            optimization_level: 3,
            name: "jmdc".to_string(),
        }
    }
}

#[derive(Debug)]
struct RuntimeState {
    path: PathBuf,
    env: Environment,
    options: RuntimeOptions,
}

static STATE: OnceLock<RuntimeState> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime with [`RuntimeOptions::default`]; see [`init_onnxruntime_with`].
pub fn init_onnxruntime(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    init_onnxruntime_with(explicit, &RuntimeOptions::default())
}

/// Finds and loads the ONNX Runtime library and creates the process-wide environment.
///
/// Idempotent: after the first success, later calls return the path loaded first and ignore
/// their arguments (a process can hold one library and one environment). A failed call leaves
/// nothing behind, so a later call with a better path can still succeed. Never panics.
pub fn init_onnxruntime_with(
    explicit: Option<&Path>,
    options: &RuntimeOptions,
) -> Result<PathBuf, RuntimeError> {
    if let Some(state) = STATE.get() {
        return Ok(state.path.clone());
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(state) = STATE.get() {
        return Ok(state.path.clone());
    }
    let state =
        std::panic::catch_unwind(|| resolve_and_load(explicit, options)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(RuntimeError::Environment(format!(
                "panic while loading: {msg}"
            )))
        })?;
    let path = state.path.clone();
    // Cannot already be set: we hold INIT_LOCK and checked above.
    let _ = STATE.set(state);
    tracing::info!(path = %path.display(), "ONNX Runtime loaded");
    Ok(path)
}

/// The path of the loaded library, if ONNX Runtime is initialised.
pub fn loaded_library() -> Option<&'static Path> {
    STATE.get().map(|s| s.path.as_path())
}

/// The process-wide environment; errors if [`init_onnxruntime`] has not succeeded.
pub fn environment() -> Result<&'static Environment, RuntimeError> {
    STATE
        .get()
        .map(|s| &s.env)
        .ok_or(RuntimeError::NotInitialised)
}

/// Where a session's operators run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionDevice {
    /// ONNX Runtime's CPU kernels (every library has them).
    #[default]
    Cpu,
    /// The CUDA execution provider on GPU `device_id`; needs a GPU build of the library (the
    /// `onnxruntime-gpu` wheel's) and the CUDA and cuDNN libraries it was built against. Operators
    /// CUDA lacks fall back to the CPU inside ONNX Runtime.
    Cuda {
        /// The GPU's ordinal.
        device_id: i32,
    },
}

/// A session builder configured per the runtime options, for `device`.
///
/// `intra_op_threads`: `None` uses the environment's setup (the shared pool when enabled, else
/// `RuntimeOptions::intra_op_threads` per session). `Some(n)` gives this session its own pool of
/// `n` threads (beware: many sessions with own pools of n > 1 threads compete for the cores).
pub fn session_builder(
    intra_op_threads: Option<usize>,
    device: ExecutionDevice,
) -> Result<SessionBuilder, RuntimeError> {
    let state = STATE.get().ok_or(RuntimeError::NotInitialised)?;
    let err = |e: ort::Error<SessionBuilder>| RuntimeError::Session(e.to_string());
    let level = match state.options.optimization_level {
        0 => GraphOptimizationLevel::Disable,
        1 => GraphOptimizationLevel::Level1,
        2 => GraphOptimizationLevel::Level2,
        _ => GraphOptimizationLevel::All,
    };
    let mut b = ort::session::Session::builder(&state.env)
        .map_err(|e| RuntimeError::Session(e.to_string()))?
        .with_optimization_level(level)
        .map_err(err)?;
    let own_threads = match intra_op_threads {
        Some(n) => Some(n),
        None if !state.options.global_thread_pool => Some(state.options.intra_op_threads),
        None => None,
    };
    if let Some(n) = own_threads {
        if state.options.global_thread_pool {
            b = b.with_independent_thread_pool().map_err(err)?;
        }
        b = b
            .with_intra_threads(n)
            .map_err(err)?
            .with_intra_op_spinning(state.options.allow_spinning)
            .map_err(err)?;
    }
    if let ExecutionDevice::Cuda { device_id } = device {
        let cuda = ort::ep::CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure();
        b = b.with_execution_providers([cuda]).map_err(|e| {
            RuntimeError::Session(format!(
                "the CUDA execution provider (GPU {device_id}) is not available: {e}; it needs \
                 a GPU build of ONNX Runtime (libonnxruntime from the onnxruntime-gpu wheel) \
                 and the CUDA and cuDNN libraries that build expects"
            ))
        })?;
    }
    b.with_inter_threads(1).map_err(err)
}

fn resolve_and_load(
    explicit: Option<&Path>,
    options: &RuntimeOptions,
) -> Result<RuntimeState, RuntimeError> {
    let path = if let Some(p) = explicit {
        let p = absolutize(p);
        load_library(&p, "explicit path")?;
        p
    } else if let Some(p) = std::env::var_os(ORT_DYLIB_ENV).filter(|v| !v.is_empty()) {
        let p = absolutize(Path::new(&p));
        load_library(&p, ORT_DYLIB_ENV)?;
        p
    } else {
        let candidates = well_known_candidates();
        let mut first_err = None;
        let mut found = None;
        for c in &candidates {
            if !c.is_file() {
                continue;
            }
            match load_library(c, "well-known place") {
                Ok(()) => {
                    found = Some(c.clone());
                    break;
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        match (found, first_err) {
            (Some(p), _) => p,
            (None, Some(e)) => return Err(e),
            (None, None) => return Err(RuntimeError::NotFound { tried: candidates }),
        }
    };
    let env = build_environment(options)?;
    Ok(RuntimeState {
        path,
        env,
        options: options.clone(),
    })
}

fn load_library(path: &Path, source_desc: &'static str) -> Result<(), RuntimeError> {
    if !path.is_file() {
        return Err(RuntimeError::Load {
            path: path.to_path_buf(),
            source_desc,
            message: "no such file".to_string(),
        });
    }
    // `ort::init_from` loads the library (and checks its API version) into a process-wide
    // OnceLock only on success. The returned builder is dropped: the environment is built below.
    match ort::init_from(path) {
        Ok(_builder) => Ok(()),
        Err(e) => Err(RuntimeError::Load {
            path: path.to_path_buf(),
            source_desc,
            message: e.to_string().replace('\n', " "),
        }),
    }
}

fn build_environment(options: &RuntimeOptions) -> Result<Environment, RuntimeError> {
    let env_err = |e: ort::Error| RuntimeError::Environment(e.to_string());
    // After a successful `ort::init_from`, `ort::init()` only creates a builder (it would try
    // `ORT_DYLIB_PATH` and panic only if no library had been loaded).
    let mut builder = ort::init()
        .with_name(options.name.clone())
        .with_telemetry(false);
    if options.global_thread_pool {
        let pool = GlobalThreadPoolOptions::default()
            .with_intra_threads(options.intra_op_threads)
            .map_err(env_err)?
            .with_inter_threads(1)
            .map_err(env_err)?
            .with_spin_control(options.allow_spinning)
            .map_err(env_err)?;
        builder = builder.with_global_thread_pool(pool);
    }
    builder.build().map_err(env_err)
}

fn absolutize(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(p),
        Err(_) => p.to_path_buf(),
    }
}

/// Names the library may have in a folder, most specific first.
fn lib_names() -> [&'static str; 3] {
    [ORT_LIB_FILE, "libonnxruntime.so.1", "libonnxruntime.so"]
}

/// The well-known places, in search order (files, existing or not).
pub fn well_known_candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(d) = &exe_dir {
        dirs.push(d.clone());
        dirs.push(d.join("..").join("lib").join("jmdc"));
    }
    dirs.push(PathBuf::from("/usr/lib/jmdc"));
    let arch = std::env::consts::ARCH;
    let mut cache_roots: Vec<PathBuf> = Vec::new();
    if let Some(c) = std::env::var_os("JMDC_ORT_CACHE").filter(|v| !v.is_empty()) {
        cache_roots.push(PathBuf::from(c));
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Some(d) = &exe_dir {
        starts.push(d.clone());
    }
    for start in starts {
        for anc in start.ancestors() {
            let root = anc.join(".cache").join("onnxruntime");
            if !cache_roots.contains(&root) && root.is_dir() {
                cache_roots.push(root);
            }
        }
    }
    if cache_roots.is_empty() {
        // Report the conventional place even when it does not exist.
        if let Ok(cwd) = std::env::current_dir() {
            cache_roots.push(cwd.join(".cache").join("onnxruntime"));
        }
    }
    for root in cache_roots {
        dirs.push(root.join(arch));
    }
    let mut out = Vec::new();
    for d in dirs {
        for n in lib_names() {
            let c = d.join(n);
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_include_usr_lib_and_cache() {
        let c = well_known_candidates();
        assert!(c.iter().any(|p| p.starts_with("/usr/lib/jmdc")));
        assert!(c
            .iter()
            .any(|p| p.to_string_lossy().contains(".cache/onnxruntime")));
    }

    #[test]
    fn not_found_message_is_one_line_with_hint() {
        let e = RuntimeError::NotFound {
            tried: vec![PathBuf::from("/a"), PathBuf::from("/b")],
        };
        let s = e.to_string();
        assert!(!s.contains('\n'));
        assert!(s.contains("/a, /b"));
        assert!(s.contains("scripts/fetch-onnxruntime.sh"));
    }
}

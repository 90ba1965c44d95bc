//! YAMNet through ONNX Runtime: finds and loads the library and the model (checking its sha256),
//! and scores one 0.975 s window at a time.
//!
//! Synchronous and single-threaded on purpose: one session, one intra-op thread, called from the
//! detection service's inference thread (never from the async runtime) or from `vigil detect`.
//! This module knows nothing about cameras, thresholds or time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use sha2::{Digest, Sha256};

/// Samples in one YAMNet window: 0.975 s at 16 kHz.
pub const WINDOW_SAMPLES: usize = 15_600;
/// Samples between two windows: 0.24 s, half of YAMNet's own hop, so a cry is reported a quarter
/// of a second sooner (each window still sees 0.975 s; scoring twice as often costs 0.2 % of a core).
pub const HOP_SAMPLES: usize = 3_840;
/// Number of AudioSet classes in the model's output.
pub const CLASS_COUNT: usize = 521;

/// The model file shipped in `models/`.
pub const MODEL_FILE: &str = "yamnet.onnx";
/// The sha256 of the model this code was measured with (models/README.md).
pub const MODEL_SHA256: &str = "9915c548854def365b1f399c529f28568f8b93e2df4ab3dc00ff1aac0675010d";
/// Where the add-on image keeps the model (the Dockerfile copies `models/` there).
pub const IMAGE_MODEL_PATH: &str = "/usr/share/vigil/models/yamnet.onnx";
/// Where `scripts/install-deps.sh build` puts ONNX Runtime (and the image copies it).
pub const DEFAULT_ORT_LIBRARY: &str = "/usr/local/lib/vigil/libonnxruntime.so";
/// Overrides [`DEFAULT_ORT_LIBRARY`], as in `ort` itself.
pub const ORT_LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

/// The AudioSet class names, in model output order (`models/yamnet_class_map.csv`).
const CLASS_MAP: &str = include_str!("../../models/yamnet_class_map.csv");

/// Why inference cannot start or run. Each message names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum YamnetError {
    #[error(
        "cannot load ONNX Runtime from {path}: {reason}; run scripts/install-deps.sh build, or \
         set {ORT_LIBRARY_ENV} to a libonnxruntime.so of version 1.24 or newer"
    )]
    Library { path: PathBuf, reason: String },
    #[error(
        "no YAMNet model found (looked at {}); set yamnet_model in the options to the path of \
         yamnet.onnx (it ships in the repository's models/ folder)",
        .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ModelNotFound { tried: Vec<PathBuf> },
    #[error("cannot read the YAMNet model {path}: {source}")]
    ModelUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not the YAMNet model Vigil was built for: its sha256 is {found}, expected \
         {MODEL_SHA256}; use the yamnet.onnx from the repository's models/ folder"
    )]
    ModelChecksum { path: PathBuf, found: String },
    #[error("ONNX Runtime cannot load the model {path}: {reason}")]
    Session { path: PathBuf, reason: String },
    #[error("YAMNet inference failed: {0}")]
    Inference(String),
}

/// How the ONNX Runtime session allocates memory (BENCHMARKS.md compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    /// The CPU arena allocator: keeps freed blocks for reuse, and grows in large chunks.
    pub cpu_arena: bool,
    /// Memory patterns: pre-plans one block for all intermediate tensors of a run.
    pub mem_pattern: bool,
    /// After the load, return the heap freed by graph optimization to the kernel (glibc).
    pub trim_heap: bool,
}

impl MemoryOptions {
    /// Vigil's choice: ONNX Runtime's arena and memory patterns (turning them off saved no
    /// memory with this fixed-size input), and the heap trimmed after the load, which takes
    /// the session from about 83 to 52 MiB of RSS (BENCHMARKS.md).
    pub const VIGIL: MemoryOptions = MemoryOptions {
        cpu_arena: true,
        mem_pattern: true,
        trim_heap: true,
    };
    /// ONNX Runtime's defaults, for comparison.
    pub const ORT_DEFAULT: MemoryOptions = MemoryOptions {
        cpu_arena: true,
        mem_pattern: true,
        trim_heap: false,
    };
}

/// Where to find the model; ONNX Runtime is [`ORT_LIBRARY_ENV`], else [`DEFAULT_ORT_LIBRARY`].
#[derive(Debug, Clone, Default)]
pub struct ModelPaths {
    /// `None`: the image's path, else `models/yamnet.onnx` beside the executable or one of its
    /// ancestors (a cargo build), else in the working directory.
    pub model: Option<PathBuf>,
}

impl ModelPaths {
    /// The ONNX Runtime library to load.
    pub fn library_path(&self) -> PathBuf {
        match std::env::var_os(ORT_LIBRARY_ENV).filter(|v| !v.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => PathBuf::from(DEFAULT_ORT_LIBRARY),
        }
    }

    /// The model path: the one given, or the first default candidate that exists.
    pub fn model_path(&self) -> Result<PathBuf, YamnetError> {
        if let Some(path) = &self.model {
            return Ok(path.clone());
        }
        let tried = default_model_candidates();
        match tried.iter().find(|p| p.is_file()) {
            Some(found) => Ok(found.clone()),
            None => Err(YamnetError::ModelNotFound { tried }),
        }
    }
}

fn default_model_candidates() -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from(IMAGE_MODEL_PATH)];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(
            exe.ancestors()
                .skip(1)
                .map(|dir| dir.join("models").join(MODEL_FILE)),
        );
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join("models").join(MODEL_FILE));
    }
    candidates.dedup();
    candidates
}

/// The 521 class scores of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores(pub Vec<f32>);

impl Scores {
    /// The score of class `index`, 0 if out of range.
    pub fn get(&self, index: usize) -> f32 {
        self.0.get(index).copied().unwrap_or(0.0)
    }

    /// The `n` highest-scoring classes, best first.
    pub fn top(&self, n: usize) -> Vec<(usize, f32)> {
        let mut ranked: Vec<(usize, f32)> = self.0.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(n);
        ranked
    }
}

/// The display name of AudioSet class `index` ("Baby cry, infant cry"), or "?" if none.
pub fn class_name(index: usize) -> &'static str {
    class_names().get(index).copied().unwrap_or("?")
}

fn class_names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        // index,mid,display_name; display names may be quoted and contain commas.
        CLASS_MAP
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut parts = line.splitn(3, ',');
                let (_index, _mid, name) = (parts.next()?, parts.next()?, parts.next()?);
                Some(name.trim().trim_matches('"'))
            })
            .collect()
    })
}

/// A loaded YAMNet session. Not shared between threads: one owner calls [`Yamnet::score`].
pub struct Yamnet {
    session: Session,
    model_path: PathBuf,
}

impl std::fmt::Debug for Yamnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Yamnet")
            .field("model_path", &self.model_path)
            .finish()
    }
}

impl Yamnet {
    /// Loads ONNX Runtime and the model, checking the model's sha256 first.
    ///
    /// The library is loaded once per process; later calls use it whatever their library path.
    pub fn load(paths: &ModelPaths, memory: MemoryOptions) -> Result<Yamnet, YamnetError> {
        let model_path = paths.model_path()?;
        let found = sha256_of(&model_path).map_err(|source| YamnetError::ModelUnreadable {
            path: model_path.clone(),
            source,
        })?;
        if found != MODEL_SHA256 {
            return Err(YamnetError::ModelChecksum {
                path: model_path,
                found,
            });
        }
        let environment = load_environment(&paths.library_path())?;
        let session_error = |reason: String| YamnetError::Session {
            path: model_path.clone(),
            reason,
        };
        // From the file rather than from memory: ONNX Runtime reads it once itself, so the
        // load peaks 16 MiB lower.
        let session = session_builder(&environment, memory)
            .and_then(|mut builder| {
                builder
                    .commit_from_file(&model_path)
                    .map_err(|e| e.to_string())
            })
            .map_err(session_error)?;
        if memory.trim_heap {
            release_freed_heap();
        }
        check_contract(&session).map_err(session_error)?;
        Ok(Yamnet {
            session,
            model_path,
        })
    }

    /// Where the model was loaded from.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Scores one window of 15,600 samples (16 kHz mono, [-1, 1]).
    pub fn score(&mut self, window: &[f32]) -> Result<Scores, YamnetError> {
        if window.len() != WINDOW_SAMPLES {
            return Err(YamnetError::Inference(format!(
                "a window has {WINDOW_SAMPLES} samples, not {}",
                window.len()
            )));
        }
        let failed = |e: ort::Error| YamnetError::Inference(e.to_string());
        let input = ort::value::TensorRef::from_array_view(([1usize, WINDOW_SAMPLES], window))
            .map_err(failed)?;
        let outputs = self
            .session
            .run(ort::inputs!["waveform" => input])
            .map_err(failed)?;
        let scores = outputs
            .get("scores")
            .ok_or_else(|| YamnetError::Inference("the model gave no 'scores' output".into()))?;
        let (_, values) = scores.try_extract_tensor::<f32>().map_err(failed)?;
        if values.len() != CLASS_COUNT {
            return Err(YamnetError::Inference(format!(
                "'scores' has {} values, expected {CLASS_COUNT}",
                values.len()
            )));
        }
        Ok(Scores(values.to_vec()))
    }
}

/// The process-wide ONNX Runtime environment, loading the library on first use. ONNX Runtime
/// allows one environment per process, so it is kept for the process's life once built.
fn load_environment(library: &Path) -> Result<ort::environment::Environment, YamnetError> {
    static ENVIRONMENT: Mutex<Option<ort::environment::Environment>> = Mutex::new(None);
    let mut environment = ENVIRONMENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = environment.as_ref() {
        return Ok(existing.clone());
    }
    let built = build_environment(library)?;
    *environment = Some(built.clone());
    Ok(built)
}

fn build_environment(library: &Path) -> Result<ort::environment::Environment, YamnetError> {
    let library_error = |reason: String| YamnetError::Library {
        path: library.to_path_buf(),
        reason,
    };
    if !library.is_file() {
        return Err(library_error("no such file".into()));
    }
    let logger: ort::logging::LoggerFunction = Arc::new(|level, _category, _id, _location, msg| {
        use ort::logging::LogLevel;
        match level {
            LogLevel::Error | LogLevel::Fatal => tracing::error!("onnxruntime: {msg}"),
            LogLevel::Warning => tracing::warn!("onnxruntime: {msg}"),
            LogLevel::Info | LogLevel::Verbose => tracing::trace!("onnxruntime: {msg}"),
        }
    });
    ort::init_from(library)
        .map_err(|e| library_error(e.to_string()))?
        .with_name("vigil")
        .with_telemetry(false)
        .with_logger(logger)
        .build()
        .map_err(|e| library_error(e.to_string()))
}

/// One session as Vigil runs it: CPU only, one thread, no spinning, the given memory options.
fn session_builder(
    environment: &ort::environment::Environment,
    memory: MemoryOptions,
) -> Result<ort::session::builder::SessionBuilder, String> {
    let text = |e: ort::Error<_>| e.to_string();
    let cpu = ort::ep::CPU::default()
        .with_arena_allocator(memory.cpu_arena)
        .build();
    Session::builder(environment)
        .map_err(|e| e.to_string())?
        .with_execution_providers([cpu])
        .map_err(text)?
        .with_memory_pattern(memory.mem_pattern)
        .map_err(text)?
        .with_intra_threads(1)
        .map_err(text)?
        .with_inter_threads(1)
        .map_err(text)?
        .with_intra_op_spinning(false)
        .map_err(text)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(text)
}

/// The model must take `waveform` [1, 15600] and give `scores` [1, 521].
fn check_contract(session: &Session) -> Result<(), String> {
    let has_input = session.inputs().iter().any(|i| i.name() == "waveform");
    let has_output = session.outputs().iter().any(|o| o.name() == "scores");
    if has_input && has_output {
        Ok(())
    } else {
        Err("the model has no 'waveform' input or no 'scores' output".into())
    }
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Hands the heap that ONNX Runtime freed while optimizing the graph back to the kernel. glibc
/// keeps freed memory for reuse; after the load that is about 30 MiB of RSS that is never
/// used again (BENCHMARKS.md).
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only gives free pages back to the kernel; no live allocation moves.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_follow_the_class_map() {
        assert_eq!(class_names().len(), CLASS_COUNT);
        assert_eq!(class_name(0), "Speech");
        assert_eq!(class_name(19), "Crying, sobbing");
        assert_eq!(class_name(20), "Baby cry, infant cry");
        assert_eq!(class_name(494), "Silence");
        assert_eq!(class_name(9999), "?");
    }

    #[test]
    fn top_ranks_best_first() {
        let scores = Scores(vec![0.1, 0.9, 0.5]);
        assert_eq!(scores.top(2), vec![(1, 0.9), (2, 0.5)]);
    }
}

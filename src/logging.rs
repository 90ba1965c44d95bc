//! Log output: `tracing` to stderr, at the level the options ask for.
//!
//! `RUST_LOG` (an `EnvFilter` directive) overrides the option, for developers. Secrets never reach
//! this module: callers format URLs with `secret::redact_url` and hold passwords in `Secret`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::time::SystemTime;

use crate::config::LogLevel;

/// Installs the global subscriber. Calling it twice is harmless (the second call does nothing).
pub fn init(level: LogLevel) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directive| EnvFilter::try_new(directive).ok())
        .unwrap_or_else(|| {
            // Our own crate at the chosen level; libraries one step quieter unless tracing.
            let libs = match level {
                LogLevel::Trace => "debug",
                LogLevel::Debug | LogLevel::Info => "warn",
                LogLevel::Warning => "warn",
                LogLevel::Error => "error",
            };
            EnvFilter::new(format!("{libs},vigil={}", level.as_filter()))
        });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_timer(SystemTime)
        .with_target(false)
        .try_init();
}

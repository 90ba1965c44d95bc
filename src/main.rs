//! The `vigil` binary: parse the command line, load the options, start logging, run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use vigil::cli::{Cli, Command};
use vigil::config::{Config, ConfigSource};

/// Caps glibc's malloc at two arenas, before any thread starts. By default every thread that
/// allocates may get an arena of its own (up to eight per core), and GStreamer starts and ends
/// threads with every camera reconnect and viewer: the soak saw resident memory creep up by
/// about 2 MiB per round of faults, nearly all of it in half-empty arenas.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// How long a stop may take before the process exits anyway (the Supervisor kills at 10 s).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(ConfigSource::discover(config.as_deref())),
        Command::Detect {
            file,
            json,
            config,
            cry_threshold,
            model,
        } => detect(
            &file,
            json,
            ConfigSource::discover(config.as_deref()),
            cry_threshold,
            model,
        ),
        Command::Run { config, data_dir } => {
            let source = ConfigSource::discover(config.as_deref());
            let mut config = match Config::load(&source) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("vigil: {source}: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            vigil::logging::init(config.log_level);
            tracing::info!(options = %source, "vigil {} starting", env!("CARGO_PKG_VERSION"));
            run(config)
        }
    }
}

fn check_config(source: ConfigSource) -> ExitCode {
    match Config::load(&source) {
        Ok(config) => {
            println!("# options from {source}: valid");
            if config.uses_demo_camera() {
                println!("# no camera configured: `vigil run` starts the built-in demo camera");
            }
            print!("{}", config.to_redacted_yaml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil: {source}: {e}");
            ExitCode::from(2)
        }
    }
}

/// `vigil detect`: 0 when the file was analysed (crying or not), 1 when it or the model cannot
/// be read, 2 for bad options.
fn detect(
    file: &std::path::Path,
    json: bool,
    source: ConfigSource,
    cry_threshold: Option<f32>,
    model: Option<std::path::PathBuf>,
) -> ExitCode {
    use vigil::audio::{detector::DetectorSettings, offline, yamnet};

    let config = match Config::load(&source) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("vigil: {source}: {e}");
            return ExitCode::from(2);
        }
    };
    vigil::logging::init(vigil::config::LogLevel::Warning);
    let mut settings = DetectorSettings::from_config(&config);
    if let Some(threshold) = cry_threshold {
        if !(0.0..=1.0).contains(&threshold) {
            eprintln!("vigil: --cry-threshold {threshold} is out of range; use 0 to 1");
            return ExitCode::from(2);
        }
        settings.cry_threshold = threshold;
    }
    let paths = yamnet::ModelPaths {
        model: model.or(config.yamnet_model),
    };
    let result = yamnet::Yamnet::load(&paths, yamnet::MemoryOptions::VIGIL)
        .map_err(offline::AnalyzeError::from)
        .and_then(|mut model| offline::analyze(file, settings, &mut model));
    match result {
        Ok(analysis) if json => match serde_json::to_string_pretty(&analysis) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vigil: cannot write the report as JSON: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(analysis) => {
            print!("{}", analysis.table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        tokio::spawn(stop_on_signal(shutdown.clone()));
        vigil::app::run(config, shutdown).await
    });
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on SIGTERM (the Supervisor's stop) or Ctrl-C, and arms a watchdog that
/// ends the process if the clean stop takes longer than [`SHUTDOWN_DEADLINE`].
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = shutdown.cancelled() => return,
    };
    tracing::info!("{name}: stopping");
    shutdown.cancel();
    std::thread::spawn(|| {
        std::thread::sleep(SHUTDOWN_DEADLINE);
        tracing::error!("clean stop took over {SHUTDOWN_DEADLINE:?}; exiting now");
        std::process::exit(1);
    });
}

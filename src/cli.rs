//! The command line: `vigil run`, `vigil check-config`, `vigil detect`, `vigil --version`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Vigil: a baby-monitor camera hub for Home Assistant.
///
/// Restreams each RTSP camera without re-encoding (RTSP, WebRTC, MSE, snapshots), keeps every
/// stream alive on its own and tells Home Assistant over MQTT when a baby cries.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub: cameras, restream, web panel, API and MQTT.
    ///
    /// Options come from --config, else from /data/options.json inside the add-on, else the
    /// defaults; with no camera configured a built-in demo camera runs.
    Run {
        /// A YAML or JSON options file (the same keys as the add-on's options).
        #[arg(short, long, env = "VIGIL_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where state that survives restarts is kept [default: /data in the add-on,
        /// else $XDG_STATE_HOME/vigil].
        #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Validate the options and print them as understood (secrets redacted).
    ///
    /// Exits 0 when the options are valid, 2 when they are not, naming each bad key.
    CheckConfig {
        /// A YAML or JSON options file; default as for `run`.
        #[arg(short, long, env = "VIGIL_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run the cry detector on a WAV recording and print what it hears, window by window.
    ///
    /// Any sample rate and channel count (resampled to 16 kHz mono). Uses the detection
    /// options (cry_threshold, cry_min_level, cry_hold, yamnet_model) from --config, else as
    /// for `run`; try your own recordings to tune cry_threshold.
    Detect {
        /// The WAV file.
        #[arg(value_name = "FILE.wav")]
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// A YAML or JSON options file; default as for `run`.
        #[arg(short, long, env = "VIGIL_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Use this cry_threshold (0 to 1) instead of the options'.
        #[arg(long, value_name = "0..1")]
        cry_threshold: Option<f32>,
        /// The YAMNet model file, instead of the options' yamnet_model or the default.
        #[arg(long, value_name = "FILE")]
        model: Option<PathBuf>,
    },
}

//! The command line: `vigil run`, `vigil check-config`, `vigil --version`.

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
}

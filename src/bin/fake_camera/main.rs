//! `vigil-fake-camera`: an RTSP camera for tests and benchmarks, on gst-rtsp-server.
//!
//! It serves `rtsp://<address>:<port><path>` like a cheap IP camera: one encoder shared by every
//! client (H.264 or H.265 from a snow-like pattern, so the encoder really spends the bitrate), and
//! optionally AAC, PCMA, PCMU or Opus audio, behind an optional user name and password. What
//! differs between real cameras is an option ([`media`]): slices per frame, SEI, where the
//! parameter sets travel, RTP timestamps about to wrap, the audio's rate and channels. It prints
//! `ready <url>` on stdout once it serves. With `--garbage` it is a TCP server that answers
//! anything with random bytes instead.
//!
//! Commands on stdin, one per line:
//! - `play <file.wav>`: plays the clip into the audio track (converted to the track's format),
//!   then silence again; prints `clip-start <unix ms>` when its first sample enters the encoder
//!   and `clip-end <unix ms>` after its last. Errors are printed as `error: …`.
//! - `resize WIDTHxHEIGHT`: changes the picture size while streaming (a keyframe with new
//!   parameter sets follows); prints `resized WxH`.
//! - `mute` / `unmute`: stops or restarts the audio track's packets while the video goes on
//!   (prints `muted` / `unmuted`).
//! - `quit`: exits. The end of stdin does not: the camera serves until killed.
//!
//! With `--serve flv-http` or `--serve rtmp` it serves Reolink's FLV streams instead (see [`flv`]
//! and [`rtmp`]). With `--play FILE` it serves a recording in a loop instead of encoding (see
//! [`recording`]): nothing is encoded while it serves, and the commands above (but `quit`) are
//! refused.
//!
//! This is a test tool: it never sees a real camera, and Vigil never links it.

mod audio;
mod flv;
mod garbage;
mod media;
mod recording;
mod rtmp;

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use gst_rtsp_server::prelude::*;
use media::ParameterSets;

/// A fake RTSP camera for Vigil's tests and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "vigil-fake-camera", version, about)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Port to listen on; 0 picks a free one (printed in the `ready` line).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The stream's path.
    #[arg(long, default_value = "/stream")]
    path: String,
    #[arg(long, value_enum, default_value_t = VideoCodec::H264)]
    video: VideoCodec,
    #[arg(long, value_enum, default_value_t = AudioCodec::Pcma)]
    audio: AudioCodec,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 360)]
    height: u32,
    #[arg(long, default_value_t = 15)]
    fps: u32,
    /// Video bitrate in kbit/s.
    #[arg(long, default_value_t = 1000)]
    bitrate: u32,
    /// Frames from one keyframe to the next.
    #[arg(long, default_value_t = 30)]
    gop: u32,
    /// Slices per frame: many cameras cut each frame into several (one NAL unit each) at high
    /// resolutions; a viewer must put them back together into one picture.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    slices: u32,
    /// Where the parameter sets (SPS/PPS, VPS) travel: in band, in the SDP, or both.
    #[arg(long, value_enum, default_value_t = ParameterSets::Both)]
    parameter_sets: ParameterSets,
    /// Buffering period and picture timing SEI on every frame (H.264).
    #[arg(long)]
    sei: bool,
    /// Start the RTP timestamps this many seconds before they wrap past 2^32.
    #[arg(long)]
    rtp_wrap_after: Option<u32>,
    /// The audio's sample rate (default: 8000 for G.711, 16000 for AAC and Opus).
    #[arg(long)]
    audio_rate: Option<u32>,
    /// Audio channels (AAC only: 1 or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
    audio_channels: u32,
    /// The test pattern (videotestsrc's `pattern`): snow makes the encoder spend the bitrate.
    #[arg(long, default_value = "snow")]
    pattern: String,
    /// Require this user name (with --password).
    #[arg(long, requires = "password")]
    username: Option<String>,
    #[arg(long, requires = "username")]
    password: Option<String>,
    /// Answer every connection with random bytes instead of RTSP (with `--serve flv-http`:
    /// `200 OK`, then random bytes).
    #[arg(long)]
    garbage: bool,
    /// What to serve: RTSP, or Reolink's FLV streams over HTTP or RTMP (H.264 + AAC).
    #[arg(long, value_enum, default_value_t = Serve::Rtsp)]
    serve: Serve,
    /// Serve this recording (Matroska: H.264 or H.265, with AAC, G.711 or Opus sound or none)
    /// over RTSP, looped in real time, instead of encoding a pattern; the picture and sound
    /// options are then ignored.
    #[arg(long, value_name = "FILE", conflicts_with = "garbage")]
    play: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Serve {
    Rtsp,
    /// `http://<address>:<port><path>?port=1935&app=bcs&stream=channel0_main.bcs`, the login
    /// in the query (`user=`, `password=`).
    FlvHttp,
    /// `rtmp://<address>:<port>/bcs/channel0_main.bcs?channel=0&stream=0`, the login in the
    /// query.
    Rtmp,
}

impl Args {
    /// The sample rate the camera captures at.
    pub fn audio_rate(&self) -> u32 {
        self.audio_rate.unwrap_or(self.audio.sample_rate())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VideoCodec {
    H264,
    H265,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AudioCodec {
    Aac,
    Pcma,
    Pcmu,
    Opus,
    None,
}

impl AudioCodec {
    /// The sample rate the camera captures at for this codec.
    pub fn sample_rate(self) -> u32 {
        match self {
            AudioCodec::Pcma | AudioCodec::Pcmu | AudioCodec::None => 8000,
            AudioCodec::Aac | AudioCodec::Opus => 16000,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.path.starts_with('/') {
        bail!("--path must start with '/', such as /stream");
    }
    if args.garbage && args.serve != Serve::FlvHttp {
        return garbage::serve(&args.address, args.port, &args.path);
    }
    gst::init().context("cannot initialise GStreamer")?;
    if args.play.is_some() && args.serve != Serve::Rtsp {
        bail!("--play serves RTSP only");
    }
    let recording = match &args.play {
        Some(path) => Some(Arc::new(recording::Recording::load(path)?)),
        None => None,
    };
    let clips = Arc::new(audio::ClipQueue::default());
    if args.serve != Serve::Rtsp {
        // The FLV servers run on their own threads; stdin's commands work the same.
        let rate = args.audio_rate();
        let (serve, clips_for) = (args.serve, clips.clone());
        std::thread::spawn(move || {
            let served = match serve {
                Serve::FlvHttp => flv::serve_http(args, clips_for),
                _ => rtmp::serve(args, clips_for),
            };
            if let Err(e) = served {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        });
        flv::read_commands(&clips, rate);
        return Ok(());
    }

    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address(&args.address);
    server.set_service(&args.port.to_string());
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    match &recording {
        Some(recording) => factory.set_launch(&recording.launch_description()?),
        None => factory.set_launch(&media::launch_description(&args)),
    }
    // One encoder for every client, as a camera has.
    factory.set_shared(true);
    factory.set_protocols(gst_rtsp::RTSPLowerTrans::TCP | gst_rtsp::RTSPLowerTrans::UDP);
    if args.parameter_sets == ParameterSets::InBand {
        factory.set_media_gtype(media::InBandMedia::static_type());
    }
    let current = media::CurrentMedia::default();
    let args = Arc::new(args);
    {
        let (clips, current, args) = (clips.clone(), current.clone(), args.clone());
        factory.connect_media_configure(move |_, media| {
            if let Some(recording) = &recording {
                recording.start_feeding(media);
                return;
            }
            media::configure(media, &args, &current);
            if args.audio != AudioCodec::None {
                audio::start_feeding(media, args.audio_rate(), clips.clone());
            }
        });
    }
    if let (Some(user), Some(password)) = (&args.username, &args.password) {
        vigil::camera::restream::require_login(&server, &factory, user, password);
    }
    server
        .mount_points()
        .context("server without mount points")?
        .add_factory(&args.path, factory);
    let _source = server
        .attach(None)
        .with_context(|| format!("cannot listen on {}:{}", args.address, args.port))?;
    println!(
        "ready rtsp://{}:{}{}",
        args.address,
        server.bound_port(),
        args.path
    );

    let main_loop = gst::glib::MainLoop::new(None, false);
    let quit = main_loop.clone();
    let rate = args.audio_rate();
    let playing = args.play.is_some();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            let line = line.trim();
            if line == "quit" {
                quit.quit();
                return;
            } else if playing && !line.is_empty() {
                println!("error: only `quit` while playing a recording");
            } else if let Some(path) = line.strip_prefix("play ") {
                match audio::load_clip(path.trim(), rate) {
                    Ok(samples) => clips.push(path.trim().to_string(), samples),
                    Err(e) => println!("error: {e:#}"),
                }
            } else if line == "mute" || line == "unmute" {
                clips.set_muted(line == "mute");
                println!("{line}d");
            } else if let Some(size) = line.strip_prefix("resize ") {
                let resized = size
                    .trim()
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                    .ok_or_else(|| anyhow::anyhow!("resize takes WIDTHxHEIGHT, such as 1280x720"))
                    .and_then(|(w, h)| current.resize(w, h));
                match resized {
                    Ok(()) => println!("resized {}", size.trim()),
                    Err(e) => println!("error: {e:#}"),
                }
            } else if !line.is_empty() {
                println!(
                    "error: unknown command {line:?}; use `play <file.wav>`, `resize WxH`, `mute`, `unmute` or `quit`"
                );
            }
        }
        // Stdin closed (or never given): keep serving until killed.
    });
    main_loop.run();
    Ok(())
}

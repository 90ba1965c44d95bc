//! `vigil-fake-camera`: an RTSP camera for tests and benchmarks, on gst-rtsp-server.
//!
//! It serves `rtsp://<address>:<port><path>` like a cheap IP camera: one encoder shared by every
//! client (H.264 or H.265 from a snow-like pattern, so the encoder really spends the bitrate), and
//! optionally AAC, PCMA, PCMU or Opus audio, behind an optional user name and password. It prints
//! `ready <url>` on stdout once it serves. With `--garbage` it is a TCP server that answers
//! anything with random bytes instead.
//!
//! Commands on stdin, one per line:
//! - `play <file.wav>`: plays the clip into the audio track (converted to the track's format),
//!   then silence again; prints `clip-start <unix ms>` when its first sample enters the encoder
//!   and `clip-end <unix ms>` after its last. Errors are printed as `error: …`.
//! - `quit`: exits. The end of stdin does not: the camera serves until killed.
//!
//! With `--serve flv-http` or `--serve rtmp` it serves Reolink's FLV streams instead (see [`flv`]
//! and [`rtmp`]).
//!
//! This is a test tool: it never sees a real camera, and Vigil never links it.

mod audio;
mod flv;
mod garbage;
mod rtmp;

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use gst_rtsp_server::prelude::*;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VideoCodec {
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

    fn encode_and_pay(self) -> Option<&'static str> {
        Some(match self {
            AudioCodec::Aac => {
                "voaacenc bitrate=32000 ! aacparse ! rtpmp4gpay name=pay1 pt=97 max-ptime=64000000"
            }
            AudioCodec::Pcma => "alawenc ! rtppcmapay name=pay1",
            AudioCodec::Pcmu => "mulawenc ! rtppcmupay name=pay1",
            AudioCodec::Opus => "opusenc ! rtpopuspay name=pay1 pt=98",
            AudioCodec::None => return None,
        })
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
    let clips = Arc::new(audio::ClipQueue::default());
    if args.serve != Serve::Rtsp {
        // The FLV servers run on their own threads; stdin's commands work the same.
        let rate = args.audio.sample_rate();
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
    factory.set_launch(&launch_description(&args));
    // One encoder for every client, as a camera has.
    factory.set_shared(true);
    factory.set_protocols(gst_rtsp::RTSPLowerTrans::TCP | gst_rtsp::RTSPLowerTrans::UDP);
    if args.audio != AudioCodec::None {
        let clips = clips.clone();
        let rate = args.audio.sample_rate();
        factory.connect_media_configure(move |_, media| {
            audio::start_feeding(media, rate, clips.clone());
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
    let rate = args.audio.sample_rate();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            let line = line.trim();
            if line == "quit" {
                quit.quit();
                return;
            } else if let Some(path) = line.strip_prefix("play ") {
                match audio::load_clip(path.trim(), rate) {
                    Ok(samples) => clips.push(path.trim().to_string(), samples),
                    Err(e) => println!("error: {e:#}"),
                }
            } else if !line.is_empty() {
                println!("error: unknown command {line:?}; use `play <file.wav>` or `quit`");
            }
        }
        // Stdin closed (or never given): keep serving until killed.
    });
    main_loop.run();
    Ok(())
}

/// The shared media: video from a live test pattern, and the audio track fed by [`audio`].
fn launch_description(args: &Args) -> String {
    let encode = match args.video {
        VideoCodec::H264 => format!(
            // `--slices` slices per frame, however many threads x264 has.
            "x264enc tune=zerolatency speed-preset=ultrafast bframes=0 bitrate={} \
             key-int-max={} threads=1 sliced-threads=false option-string=slices={} \
             ! rtph264pay name=pay0 pt=96 config-interval=-1",
            args.bitrate, args.gop, args.slices
        ),
        VideoCodec::H265 => format!(
            "x265enc tune=zerolatency speed-preset=ultrafast bitrate={} key-int-max={} \
             option-string=slices={} ! rtph265pay name=pay0 pt=96 config-interval=-1",
            args.bitrate, args.gop, args.slices
        ),
    };
    let audio = args.audio.encode_and_pay().map_or(String::new(), |pay| {
        format!(
            "appsrc name={} is-live=true format=time do-timestamp=true \
             caps=audio/x-raw,format=S16LE,layout=interleaved,channels=1,rate={} \
             ! audioconvert ! {pay}",
            audio::SOURCE_NAME,
            args.audio.sample_rate()
        )
    });
    format!(
        "( videotestsrc is-live=true pattern={} ! video/x-raw,width={},height={},framerate={}/1 \
         ! {encode} {audio} )",
        args.pattern, args.width, args.height, args.fps
    )
}

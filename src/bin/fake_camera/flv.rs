//! The fake camera's FLV streams, as Reolink serves them: HTTP-FLV (`--serve flv-http`, at
//! `http://<address>:<port>/flv?port=1935&app=bcs&stream=channel0_main.bcs`) here, and the
//! tags [`rtmp`](super::rtmp) sends.
//!
//! Each connection gets its own encoder (so its stream starts with the FLV header, the codec
//! configurations and a keyframe, as a camera's does): H.264 from x264 and AAC from voaacenc
//! through `flvmux streamable=true`, the audio fed from the shared [`ClipQueue`]. With
//! `--video h265` the video tags carry H.265 with FLV codec id 12, as Reolink's 8 MP models send.
//! The login is checked in the query string (`user=`, `password=`): a wrong one is a 401. With
//! `--garbage` the answer is `200 OK` and random bytes.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use gst::prelude::*;

use super::audio::{self, ClipQueue};
use super::{Args, AudioCodec, VideoCodec};

/// One FLV tag: its type (8 audio, 9 video, 18 script), timestamp in ms and body.
pub struct Tag {
    pub kind: u8,
    pub timestamp: u32,
    pub body: Vec<u8>,
}

/// A running encoder for one connection; stops when dropped.
pub struct FlvSource {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    /// Bytes of the FLV stream not yet cut into tags.
    pending: Vec<u8>,
    /// The header (9 bytes and the first previous-tag-size) has been taken off.
    past_header: bool,
    /// H.265: the tags are made here from byte-stream access units, not by `flvmux`.
    hevc: bool,
}

impl FlvSource {
    pub fn start(args: &Args, clips: Arc<ClipQueue>) -> anyhow::Result<Self> {
        let hevc = args.video == VideoCodec::H265;
        let pipeline = gst::parse::launch(&launch_description(args))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("not a pipeline"))?;
        let sink = pipeline
            .by_name("out")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .context("no appsink")?;
        if args.audio != AudioCodec::None && !hevc {
            audio::feed(pipeline.upcast_ref(), args.audio_rate(), clips);
        }
        pipeline.set_state(gst::State::Playing)?;
        Ok(Self {
            pipeline,
            sink,
            pending: Vec::new(),
            past_header: hevc,
            hevc,
        })
    }

    /// The next piece of the FLV byte stream (header first), waiting for the encoder.
    pub fn next_bytes(&mut self) -> anyhow::Result<Vec<u8>> {
        let sample = self
            .sink
            .pull_sample()
            .map_err(|_| anyhow!("the encoder stopped"))?;
        let buffer = sample.buffer().context("sample without a buffer")?;
        let map = buffer.map_readable()?;
        if !self.hevc {
            return Ok(map.to_vec());
        }
        // H.265 in FLV the way Reolink sends it: codec id 12, an AVC-like packet per AU.
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let timestamp = buffer.pts().map_or(0, |t| t.mseconds() as u32);
        let mut body = vec![if keyframe { 0x1c } else { 0x2c }, 1, 0, 0, 0];
        body.extend_from_slice(&map);
        Ok(tag_bytes(9, timestamp, &body))
    }

    /// The next whole tag (after the header), for RTMP.
    pub fn next_tag(&mut self) -> anyhow::Result<Tag> {
        loop {
            if !self.past_header && self.pending.len() >= 13 {
                self.pending.drain(..13);
                self.past_header = true;
            }
            if self.past_header && self.pending.len() >= 11 {
                let size =
                    u32::from_be_bytes([0, self.pending[1], self.pending[2], self.pending[3]])
                        as usize;
                if self.pending.len() >= 11 + size + 4 {
                    let t = &self.pending;
                    let timestamp = u32::from_be_bytes([t[7], t[4], t[5], t[6]]);
                    let tag = Tag {
                        kind: t[0] & 0x1f,
                        timestamp,
                        body: t[11..11 + size].to_vec(),
                    };
                    self.pending.drain(..11 + size + 4);
                    return Ok(tag);
                }
            }
            let bytes = self.next_bytes()?;
            self.pending.extend_from_slice(&bytes);
        }
    }
}

impl Drop for FlvSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// One FLV tag as bytes: header, body, previous tag size.
fn tag_bytes(kind: u8, timestamp: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    let ts = timestamp.to_be_bytes();
    out.extend_from_slice(&[ts[1], ts[2], ts[3], ts[0], 0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
    out
}

/// The FLV header for a stream of H.265 (made by hand: `flvmux` takes no H.265), video only.
fn hevc_header() -> Vec<u8> {
    let mut out = b"FLV\x01\x01".to_vec();
    out.extend_from_slice(&9u32.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

fn launch_description(args: &Args) -> String {
    let video = format!(
        "videotestsrc is-live=true pattern={} \
         ! video/x-raw,format=I420,width={},height={},framerate={}/1",
        args.pattern, args.width, args.height, args.fps
    );
    if args.video == VideoCodec::H265 {
        return format!(
            "{video} ! x265enc tune=zerolatency speed-preset=ultrafast bitrate={} \
             key-int-max={} ! h265parse config-interval=-1 \
             ! video/x-h265,stream-format=byte-stream,alignment=au ! appsink name=out sync=false",
            args.bitrate, args.gop
        );
    }
    let audio = match args.audio {
        AudioCodec::None => String::new(),
        // FLV carries AAC (Reolink's audio); any other --audio is sent as AAC too.
        _ => format!(
            "appsrc name={} is-live=true format=time do-timestamp=true \
             caps=audio/x-raw,format=S16LE,layout=interleaved,channels=1,rate={} \
             ! audioconvert ! voaacenc bitrate=32000 ! aacparse ! queue ! mux.",
            audio::SOURCE_NAME,
            args.audio_rate()
        ),
    };
    // The muxer waits up to 300 ms for a late track (an encoder slowed by a loaded machine)
    // rather than going on without it.
    format!(
        "flvmux name=mux streamable=true latency=300000000 ! appsink name=out sync=false \
         {video} ! x264enc tune=zerolatency speed-preset=ultrafast bframes=0 bitrate={} \
         key-int-max={} threads=1 sliced-threads=false option-string=slices={} ! h264parse \
         ! video/x-h264,stream-format=avc,alignment=au ! queue ! mux. {audio}",
        args.bitrate, args.gop, args.slices
    )
}

/// Serves HTTP-FLV on `address:port` until killed; prints the `ready` line.
pub fn serve_http(args: Args, clips: Arc<ClipQueue>) -> anyhow::Result<()> {
    let listener = TcpListener::bind((args.address.as_str(), args.port))
        .with_context(|| format!("cannot listen on {}:{}", args.address, args.port))?;
    let port = listener.local_addr()?.port();
    println!(
        "ready http://{}:{port}{}?port=1935&app=bcs&stream=channel0_main.bcs",
        args.address, args.path
    );
    let args = Arc::new(args);
    for stream in listener.incoming().flatten() {
        let (args, clips) = (args.clone(), clips.clone());
        std::thread::spawn(move || {
            if let Err(e) = answer(stream, &args, clips) {
                eprintln!("fake camera: {e:#}");
            }
        });
    }
    Ok(())
}

/// Reads one request and answers it: 404, 401, garbage or the stream until the client leaves.
fn answer(mut stream: TcpStream, args: &Args, clips: Arc<ClipQueue>) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let url = url::Url::parse(&format!("http://camera{target}"))?;
    if url.path() != args.path {
        return respond(&mut stream, "404 Not Found", "no such stream");
    }
    if let (Some(user), Some(password)) = (&args.username, &args.password) {
        let query = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        if query("user").as_ref() != Some(user) || query("password").as_ref() != Some(password) {
            return respond(&mut stream, "401 Unauthorized", "wrong user or password");
        }
    }
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nCache-Control: no-cache\r\n\
          Connection: close\r\n\r\n",
    )?;
    if args.garbage {
        loop {
            let noise: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
            if stream.write_all(&noise).is_err() {
                return Ok(()); // the client left
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let mut source = FlvSource::start(args, clips)?;
    if args.video == VideoCodec::H265 {
        stream.write_all(&hevc_header())?;
    }
    loop {
        let bytes = source.next_bytes()?;
        if stream.write_all(&bytes).is_err() {
            return Ok(()); // the client left
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> anyhow::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// Stdin's commands while serving FLV (`play <file.wav>`, `quit`), as for RTSP; returns on
/// `quit`, and serves on until killed once stdin closes.
pub fn read_commands(clips: &ClipQueue, rate: u32) {
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let line = line.trim();
        if line == "quit" {
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
    loop {
        std::thread::park();
    }
}

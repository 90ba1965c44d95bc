//! [`RtspClient`]: a real GStreamer RTSP player in the test process (`rtspsrc`, depayloaders,
//! parsers, optionally `avdec_h264` and a clock-synced sink like a player's), recording what
//! arrives and when: each access unit's NAL units (hashed), decoded and rendered frames, audio.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

/// How the client plays.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// RTP over the RTSP connection (TCP), else UDP.
    pub tcp: bool,
    /// Decode the video (so "first frame" means a decodable frame).
    pub decode: bool,
    /// Present decoded frames on the pipeline clock, as a player does (implies `decode`).
    pub render: bool,
    /// The client's jitter-buffer latency.
    pub latency_ms: u32,
    pub credentials: Option<(String, String)>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            tcp: true,
            decode: false,
            render: false,
            latency_ms: 200,
            credentials: None,
        }
    }
}

impl ClientOptions {
    /// A client of the restream for [`assert_video_untouched`]: a jitter buffer deep enough
    /// that a loaded machine never makes it drop a late packet and truncate a frame.
    pub fn untouched_check() -> Self {
        Self {
            latency_ms: 1000,
            ..Self::default()
        }
    }
}

/// One access unit as received.
#[derive(Debug, Clone)]
pub struct ReceivedAu {
    pub at: Instant,
    pub keyframe: bool,
    /// The hash of the whole access unit, and of each of its NAL units.
    pub hash: u64,
    pub nals: Vec<u64>,
    /// The type of each NAL unit (the low five bits of its header), for failure messages.
    pub nal_types: Vec<u8>,
    pub size: usize,
}

#[derive(Default)]
struct Record {
    aus: Vec<ReceivedAu>,
    decoded: Vec<Instant>,
    rendered: Vec<(u64, Instant)>,
    /// Access unit hash by PTS, to name rendered frames.
    hash_by_pts: HashMap<u64, u64>,
    audio_buffers: u64,
    /// Audio payload bytes and when the first and last arrived.
    audio_bytes: u64,
    audio_span: Option<(Instant, Instant)>,
    video_caps: Option<gst::Caps>,
    sdp: Option<String>,
    error: Option<String>,
    /// The server ended the stream (EOS).
    ended: bool,
}

/// A playing client; dropping it stops it (the server sees the connection close).
pub struct RtspClient {
    pipeline: gst::Pipeline,
    record: Arc<Mutex<Record>>,
    pub started: Instant,
}

impl RtspClient {
    pub fn start(url: &str, options: ClientOptions) -> Self {
        let _ = gst::init();
        let pipeline = gst::Pipeline::new();
        let source = gst::ElementFactory::make("rtspsrc")
            .property("location", url)
            .property("latency", options.latency_ms)
            .build()
            .unwrap();
        source.set_property_from_str("protocols", if options.tcp { "tcp" } else { "udp" });
        if let Some((user, password)) = &options.credentials {
            source.set_property("user-id", user);
            source.set_property("user-pw", password);
        }
        pipeline.add(&source).unwrap();
        let record = Arc::new(Mutex::new(Record::default()));

        let sdp_record = record.clone();
        source.connect("on-sdp", false, move |args| {
            if let Ok(sdp) = args[1].get::<gst_sdp::SDPMessage>() {
                sdp_record.lock().unwrap().sdp = sdp.as_text().ok();
            }
            None
        });
        let bin = pipeline.clone();
        let pads_record = record.clone();
        source.connect_pad_added(move |_, pad| {
            // Callbacks must not panic (it would abort the test process).
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let Some(s) = caps.structure(0) else { return };
            let encoding = s
                .get::<&str>("encoding-name")
                .unwrap_or_default()
                .to_string();
            let linked = match s.get::<&str>("media").unwrap_or_default() {
                "video" => link_video(&bin, pad, &encoding, &options, pads_record.clone()),
                _ => link_audio(&bin, pad, pads_record.clone()),
            };
            if let Err(e) = linked {
                pads_record.lock().unwrap().error = Some(format!("cannot play a track: {e:#}"));
            }
        });

        let bus = pipeline.bus().unwrap();
        let error_record = record.clone();
        bus.set_sync_handler(move |_, message| {
            match message.view() {
                gst::MessageView::Error(e) => {
                    error_record.lock().unwrap().error =
                        Some(format!("{} ({})", e.error(), e.debug().unwrap_or_default()));
                }
                gst::MessageView::Eos(_) => error_record.lock().unwrap().ended = true,
                _ => {}
            }
            gst::BusSyncReply::Drop
        });
        let started = Instant::now();
        pipeline.set_state(gst::State::Playing).unwrap();
        Self {
            pipeline,
            record,
            started,
        }
    }

    /// Every access unit so far.
    pub fn aus(&self) -> Vec<ReceivedAu> {
        self.record.lock().unwrap().aus.clone()
    }

    pub fn au_count(&self) -> usize {
        self.record.lock().unwrap().aus.len()
    }

    pub fn audio_buffers(&self) -> u64 {
        self.record.lock().unwrap().audio_buffers
    }

    /// Audio bytes per second of arrival, once a second of audio came.
    pub fn audio_byte_rate(&self) -> Option<f64> {
        let record = self.record.lock().unwrap();
        let (first, last) = record.audio_span?;
        let seconds = (last - first).as_secs_f64();
        (seconds >= 1.0).then(|| record.audio_bytes as f64 / seconds)
    }

    /// When each decoded frame came out of the decoder.
    pub fn decoded(&self) -> Vec<Instant> {
        self.record.lock().unwrap().decoded.clone()
    }

    /// Rendered frames: (access unit hash, when it was presented).
    pub fn rendered(&self) -> Vec<(u64, Instant)> {
        self.record.lock().unwrap().rendered.clone()
    }

    pub fn sdp(&self) -> Option<String> {
        self.record.lock().unwrap().sdp.clone()
    }

    pub fn video_caps(&self) -> Option<gst::Caps> {
        self.record.lock().unwrap().video_caps.clone()
    }

    pub fn error(&self) -> Option<String> {
        self.record.lock().unwrap().error.clone()
    }

    /// True once the server closed the stream (an error or the end of the stream).
    pub fn closed(&self) -> bool {
        let record = self.record.lock().unwrap();
        record.ended || record.error.is_some()
    }

    /// Waits until `done` holds; panics (with the client's error, if any) after `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "client: no {what} within {timeout:?} (error: {:?}, closed: {}, sdp: {}, audio buffers: {})",
                self.error(),
                self.closed(),
                self.sdp().is_some(),
                self.audio_buffers()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How long after start the first decoded frame came, waiting up to `timeout`.
    pub fn first_decoded_after(&self, timeout: Duration) -> Duration {
        self.wait("decoded frame", timeout, |c| !c.decoded().is_empty());
        self.decoded()[0] - self.started
    }
}

impl Drop for RtspClient {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn make(factory: &str) -> anyhow::Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| anyhow::anyhow!("{factory} is not installed"))
}

fn link_video(
    bin: &gst::Pipeline,
    pad: &gst::Pad,
    encoding: &str,
    options: &ClientOptions,
    record: Arc<Mutex<Record>>,
) -> anyhow::Result<()> {
    let h265 = encoding == "H265";
    let depay = make(if h265 { "rtph265depay" } else { "rtph264depay" })?;
    let parse = make(if h265 { "h265parse" } else { "h264parse" })?;
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder(if h265 { "video/x-h265" } else { "video/x-h264" })
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
        )
        .build()?;
    let tee = make("tee")?;
    let au_sink = gst_app::AppSink::builder().sync(false).build();
    let mut elements = vec![depay, parse, caps, tee.clone()];
    bin.add_many(&elements)?;
    bin.add(&au_sink)?;
    gst::Element::link_many(&elements)?;
    let queue = make("queue")?;
    bin.add(&queue)?;
    tee.link(&queue)?;
    queue.link(&au_sink)?;
    elements.push(queue);
    elements.push(au_sink.clone().upcast());
    let au_record = record.clone();
    au_sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let au = ReceivedAu {
                    at: Instant::now(),
                    keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    hash: hash(&map),
                    nals: split_nals(&map).iter().map(|n| hash(n)).collect(),
                    nal_types: split_nals(&map)
                        .iter()
                        .map(|n| n.first().map_or(0, |h| h & 0x1f))
                        .collect(),
                    size: map.len(),
                };
                let mut record = au_record.lock().unwrap();
                if record.video_caps.is_none() {
                    record.video_caps = sample.caps_owned();
                }
                if let Some(pts) = buffer.pts() {
                    record.hash_by_pts.insert(pts.nseconds(), au.hash);
                }
                record.aus.push(au);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    if options.decode || options.render {
        let queue = make("queue")?;
        let decode = make(if h265 { "avdec_h265" } else { "avdec_h264" })?;
        // Only real pictures: no grey frames before the first keyframe.
        decode.set_property("output-corrupt", false);
        let sink = gst_app::AppSink::builder().sync(options.render).build();
        bin.add_many([&queue, &decode, sink.upcast_ref()])?;
        gst::Element::link_many([&queue, &decode, sink.upcast_ref()])?;
        tee.link(&queue)?;
        let render = options.render;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let now = Instant::now();
                    let mut record = record.lock().unwrap();
                    record.decoded.push(now);
                    if render {
                        let pts = sample.buffer().and_then(|b| b.pts());
                        if let Some(hash) =
                            pts.and_then(|p| record.hash_by_pts.get(&p.nseconds()).copied())
                        {
                            record.rendered.push((hash, now));
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        elements.extend([queue, decode, sink.upcast()]);
    }
    for element in &elements {
        element.sync_state_with_parent()?;
    }
    pad.link(
        &elements[0]
            .static_pad("sink")
            .ok_or_else(|| anyhow::anyhow!("no sink pad"))?,
    )?;
    Ok(())
}

fn link_audio(
    bin: &gst::Pipeline,
    pad: &gst::Pad,
    record: Arc<Mutex<Record>>,
) -> anyhow::Result<()> {
    let sink = gst_app::AppSink::builder().sync(false).build();
    bin.add(&sink)?;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let size = sample.buffer().map_or(0, |b| b.size() as u64);
                let now = Instant::now();
                let mut record = record.lock().unwrap();
                record.audio_buffers += 1;
                record.audio_bytes += size;
                record.audio_span = Some(
                    record
                        .audio_span
                        .map_or((now, now), |(first, _)| (first, now)),
                );
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    sink.sync_state_with_parent()?;
    pad.link(
        &sink
            .static_pad("sink")
            .ok_or_else(|| anyhow::anyhow!("no sink pad"))?,
    )?;
    Ok(())
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The NAL units of a byte-stream access unit, without their start codes.
pub fn split_nals(au: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(au.len(), |next| next - 3);
        // A four-byte start code leaves a zero before the next three.
        while end > start && au[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        nals.push(&au[start..end]);
    }
    nals
}

/// A client of the camera at `url` for [`assert_video_untouched`], returned a GOP (`gop`) after
/// its first keyframe: by then the restream's cache starts at that keyframe or a later one, even
/// when Vigil lags on a loaded machine, so every frame the restream sends is one it got too. Its
/// jitter buffer is deep so that a loaded machine never makes it drop a late packet (which would
/// leave it a truncated frame the restream sent whole).
pub fn camera_client_a_gop_ahead(url: &str, gop: Duration) -> RtspClient {
    let direct = RtspClient::start(
        url,
        ClientOptions {
            latency_ms: DIRECT_LATENCY.as_millis() as u32,
            ..ClientOptions::default()
        },
    );
    direct.wait("a keyframe from the camera", Duration::from_secs(10), |c| {
        c.aus().iter().any(|au| au.keyframe)
    });
    std::thread::sleep(gop + Duration::from_millis(200));
    direct
}

/// The jitter-buffer latency of [`camera_client_a_gop_ahead`]'s client.
const DIRECT_LATENCY: Duration = Duration::from_millis(1500);

/// Asserts that every NAL unit `relayed` received is one `direct` (a client of the camera
/// itself) received, and that there were more than `at_least`: nothing was re-encoded.
pub fn assert_video_untouched(direct: &RtspClient, relayed: &RtspClient, at_least: usize) {
    let relayed = relayed.aus();
    // The direct client's deeper jitter buffer holds the newest frames back a little longer
    // than the restream path does: let it catch up on what the relayed client already has.
    std::thread::sleep(DIRECT_LATENCY + Duration::from_millis(500));
    let from_camera: std::collections::HashSet<u64> =
        direct.aus().iter().flat_map(|au| au.nals.clone()).collect();
    let total: usize = relayed.iter().map(|au| au.nals.len()).sum();
    assert!(total > at_least, "{total} NAL units");
    let foreign: Vec<String> = relayed
        .iter()
        .enumerate()
        .flat_map(|(index, au)| {
            au.nals
                .iter()
                .zip(&au.nal_types)
                .filter(|(nal, _)| !from_camera.contains(nal))
                .map(move |(_, kind)| format!("type {kind} in access unit {index}"))
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "{} of {total} NAL units (in {} access units) are not the camera's: {}",
        foreign.len(),
        relayed.len(),
        foreign.join(", ")
    );
}

//! The detector's audio: a camera's sound decoded to mono 16 kHz f32 `PcmChunk`s, with a
//! monotonic timeline across a reconnect. Runs the camera actor in-process, on the fake camera.

mod common;

use std::time::{Duration, Instant};

use common::TempDir;
use common::fake_camera::FakeCamera;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vigil::audio::{DETECTOR_SAMPLE_RATE, PcmChunk};
use vigil::camera::IngestOptions;
use vigil::config::{CameraConfig, CameraSource, CameraUrl};

/// A second of a loud 440 Hz tone, as a 16 kHz WAV file.
fn tone(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path().join("tone.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&path, spec).unwrap();
    for n in 0..16000 {
        let t = n as f32 / 16000.0;
        writer
            .write_sample(((t * 440.0 * std::f32::consts::TAU).sin() * 16000.0) as i16)
            .unwrap();
    }
    writer.finalize().unwrap();
    path
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

/// Receives chunks for `duration`.
fn collect(
    rt: &tokio::runtime::Runtime,
    rx: &mut mpsc::Receiver<PcmChunk>,
    duration: Duration,
) -> Vec<PcmChunk> {
    rt.block_on(async {
        let mut chunks = Vec::new();
        let end = tokio::time::Instant::now() + duration;
        while let Ok(Some(chunk)) = tokio::time::timeout_at(end, rx.recv()).await {
            chunks.push(chunk);
        }
        chunks
    })
}

#[test]
fn the_detector_hears_the_camera_at_16_khz_across_a_reconnect() {
    let dir = TempDir::new("pcm");
    let wav = tone(&dir);
    let mut camera = FakeCamera::start(&["--audio", "pcma"]);
    gst::init().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let config = CameraConfig {
        name: "nursery".into(),
        source: CameraSource::Url(CameraUrl::new(camera.url())),
        sub_source: None,
        detection: true,
    };
    let spawned = {
        let _guard = rt.enter();
        vigil::camera::spawn(&config, IngestOptions::default(), &tracker, stop.clone())
    };
    let mut pcm = spawned.pcm;

    // Silence first, at the detector's rate.
    let first = collect(&rt, &mut pcm, Duration::from_secs(3));
    let settled: Vec<&PcmChunk> = first
        .iter()
        .skip_while(|c| c.pts < first[0].pts + Duration::from_millis(500))
        .collect();
    let samples: usize = settled.iter().map(|c| c.samples.len()).sum();
    let span = settled.last().unwrap().pts - settled[0].pts;
    let rate = samples as f64 / span.as_secs_f64();
    assert!(
        (DETECTOR_SAMPLE_RATE as f64 * 0.9..DETECTOR_SAMPLE_RATE as f64 * 1.15).contains(&rate),
        "{rate} samples/s"
    );
    assert!(
        settled.iter().all(|c| rms(&c.samples) < 0.01),
        "the camera is silent"
    );
    assert!(first.windows(2).all(|w| w[1].pts > w[0].pts));

    // A clip played into the camera's microphone reaches the detector.
    let played = Instant::now();
    camera.play(&wav);
    let heard = collect(&rt, &mut pcm, Duration::from_secs(3));
    let loud: Vec<&PcmChunk> = heard.iter().filter(|c| rms(&c.samples) > 0.2).collect();
    assert!(
        !loud.is_empty(),
        "the tone never arrived ({} chunks)",
        heard.len()
    );
    assert!(played.elapsed() < Duration::from_secs(10));

    // The camera goes away and comes back: the timeline goes on, with a gap (chunks from
    // before the outage may still be queued).
    let before = heard.last().unwrap().pts;
    camera.stop();
    std::thread::sleep(Duration::from_secs(3));
    camera.restart();
    let after = collect(&rt, &mut pcm, Duration::from_secs(6));
    let all: Vec<&PcmChunk> = heard.iter().chain(after.iter()).collect();
    assert!(
        all.windows(2).all(|w| w[1].pts > w[0].pts),
        "the timeline went back"
    );
    let gap = all.windows(2).map(|w| w[1].pts - w[0].pts).max().unwrap();
    assert!(
        gap >= Duration::from_secs(2),
        "no gap for the outage (largest step {gap:?})"
    );
    let back = after
        .iter()
        .filter(|c| c.pts > before + Duration::from_secs(2))
        .count();
    assert!(
        back > 10,
        "little audio after the camera came back ({back} chunks)"
    );
    assert_eq!(
        spawned.handle.status().audio.map(|a| a.codec),
        Some("PCMA".into())
    );

    stop.cancel();
    tracker.close();
    rt.block_on(tracker.wait());
}

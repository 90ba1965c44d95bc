//! The fake camera's `--play FILE` mode (how `bench/parents_box.rs` serves its cameras without
//! encoding): a recording served over RTSP in a loop, in real time, its RTP timestamps growing
//! from one lap to the next as a camera's do.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TempDir;
use common::fake_camera::FakeCamera;
use gst::prelude::*;

/// Encodes a one-second recording: 160×120 H.264 at 10 fps, a keyframe every 5 frames, A-law.
fn one_second_recording(dir: &TempDir) -> String {
    let path = dir.path().join("one-second.mkv");
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=10 ! video/x-raw,width=160,height=120,framerate=10/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=5 ! h264parse \
         ! queue ! mux. \
         audiotestsrc num-buffers=50 samplesperbuffer=160 ! audio/x-raw,rate=8000,channels=1 \
         ! alawenc ! queue ! mux. \
         matroskamux name=mux ! filesink location={}",
        path.display()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let end = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the recording did not finish");
    assert!(matches!(end.view(), gst::MessageView::Eos(_)), "{end:?}");
    pipeline.set_state(gst::State::Null).unwrap();
    path.to_str().unwrap().to_string()
}

/// (arrival, RTP timestamp) of every packet of one track.
type Packets = Arc<Mutex<Vec<(Instant, u32)>>>;

fn record_packets(pipeline: &gst::Pipeline, name: &str) -> Packets {
    let packets = Packets::default();
    let into = packets.clone();
    let sink = pipeline
        .by_name(name)
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let map = sample.buffer().and_then(|b| b.map_readable().ok());
                if let Some(rtp) = map.as_ref().filter(|m| m.len() >= 12) {
                    let timestamp = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
                    into.lock().unwrap().push((Instant::now(), timestamp));
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    packets
}

/// Seconds of media from the first packet to the last, checking they never go back.
fn media_seconds(packets: &[(Instant, u32)], clock_rate: f64) -> f64 {
    let first = packets[0].1;
    let since_first: Vec<i64> = packets
        .iter()
        .map(|(_, ts)| i64::from(ts.wrapping_sub(first) as i32))
        .collect();
    assert!(
        since_first.windows(2).all(|w| w[0] <= w[1]),
        "RTP timestamps went back: {since_first:?}"
    );
    since_first[since_first.len() - 1] as f64 / clock_rate
}

#[test]
fn a_recording_plays_in_a_loop_in_real_time_with_timestamps_that_only_grow() {
    gst::init().unwrap();
    let dir = TempDir::new("play");
    let camera = FakeCamera::start(&["--play", &one_second_recording(&dir)]);
    let pipeline = gst::parse::launch(&format!(
        "rtspsrc location={} protocols=tcp latency=0 name=s \
         s. ! application/x-rtp,media=video ! appsink name=video sync=false \
         s. ! application/x-rtp,media=audio ! appsink name=audio sync=false",
        camera.url()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let video = record_packets(&pipeline, "video");
    let audio = record_packets(&pipeline, "audio");
    pipeline.set_state(gst::State::Playing).unwrap();
    // Three and a half laps of the one-second recording.
    std::thread::sleep(Duration::from_millis(4500));
    pipeline.set_state(gst::State::Null).unwrap();

    let video = video.lock().unwrap().clone();
    assert!(video.len() > 30, "only {} video packets", video.len());
    let wall = (video[video.len() - 1].0 - video[0].0).as_secs_f64();
    let media = media_seconds(&video, 90_000.0);
    assert!(media > 2.5, "only {media:.2} s of video: it did not loop");
    assert!(
        (media - wall).abs() < 0.5,
        "{media:.2} s of video in {wall:.2} s: not in real time"
    );
    let audio = audio.lock().unwrap().clone();
    assert!(!audio.is_empty(), "no sound");
    assert!(media_seconds(&audio, 8_000.0) > 2.5);
}

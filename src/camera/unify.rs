//! One audio format for every camera (`unify_audio`): a camera that sends PCMA, PCMU or Opus has
//! its audio decoded and encoded to AAC inside its own ingest pipeline, once, before the hub, so
//! the restream, MSE and MP4 all carry AAC (and WebRTC's shared transcoder makes Opus from it).
//! A camera that already sends AAC is passed through untouched.
//!
//! Audio only: the video chain never passes through here. Also owns the AAC encoder's settings,
//! which the live view's transcoder uses too, so every AAC Vigil makes sounds the same.

use anyhow::Context;
use gst::prelude::*;

/// AAC-LC bitrate: plenty for one room microphone in mono.
pub const AAC_BITRATE: i32 = 32_000;

/// The sample rate to encode a camera's `rate` at: the lowest AAC rate that keeps all of it
/// (browsers' MP4 players are happiest from 16 kHz up, so 8 kHz G.711 becomes 16 kHz).
pub fn aac_rate_for(rate: i32) -> i32 {
    const RATES: [i32; 6] = [16_000, 22_050, 24_000, 32_000, 44_100, 48_000];
    RATES.iter().copied().find(|r| *r >= rate).unwrap_or(48_000)
}

/// An `avenc_aac` with Vigil's settings, named `name`: FFmpeg's `fast` coder, which costs a
/// third less CPU than its default `twoloop` (0.13 against 0.20 CPU-s per minute of 16 kHz
/// mono, BENCHMARKS.md) and sounds the same for a room microphone.
pub fn aac_encoder(name: &str) -> Result<gst::Element, gst::glib::BoolError> {
    let encoder = gst::ElementFactory::make("avenc_aac").name(name).build()?;
    encoder.set_property_from_str("bitrate", &AAC_BITRATE.to_string());
    encoder.set_property_from_str("aac-coder", "fast");
    Ok(encoder)
}

/// True when a camera's audio (its RTP encoding name, upper case, or `AAC` from FLV) must be
/// transcoded to be AAC.
pub fn needs_transcoding(encoding: &str) -> bool {
    !matches!(encoding, "MPEG4-GENERIC" | "MP4A-LATM" | "AAC")
}

/// The elements that turn a camera's decoded-by-`decoder` audio at `rate` Hz into AAC (mono),
/// named `<prefix>-aac-…`, not yet added to a bin: decoder → convert → resample → caps →
/// encoder.
pub fn aac_chain(
    decoder: &str,
    rate: Option<i32>,
    prefix: &str,
) -> anyhow::Result<Vec<gst::Element>> {
    let make =
        |factory: &str, role: &str| super::make_element(factory, format!("{prefix}-aac-{role}"));
    let raw = make("capsfilter", "raw")?;
    let mut caps = gst::Caps::builder("audio/x-raw").field("channels", 1i32);
    if let Some(rate) = rate {
        caps = caps.field("rate", aac_rate_for(rate));
    }
    raw.set_property("caps", caps.build());
    let encoder = aac_encoder(&format!("{prefix}-aac-encode"))
        .context("cannot create avenc_aac (is gstreamer1.0-libav installed?)")?;
    Ok(vec![
        make(decoder, "decode")?,
        make("audioconvert", "convert")?,
        make("audioresample", "resample")?,
        raw,
        encoder,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_rates_keep_the_camera_s_own() {
        assert_eq!(aac_rate_for(8_000), 16_000);
        assert_eq!(aac_rate_for(16_000), 16_000);
        assert_eq!(aac_rate_for(44_100), 44_100);
        assert_eq!(aac_rate_for(96_000), 48_000);
    }

    #[test]
    fn only_non_aac_audio_is_transcoded() {
        assert!(needs_transcoding("PCMA"));
        assert!(needs_transcoding("PCMU"));
        assert!(needs_transcoding("OPUS"));
        assert!(!needs_transcoding("MPEG4-GENERIC"));
        assert!(!needs_transcoding("MP4A-LATM"));
    }
}

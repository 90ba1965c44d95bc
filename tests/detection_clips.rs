//! The detector at its defaults on the 20 labelled clips (tests/fixtures/audio), the model's scores
//! against models/README.md, steady sounds that must never trigger, and bad inputs.

mod clips;
mod common;

use std::time::Duration;

use vigil::audio::detector::DetectorSettings;
use vigil::audio::offline::{self, AnalyzeError};
use vigil::audio::wav::WavError;
use vigil::audio::yamnet::{self, MemoryOptions, ModelPaths, Yamnet, YamnetError};

use clips::{clip, clips, model, samples, write_wav};
use common::TempDir;

#[test]
fn at_the_defaults_8_of_10_cries_are_found_and_no_false_alarm() {
    let mut model = model();
    let settings = DetectorSettings::default();
    let mut found = 0;
    let mut false_alarms = Vec::new();
    println!(
        "{:<45} {:>5} {:>6} {:>15} {:>9} {:>7}  result",
        "clip", "cry?", "peak", "level dBFS", "1st ≥ thr", "ON at"
    );
    for clip in clips() {
        let analysis = offline::analyze(&clip.path, settings, &mut model).unwrap();
        let levels: Vec<f32> = analysis.windows.iter().map(|w| w.level_dbfs).collect();
        let quietest = levels.iter().copied().fold(f32::MAX, f32::min);
        let loudest = levels.iter().copied().fold(f32::MIN, f32::max);
        let on_at = analysis.windows.iter().find(|w| w.crying).map(|w| w.end_s);
        let first_strong = analysis
            .windows
            .iter()
            .find(|w| w.loud_enough && w.score >= settings.cry_threshold)
            .map(|w| w.end_s);
        let detected = analysis.found_crying();
        let result = match (clip.is_cry, detected) {
            (true, true) => {
                found += 1;
                "found"
            }
            (true, false) => "missed",
            (false, true) => {
                false_alarms.push(clip.name.clone());
                "FALSE ALARM"
            }
            (false, false) => "quiet (right)",
        };
        println!(
            "{:<45} {:>5} {:>6.3} {:>7.1}..{:>5.1} {:>9} {:>7}  {result} ({} episode(s))",
            clip.name,
            if clip.is_cry { "yes" } else { "no" },
            analysis.peak_score(),
            quietest,
            loudest,
            first_strong.map_or("-".into(), |t| format!("{t:.2}s")),
            on_at.map_or("-".into(), |t| format!("{t:.2}s")),
            analysis.episodes.len()
        );
        if detected {
            assert_eq!(
                analysis.episodes.len(),
                1,
                "{}: one cry, one episode",
                clip.name
            );
        }
    }
    println!("recall {found}/10, false alarms {}/10", false_alarms.len());
    assert!(found >= 8, "only {found} of 10 cry clips detected");
    assert!(false_alarms.is_empty(), "false alarms: {false_alarms:?}");
}

/// Clip score = max over windows of "Baby cry, infant cry" [20] (models/README.md,
/// audio/README.md): non-cry ≤ 0.0084, cry_06 0.26, cry_08 0.03, the 8 others ≥ 0.51. The
/// reference cuts windows on YAMNet's own 0.48 s grid, every second one of ours.
#[test]
fn scores_match_the_reference_figures() {
    let mut model = model();
    let mut at_least_051 = 0;
    for clip in clips() {
        let audio = samples(&clip.path);
        let mut windower = vigil::audio::windows::Windower::new();
        let mut windows = Vec::new();
        windower.push(
            &vigil::audio::PcmChunk {
                pts: Duration::ZERO,
                samples: audio,
            },
            |cut| windows.push(cut),
        );
        windows.extend(windower.finish());
        let mut best_20 = 0.0f32;
        for cut in windows.into_iter().step_by(2) {
            let vigil::audio::windows::Cut::Window { samples, .. } = cut else {
                unreachable!("a clip has no gaps")
            };
            best_20 = best_20.max(model.score(&samples).unwrap().get(20));
        }
        println!("{:<45} baby cry {best_20:.4}", clip.name);
        if clip.is_cry {
            if clip.name.starts_with("cry_06") {
                assert!((best_20 - 0.26).abs() < 0.02, "cry_06 {best_20}");
            } else if clip.name.starts_with("cry_08") {
                assert!((best_20 - 0.03).abs() < 0.01, "cry_08 {best_20}");
            } else {
                assert!(best_20 >= 0.51, "{} {best_20}", clip.name);
                at_least_051 += 1;
            }
        } else {
            assert!(best_20 <= 0.0085, "{} {best_20}", clip.name);
        }
    }
    assert_eq!(at_least_051, 8);
}

/// Speech sounds like speech, a trumpet like brass and a cry like a cry: the top class of most
/// windows loud enough to count.
#[test]
fn top_classes_make_sense() {
    let mut model = model();
    let check = |model: &mut Yamnet, name: &str, want: &[&str]| {
        let analysis =
            offline::analyze(&clip(name).path, DetectorSettings::default(), model).unwrap();
        let loud: Vec<_> = analysis.windows.iter().filter(|w| w.loud_enough).collect();
        let hits = loud
            .iter()
            .filter(|w| want.contains(&w.top[0].class))
            .count();
        let tops: Vec<&str> = loud.iter().map(|w| w.top[0].class).collect();
        assert!(
            hits * 2 > loud.len(),
            "{name}: top classes {tops:?}, expected mostly {want:?}"
        );
    };
    check(&mut model, "noncry_01", &["Speech"]);
    check(&mut model, "noncry_03", &["Speech"]);
    check(
        &mut model,
        "noncry_10",
        &["Trumpet", "Brass instrument", "Music"],
    );
    check(
        &mut model,
        "cry_05",
        &["Crying, sobbing", "Baby cry, infant cry"],
    );
    check(
        &mut model,
        "cry_09",
        &["Crying, sobbing", "Baby cry, infant cry"],
    );
}

/// 30 s of each: digital silence, white noise (loud and soft), brown noise (a fan), mains hum
/// with harmonics, a steady tone. None may start a cry.
#[test]
fn silence_and_steady_noise_never_trigger() {
    let mut model = model();
    let dir = TempDir::new("noise");
    let n = 30 * 16_000;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut white =
        |amp: f32| -> Vec<f32> { (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * amp).collect() };
    let loud_white = white(0.3);
    let soft_white = white(0.003);
    let mut brown = Vec::with_capacity(n);
    let mut acc = 0.0f32;
    for w in white(1.0) {
        acc = (acc + w * 0.02) * 0.995;
        brown.push(acc);
    }
    let tau = std::f32::consts::TAU;
    let hum: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            0.2 * (tau * 50.0 * t).sin()
                + 0.1 * (tau * 100.0 * t).sin()
                + 0.05 * (tau * 150.0 * t).sin()
        })
        .collect();
    let tone: Vec<f32> = (0..n)
        .map(|i| 0.3 * (tau * 440.0 * i as f32 / 16_000.0).sin())
        .collect();
    let sounds = [
        ("silence", vec![0.0; n]),
        ("white noise -15 dBFS", loud_white),
        ("white noise -55 dBFS", soft_white),
        ("brown noise (fan)", brown),
        ("mains hum", hum),
        ("440 Hz tone", tone),
    ];
    for (name, audio) in sounds {
        let path = dir.path().join("sound.wav");
        write_wav(&path, 16_000, 1, &audio);
        let analysis = offline::analyze(&path, DetectorSettings::default(), &mut model).unwrap();
        println!("{name:<22} peak cry score {:.4}", analysis.peak_score());
        assert!(
            !analysis.found_crying(),
            "{name} started a cry:\n{}",
            analysis.table()
        );
        assert!(
            analysis.peak_score() < 0.1,
            "{name}: {}",
            analysis.peak_score()
        );
    }
}

#[test]
fn a_wrong_or_missing_model_is_a_clear_error() {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let wrong = manifest.join("Cargo.toml");
    let err = Yamnet::load(
        &ModelPaths {
            model: Some(wrong.clone()),
        },
        MemoryOptions::VIGIL,
    )
    .unwrap_err();
    assert!(matches!(err, YamnetError::ModelChecksum { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&wrong.display().to_string()), "{text}");
    assert!(text.contains(yamnet::MODEL_SHA256), "{text}");
    assert!(text.contains("models/"), "{text}");

    let missing = manifest.join("no-such-model.onnx");
    let err = Yamnet::load(
        &ModelPaths {
            model: Some(missing.clone()),
        },
        MemoryOptions::VIGIL,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no-such-model.onnx"), "{err}");
}

#[test]
fn truncated_and_non_wav_files_are_clear_errors() {
    let mut model = model();
    let dir = TempDir::new("badwav");
    let whole = std::fs::read(clip("cry_01").path).unwrap();
    let cut = dir.path().join("cut.wav");
    std::fs::write(&cut, &whole[..whole.len() / 3]).unwrap();
    match offline::analyze(&cut, DetectorSettings::default(), &mut model) {
        Err(AnalyzeError::Wav(WavError::Truncated { expected, read, .. })) => {
            assert!((expected - 6.86).abs() < 0.05, "{expected}");
            assert!(read > 1.0 && read < 3.0, "{read}");
        }
        other => panic!("expected a truncation error, got {other:?}"),
    }
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "these are not samples").unwrap();
    let err = offline::analyze(&text, DetectorSettings::default(), &mut model).unwrap_err();
    assert!(err.to_string().contains("is not a WAV file"), "{err}");
    let err = offline::analyze(
        &dir.path().join("missing.wav"),
        DetectorSettings::default(),
        &mut model,
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.wav"), "{err}");
}

/// Another rate and channel count (the camera's 8 kHz, stereo 44.1 kHz) give the same verdict.
#[test]
fn other_rates_and_channels_are_resampled() {
    let mut model = model();
    let dir = TempDir::new("rates");
    let audio = samples(&clip("cry_04").path);
    // The clips have no content above 4 kHz, so taking every other sample loses nothing.
    let at_8k: Vec<f32> = audio.iter().step_by(2).copied().collect();
    let path = dir.path().join("8k.wav");
    write_wav(&path, 8_000, 1, &at_8k);
    let a = offline::analyze(&path, DetectorSettings::default(), &mut model).unwrap();
    assert_eq!(a.wav.sample_rate, 8_000);
    assert!(a.found_crying(), "{}", a.table());
    // Stereo at 44.1 kHz by linear interpolation; the right channel silent (a mono mic on one
    // side), so the down-mix is half as loud.
    let ratio = 16_000.0 / 44_100.0;
    let len = (audio.len() as f64 / ratio) as usize;
    let mut stereo = Vec::with_capacity(len * 2);
    for i in 0..len {
        let x = i as f64 * ratio;
        let (j, frac) = (x as usize, (x - x.floor()) as f32);
        let s = audio[j.min(audio.len() - 1)] * (1.0 - frac)
            + audio[(j + 1).min(audio.len() - 1)] * frac;
        stereo.extend_from_slice(&[s, 0.0]);
    }
    let path = dir.path().join("44k.wav");
    write_wav(&path, 44_100, 2, &stereo);
    let b = offline::analyze(&path, DetectorSettings::default(), &mut model).unwrap();
    assert_eq!((b.wav.sample_rate, b.wav.channels), (44_100, 2));
    assert!(b.found_crying(), "{}", b.table());
    assert!((b.windows.len() as i64 - a.windows.len() as i64).abs() <= 1);
}

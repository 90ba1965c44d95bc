//! `vigil detect FILE.wav` through the real binary: the table, JSON, the options it honours,
//! and clear errors (bad file, wrong model, missing or wrong ONNX Runtime) without a panic.

mod clips;
mod common;

use std::process::{Command, Output};

use clips::clip;
use common::TempDir;

fn detect(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(common::vigil_bin());
    command.arg("detect").args(args).env_remove("VIGIL_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("vigil runs")
}

fn text(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(clip_name: &str) -> String {
    clip(clip_name).path.display().to_string()
}

#[test]
fn a_cry_is_found_and_shown_window_by_window() {
    let (code, out, err) = text(&detect(&[&path("cry_09")], &[]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("16000 Hz, 1 channel, 16-bit"), "{out}");
    assert!(out.contains("cry_threshold 0.50"), "{out}");
    assert!(out.contains("CRYING"), "{out}");
    assert!(out.contains("Crying, sobbing"), "{out}");
    assert!(out.contains("1 crying episode(s):"), "{out}");
    // 7 s of audio: a window at 0.975 s, then one every 0.24 s, the last one padded: 27.
    let rows = out.lines().filter(|l| l.contains("dBFS  ")).count();
    assert_eq!(rows, 27, "{out}");

    let (code, out, _) = text(&detect(&[&path("noncry_02")], &[]));
    assert_eq!(code, 0);
    assert!(
        out.contains("no crying found (highest cry score 0.00"),
        "{out}"
    );
}

#[test]
fn json_has_every_window_and_the_episodes() {
    let (code, out, err) = text(&detect(&[&path("cry_02"), "--json"], &[]));
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["wav"]["sample_rate"], 16000);
    assert_eq!(report["settings"]["cry_threshold"], 0.5);
    assert_eq!(report["settings"]["cry_min_level"], -70.0);
    let windows = report["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 27);
    assert!(windows[0]["top"][0]["class"].is_string());
    let episodes = report["episodes"].as_array().unwrap();
    assert_eq!(episodes.len(), 1, "{out}");
    let peak = episodes[0]["peak_score"].as_f64().unwrap();
    assert!((peak - 0.78).abs() < 0.01, "{peak}");
    assert!(episodes[0]["start_s"].as_f64().unwrap() < episodes[0]["end_s"].as_f64().unwrap());
}

#[test]
fn the_options_and_flags_set_the_sensitivity() {
    let dir = TempDir::new("cli");
    // cry_07 peaks at 0.65 and is quiet (about -60 dBFS).
    let strict = dir.path().join("strict.yaml");
    std::fs::write(&strict, "cry_threshold: 0.9\n").unwrap();
    let (code, out, _) = text(&detect(
        &[&path("cry_07"), "--config", strict.to_str().unwrap()],
        &[],
    ));
    assert_eq!(code, 0);
    assert!(out.contains("no crying found"), "{out}");
    assert!(out.contains("cry_threshold 0.90"), "{out}");

    let loud_only = dir.path().join("loud.yaml");
    std::fs::write(&loud_only, "cry_min_level: -50\ncry_hold: 3\n").unwrap();
    let (_, out, _) = text(&detect(
        &[&path("cry_07"), "-c", loud_only.to_str().unwrap()],
        &[],
    ));
    assert!(out.contains("no crying found"), "{out}");
    assert!(out.contains("quiet"), "{out}");
    assert!(out.contains("cry_hold 3 s"), "{out}");

    let (_, out, _) = text(&detect(&[&path("cry_07"), "--cry-threshold", "0.6"], &[]));
    assert!(out.contains("1 crying episode(s)"), "{out}");
    let (code, _, err) = text(&detect(&[&path("cry_07"), "--cry-threshold", "7"], &[]));
    assert_eq!(code, 2);
    assert!(err.contains("0 to 1"), "{err}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "cry_hold: forever\n").unwrap();
    let (code, _, err) = text(&detect(
        &[&path("cry_07"), "-c", bad.to_str().unwrap()],
        &[],
    ));
    assert_eq!(code, 2);
    assert!(err.contains("cry_hold"), "{err}");
}

#[test]
fn bad_files_are_clear_errors_not_panics() {
    let dir = TempDir::new("cli");
    let whole = std::fs::read(clip("cry_01").path).unwrap();
    let cut = dir.path().join("cut.wav");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let not_wav = dir.path().join("photo.wav");
    std::fs::write(&not_wav, b"\x89PNG\r\n\x1a\n not audio").unwrap();
    let missing = dir.path().join("missing.wav");
    for (file, words) in [
        (&cut, &["is truncated", "6.9 s", "cut off"][..]),
        (&not_wav, &["is not a WAV file"][..]),
        (&missing, &["cannot open", "missing.wav"][..]),
    ] {
        let (code, out, err) = text(&detect(&[file.to_str().unwrap()], &[]));
        assert_eq!(code, 1, "{file:?}: {err}");
        assert!(out.is_empty(), "{out}");
        for w in words {
            assert!(err.contains(w), "{file:?}: {err:?} should say {w:?}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_wrong_model_or_library_is_named_with_what_to_do() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let wrong_model = format!("{manifest}/Cargo.toml");
    let (code, _, err) = text(&detect(&[&path("cry_01"), "--model", &wrong_model], &[]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is not the YAMNet model") && err.contains("sha256"),
        "{err}"
    );

    let (code, _, err) = text(&detect(
        &[&path("cry_01")],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    ));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot load ONNX Runtime from /nonexistent/libonnxruntime.so"),
        "{err}"
    );
    assert!(err.contains("scripts/install-deps.sh"), "{err}");

    // Not a shared library at all.
    let (code, _, err) = text(&detect(
        &[&path("cry_01")],
        &[("ORT_DYLIB_PATH", &wrong_model)],
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot load ONNX Runtime from"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn vigil_run_goes_on_streaming_without_the_model() {
    let mut vigil = common::Vigil::start_with_env(
        &common::options_with_free_ports("yamnet_model: /nonexistent/yamnet.onnx\n"),
        &[],
    );
    vigil.wait_for_log("cry detection is off", std::time::Duration::from_secs(20));
    vigil.wait_for_log(
        "/nonexistent/yamnet.onnx",
        std::time::Duration::from_secs(1),
    );
    vigil.wait_for_log("demo camera online", std::time::Duration::from_secs(20));
    let (status, _) = vigil.terminate();
    assert!(status.success(), "{}", vigil.output());
}

#[test]
fn vigil_run_finds_the_model_of_a_source_checkout() {
    let mut vigil = common::Vigil::start(&common::options_with_free_ports(""));
    vigil.wait_for_log("cry detection ready", std::time::Duration::from_secs(20));
    let (status, _) = vigil.terminate();
    assert!(status.success(), "{}", vigil.output());
    assert!(
        vigil.output().contains("models/yamnet.onnx"),
        "{}",
        vigil.output()
    );
}

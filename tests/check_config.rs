//! `vigil check-config`: what a user sees for good and bad options, through the real binary.

mod common;

use common::check_config;

/// Runs check-config on `yaml` and asserts it fails, naming `key` and saying each of `words`.
#[track_caller]
fn rejects(yaml: &str, key: &str, words: &[&str]) {
    let (code, _out, err) = check_config("options.yaml", yaml);
    assert_eq!(code, 2, "should fail:\n{yaml}\n{err}");
    let line = err
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("- {key}:")))
        .unwrap_or_else(|| panic!("no line naming {key:?} in:\n{err}"));
    for w in words {
        assert!(line.contains(w), "{line:?} should say {w:?}");
    }
}

#[test]
fn valid_options_are_printed_redacted() {
    let (code, out, err) = check_config(
        "options.yaml",
        "cameras:\n  - name: nursery\n    url: rtsp://admin:Hunter2secret@192.168.1.20:554/stream1\n\
         mqtt:\n  host: core-mosquitto\n  username: vigil\n  password: mqttPass99\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"), "{out}");
    assert!(out.contains("name: nursery"), "{out}");
    assert!(
        out.contains("rtsp://admin:***@192.168.1.20:554/stream1"),
        "{out}"
    );
    assert!(
        !out.contains("Hunter2secret") && !out.contains("mqttPass99"),
        "{out}"
    );
    assert!(
        !err.contains("Hunter2secret") && !err.contains("mqttPass99"),
        "{err}"
    );
}

#[test]
fn the_addon_options_file_is_json() {
    let (code, out, err) = check_config(
        "options.json",
        r#"{"cameras":[{"name":"crib","url":"rtsp://cam/s"}],"cry_threshold":0.4,"rtsp_port":8554,
            "web_port":8099,"api_port":1984,"mqtt":{},"log_level":"debug"}"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cry_threshold: 0.4"), "{out}");
    assert!(out.contains("log_level: debug"), "{out}");
}

#[test]
fn no_cameras_means_the_demo_camera() {
    let (code, out, _) = check_config("options.yaml", "cameras: []\n");
    assert_eq!(code, 0);
    assert!(out.contains("demo camera"), "{out}");
}

#[test]
fn empty_and_duplicate_camera_names() {
    rejects(
        "cameras: [{name: '', url: 'rtsp://c/x'}]",
        "cameras[0].name",
        &["needs a name"],
    );
    rejects(
        "cameras:\n  - {name: crib, url: 'rtsp://a/x'}\n  - {name: crib, url: 'rtsp://b/x'}\n",
        "cameras[1].name",
        &["'crib'", "cameras[0]"],
    );
}

#[test]
fn names_that_cannot_be_a_path_or_an_entity_id() {
    rejects(
        "cameras: [{name: 'Baby Room', url: 'rtsp://c/x'}]",
        "cameras[0].name",
        &["'Baby Room'", "lowercase", "baby_room"],
    );
    rejects(
        "cameras: [{name: 'crib/2', url: 'rtsp://c/x'}]",
        "cameras[0].name",
        &["a-z"],
    );
    rejects(
        "cameras: [{name: 'Crib', url: 'rtsp://c/x'}]",
        "cameras[0].name",
        &["crib"],
    );
}

#[test]
fn urls_vigil_does_not_take() {
    let allowed = [
        "rtsp://", "rtsps://", "http://", "https://", "rtmp://", "rtmps://",
    ];
    rejects(
        "cameras: [{name: crib, url: 'ftp://admin:pw9@cam/x'}]",
        "cameras[0].url",
        &[
            &["camera 'crib'", "ftp://admin:***@cam/x", "does not take"],
            &allowed[..],
        ]
        .concat(),
    );
    rejects(
        "cameras: [{name: crib, url: 'rtsp://c/x', sub_url: 'udp://cam/x?user=admin&password=pw9'}]",
        "cameras[0].sub_url",
        &[
            &["camera 'crib'", "udp://cam/x?user=***&password=***"],
            &allowed[..],
        ]
        .concat(),
    );
    rejects(
        "cameras: [{name: crib, url: 'cam.local'}]",
        "cameras[0].url",
        &["rtsp://"],
    );
    rejects(
        "cameras: [{name: crib}]",
        "cameras[0].url",
        &["needs a url"],
    );
    let (_, _, err) = check_config("o.yaml", "cameras: [{name: crib, url: 'ftp://u:pw9@c/x'}]");
    assert!(!err.contains("pw9"), "password in error: {err}");
}

/// Reolink's own streams are taken, and printed without the login in their query string.
#[test]
fn flv_and_rtmp_urls_are_taken_and_printed_redacted() {
    let (code, out, err) = check_config(
        "options.yaml",
        "cameras:\n  - name: porch\n    \
         url: http://192.168.1.30/flv?port=1935&app=bcs&stream=channel0_main.bcs&user=admin&password=Flv9secret\n    \
         sub_url: rtmp://192.168.1.30/bcs/channel0_sub.bcs?channel=0&stream=1&user=admin&password=Flv9secret\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("name: porch"), "{out}");
    assert!(
        out.contains("channel0_main.bcs&user=***&password=***"),
        "{out}"
    );
    assert!(
        out.contains("rtmp://192.168.1.30/bcs/channel0_sub.bcs"),
        "{out}"
    );
    assert!(
        !out.contains("Flv9secret") && !err.contains("Flv9secret"),
        "{out}{err}"
    );
}

#[test]
fn ports_out_of_range_or_shared() {
    rejects("rtsp_port: 0", "rtsp_port", &["1 to 65535"]);
    rejects("web_port: 65536", "web_port", &["1 to 65535"]);
    rejects("api_port: -1", "api_port", &["1 to 65535"]);
    rejects("web_port: 8554", "web_port", &["rtsp_port"]);
    rejects("mqtt: {host: h, port: 99999}", "mqtt.port", &["1 to 65535"]);
}

#[test]
fn threshold_outside_zero_to_one() {
    rejects("cry_threshold: 1.2", "cry_threshold", &["0 to 1"]);
    rejects("cry_threshold: -0.5", "cry_threshold", &["0 to 1"]);
    rejects("cry_threshold: high", "cry_threshold", &["number"]);
}

#[test]
fn clip_options_out_of_range() {
    rejects(
        "clip_retention_days: 0",
        "clip_retention_days",
        &["0", "1 to 365 days", "default 7"],
    );
    rejects(
        "clip_max_mb: 20",
        "clip_max_mb",
        &["20", "50 to 1000000 megabytes", "default 1000"],
    );
    rejects("clips: maybe", "clips", &["true or false"]);
    rejects("clip_max_md: 100", "clip_max_md", &["clip_max_mb"]);
    let (code, out, err) = check_config(
        "options.yaml",
        "clips: false\nclip_retention_days: 30\nclips_dir: /srv/clips\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("clips: false")
            && out.contains("clip_retention_days: 30")
            && out.contains("clip_max_mb: 1000")
            && out.contains("clips_dir: /srv/clips"),
        "{out}"
    );
}

#[test]
fn unknown_keys_name_the_closest_valid_one() {
    rejects("rtsp_prot: 8554", "rtsp_prot", &["unknown", "'rtsp_port'"]);
    rejects(
        "cameras: [{name: crib, url: 'rtsp://c/x', detect: false}]",
        "cameras[0].detect",
        &["'detection'"],
    );
    rejects("mqtt: {usrname: u}", "mqtt.usrname", &["'username'"]);
}

#[test]
fn syntax_errors_give_line_and_column() {
    let (code, _, err) = check_config("options.yaml", "cameras:\n  - name: crib\n   url: x\n");
    assert_eq!(code, 2);
    assert!(err.contains("line 3") && err.contains("column"), "{err}");
    let (code, _, err) = check_config("options.json", "{\"cameras\": [\n  {\"name\": \"a\",}\n]}");
    assert_eq!(code, 2);
    assert!(err.contains("JSON syntax error at line 2"), "{err}");
}

#[test]
fn wrong_types_name_the_key() {
    rejects(
        "cameras: [{name: crib, url: 'rtsp://c/x', detection: maybe}]",
        "cameras[0].detection",
        &["true or false"],
    );
    rejects("cameras: {name: crib}", "cameras", &["list"]);
    rejects(
        "log_level: shouty",
        "log_level",
        &["debug", "info", "warning"],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let (code, _, err) = check_config(
        "options.yaml",
        "cameras: [{name: 'A B', url: 'ftp://x'}]\nrtsp_port: 0\ncry_threshold: 7\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("4 problems"), "{err}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = std::process::Command::new(common::vigil_bin())
        .args(["check-config", "--config", "/nonexistent/vigil.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read /nonexistent/vigil.yaml"), "{err}");
}

//! `vigil run` and its broker: credentials from the options or from a (fake) Supervisor, TLS when
//! the Supervisor says so, what the log says when something is wrong, the last will on SIGKILL,
//! and secrets kept out of the log. The Supervisor cases that need short timings run in-process.

mod common;

use std::time::Duration;

use common::fake_supervisor::{Answers, FakeSupervisor, SLUG, mqtt_service};
use common::mosquitto::{Mosquitto, USER};
use common::mqtt_probe::wait_retained;
use common::mqtt_run::{MqttRun, broker_options};
use common::{TempDir, Vigil, free_port, options_with_free_ports};
use vigil::mqtt::MqttStatus;
use vigil::mqtt::discovery::Entity;
use vigil::secret::Secret;
use vigil::supervisor::Supervisor;

const TOKEN: &str = "SupervisorT0ken-a8f3";
const PASSWORD: &str = "Mqtt-Pa55w0rd-77";
const WAIT: Duration = Duration::from_secs(20);

/// A Supervisor that knows `TOKEN` and answers `/services/mqtt` with `mqtt` (`None`: no
/// broker installed), or refuses it without `mqtt_access`.
fn supervisor(mqtt: Option<serde_json::Value>, mqtt_access: bool) -> FakeSupervisor {
    FakeSupervisor::start(Answers {
        token: TOKEN.into(),
        mqtt,
        mqtt_access,
        v2: false,
    })
}

fn supervisor_for(broker: &Mosquitto, password: &str) -> FakeSupervisor {
    supervisor(Some(mqtt_service(broker.port, USER, password, false)), true)
}

fn start_addon(supervisor: &FakeSupervisor, token: &str, extra: &str) -> Vigil {
    Vigil::start_with_env(
        &options_with_free_ports(&format!("cameras: []\n{extra}")),
        &[
            ("SUPERVISOR_TOKEN", token),
            ("SUPERVISOR_URL", &supervisor.url),
        ],
    )
}

fn wait_offline(broker: &Mosquitto, password: &str) {
    wait_retained(
        broker.port,
        password,
        "vigil/status",
        WAIT,
        "offline",
        |r| r.get("vigil/status").map(String::as_str) == Some("offline"),
    );
}

fn assert_no_secrets(out: &str) {
    for secret in [TOKEN, PASSWORD] {
        assert!(!out.contains(secret), "a secret reached the log:\n{out}");
    }
}

#[test]
fn the_supervisor_provides_the_broker_and_sigkill_leaves_the_last_will() {
    let broker = Mosquitto::start(PASSWORD);
    let supervisor = supervisor_for(&broker, PASSWORD);
    supervisor.change(|a| a.v2 = true);
    let mut vigil = start_addon(&supervisor, TOKEN, "");
    vigil.wait_for_log("MQTT broker from the Supervisor", WAIT);
    vigil.wait_for_log("connected to the MQTT broker", WAIT);
    let out = vigil.output();
    assert!(out.contains("provided by core_mosquitto"), "{out}");

    let retained = wait_retained(broker.port, PASSWORD, "#", WAIT, "the demo camera", |r| {
        r.contains_key("homeassistant/binary_sensor/vigil/demo_crying/config")
            && r.get("vigil/demo/online").map(String::as_str) == Some("ON")
    });
    let config: serde_json::Value =
        serde_json::from_str(&retained["homeassistant/binary_sensor/vigil/demo_crying/config"])
            .unwrap();
    assert_eq!(
        config["device"]["configuration_url"],
        format!("homeassistant://hassio/ingress/{SLUG}")
    );
    assert_eq!(config["device"]["model"], "Demo camera");
    assert_eq!(retained["vigil/status"], "online");
    assert_eq!(retained["vigil/demo/crying"], "OFF");
    // Every call carried the add-on's token.
    let requests = supervisor.requests();
    assert!(
        requests.contains(&format!("/services/mqtt {TOKEN}")),
        "{requests:?}"
    );

    common::signal(vigil.pid(), "KILL");
    vigil.wait(Duration::from_secs(5));
    wait_offline(&broker, PASSWORD);
    assert_no_secrets(&vigil.output());
}

#[test]
fn a_wrong_supervisor_token_is_a_clear_error_and_vigil_runs_on() {
    let broker = Mosquitto::start(PASSWORD);
    let supervisor = supervisor_for(&broker, PASSWORD);
    let mut vigil = start_addon(&supervisor, "not-the-token", "");
    vigil.wait_for_log("the Supervisor refused the add-on's token (HTTP 403)", WAIT);
    vigil.wait_for_log("demo camera online", WAIT);
    let (status, _) = vigil.terminate();
    assert!(status.success(), "{}", vigil.output());
}

#[test]
fn no_broker_installed_is_said_once_and_vigil_runs_on() {
    let supervisor = supervisor(None, true);
    let mut vigil = start_addon(&supervisor, TOKEN, "");
    vigil.wait_for_log("Service not enabled", WAIT);
    vigil.wait_for_log("demo camera online", WAIT);
    let out = vigil.output();
    assert!(
        out.contains("install and start the Mosquitto broker add-on"),
        "{out}"
    );
    assert_eq!(out.matches("Service not enabled").count(), 1, "{out}");
    let (status, _) = vigil.terminate();
    assert!(status.success(), "{}", vigil.output());
}

#[test]
fn a_missing_mqtt_service_declaration_is_named() {
    let supervisor = supervisor(None, false);
    let mut vigil = start_addon(&supervisor, TOKEN, "");
    vigil.wait_for_log("services: [mqtt:want]", WAIT);
    vigil.terminate();
}

#[test]
fn a_refused_login_is_logged_clearly_and_vigil_keeps_running() {
    let broker = Mosquitto::start("the-right-one");
    let mut vigil = Vigil::start(&options_with_free_ports(&format!(
        "cameras: []\nlog_level: trace\n{}",
        broker_options(broker.port, PASSWORD)
    )));
    vigil.wait_for_log("not authorized", WAIT);
    let out = vigil.output();
    assert!(
        out.contains("check mqtt.username and mqtt.password"),
        "{out}"
    );
    assert!(out.contains("retrying in"), "{out}");
    vigil.wait_for_log("demo camera online", WAIT);
    let (status, _) = vigil.terminate();
    assert!(status.success(), "{}", vigil.output());
    let out = vigil.output();
    assert!(!out.contains("panicked"), "{out}");
    assert_no_secrets(&out);
}

#[test]
fn neither_the_token_nor_the_mqtt_password_reach_the_log() {
    // Trace level, a refused login, fresh credentials from the Supervisor, a broker restart:
    // every path that talks about the broker or the Supervisor.
    let mut broker = Mosquitto::start(PASSWORD);
    let supervisor = supervisor_for(&broker, "stale-password-1");
    let mut vigil = start_addon(&supervisor, TOKEN, "log_level: trace\n");
    vigil.wait_for_log("not authorized", WAIT);
    supervisor.change(|a| a.mqtt = Some(mqtt_service(broker.port, USER, PASSWORD, false)));
    vigil.wait_for_log("new MQTT credentials", Duration::from_secs(40));
    vigil.wait_for_log("connected to the MQTT broker", WAIT);
    broker.restart();
    vigil.wait_for_log("lost the connection", WAIT);
    vigil.terminate();
    assert_no_secrets(&vigil.output());
}

/// A CA and a certificate for 127.0.0.1, made with openssl.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("cannot run openssl (scripts/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Vigil test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"],
        &ec[..],
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[test]
fn tls_is_used_when_the_supervisor_says_ssl() {
    let certs = TempDir::new("mqtt-tls");
    make_certificates(certs.path());
    let tls_port = free_port();
    let broker = Mosquitto::start_with(
        PASSWORD,
        &format!(
            "listener {tls_port} 127.0.0.1\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
            certs.path().display()
        ),
    );
    let supervisor = supervisor(Some(mqtt_service(tls_port, USER, PASSWORD, true)), true);
    let ca = certs.path().join("ca.pem");
    let mut vigil = Vigil::start_with_env(
        &options_with_free_ports("cameras: []\n"),
        &[
            ("SUPERVISOR_TOKEN", TOKEN),
            ("SUPERVISOR_URL", &supervisor.url),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
        ],
    );
    vigil.wait_for_log(
        &format!("connected to the MQTT broker at 127.0.0.1:{tls_port} (TLS)"),
        WAIT,
    );
    // Seen through the plain listener: the same broker got the configs over TLS.
    wait_retained(
        broker.port,
        PASSWORD,
        "homeassistant/#",
        WAIT,
        "configs",
        |r| r.len() == Entity::ALL.len(),
    );
    vigil.terminate();
    wait_offline(&broker, PASSWORD);
}

#[test]
fn the_supervisor_is_asked_again_until_a_broker_is_installed() {
    let broker = Mosquitto::start(PASSWORD);
    let supervisor = supervisor(None, true);
    let data = TempDir::new("mqtt-recheck");
    let client = Supervisor::new(&supervisor.url, Secret::new(TOKEN));
    let run = MqttRun::start_with("cameras: []\n", data.path(), Some(client), |setup| {
        setup.recheck = Duration::from_millis(200);
    });
    let status = run.wait_status("off", WAIT, |s| matches!(s, MqttStatus::Off { .. }));
    let MqttStatus::Off { reason } = status else {
        unreachable!()
    };
    assert!(reason.contains("Mosquitto broker add-on"), "{reason}");
    // The user installs the Mosquitto add-on.
    supervisor.change(|a| a.mqtt = Some(mqtt_service(broker.port, USER, PASSWORD, false)));
    run.wait_connected();
    run.stop();
}

#[test]
fn new_credentials_from_the_supervisor_are_picked_up_after_a_refusal() {
    let mut broker = Mosquitto::start(PASSWORD);
    let supervisor = supervisor_for(&broker, PASSWORD);
    let data = TempDir::new("mqtt-rotate");
    let client = Supervisor::new(&supervisor.url, Secret::new(TOKEN));
    let run = MqttRun::start_with("cameras: []\n", data.path(), Some(client), |setup| {
        setup.backoff.first_not_authorized = Duration::from_millis(200);
        setup.backoff.max_not_authorized = Duration::from_millis(400);
    });
    run.wait_connected();
    // The Mosquitto add-on restarts with a new password for add-ons.
    broker.stop();
    broker.set_password("rotated-Pa55");
    supervisor.change(|a| a.mqtt = Some(mqtt_service(broker.port, USER, "rotated-Pa55", false)));
    broker.restart();
    // The restarted broker remembers nothing: `online` is there only if Vigil got back in.
    wait_retained(
        broker.port,
        "rotated-Pa55",
        "vigil/status",
        WAIT,
        "online",
        |r| r.get("vigil/status").map(String::as_str) == Some("online"),
    );
    run.stop();
}

//! Vigil's MQTT part run in-process through its library API, on a runtime of its own (as in the
//! binary), with the camera feeds in the test's hands: set a camera online, make it cry.
//! [`MqttRun::kill`] drops the runtime without the goodbye, as a killed process would.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vigil::audio::CryReading;
use vigil::config::{Config, Mode};
use vigil::mqtt::{self, CameraFeed, MqttSetup, MqttStatus};
use vigil::settings::Settings;
use vigil::supervisor::Supervisor;

use super::mosquitto::USER;

/// The `mqtt` options for a test broker on `port`.
pub fn broker_options(port: u16, password: &str) -> String {
    format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  username: {USER}\n  password: '{password}'\n"
    )
}

type FeedSenders = (watch::Sender<bool>, watch::Sender<CryReading>);

pub struct MqttRun {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    pub status: watch::Receiver<MqttStatus>,
    feeds: BTreeMap<String, FeedSenders>,
    pub settings: Settings,
}

impl MqttRun {
    /// Starts the MQTT part for the options in `yaml`, keeping state in `data_dir`.
    pub fn start(yaml: &str, data_dir: &Path) -> Self {
        Self::start_with(yaml, data_dir, None, |_| {})
    }

    /// The same, with a Supervisor and a chance to change the setup (timings) first.
    pub fn start_with(
        yaml: &str,
        data_dir: &Path,
        supervisor: Option<Supervisor>,
        adjust: impl FnOnce(&mut MqttSetup),
    ) -> Self {
        // Vigil's log in the test's output (shown when a test fails).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("vigil=debug")
            .try_init();
        let mut config = Config::from_yaml(yaml, Mode::Standalone).expect("test options");
        config.data_dir = data_dir.to_path_buf();
        let settings = Settings::load(&config, data_dir);
        let mut feeds = BTreeMap::new();
        let cameras = config
            .cameras_to_run()
            .into_iter()
            .map(|camera| {
                let (online_tx, online) = watch::channel(false);
                let (cry_tx, cry) = watch::channel(CryReading::default());
                feeds.insert(camera.name.clone(), (online_tx, cry_tx));
                CameraFeed {
                    name: camera.name,
                    online,
                    cry,
                    last_cry: watch::channel(None).1,
                }
            })
            .collect();
        let mut setup = MqttSetup::new(&config, cameras, settings.clone(), supervisor);
        adjust(&mut setup);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let status = {
            let _guard = runtime.enter();
            mqtt::start(setup, &tracker, shutdown.clone())
        };
        Self {
            runtime: Some(runtime),
            shutdown,
            tracker,
            status,
            feeds,
            settings,
        }
    }

    pub fn set_online(&self, camera: &str, online: bool) {
        self.feeds[camera].0.send_replace(online);
    }

    /// A new detector reading for `camera`.
    pub fn set_cry(&self, camera: &str, crying: bool, score: f32, level_dbfs: f32) {
        self.feeds[camera].1.send_replace(CryReading {
            crying,
            score,
            level_dbfs,
            at: SystemTime::now(),
        });
    }

    /// Waits until the status passes `test`; panics with the last status after `timeout`.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        test: impl Fn(&MqttStatus) -> bool,
    ) -> MqttStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.status.borrow().clone();
            if test(&now) {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "MQTT status never {what} within {timeout:?}; last: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_connected(&self) {
        self.wait_status("connected", Duration::from_secs(20), |s| {
            matches!(s, MqttStatus::Connected { .. })
        });
    }

    /// Stops the way Vigil stops: `offline`, disconnect, tasks done.
    pub fn stop(mut self) {
        self.shutdown.cancel();
        self.tracker.close();
        if let Some(runtime) = self.runtime.take() {
            let tracker = self.tracker.clone();
            runtime.block_on(async move {
                tokio::time::timeout(Duration::from_secs(5), tracker.wait())
                    .await
                    .expect("the MQTT part did not stop within 5 s")
            });
        }
        assert_eq!(*self.status.borrow(), MqttStatus::Stopped);
    }

    /// Ends abruptly: the connection drops without a goodbye, as when the process is killed.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for MqttRun {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

//! One broker: the loop that turns camera feeds, settings and broker events into messages.
//!
//! On every (re)connect it subscribes again and publishes everything (availability first, then
//! the discovery configs and every state, all retained); Home Assistant's birth message does the
//! same. Commands from Home Assistant's switch and number go into [`Settings`]. On stop it
//! publishes `offline` and disconnects, so Home Assistant shows the entities unavailable at once.
//!
//! Cry events become the event entity's messages (sent once, never retained) and refresh the
//! "last 12 h" sensors, which are also recounted every minute as old cries leave the window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ClientError, Publish, QoS, SubscribeFilter};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, REQUEST_QUEUE};
use super::cleanup::{load_announced, save_announced, stale_topics};
use super::discovery::{
    AVAILABILITY_TOPIC, BIRTH_TOPIC, COMMAND_SUBSCRIPTION, CONFIG_SUBSCRIPTION, CameraDevice,
    Entity, OFF, OFFLINE, ON, ONLINE, announcements, parse_command_topic, retained_topics,
    state_topic,
};
use super::link::{Link, LinkEvent};
use super::outbox::{Outbox, QueueFull};
use super::states::{
    CameraStates, TOTALS_WINDOW, cry_event_payload, threshold_from_sensitivity, write_settings,
    write_totals,
};
use super::{MqttSetup, MqttStatus};
use crate::audio::history::unix_ms;
use crate::audio::{CryChange, CryEvent, Detection};
use crate::settings::Settings;

/// How soon a full client queue is tried again.
const QUEUE_RETRY: Duration = Duration::from_millis(50);

/// How often the "last 12 h" sensors are recounted (a cry leaves the window as time passes).
const TOTALS_EVERY: Duration = Duration::from_secs(60);

/// How far an `Ended` event's `started_at` may be from its episode's recorded start.
const EPISODE_START_SLACK: Duration = Duration::from_secs(5);

/// How long the goodbye (`offline`, then disconnect) may take before the link is dropped.
const GOODBYE_DEADLINE: Duration = Duration::from_secs(2);

struct Session {
    client: AsyncClient,
    outbox: Outbox,
    cameras: Vec<CameraStates>,
    settings: Settings,
    data_dir: std::path::PathBuf,
    connected: bool,
    /// This connection's subscriptions are with the client.
    subscribed: bool,
    /// The announced cameras were written down after the first full publish.
    announced_saved: bool,
    /// When to try again after the client's queue was full.
    retry_at: Option<Instant>,
    detection: Option<Detection>,
    /// When the "last 12 h" sensors are recounted next.
    totals_at: Instant,
    /// Each crying camera's episode key: its `Started` event's time, as the history and the clip
    /// recorder know it (an `Ended` event's `started_at` is computed again from the stream
    /// clock and may differ by some milliseconds).
    open_episodes: HashMap<String, u64>,
}

/// Runs one broker session until `shutdown`.
pub(super) async fn run(
    setup: MqttSetup,
    broker: Broker,
    panel_url: Option<String>,
    status: Arc<watch::Sender<MqttStatus>>,
    shutdown: CancellationToken,
) {
    let client_id = format!("vigil-{:08x}", fastrand::u32(..));
    let options = match broker.client_options(&client_id) {
        Ok(options) => options,
        Err(e) => {
            tracing::error!("MQTT is off: {e}");
            status.send_replace(MqttStatus::Off { reason: e });
            return;
        }
    };
    status.send_replace(MqttStatus::Connecting {
        broker: broker.address(),
        attempts: 0,
        last_error: None,
    });
    let (client, eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
    let (link_tx, mut link_rx) = mpsc::channel(64);
    let link_stop = CancellationToken::new();
    let mut link = tokio::spawn(
        Link {
            eventloop,
            broker,
            client_id,
            supervisor: setup.supervisor.clone(),
            backoff: setup.backoff.clone(),
            status,
            events: link_tx,
            stop: link_stop.clone(),
        }
        .run(),
    );

    let feeds_stop = shutdown.child_token();
    let (feed_tx, mut feed_rx) = mpsc::channel(setup.cameras.len().max(1) * 2);
    for (index, feed) in setup.cameras.iter().enumerate() {
        tokio::spawn(forward_changes(
            index,
            feed.online.clone(),
            feed.cry.clone(),
            feed.last_cry.clone(),
            feed_tx.clone(),
            feeds_stop.clone(),
        ));
    }
    drop(feed_tx);
    let mut settings_changed = setup.settings.subscribe();

    let devices: Vec<CameraDevice> = setup
        .cameras
        .iter()
        .map(|feed| CameraDevice {
            camera: feed.name.clone(),
            model: setup
                .models
                .get(&feed.name)
                .cloned()
                .unwrap_or_else(|| "Camera".to_string()),
            panel_url: panel_url.clone(),
        })
        .collect();
    let mut session = Session {
        client,
        outbox: Outbox::new(),
        cameras: setup
            .cameras
            .iter()
            .map(|feed| CameraStates::new(feed, &setup.rates))
            .collect(),
        settings: setup.settings.clone(),
        data_dir: setup.data_dir.clone(),
        connected: false,
        subscribed: false,
        announced_saved: false,
        retry_at: None,
        detection: setup.detection.clone(),
        totals_at: Instant::now(),
        open_episodes: HashMap::new(),
    };
    let mut cry_events = setup.detection.as_ref().map(Detection::events);
    session.prepare(&devices);

    loop {
        let wake = session.next_wake();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(event) = link_rx.recv() => session.on_link(event),
            Some(index) = feed_rx.recv() => session.on_feed(index),
            Ok(()) = settings_changed.changed() => session.on_settings(),
            Some(event) = next_cry_event(&mut cry_events) => session.on_cry_event(&event),
            _ = sleep_until(wake) => session.on_timer(),
        }
        session.flush();
    }

    feeds_stop.cancel();
    // Not through the outbox: `offline` must go out now, right before the disconnect. If the
    // client cannot take both, dropping the connection makes the broker send the last will.
    let said_goodbye = session.connected
        && session
            .client
            .try_publish(AVAILABILITY_TOPIC, QoS::AtLeastOnce, true, OFFLINE)
            .is_ok()
        && session.client.try_disconnect().is_ok();
    if !said_goodbye {
        link_stop.cancel();
        if session.connected {
            link.abort();
        }
    }
    let deadline = tokio::time::sleep(GOODBYE_DEADLINE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut link => break,
            // Keep the link's events flowing so it can reach the disconnect.
            Some(_) = link_rx.recv() => {}
            _ = &mut deadline => {
                tracing::warn!("the MQTT broker did not take the goodbye in time; closing");
                link.abort();
                break;
            }
        }
    }
    tracing::info!("MQTT stopped");
}

impl Session {
    /// Everything that should stand on the broker, before the first connect.
    fn prepare(&mut self, devices: &[CameraDevice]) {
        self.outbox.set(AVAILABILITY_TOPIC, ONLINE);
        for device in devices {
            for (topic, payload) in announcements(device) {
                self.outbox.set(&topic, payload);
            }
        }
        let now = Instant::now().into_std();
        for camera in &mut self.cameras {
            camera.update(now, &mut self.outbox);
            write_settings(&camera.name, &self.settings, &mut self.outbox);
        }
        self.write_all_totals();
        let current: Vec<&str> = devices.iter().map(|d| d.camera.as_str()).collect();
        for gone in load_announced(&self.data_dir) {
            if current.contains(&gone.as_str()) {
                continue;
            }
            tracing::info!(
                camera = %gone,
                "camera no longer in the options: removing its entities from Home Assistant"
            );
            for topic in retained_topics(&gone) {
                self.outbox.remove(&topic);
            }
        }
    }

    fn on_link(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected => {
                self.connected = true;
                self.subscribed = false;
                self.outbox.resend_all(&[AVAILABILITY_TOPIC]);
            }
            LinkEvent::Lost => self.connected = false,
            LinkEvent::Message(publish) => self.on_message(&publish),
        }
    }

    fn on_message(&mut self, publish: &Publish) {
        let topic = publish.topic.as_str();
        let payload = String::from_utf8_lossy(&publish.payload);
        if topic == BIRTH_TOPIC {
            if payload == ONLINE {
                tracing::info!("Home Assistant is online: announcing the cameras again");
                self.outbox.resend_all(&[AVAILABILITY_TOPIC]);
            }
        } else if topic == AVAILABILITY_TOPIC {
            // A last will of an earlier run (or a stale retained value) said offline after
            // this run said online: say it again.
            if payload == OFFLINE {
                tracing::debug!("availability read back as offline; publishing online again");
                self.outbox.resend(AVAILABILITY_TOPIC);
            }
        } else if let Some((camera, entity)) = parse_command_topic(topic) {
            if publish.retain {
                tracing::debug!(topic, "ignoring a retained command");
            } else if !payload.is_empty() {
                // (An empty payload is someone clearing a retained command.)
                self.on_command(camera, entity, payload.trim());
            }
        } else if !self.outbox.holds(topic) {
            for stale in stale_topics(topic, &publish.payload) {
                tracing::info!(topic = %stale, "removing an old Vigil entity from Home Assistant");
                self.outbox.remove(&stale);
            }
        }
    }

    fn on_command(&mut self, camera: &str, entity: Entity, payload: &str) {
        if !self.cameras.iter().any(|c| c.name == camera) {
            tracing::debug!(camera, "ignoring a command for a camera not in the options");
            return;
        }
        let result = match entity {
            Entity::Detection => match payload.to_ascii_uppercase().as_str() {
                ON => Ok(self.settings.set_detection(camera, true)),
                OFF => Ok(self.settings.set_detection(camera, false)),
                _ => Err(format!("'{payload}' is not ON or OFF")),
            },
            Entity::Sensitivity => match payload
                .parse::<f32>()
                .ok()
                .and_then(threshold_from_sensitivity)
            {
                Some(threshold) => Ok(self.settings.set_cry_threshold(camera, threshold)),
                None => Err(format!("'{payload}' is not a number from 0 to 100")),
            },
            _ => return,
        };
        match result {
            Ok(Ok(())) => tracing::info!(
                camera,
                "{} set to {payload} from Home Assistant",
                entity.name().to_lowercase()
            ),
            Ok(Err(e)) => tracing::warn!(camera, "cannot apply {payload} from Home Assistant: {e}"),
            Err(e) => tracing::warn!(
                camera,
                "ignoring {} from Home Assistant: {e}",
                entity.name().to_lowercase()
            ),
        }
        // Home Assistant shows what is in effect, also after a refused command.
        self.outbox.resend(&state_topic(camera, entity));
        write_settings(camera, &self.settings, &mut self.outbox);
    }

    fn on_feed(&mut self, index: usize) {
        if let Some(camera) = self.cameras.get_mut(index) {
            camera.update(Instant::now().into_std(), &mut self.outbox);
        }
    }

    /// A cry started or ended: the event entity fires, and the totals count it at once.
    fn on_cry_event(&mut self, event: &CryEvent) {
        if !self.cameras.iter().any(|c| c.name == event.camera) {
            return;
        }
        let episode = match event.change {
            CryChange::Started { at, .. } => {
                let key = unix_ms(at);
                self.open_episodes.insert(event.camera.clone(), key);
                self.detection
                    .as_ref()
                    .and_then(|d| d.episode(&event.camera, key))
            }
            CryChange::Ended { started_at, .. } => {
                let key = self.open_episodes.remove(&event.camera);
                self.detection.as_ref().and_then(|d| match key {
                    Some(key) => d.episode(&event.camera, key),
                    // Its start was missed: the camera's newest episode is the one that ended.
                    None => d
                        .episodes(
                            &event.camera,
                            started_at
                                .checked_sub(EPISODE_START_SLACK)
                                .unwrap_or(std::time::UNIX_EPOCH),
                        )
                        .and_then(|episodes| episodes.into_iter().next_back()),
                })
            }
        };
        // The clip recorder lists a clip under the episode as it opens it.
        let clip = episode.and_then(|e| e.clips.into_iter().next());
        self.outbox.push_event(
            &state_topic(&event.camera, Entity::Cry),
            cry_event_payload(&event.change, clip.as_deref()),
            Instant::now().into_std(),
        );
        let totals = self.totals_of(&event.camera);
        write_totals(&event.camera, totals, &mut self.outbox);
    }

    fn totals_of(&self, camera: &str) -> Option<crate::audio::history::CryTotals> {
        self.detection.as_ref()?.totals(camera, TOTALS_WINDOW)
    }

    fn write_all_totals(&mut self) {
        let names: Vec<String> = self.cameras.iter().map(|c| c.name.clone()).collect();
        for camera in names {
            let totals = self.totals_of(&camera);
            write_totals(&camera, totals, &mut self.outbox);
        }
        self.totals_at = Instant::now() + TOTALS_EVERY;
    }

    fn on_settings(&mut self) {
        for camera in &self.cameras {
            write_settings(&camera.name, &self.settings, &mut self.outbox);
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
        }
        for camera in &mut self.cameras {
            camera.update_due(now.into_std(), &mut self.outbox);
        }
        if self.totals_at <= now {
            self.write_all_totals();
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        self.cameras
            .iter()
            .filter_map(|c| c.deadline().map(Instant::from_std))
            .chain(self.retry_at)
            .chain([self.totals_at])
            .min()
    }

    /// Hands what waits to the client, while connected.
    fn flush(&mut self) {
        if !self.connected || self.retry_at.is_some() {
            return;
        }
        if !self.subscribed {
            let filters = [
                BIRTH_TOPIC,
                AVAILABILITY_TOPIC,
                COMMAND_SUBSCRIPTION,
                CONFIG_SUBSCRIPTION,
            ]
            .map(|t| SubscribeFilter::new(t.to_string(), QoS::AtLeastOnce));
            match self.client.try_subscribe_many(filters) {
                Ok(()) => self.subscribed = true,
                Err(_) => {
                    self.retry_at = Some(Instant::now() + QUEUE_RETRY);
                    return;
                }
            }
        }
        let client = &self.client;
        let publish = |topic: &str, message: &super::outbox::Message| {
            client
                .try_publish(
                    topic,
                    QoS::AtLeastOnce,
                    message.retain,
                    message.payload.clone(),
                )
                .map_err(|e: ClientError| {
                    tracing::trace!(topic, "client queue full: {e}");
                    QueueFull
                })
        };
        // Events first: an automation waits on them.
        let flushed = self
            .outbox
            .flush_events(Instant::now().into_std(), publish)
            .and_then(|()| self.outbox.flush(publish));
        match flushed {
            Ok(()) if !self.announced_saved => {
                self.announced_saved = true;
                let names: Vec<String> = self.cameras.iter().map(|c| c.name.clone()).collect();
                if let Err(e) = save_announced(&self.data_dir, &names) {
                    tracing::warn!("cannot remember the announced cameras: {e}");
                }
            }
            Ok(()) => {}
            Err(QueueFull) => self.retry_at = Some(Instant::now() + QUEUE_RETRY),
        }
    }
}

/// Wakes the session when a camera's online state, cry reading or cry picture changes. The session reads
/// the latest values itself, so a busy session only ever skips intermediate values.
async fn forward_changes(
    index: usize,
    mut online: watch::Receiver<bool>,
    mut cry: watch::Receiver<crate::audio::CryReading>,
    mut picture: crate::cry_pictures::LatestPicture,
    changes: mpsc::Sender<usize>,
    stop: CancellationToken,
) {
    let (mut online_open, mut cry_open, mut picture_open) = (true, true, true);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = online.changed(), if online_open => online_open = r.is_ok(),
            r = cry.changed(), if cry_open => cry_open = r.is_ok(),
            r = picture.changed(), if picture_open => picture_open = r.is_ok(),
        }
        if changes.send(index).await.is_err() {
            return;
        }
    }
}

/// The next cry event, skipping over missed ones; pending forever without detection.
async fn next_cry_event(events: &mut Option<broadcast::Receiver<CryEvent>>) -> Option<CryEvent> {
    let Some(receiver) = events else {
        return std::future::pending().await;
    };
    loop {
        match receiver.recv().await {
            Ok(event) => return Some(event),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("{n} cry events missed by MQTT");
            }
            Err(broadcast::error::RecvError::Closed) => {
                *events = None;
                return std::future::pending().await;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

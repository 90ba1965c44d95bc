//! Stream names: how a go2rtc client's `src` becomes one of Vigil's cameras. A camera's own
//! name always works; Home Assistant registers more with `PUT /api/streams?name=<entity_id>&
//! src=<the camera entity's stream source>`, and a source that is one of Vigil's own restream
//! URLs (`rtsp://<any host>:<rtsp_port>/<camera>`) maps that name onto the camera.
//!
//! Names live in memory (Home Assistant registers them again when they are missing). Sources
//! are kept redacted: a restream password HA passes in a URL is never shown back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::camera::Cameras;
use crate::secret::redact_url;

/// Most names one process keeps (each `PUT` of a new name adds one).
pub const MAX_STREAM_NAMES: usize = 256;

/// A registered name and the camera it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamName {
    pub camera: String,
    /// The sources as registered, redacted.
    pub sources: Vec<String>,
}

/// What one `src` of a `PUT /api/streams` means to Vigil.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMatch {
    /// One of our cameras, by its restream URL or its name.
    Camera(String),
    /// A go2rtc-only hint Vigil covers on its own (HA's `ffmpeg:<name>#audio=opus`: Vigil
    /// transcodes audio to Opus for WebRTC anyway).
    Ignored,
    /// Anything else: Vigil cannot pull other sources.
    Foreign,
}

/// The names registered with `PUT /api/streams`. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StreamNames {
    by_name: Arc<Mutex<BTreeMap<String, StreamName>>>,
}

impl StreamNames {
    /// Registers `name` for the camera its `sources` point to; the error says what is allowed.
    pub fn register(
        &self,
        name: &str,
        sources: &[String],
        cameras: &Cameras,
        rtsp_port: u16,
    ) -> Result<String, String> {
        if name.is_empty() {
            return Err("PUT /api/streams needs ?name=<stream name>".into());
        }
        let mut camera = None;
        let mut foreign = Vec::new();
        for source in sources {
            match match_source(source, cameras, rtsp_port) {
                SourceMatch::Camera(c) => {
                    camera.get_or_insert(c);
                }
                SourceMatch::Ignored => {}
                SourceMatch::Foreign => foreign.push(redact_url(source)),
            }
        }
        let Some(camera) = camera else {
            let shown = if foreign.is_empty() {
                "no src".to_string()
            } else {
                foreign.join(", ")
            };
            return Err(format!(
                "Vigil serves only its own cameras; {shown} is not one of them. Use a camera's \
                 name ({}) or its restream URL rtsp://<host>:{rtsp_port}/<camera> as src",
                cameras.names().join(", ")
            ));
        };
        if let Some(existing) = cameras.get(name)
            && existing.name() != camera
        {
            return Err(format!(
                "'{name}' is the name of a camera; it cannot stand for camera '{camera}'"
            ));
        }
        let mut names = self.by_name.lock().unwrap();
        if !names.contains_key(name) && names.len() >= MAX_STREAM_NAMES {
            return Err(format!(
                "{MAX_STREAM_NAMES} stream names are registered already, the most Vigil keeps"
            ));
        }
        names.insert(
            name.to_string(),
            StreamName {
                camera: camera.clone(),
                sources: sources.iter().map(|s| redact_url(s)).collect(),
            },
        );
        Ok(camera)
    }

    /// The camera a registered name stands for.
    pub fn camera_of(&self, name: &str) -> Option<String> {
        let names = self.by_name.lock().unwrap();
        names.get(name).map(|n| n.camera.clone())
    }

    /// Every registered name, sorted.
    pub fn list(&self) -> Vec<(String, StreamName)> {
        let names = self.by_name.lock().unwrap();
        names.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// What `source` means: one of `cameras` (by restream URL on `rtsp_port`, or by name), a hint
/// to ignore, or a source Vigil cannot serve.
pub fn match_source(source: &str, cameras: &Cameras, rtsp_port: u16) -> SourceMatch {
    let source = source.trim();
    if source.starts_with("ffmpeg:") {
        return SourceMatch::Ignored;
    }
    if cameras.get(source).is_some() {
        return SourceMatch::Camera(source.to_string());
    }
    let Ok(url) = url::Url::parse(source) else {
        return SourceMatch::Foreign;
    };
    let ours = matches!(url.scheme(), "rtsp" | "rtsps")
        && url.port().unwrap_or(554) == rtsp_port
        && url.host_str().is_some_and(|h| !h.is_empty());
    let path = url.path().trim_matches('/');
    match cameras.get(path) {
        Some(camera) if ours => SourceMatch::Camera(camera.name().to_string()),
        _ => SourceMatch::Foreign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::{CameraHandle, CameraStatus, Hub, hub::HubLimits};

    fn cameras() -> Cameras {
        let _ = gst::init();
        let handle = |name: &str| {
            let (_tx, rx) = tokio::sync::watch::channel(CameraStatus::default());
            CameraHandle::new(name, Hub::new(HubLimits::default()), rx)
        };
        Cameras::new([handle("demo"), handle("nursery")])
    }

    #[test]
    fn sources_map_onto_our_cameras() {
        let cameras = cameras();
        let check = |source: &str, expected: SourceMatch| {
            assert_eq!(match_source(source, &cameras, 8554), expected, "{source}");
        };
        let camera = |name: &str| SourceMatch::Camera(name.to_string());
        check("rtsp://127.0.0.1:8554/nursery", camera("nursery"));
        check(
            "rtsp://user:pw@homeassistant.local:8554/demo",
            camera("demo"),
        );
        check("rtsp://192.168.1.5:8554/demo?video&audio", camera("demo"));
        check("nursery", camera("nursery"));
        // The stream source of the Generic Camera entries Vigil adds (homeassistant/).
        check(
            "rtsp://viewer:p%40ss@127.0.0.1:8554/nursery",
            camera("nursery"),
        );
        check(
            "ffmpeg:camera.nursery#audio=opus#query=log_level=debug",
            SourceMatch::Ignored,
        );
        check("rtsp://192.168.1.20:554/stream1", SourceMatch::Foreign);
        check("rtsp://127.0.0.1:8554/attic", SourceMatch::Foreign);
        check("http://127.0.0.1:8554/demo", SourceMatch::Foreign);
    }

    #[test]
    fn registering_names() {
        let cameras = cameras();
        let names = StreamNames::default();
        let sources = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names.register(
                "camera.nursery",
                &sources(&[
                    "rtsp://u:secret@127.0.0.1:8554/nursery",
                    "ffmpeg:camera.nursery#audio=opus"
                ]),
                &cameras,
                8554
            ),
            Ok("nursery".to_string())
        );
        assert_eq!(
            names.camera_of("camera.nursery").as_deref(),
            Some("nursery")
        );
        let listed = format!("{:?}", names.list());
        assert!(!listed.contains("secret"), "{listed}");
        let foreign = names
            .register(
                "x",
                &sources(&["rtsp://admin:pw@10.0.0.9/live"]),
                &cameras,
                8554,
            )
            .unwrap_err();
        assert!(
            foreign.contains("own cameras") && foreign.contains("demo, nursery"),
            "{foreign}"
        );
        assert!(!foreign.contains("pw@"), "{foreign}");
        let clash = names
            .register("demo", &sources(&["nursery"]), &cameras, 8554)
            .unwrap_err();
        assert!(clash.contains("name of a camera"), "{clash}");
        assert!(
            names
                .register("", &sources(&["demo"]), &cameras, 8554)
                .is_err()
        );
    }
}

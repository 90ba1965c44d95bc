//! The media factory of one camera's restream: a media of its own for every client, fed from the
//! camera's hub through `appsrc`, so that each client starts with the cached GOP, on a timeline of
//! its own (see ARCHITECTURE.md for why one media per client, with the measurements).
//!
//! The factory runs on the RTSP server's thread; the feeding runs on the tokio runtime.

use std::sync::OnceLock;

use gst::glib;
use gst::prelude::*;
use gst_rtsp_server::prelude::*;
use gst_rtsp_server::subclass::prelude::*;

use super::feeder::{self, Feed};
use crate::camera::{CameraHandle, StreamInfo};

/// What a factory needs to feed its clients.
#[derive(Clone)]
pub struct FactoryContext {
    pub camera: CameraHandle,
    pub runtime: tokio::runtime::Handle,
    /// The RTSP server's main context, where clients are closed.
    pub main_context: glib::MainContext,
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct CameraFactory {
        pub context: OnceLock<FactoryContext>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for CameraFactory {
        const NAME: &'static str = "VigilCameraFactory";
        type Type = super::CameraFactory;
        type ParentType = gst_rtsp_server::RTSPMediaFactory;
    }

    impl ObjectImpl for CameraFactory {}

    impl RTSPMediaFactoryImpl for CameraFactory {
        fn create_element(&self, _url: &gst_rtsp::RTSPUrl) -> Option<gst::Element> {
            let context = self.context.get()?;
            let camera = context.camera.name();
            let Some(info) = context.camera.stream_info() else {
                tracing::debug!(camera, "restream asked before the camera sent anything");
                return None;
            };
            match client_bin(camera, &info) {
                Ok(bin) => Some(bin.upcast()),
                Err(e) => {
                    tracing::warn!(camera, "cannot restream this camera: {e:#}");
                    None
                }
            }
        }

        fn media_configure(&self, media: &gst_rtsp_server::RTSPMedia) {
            self.parent_media_configure(media);
            let Some(context) = self.context.get() else {
                return;
            };
            // Send as fast as the data comes: the timestamps are the client's own, not a clock
            // to wait for (see feeder). A PLAY turns rate control back on (gst-rtsp-server
            // 1.22 sets it from the request), so it is turned off again once the media plays.
            media.set_rate_control(false);
            media.connect_new_state(|media, state| {
                if state == gst::State::Playing as i32 {
                    media.set_rate_control(false);
                }
            });
            let client =
                gst_rtsp_server::RTSPContext::with_current_context(|ctx| ctx.client().cloned())
                    .flatten();
            match Feed::new(context, media, client) {
                Ok(feed) => feeder::start(feed, context),
                Err(e) => tracing::warn!(
                    camera = context.camera.name(),
                    "cannot feed a restream client: {e:#}"
                ),
            }
        }
    }
}

glib::wrapper! {
    /// One camera's mount on the restream.
    pub struct CameraFactory(ObjectSubclass<imp::CameraFactory>)
        @extends gst_rtsp_server::RTSPMediaFactory;
}

impl CameraFactory {
    pub fn new(context: FactoryContext) -> Self {
        let factory: Self = glib::Object::new();
        let _ = factory.imp().context.set(context);
        // Each client gets its own media (its own GOP burst and timeline).
        factory.set_shared(std::env::var("VIGIL_RESTREAM_DESIGN").as_deref() == Ok("shared"));
        if std::env::var("VIGIL_RESTREAM_RTCP").as_deref() == Ok("off") {
            factory.set_enable_rtcp(false);
        }
        factory.set_stop_on_disconnect(true);
        factory.set_suspend_mode(gst_rtsp_server::RTSPSuspendMode::None);
        factory.set_protocols(gst_rtsp::RTSPLowerTrans::TCP | gst_rtsp::RTSPLowerTrans::UDP);
        factory
    }
}

/// `appsrc ! payloader` for each track, named as gst-rtsp-server expects (`pay0`, `pay1`).
fn client_bin(camera: &str, info: &StreamInfo) -> anyhow::Result<gst::Bin> {
    let bin = gst::Bin::with_name(&format!("{camera}-rtsp-client"));
    let mut index = 0;
    for (role, caps) in [("video", &info.video), ("audio", &info.audio)] {
        let Some(caps) = caps else { continue };
        let (factory, pt) =
            payloader_for(caps).ok_or_else(|| anyhow::anyhow!("no RTP payloader for {caps}"))?;
        let src = gst_app::AppSrc::builder()
            .name(feeder::source_name(role))
            .caps(caps)
            .format(gst::Format::Time)
            .is_live(true)
            .stream_type(gst_app::AppStreamType::Stream)
            .build();
        let pay = gst::ElementFactory::make(factory)
            .name(format!("pay{index}"))
            .property("pt", pt)
            .build()?;
        if pay.has_property("config-interval") {
            // The parameter sets are in front of every keyframe already.
            pay.set_property("config-interval", 0i32);
        }
        if pay.has_property("aggregate-mode") {
            pay.set_property_from_str("aggregate-mode", "zero-latency");
        }
        bin.add_many([src.upcast_ref(), &pay])?;
        src.link(&pay)?;
        index += 1;
    }
    Ok(bin)
}

/// The payloader and payload type for a track's caps, as cameras usually send them.
pub fn payloader_for(caps: &gst::CapsRef) -> Option<(&'static str, u32)> {
    Some(match caps.structure(0)?.name().as_str() {
        "video/x-h264" => ("rtph264pay", 96),
        "video/x-h265" => ("rtph265pay", 96),
        "audio/mpeg" => ("rtpmp4gpay", 97),
        "audio/x-alaw" => ("rtppcmapay", 8),
        "audio/x-mulaw" => ("rtppcmupay", 0),
        "audio/x-opus" => ("rtpopuspay", 98),
        _ => return None,
    })
}

//! What every viewer pipeline shares: building elements with an error that names the missing
//! plugin, a pipeline that reaches `Null` when dropped, and the first bus error as text.
//!
//! Never blocks a tokio thread: state changes to `Null` on small live pipelines return at once.

use futures::StreamExt;
use gst::prelude::*;

use super::LiveError;

/// A pipeline that is set to `Null` when dropped, whatever path its owner leaves by.
#[derive(Debug)]
pub struct OwnedPipeline {
    pipeline: gst::Pipeline,
    what: &'static str,
}

impl OwnedPipeline {
    /// A new, empty pipeline; `what` names it in errors ("snapshot", "WebRTC", …).
    pub fn new(name: &str, what: &'static str) -> Self {
        Self {
            pipeline: gst::Pipeline::with_name(name),
            what,
        }
    }

    pub fn get(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// Builds `factory` named `name` and adds it to the pipeline.
    pub fn add(&self, factory: &str, name: &str) -> Result<gst::Element, LiveError> {
        let element = make(factory, name, self.what)?;
        self.pipeline
            .add(&element)
            .map_err(|e| self.error(format!("cannot add {factory}: {e}")))?;
        Ok(element)
    }

    /// Adds an element built elsewhere (an appsrc with its settings).
    pub fn adopt(&self, element: &impl IsA<gst::Element>) -> Result<(), LiveError> {
        self.pipeline
            .add(element)
            .map_err(|e| self.error(format!("cannot add {}: {e}", element.as_ref().name())))
    }

    /// Adds an appsink that hands samples over as they come (no clock sync).
    pub fn add_appsink(&self, name: &str) -> Result<gst_app::AppSink, LiveError> {
        let sink = gst_app::AppSink::builder().name(name).sync(false).build();
        self.adopt(&sink)?;
        Ok(sink)
    }

    /// Links `elements` in a chain.
    pub fn link(&self, elements: &[&gst::Element]) -> Result<(), LiveError> {
        gst::Element::link_many(elements.iter().copied())
            .map_err(|e| self.error(format!("cannot link the elements: {e}")))
    }

    pub fn play(&self) -> Result<(), LiveError> {
        self.pipeline
            .set_state(gst::State::Playing)
            .map(|_| ())
            .map_err(|_| {
                let detail = self
                    .pending_error()
                    .unwrap_or_else(|| "it refused to start".into());
                self.error(detail)
            })
    }

    /// A [`LiveError::Pipeline`] for this pipeline.
    pub fn error(&self, detail: impl Into<String>) -> LiveError {
        LiveError::Pipeline {
            what: self.what,
            detail: detail.into(),
        }
    }

    /// The first error already on the bus, if any, as text.
    pub fn pending_error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(message) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = message.view() {
                return Some(error_text(e));
            }
        }
        None
    }

    /// Resolves with the first error the pipeline posts (or when its bus is gone).
    pub fn first_error(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let bus = self.pipeline.bus();
        async move {
            let Some(bus) = bus else {
                return "the pipeline has no bus".to_string();
            };
            let mut errors = bus.stream_filtered(&[gst::MessageType::Error]);
            while let Some(message) = errors.next().await {
                if let gst::MessageView::Error(e) = message.view() {
                    return error_text(e);
                }
            }
            "the pipeline's bus closed".to_string()
        }
    }
}

impl Drop for OwnedPipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Builds one element, or says which plugin is missing.
pub fn make(factory: &str, name: &str, what: &'static str) -> Result<gst::Element, LiveError> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|_| LiveError::Pipeline {
            what,
            detail: format!(
                "the GStreamer element '{factory}' is missing (install the GStreamer plugins \
                 listed in scripts/install-deps.sh)"
            ),
        })
}

fn error_text(e: &gst::message::Error) -> String {
    let source = e
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_default();
    match e.debug() {
        Some(debug) => format!("{source}: {} ({debug})", e.error()),
        None => format!("{source}: {}", e.error()),
    }
}

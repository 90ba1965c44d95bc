//! Cameras: one actor per camera owns its GStreamer pipeline and its state.
//!
//! Only this module sees a camera's credentials; everything it shows is redacted.

pub mod demo;

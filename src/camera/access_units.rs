//! `AccessUnits`: a small GStreamer element between a camera's depayloader and its parser that
//! hands on whole access units, however the camera cut them.
//!
//! The depayloader ends an access unit at the RTP marker bit, but also wherever the NAL units
//! say a new one begins; a camera that repeats SPS/PPS in front of every slice of a keyframe is
//! cut there into one buffer per slice, all with the same timestamp. This element joins the
//! buffers of one timestamp until the one that carries the marker (or until the timestamp
//! changes, for a camera that never sets it) and puts their NAL units in the standard's order
//! ([`super::nal::arrange`]), so the parser, the hub and every viewer see one picture per
//! access unit. Nothing is decoded; an access unit already whole and in order passes untouched.

use std::sync::Mutex;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::nal::{self, Codec};

/// The most buffers joined into one access unit (H.264 levels allow at most a few dozen slices
/// per picture at camera resolutions; cameras send 1 to 16).
const MAX_PARTS: usize = 64;

glib::wrapper! {
    /// Joins a depayloader's buffers into whole access units.
    pub struct AccessUnits(ObjectSubclass<imp::AccessUnits>) @extends gst::Element, gst::Object;
}

impl AccessUnits {
    /// An element named `name` for `codec` video.
    pub fn new(name: &str, codec: Codec) -> Self {
        let element: Self = glib::Object::builder().property("name", name).build();
        element.imp().state.lock().unwrap().codec = Some(codec);
        element
    }
}

/// Joins `parts` (buffers of one timestamp, in arrival order) into one access unit.
fn join(codec: Codec, parts: Vec<gst::Buffer>) -> gst::Buffer {
    let arranged = {
        let maps: Vec<_> = parts.iter().filter_map(|b| b.map_readable().ok()).collect();
        let slices: Vec<&[u8]> = maps.iter().map(|m| m.as_slice()).collect();
        nal::arrange(codec, &slices)
    };
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return gst::Buffer::new();
    };
    let Some(data) = arranged else {
        return first;
    };
    let rest: Vec<gst::Buffer> = parts.collect();
    let keyframe = std::iter::once(&first)
        .chain(&rest)
        .any(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
    let discont = std::iter::once(&first)
        .chain(&rest)
        .any(|b| b.flags().contains(gst::BufferFlags::DISCONT));
    let mut joined = gst::Buffer::from_mut_slice(data);
    {
        let out = joined.get_mut().expect("a new buffer is writable");
        out.set_pts(first.pts());
        out.set_dts(first.dts());
        out.set_duration(first.duration());
        let mut flags = gst::BufferFlags::MARKER;
        if !keyframe {
            flags |= gst::BufferFlags::DELTA_UNIT;
        }
        if discont {
            flags |= gst::BufferFlags::DISCONT;
        }
        out.set_flags(flags);
    }
    joined
}

mod imp {
    use std::sync::LazyLock;

    use super::*;

    #[derive(Default)]
    pub struct State {
        pub codec: Option<Codec>,
        /// Buffers of the access unit being received (one timestamp), oldest first.
        held: Vec<gst::Buffer>,
    }

    pub struct AccessUnits {
        sinkpad: gst::Pad,
        srcpad: gst::Pad,
        pub state: Mutex<State>,
    }

    impl AccessUnits {
        fn chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
            let mut ready = Vec::with_capacity(2);
            {
                let mut state = self.state.lock().unwrap();
                let Some(codec) = state.codec else {
                    drop(state);
                    return self.srcpad.push(buffer);
                };
                if state.held.first().is_some_and(|b| b.pts() != buffer.pts()) {
                    // A camera that does not mark the end of its access units: a new
                    // timestamp ends the last one.
                    ready.push(join(codec, std::mem::take(&mut state.held)));
                }
                let complete = buffer.flags().contains(gst::BufferFlags::MARKER);
                state.held.push(buffer);
                // A camera that stamps every frame alike and never marks one would be held
                // forever: no picture has this many slices.
                if complete || state.held.len() >= MAX_PARTS {
                    ready.push(join(codec, std::mem::take(&mut state.held)));
                }
            }
            for buffer in ready {
                self.srcpad.push(buffer)?;
            }
            Ok(gst::FlowSuccess::Ok)
        }

        fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
            match event.view() {
                gst::EventView::Eos(_) => {
                    let held = {
                        let mut state = self.state.lock().unwrap();
                        let held = std::mem::take(&mut state.held);
                        state
                            .codec
                            .filter(|_| !held.is_empty())
                            .map(|c| join(c, held))
                    };
                    if let Some(buffer) = held {
                        let _ = self.srcpad.push(buffer);
                    }
                }
                gst::EventView::FlushStop(_) => self.state.lock().unwrap().held.clear(),
                _ => {}
            }
            gst::Pad::event_default(pad, Some(&*self.obj()), event)
        }
    }

    #[glib::object_subclass]
    impl ObjectSubclass for AccessUnits {
        const NAME: &'static str = "VigilAccessUnits";
        type Type = super::AccessUnits;
        type ParentType = gst::Element;

        fn with_class(klass: &Self::Class) -> Self {
            let template = klass.pad_template("sink").expect("sink template");
            let sinkpad = gst::Pad::builder_from_template(&template)
                .chain_function(|_pad, parent, buffer| {
                    AccessUnits::catch_panic_pad_function(
                        parent,
                        || Err(gst::FlowError::Error),
                        |this| this.chain(buffer),
                    )
                })
                .event_function(|pad, parent, event| {
                    AccessUnits::catch_panic_pad_function(
                        parent,
                        || false,
                        |this| this.sink_event(pad, event),
                    )
                })
                .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
                .build();
            let template = klass.pad_template("src").expect("src template");
            let srcpad = gst::Pad::builder_from_template(&template)
                .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
                .build();
            Self {
                sinkpad,
                srcpad,
                state: Mutex::new(State::default()),
            }
        }
    }

    impl ObjectImpl for AccessUnits {
        fn constructed(&self) {
            self.parent_constructed();
            let element = self.obj();
            element
                .add_pad(&self.sinkpad)
                .expect("a new element takes a pad");
            element
                .add_pad(&self.srcpad)
                .expect("a new element takes a pad");
        }
    }

    impl GstObjectImpl for AccessUnits {}

    impl ElementImpl for AccessUnits {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "Vigil access units",
                    "Codec/Video",
                    "Joins a depayloader's buffers into whole H.264/H.265 access units",
                    "Vigil",
                )
            });
            Some(&METADATA)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                let caps = ["video/x-h264", "video/x-h265"]
                    .into_iter()
                    .map(|name| {
                        gst::Structure::builder(name)
                            .field("stream-format", "byte-stream")
                            .field("alignment", "au")
                            .build()
                    })
                    .collect::<gst::Caps>();
                [gst::PadDirection::Sink, gst::PadDirection::Src]
                    .into_iter()
                    .map(|direction| {
                        let name = match direction {
                            gst::PadDirection::Sink => "sink",
                            _ => "src",
                        };
                        gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &caps)
                            .expect("valid pad template")
                    })
                    .collect()
            });
            TEMPLATES.as_ref()
        }

        fn change_state(
            &self,
            transition: gst::StateChange,
        ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
            if transition == gst::StateChange::PausedToReady {
                self.state.lock().unwrap().held.clear();
            }
            self.parent_change_state(transition)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers of H.264 NAL units by type, each with `pts` in ms and a marker flag.
    fn buffer(units: &[u8], pts: u64, marker: bool) -> gst::Buffer {
        gst::init().unwrap();
        let data: Vec<u8> = units
            .iter()
            .flat_map(|&kind| [0, 0, 0, 1, 0x60 | kind, kind, 0x80])
            .collect();
        let mut buffer = gst::Buffer::from_mut_slice(data);
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(pts));
        let mut flags = gst::BufferFlags::empty();
        if marker {
            flags |= gst::BufferFlags::MARKER;
        }
        if !units.contains(&5) {
            flags |= gst::BufferFlags::DELTA_UNIT;
        }
        b.set_flags(flags);
        buffer
    }

    /// Pushes `input` through the element; returns each output's NAL types, pts and keyframe flag.
    fn run(input: Vec<gst::Buffer>) -> Vec<(Vec<u8>, u64, bool)> {
        gst::init().unwrap();
        let pipeline = gst::Pipeline::new();
        let caps = gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build();
        let src = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .build();
        let units = AccessUnits::new("units", Codec::H264);
        let sink = gst_app::AppSink::builder().sync(false).build();
        let elements: [&gst::Element; 3] =
            [src.upcast_ref(), units.upcast_ref(), sink.upcast_ref()];
        pipeline.add_many(elements).unwrap();
        gst::Element::link_many(elements).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        for buffer in input {
            src.push_buffer(buffer).unwrap();
        }
        src.end_of_stream().unwrap();
        let mut out = Vec::new();
        while let Ok(sample) = sink.pull_sample() {
            let buffer = sample.buffer().unwrap();
            let map = buffer.map_readable().unwrap();
            let types = nal::nal_units(&map)
                .into_iter()
                .map(|r| map[r.start] & 0x1f)
                .collect();
            out.push((
                types,
                buffer.pts().unwrap().mseconds(),
                !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            ));
        }
        pipeline.set_state(gst::State::Null).unwrap();
        out
    }

    #[test]
    fn a_keyframe_cut_per_slice_comes_out_whole() {
        let out = run(vec![
            buffer(&[9, 7, 8, 5], 0, false),
            buffer(&[7, 8, 5], 0, false),
            buffer(&[7, 8, 5], 0, true),
            buffer(&[9, 1, 1], 40, true),
        ]);
        assert_eq!(
            out,
            vec![
                (vec![9, 7, 8, 5, 5, 5], 0, true),
                (vec![9, 1, 1], 40, false)
            ]
        );
    }

    #[test]
    fn without_markers_a_new_timestamp_ends_the_access_unit() {
        let out = run(vec![
            buffer(&[7, 8, 5], 0, false),
            buffer(&[7, 8, 5], 0, false),
            buffer(&[1, 1], 40, false),
            buffer(&[1, 1], 80, false),
        ]);
        assert_eq!(
            out,
            vec![
                (vec![7, 8, 5, 5], 0, true),
                (vec![1, 1], 40, false),
                (vec![1, 1], 80, false)
            ]
        );
    }

    #[test]
    fn a_camera_that_never_ends_an_access_unit_is_not_held_forever() {
        let input = (0..MAX_PARTS + 6).map(|_| buffer(&[1], 0, false)).collect();
        let sizes: Vec<usize> = run(input)
            .into_iter()
            .map(|(nals, _, _)| nals.len())
            .collect();
        assert_eq!(sizes, vec![MAX_PARTS, 6]);
    }
}

//! A look at the first bytes of an FLV stream, before `flvdemux` sees them: whether it is FLV at
//! all, which tracks its header announces, and whether its video is H.264. Pure, no GStreamer.
//!
//! `flvdemux` meets a codec it does not know (H.265 as Reolink's 8 MP models send it, in the
//! "enhanced FLV" form or with the non-standard codec id 12) with a bare flow error, and garbage
//! with a generic one; this check turns both into words a user can act on.

/// What the check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvVerdict {
    /// More bytes are needed.
    Undecided,
    /// An FLV stream whose video (if any came before [`MAX_LOOK`]) `flvdemux` reads.
    Usable,
    /// Not FLV at all (`what` says what was seen instead).
    NotFlv(String),
    /// FLV whose video is in a codec Vigil cannot take from FLV (its name).
    UnsupportedCodec(String),
}

/// The tracks the FLV header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvHeader {
    pub audio: bool,
    pub video: bool,
}

/// How far into the stream the check looks for the first video tag before letting it through.
pub const MAX_LOOK: usize = 512 * 1024;

/// Reads the stream's first bytes as they arrive.
#[derive(Debug, Default)]
pub struct FlvCheck {
    seen: Vec<u8>,
    /// Whether `flvdemux` here reads H.265 (newer GStreamer does, in enhanced FLV).
    hevc_supported: bool,
}

impl FlvCheck {
    pub fn new(hevc_supported: bool) -> Self {
        Self {
            seen: Vec::new(),
            hevc_supported,
        }
    }

    /// The header's announced tracks, once its 9 bytes have arrived and it is FLV.
    pub fn header(&self) -> Option<FlvHeader> {
        let head = self.seen.get(..9)?;
        (&head[..3] == b"FLV").then_some(FlvHeader {
            audio: head[4] & 0x04 != 0,
            video: head[4] & 0x01 != 0,
        })
    }

    /// Takes the next bytes and says what is known so far.
    pub fn push(&mut self, bytes: &[u8]) -> FlvVerdict {
        let room = MAX_LOOK.saturating_sub(self.seen.len());
        self.seen.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let verdict = self.verdict();
        if verdict == FlvVerdict::Undecided && self.seen.len() >= MAX_LOOK {
            // No video tag so far: let flvdemux and the actor's timeouts judge.
            return FlvVerdict::Usable;
        }
        verdict
    }

    fn verdict(&self) -> FlvVerdict {
        let data = &self.seen;
        let start = &data[..data.len().min(3)];
        if !b"FLV".starts_with(start) {
            return FlvVerdict::NotFlv(describe_start(data));
        }
        if data.len() < 9 {
            return FlvVerdict::Undecided;
        }
        let header_size = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
        if !(9..=1024).contains(&header_size) {
            return FlvVerdict::NotFlv(format!("an FLV header of {header_size} bytes"));
        }
        // The header, then the first "previous tag size" (4 bytes), then tags.
        let mut at = header_size + 4;
        loop {
            let Some(tag) = data.get(at..at + 11) else {
                return FlvVerdict::Undecided;
            };
            let kind = tag[0] & 0x1f;
            let size = u32::from_be_bytes([0, tag[1], tag[2], tag[3]]) as usize;
            match kind {
                8 | 18 => {}
                9 => {
                    let Some(&first) = data.get(at + 11) else {
                        return FlvVerdict::Undecided;
                    };
                    return self.video_verdict(first, data.get(at + 12..at + 16));
                }
                other => return FlvVerdict::NotFlv(format!("an FLV tag of type {other}")),
            }
            at += 11 + size + 4;
        }
    }

    /// From a video tag's first byte (and the 4 after it, an enhanced tag's FourCC).
    fn video_verdict(&self, first: u8, fourcc: Option<&[u8]>) -> FlvVerdict {
        if first & 0x80 != 0 {
            // Enhanced FLV: a FourCC names the codec.
            let Some(fourcc) = fourcc else {
                return FlvVerdict::Undecided;
            };
            let name = String::from_utf8_lossy(fourcc).into_owned();
            return match fourcc {
                b"hvc1" if self.hevc_supported => FlvVerdict::Usable,
                b"hvc1" => FlvVerdict::UnsupportedCodec("H.265 (enhanced FLV)".into()),
                _ => FlvVerdict::UnsupportedCodec(format!("{name} (enhanced FLV)")),
            };
        }
        match first & 0x0f {
            7 => FlvVerdict::Usable,
            12 => FlvVerdict::UnsupportedCodec("H.265 (FLV codec id 12)".into()),
            2 => FlvVerdict::UnsupportedCodec("Sorenson H.263".into()),
            3 | 6 => FlvVerdict::UnsupportedCodec("Screen video".into()),
            4 | 5 => FlvVerdict::UnsupportedCodec("VP6".into()),
            other => FlvVerdict::UnsupportedCodec(format!("FLV video codec id {other}")),
        }
    }
}

/// A few words on what a stream that is not FLV starts with.
fn describe_start(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(&data[..data.len().min(16)]).to_ascii_lowercase();
    if text.starts_with("<!doctype") || text.starts_with("<html") {
        "an HTML page".into()
    } else if text.starts_with("{") {
        "a JSON answer".into()
    } else {
        let hex: Vec<String> = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u8) -> Vec<u8> {
        let mut h = b"FLV\x01".to_vec();
        h.push(flags);
        h.extend_from_slice(&9u32.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        h
    }

    fn tag(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        t.extend_from_slice(&[0; 7]);
        t.extend_from_slice(data);
        t.extend_from_slice(&(11 + data.len() as u32).to_be_bytes());
        t
    }

    /// Feeds `stream` whole and one byte at a time (the worst cut); both must agree.
    fn check(stream: &[u8], hevc_supported: bool, expected: FlvVerdict) {
        let mut whole = FlvCheck::new(hevc_supported);
        assert_eq!(whole.push(stream), expected, "whole");
        let mut bytewise = FlvCheck::new(hevc_supported);
        let mut last = FlvVerdict::Undecided;
        for b in stream {
            last = bytewise.push(&[*b]);
            if last != FlvVerdict::Undecided {
                break;
            }
        }
        // Garbage is told from its first byte, so its description may be shorter.
        match (&last, &expected) {
            (FlvVerdict::NotFlv(_), FlvVerdict::NotFlv(_)) => {}
            _ => assert_eq!(last, expected, "byte by byte"),
        }
    }

    #[test]
    fn h264_with_aac_is_usable_and_announces_both_tracks() {
        let mut stream = header(0x05);
        stream.extend(tag(18, b"\x02\x00\x0aonMetaData"));
        stream.extend(tag(8, &[0xaf, 0x00, 0x14, 0x08]));
        stream.extend(tag(9, &[0x17, 0x00, 0, 0, 0, 1, 0x64]));
        check(&stream, false, FlvVerdict::Usable);
        let mut c = FlvCheck::new(false);
        c.push(&stream[..9]);
        assert_eq!(
            c.header(),
            Some(FlvHeader {
                audio: true,
                video: true
            })
        );
        check(&stream[..stream.len() - 11], false, FlvVerdict::Undecided);
    }

    #[test]
    fn h265_is_refused_unless_flvdemux_reads_it() {
        let mut id12 = header(0x05);
        id12.extend(tag(9, &[0x1c, 0x00, 0, 0, 0]));
        check(
            &id12,
            false,
            FlvVerdict::UnsupportedCodec("H.265 (FLV codec id 12)".into()),
        );
        let mut enhanced = header(0x01);
        enhanced.extend(tag(9, &[0x90, b'h', b'v', b'c', b'1', 0x01]));
        check(
            &enhanced,
            false,
            FlvVerdict::UnsupportedCodec("H.265 (enhanced FLV)".into()),
        );
        check(&enhanced, true, FlvVerdict::Usable);
    }

    #[test]
    fn garbage_and_web_pages_are_not_flv() {
        check(
            b"\x8e\x01\xff\x00junk",
            false,
            FlvVerdict::NotFlv("bytes 8e 01 ff 00".into()),
        );
        check(
            b"<html><body>login",
            false,
            FlvVerdict::NotFlv("an HTML page".into()),
        );
        check(b"FL", false, FlvVerdict::Undecided);
        check(b"FLX", false, FlvVerdict::NotFlv("bytes 46 4c 58".into()));
        let mut bad_tag = header(0x05);
        bad_tag.extend(tag(0x33, b"xx"));
        check(
            &bad_tag,
            false,
            FlvVerdict::NotFlv("an FLV tag of type 19".into()),
        );
    }

    #[test]
    fn a_stream_without_video_tags_is_let_through_after_a_while() {
        let mut stream = header(0x04);
        while stream.len() < MAX_LOOK {
            stream.extend(tag(8, &[0xaf, 0x01, 0, 0, 0, 0, 0, 0]));
        }
        assert_eq!(FlvCheck::new(false).push(&stream), FlvVerdict::Usable);
    }
}

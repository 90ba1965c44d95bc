//! Why a camera's stream failed, sorted into the few kinds a user (and the retry schedule) can
//! act on, with a message that names the camera's URL redacted and never its password.

use std::fmt;
use std::time::Duration;

use crate::config::StreamProtocol;
use crate::secret::Redactor;

/// What went wrong, as far as what to do next goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// 401: the camera refused the user name or password.
    Unauthorized,
    /// 404: no stream at that path.
    NotFound,
    /// Nothing answered, the connection was refused or timed out.
    Unreachable,
    /// Something answered, but not with a usable RTSP stream.
    BadStream,
    /// The stream has no H.264 or H.265 video (the only video Vigil passes on).
    NoVideo,
    /// An FLV stream whose video Vigil cannot take from FLV (H.265 on Reolink's 8 MP models).
    UnsupportedCodec,
    /// Connected, but no frame came for the stall timeout.
    Stalled,
    /// The camera closed the stream.
    Ended,
}

impl FailureKind {
    /// True when retrying soon cannot help: someone must change the options or the camera.
    pub fn needs_a_change(self) -> bool {
        matches!(
            self,
            FailureKind::Unauthorized
                | FailureKind::NotFound
                | FailureKind::BadStream
                | FailureKind::NoVideo
                | FailureKind::UnsupportedCodec
        )
    }

    /// A short label for the status, the log and the API.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Unauthorized => "unauthorized (401)",
            FailureKind::NotFound => "not found (404)",
            FailureKind::Unreachable => "unreachable",
            FailureKind::BadStream => "bad stream",
            FailureKind::NoVideo => "no usable video",
            FailureKind::UnsupportedCodec => "unsupported codec in FLV",
            FailureKind::Stalled => "stalled",
            FailureKind::Ended => "stream ended",
        }
    }

    /// What the user can do about it, for a camera reached over `protocol`.
    fn advice(self, protocol: StreamProtocol) -> &'static str {
        let flv = protocol != StreamProtocol::Rtsp;
        match self {
            FailureKind::Unauthorized => "check the user name and password in the camera's url",
            FailureKind::NotFound => "check the path in the camera's url",
            FailureKind::Unreachable => "is the camera on, and is the host and port right?",
            FailureKind::BadStream if flv => {
                "is this the camera's FLV stream (and HTTP or RTMP on in its network settings)?"
            }
            FailureKind::BadStream => "is this an RTSP camera, and is the port its RTSP port?",
            FailureKind::UnsupportedCodec => {
                "use the camera's RTSP URL (8 MP and 4K models send H.265, which Vigil takes \
                 over RTSP only)"
            }
            FailureKind::NoVideo => "set the camera to send H.264 or H.265",
            FailureKind::Stalled | FailureKind::Ended => "retrying",
        }
    }
}

/// A failed attempt or session, its text already redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// The details (GStreamer's message and debug text), redacted.
    pub detail: String,
}

impl Failure {
    pub fn new(kind: FailureKind, detail: impl AsRef<str>, redactor: &Redactor) -> Self {
        Self {
            kind,
            detail: redactor.redact(detail.as_ref()),
        }
    }

    /// From a GStreamer error posted by the ingest pipeline.
    pub fn from_error(error: &gst::glib::Error, debug: Option<&str>, redactor: &Redactor) -> Self {
        let debug = debug.unwrap_or_default();
        // The debug text's last line is the useful one ("Unauthorized (401)",
        // "Could not receive message. (Parse error)"); the rest is source file and element path.
        let reason = debug.lines().last().unwrap_or_default().trim();
        let message = error.message().trim_end_matches('.');
        let detail = if reason.is_empty() || reason.eq_ignore_ascii_case(message) {
            message.to_string()
        } else {
            format!("{message}: {reason}")
        };
        Self::new(classify(error, debug), detail, redactor)
    }

    pub fn stalled(after: Duration) -> Self {
        Self {
            kind: FailureKind::Stalled,
            detail: format!("no video for {} s", after.as_secs()),
        }
    }

    /// The text shown as the camera's `reason`: the kind, the redacted URL, the details and what
    /// to do.
    pub fn reason(&self, redacted_url: &str) -> String {
        format!(
            "{} ({redacted_url}): {}; {}",
            self.kind.label(),
            self.detail,
            self.kind.advice(StreamProtocol::of_url(redacted_url))
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.detail)
    }
}

/// Sorts a GStreamer error from `rtspsrc` (or the elements after it) into a kind.
pub fn classify(error: &gst::glib::Error, debug: &str) -> FailureKind {
    let text = format!("{} {debug}", error.message()).to_ascii_lowercase();
    let mentions = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if let Some(resource) = error.kind::<gst::ResourceError>() {
        return match resource {
            gst::ResourceError::NotAuthorized => FailureKind::Unauthorized,
            gst::ResourceError::NotFound => FailureKind::NotFound,
            _ if mentions(&["(401)", "unauthorized"]) => FailureKind::Unauthorized,
            _ if mentions(&["(404)", "not found"]) => FailureKind::NotFound,
            _ if mentions(&["parse error", "invalid", "unsupported", "not implemented"]) => {
                FailureKind::BadStream
            }
            _ if mentions(&["eof", "end of file", "connection reset", "broken pipe"]) => {
                FailureKind::Ended
            }
            _ => FailureKind::Unreachable,
        };
    }
    if error.kind::<gst::StreamError>().is_some() || error.kind::<gst::CoreError>().is_some() {
        return FailureKind::BadStream;
    }
    // `rtmp2src` posts GIO's errors, with the server's answer in the text.
    if mentions(&[
        "(401)",
        "unauthorized",
        "connect.rejected",
        "authentication",
    ]) {
        return FailureKind::Unauthorized;
    }
    if mentions(&["(404)", "stream not found", "streamnotfound"]) {
        return FailureKind::NotFound;
    }
    if mentions(&["connection reset", "broken pipe", "end of stream", "eof"]) {
        return FailureKind::Ended;
    }
    FailureKind::Unreachable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        error: impl gst::glib::error::ErrorDomain,
        message: &str,
        debug: &str,
        want: FailureKind,
    ) {
        let error = gst::glib::Error::new(error, message);
        assert_eq!(classify(&error, debug), want, "{message} / {debug}");
    }

    /// The texts are what `rtspsrc` 1.22 posts against the fake camera.
    #[test]
    fn rtspsrc_errors_are_sorted() {
        use gst::ResourceError as R;
        let at =
            "../gst/rtsp/gstrtspsrc.c(6899): gst_rtspsrc_send (): /GstPipeline:p/GstRTSPSrc:s:\n";
        check(
            R::NotAuthorized,
            "Unauthorized",
            &format!("{at}Unauthorized (401)"),
            FailureKind::Unauthorized,
        );
        check(
            R::NotFound,
            "Not found",
            &format!("{at}Not Found (404)"),
            FailureKind::NotFound,
        );
        check(
            R::OpenReadWrite,
            "Could not open resource for reading and writing.",
            &format!("{at}Failed to connect. (Generic error)"),
            FailureKind::Unreachable,
        );
        check(
            R::Read,
            "Could not read from resource.",
            &format!("{at}Could not receive message. (Parse error)"),
            FailureKind::BadStream,
        );
        check(
            R::Read,
            "Could not read from resource.",
            &format!("{at}Could not receive message. (Timeout while waiting for server response)"),
            FailureKind::Unreachable,
        );
        check(
            gst::StreamError::Format,
            "Internal data stream error.",
            "",
            FailureKind::BadStream,
        );
    }

    /// The texts are what `rtmp2src` 1.22 and `souphttpsrc` post against the fake camera.
    #[test]
    fn flv_source_errors_are_sorted() {
        use gst::ResourceError as R;
        // `rtmp2src`'s errors are in GIO's domain, not GStreamer's (any other domain stands in
        // for it here): the text decides.
        let at = "../gst/rtmp2/gstrtmp2src.c(971): send_connect_error (): /GstPipeline:p/GstRtmp2Src:s:\n";
        check(
            gst::glib::FileError::Failed,
            "Failed to connect: 'play' cmd failed: onStatus: { \"level\": \"error\", \"code\": \
             \"NetStream.Play.Failed\", \"description\": \"Unauthorized (401)\" }",
            at,
            FailureKind::Unauthorized,
        );
        check(
            gst::glib::FileError::Noent,
            "Failed to connect: play denied; stream not found: { \"code\": \
             \"NetStream.Play.StreamNotFound\" }",
            at,
            FailureKind::NotFound,
        );
        check(
            gst::glib::FileError::Failed,
            "Connection refused: Could not connect to 127.0.0.1: Connection refused",
            at,
            FailureKind::Unreachable,
        );
        let soup = "../ext/soup/gstsouphttpsrc.c(1453): gst_soup_http_src_parse_status (): \
                    /GstPipeline:p/GstSoupHTTPSrc:s:\n";
        check(
            R::NotAuthorized,
            "Unauthorized",
            &format!("{soup}Unauthorized (401), URL: http://cam/flv?user=***&password=***"),
            FailureKind::Unauthorized,
        );
        check(
            R::NotFound,
            "Not Found",
            &format!("{soup}Not Found (404), URL: http://cam/x"),
            FailureKind::NotFound,
        );
        check(
            R::OpenRead,
            "Could not establish connection to server.",
            &format!("{soup}Could not connect: Connection refused"),
            FailureKind::Unreachable,
        );
    }

    #[test]
    fn an_unsupported_flv_codec_says_to_use_rtsp() {
        let failure = Failure {
            kind: FailureKind::UnsupportedCodec,
            detail: "the camera's FLV video is H.265 (FLV codec id 12)".into(),
        };
        let reason = failure.reason("http://cam/flv?user=***&password=***");
        assert!(
            reason.starts_with("unsupported codec in FLV (http://cam/flv"),
            "{reason}"
        );
        assert!(reason.contains("use the camera's RTSP URL"), "{reason}");
        assert!(FailureKind::UnsupportedCodec.needs_a_change());
        let garbage = Failure {
            kind: FailureKind::BadStream,
            detail: "the camera sent bytes 8e 01 ff 00, not an FLV stream".into(),
        };
        assert!(garbage.reason("rtmp://cam/bcs/x").contains("FLV stream"));
        assert!(garbage.reason("rtsp://cam/x").contains("RTSP port"));
    }

    #[test]
    fn details_are_redacted_and_reasons_name_the_kind_and_url() {
        let mut redactor = Redactor::new();
        redactor.add("Sup3rS3cret");
        let error = gst::glib::Error::new(gst::ResourceError::NotAuthorized, "Unauthorized");
        let failure = Failure::from_error(
            &error,
            Some("gstrtspsrc.c(1): f (): rtsp://admin:Sup3rS3cret@cam/x\nUnauthorized (401)"),
            &redactor,
        );
        assert_eq!(failure.kind, FailureKind::Unauthorized);
        let reason = failure.reason("rtsp://admin:***@cam/x");
        assert!(
            reason.starts_with("unauthorized (401) (rtsp://admin:***@cam/x)"),
            "{reason}"
        );
        assert!(!reason.contains("Sup3rS3cret"), "{reason}");
        assert!(reason.contains("password"), "{reason}");
    }
}

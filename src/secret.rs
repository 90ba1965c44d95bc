//! Secrets and redaction: the one place that decides what a password looks like in output.
//!
//! Camera passwords, MQTT passwords and tokens are held in [`Secret`], whose `Debug` and `Display`
//! never show the value. URLs are shown through [`redact_url`]; free text that may quote a URL or a
//! password (a GStreamer error, a broker's reply) goes through [`Redactor::redact`] before it is
//! logged or stored in a status. Nothing in this module logs.

use std::fmt;

/// What a redacted secret is shown as.
pub const MASK: &str = "***";

/// A value that must never reach a log, an error, an API answer or a page.
///
/// `Debug`, `Display` and `Serialize` print [`MASK`]; the value is read only through
/// [`Secret::expose`], so every use is easy to find.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Only the code that hands it to a peer (camera, broker) calls this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

/// Words that make a query key a credential: Reolink (`user=`, `password=`), Dahua and others
/// put the login in the query string, and tokens or API keys travel there too. A key is secret
/// when it contains one of these (`password`, `Pwd`, `access_token`, `api_key`, `username`).
const SECRET_QUERY_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "token",
    "secret",
    "key",
    "auth",
    "signature",
    "user",
    "login",
];

/// Whether the value of the query key `key` is a credential (the user name too: in a query it
/// is half of the login, and it is not needed to find a mistake in the URL).
pub fn is_secret_query_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    matches!(key.as_str(), "u" | "p" | "usr" | "uid")
        || SECRET_QUERY_WORDS.iter().any(|word| key.contains(word))
}

/// A URL fit for a log line: the password in the user info and credential-like query values
/// (see [`is_secret_query_key`]) are replaced by [`MASK`]; the user name in the user info, the
/// host, port, path and other query values stay, since they help find a mistake.
///
/// Text that does not parse as a URL is returned with anything between `://` and the last `@`
/// before the host masked, so a malformed URL with a password is still safe to print.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.has_host() => {
            if url.password().is_some() {
                let _ = url.set_password(Some(MASK));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_query_key(&k) {
                            MASK.to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            // `Url` percent-encodes the mask; show it as typed.
            url.to_string().replace("%2A%2A%2A", MASK)
        }
        _ => redact_userinfo_text(raw),
    }
}

/// Masks `user:password@` and credential-like query values in text that is not a well-formed
/// URL.
fn redact_userinfo_text(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        return raw.to_string();
    };
    let raw = &redact_query_text(raw);
    let rest = &raw[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{}{}:{}{}",
                &raw[..scheme_end + 3],
                user,
                MASK,
                &raw[scheme_end + 3 + at..]
            )
        }
        None => raw.to_string(),
    }
}

/// Masks the values of credential-like keys in the query part (after the first `?`) of text
/// that is not a well-formed URL, keeping everything else as it was.
fn redact_query_text(raw: &str) -> String {
    let Some(question) = raw.find('?') else {
        return raw.to_string();
    };
    let (head, query) = raw.split_at(question + 1);
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_query_key(key) => format!("{key}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}{}", pairs.join("&"))
}

/// Removes known secrets from free text: error messages from GStreamer or a broker may quote the
/// URL they were given, with its password, or the password alone.
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.needles.len())
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a secret, in plain and percent-encoded form (URLs carry the encoded one).
    pub fn add(&mut self, secret: &str) {
        // Very short secrets would turn ordinary words into masks; they are still masked inside
        // URLs by `redact_url`.
        if secret.len() < 3 {
            return;
        }
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let percent = secret
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>();
        for needle in [secret.to_string(), encoded, percent] {
            if !self.needles.contains(&needle) {
                self.needles.push(needle);
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    /// Adds the password (and credential-like query values) of a URL.
    pub fn add_url(&mut self, raw: &str) {
        if let Ok(url) = url::Url::parse(raw) {
            if let Some(password) = url.password() {
                let decoded = percent_decode(password);
                self.add(&decoded);
                self.add(password);
            }
            for (k, v) in url.query_pairs() {
                if is_secret_query_key(&k) {
                    self.add(&v);
                }
            }
        }
    }

    /// The text with every URL redacted and every known secret masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_urls_in_text(text);
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), MASK);
            }
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// Applies [`redact_url`] to every `scheme://…` token in free text.
fn redact_urls_in_text(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    for (i, token) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if token.contains("://") {
            // Keep quotes and punctuation around the URL as they were.
            let start = token.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0);
            let end = token
                .rfind(|c: char| !matches!(c, '"' | '\'' | ')' | ',' | '.' | ';' | '>' | ']'))
                .map(|e| e + 1)
                .unwrap_or(token.len());
            if start < end {
                out.push_str(&token[..start]);
                out.push_str(&redact_url(&token[start..end]));
                out.push_str(&token[end..]);
                continue;
            }
        }
        out.push_str(token);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(redact_url(input), expected, "redact_url({input:?})");
    }

    #[test]
    fn urls_lose_their_passwords_only() {
        check(
            "rtsp://admin:hunter22@192.168.1.20:554/stream1",
            "rtsp://admin:***@192.168.1.20:554/stream1",
        );
        check("rtsp://192.168.1.20/stream1", "rtsp://192.168.1.20/stream1");
        check("rtsp://admin@cam/s", "rtsp://admin@cam/s");
        check(
            "rtsp://cam/h264Preview_01_main?user=admin&password=s3cret",
            "rtsp://cam/h264Preview_01_main?user=***&password=***",
        );
        check("rtsps://u:p%40ss@cam:322/x", "rtsps://u:***@cam:322/x");
    }

    #[test]
    fn malformed_urls_are_still_masked() {
        check("rtsp://admin:pa ss@[bad/x", "rtsp://admin:***@[bad/x");
        check("not a url", "not a url");
        check(
            "http://[bad/flv?app=bcs&user=admin&password=s3cret",
            "http://[bad/flv?app=bcs&user=***&password=***",
        );
        check(
            "location=http://cam/flv?user=admin&password=s3cret",
            "location=http://cam/flv?user=***&password=***",
        );
    }

    /// Reolink's HTTP-FLV and RTMP URLs carry the login in the query string.
    #[test]
    fn query_credentials_are_masked() {
        check(
            "http://192.168.1.30/flv?port=1935&app=bcs&stream=channel0_main.bcs&user=admin&password=s3cret",
            "http://192.168.1.30/flv?port=1935&app=bcs&stream=channel0_main.bcs&user=***&password=***",
        );
        check(
            "rtmp://192.168.1.30/bcs/channel0_main.bcs?channel=0&stream=0&user=admin&password=s3cret",
            "rtmp://192.168.1.30/bcs/channel0_main.bcs?channel=0&stream=0&user=***&password=***",
        );
        check(
            "https://cam/x?Username=a&PWD=b&access_token=c&api_key=d&passwd=e&keep=f",
            "https://cam/x?Username=***&PWD=***&access_token=***&api_key=***&passwd=***&keep=f",
        );
        for key in [
            "user", "username", "password", "pass", "pwd", "token", "key", "apikey",
        ] {
            assert!(is_secret_query_key(key), "{key}");
        }
        for key in ["port", "app", "stream", "channel", "subtype", "resolution"] {
            assert!(!is_secret_query_key(key), "{key}");
        }
    }

    #[test]
    fn redactor_masks_query_credentials_in_free_text() {
        let mut r = Redactor::new();
        r.add_url("http://cam:8080/flv?app=bcs&stream=channel0_main.bcs&user=camuser&password=p%26ss%3Dw0rd");
        let text = "Unauthorized: GET /flv?app=bcs&user=camuser&password=p%26ss%3Dw0rd failed; \
                    could not read 'http://cam:8080/flv?app=bcs&user=camuser&password=p%26ss%3Dw0rd', \
                    password p&ss=w0rd";
        let out = r.redact(text);
        assert!(!out.contains("w0rd"), "{out}");
        assert!(!out.contains("camuser"), "{out}");
        assert!(
            out.contains("'http://cam:8080/flv?app=bcs&user=***&password=***'"),
            "{out}"
        );
    }

    #[test]
    fn redactor_masks_secrets_in_free_text() {
        let mut r = Redactor::new();
        r.add_url("rtsp://admin:p@ss w0rd@cam/x");
        r.add_url("rtsp://admin:p%40ss%20w0rd@cam/x");
        let text = "Could not open rtsp://admin:p%40ss%20w0rd@cam/x: auth failed for p@ss w0rd";
        let out = r.redact(text);
        assert!(!out.contains("w0rd"), "{out}");
        assert!(out.contains("rtsp://admin:***@cam/x"), "{out}");
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter22");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter22");
    }
}

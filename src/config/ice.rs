//! STUN and TURN servers for WebRTC in one shape, whether they come from the options
//! (`webrtc_ice_servers`) or from a WebRTC offer (Home Assistant passes its own, including Home
//! Assistant Cloud's TURN servers).
//!
//! Parses the URL forms of RFC 7064/7065 (`stun:host[:port]`, `turn:host[:port][?transport=udp]`,
//! `turns:`) and writes the form webrtcbin wants. The credential is a [`Secret`]: it prints as
//! `***` and is exposed only in [`IceServer::to_webrtcbin_uri`].

use std::fmt;

use crate::secret::Secret;

/// What kind of ICE server a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IceKind {
    /// A STUN server: tells a peer its public address.
    Stun,
    /// A TURN relay over UDP or TCP.
    Turn,
    /// A TURN relay over TLS.
    Turns,
}

/// One STUN or TURN server, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    pub kind: IceKind,
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `udp` or `tcp` for TURN, if the URL says.
    pub transport: Option<String>,
    pub username: Option<String>,
    pub credential: Option<Secret>,
}

const ALLOWED: &str = "use stun:host[:port], turn:host[:port][?transport=udp|tcp] or \
                       turns:host[:port]";

impl IceServer {
    /// Parses one server URL with its optional login. TURN servers need both `username` and
    /// `credential`.
    pub fn parse(
        url: &str,
        username: Option<&str>,
        credential: Option<&str>,
    ) -> Result<IceServer, String> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| format!("'{url}' has no scheme; {ALLOWED}"))?;
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "stun" => IceKind::Stun,
            "turn" => IceKind::Turn,
            "turns" => IceKind::Turns,
            "stuns" => {
                return Err(format!(
                    "'{url}': STUN over TLS is not supported by Vigil's WebRTC stack; use \
                     stun:host[:port]"
                ));
            }
            other => return Err(format!("'{url}' is a {other}: URL; {ALLOWED}")),
        };
        // Tolerate the `stun://host` spelling some tools write.
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (address, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let (host, port) = split_host_port(address).ok_or_else(|| {
            format!("'{url}' needs a host and, optionally, a port from 1 to 65535; {ALLOWED}")
        })?;
        let default_port = if kind == IceKind::Turns { 5349 } else { 3478 };
        let mut transport = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("transport", t)) if kind != IceKind::Stun && matches!(t, "udp" | "tcp") => {
                    transport = Some(t.to_string());
                }
                _ => {
                    return Err(format!(
                        "'{url}': unknown parameter '{pair}'; only TURN URLs take \
                         ?transport=udp or ?transport=tcp"
                    ));
                }
            }
        }
        let username = username.filter(|u| !u.is_empty()).map(str::to_string);
        let credential = credential.filter(|c| !c.is_empty()).map(Secret::new);
        if kind != IceKind::Stun && (username.is_none() || credential.is_none()) {
            return Err(format!(
                "'{url}' is a TURN server: it needs a username and a credential"
            ));
        }
        Ok(IceServer {
            kind,
            host: host.to_string(),
            port: port.unwrap_or(default_port),
            transport,
            username,
            credential,
        })
    }

    /// The URI webrtcbin's `stun-server` property or `add-turn-server` signal takes, with the
    /// login percent-encoded (TURN usernames often hold a `:`). Carries the credential: hand it
    /// to webrtcbin only, never log it.
    pub fn to_webrtcbin_uri(&self) -> String {
        let scheme = match self.kind {
            IceKind::Stun => "stun",
            IceKind::Turn => "turn",
            IceKind::Turns => "turns",
        };
        let login = match (&self.username, &self.credential) {
            (Some(user), Some(pass)) if self.kind != IceKind::Stun => format!(
                "{}:{}@",
                encode_userinfo(user),
                encode_userinfo(pass.expose())
            ),
            _ => String::new(),
        };
        let transport = self
            .transport
            .as_ref()
            .map(|t| format!("?transport={t}"))
            .unwrap_or_default();
        format!(
            "{scheme}://{login}{}:{}{transport}",
            bracket_ipv6(&self.host),
            self.port
        )
    }
}

/// Shows the server as a URL without its credential.
impl fmt::Display for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            IceKind::Stun => "stun",
            IceKind::Turn => "turn",
            IceKind::Turns => "turns",
        };
        write!(f, "{scheme}:{}:{}", bracket_ipv6(&self.host), self.port)?;
        if let Some(t) = &self.transport {
            write!(f, "?transport={t}")?;
        }
        if let Some(user) = &self.username {
            write!(f, " (user {user}, credential ***)")?;
        }
        Ok(())
    }
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IceServer({self})")
    }
}

impl serde::Serialize for IceServer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(address: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(v6) = address.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match address.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (address, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !valid_host {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
    };
    Some((host, port))
}

fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), as a URI's userinfo needs.
fn encode_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, user: Option<&str>, pass: Option<&str>, expected: Result<&str, &str>) {
        let got = IceServer::parse(url, user, pass).map(|s| s.to_webrtcbin_uri());
        match (got, expected) {
            (Ok(uri), Ok(want)) => assert_eq!(uri, want, "{url}"),
            (Err(message), Err(words)) => {
                assert!(
                    message.contains(words),
                    "{url}: {message:?} lacks {words:?}"
                )
            }
            (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn urls_become_webrtcbin_uris() {
        check(
            "stun:stun.example.com",
            None,
            None,
            Ok("stun://stun.example.com:3478"),
        );
        check(
            "stun:127.0.0.1:3479",
            None,
            None,
            Ok("stun://127.0.0.1:3479"),
        );
        check("stun:[::1]:3479", None, None, Ok("stun://[::1]:3479"));
        check(
            "turn:turn.example.com?transport=tcp",
            Some("1700000000:ha"),
            Some("p@ss/w:rd"),
            Ok("turn://1700000000%3Aha:p%40ss%2Fw%3Ard@turn.example.com:3478?transport=tcp"),
        );
        check(
            "turns:relay.example.com:443",
            Some("u"),
            Some("p"),
            Ok("turns://u:p@relay.example.com:443"),
        );
    }

    #[test]
    fn bad_urls_say_what_is_allowed() {
        check("http://x", None, None, Err("turn:host"));
        check("stun:", None, None, Err("needs a host"));
        check("stun:host:99999", None, None, Err("1 to 65535"));
        check("turn:host", None, None, Err("username and a credential"));
        check("stun:host?transport=udp", None, None, Err("only TURN"));
        check("stuns:host", None, None, Err("not supported"));
        check("example.com", None, None, Err("no scheme"));
    }

    #[test]
    fn display_hides_the_credential() {
        let server = IceServer::parse("turn:t.example.com", Some("u"), Some("s3cret")).unwrap();
        let shown = format!("{server} {server:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("turn:t.example.com:3478"), "{shown}");
    }
}

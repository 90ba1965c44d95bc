//! Who may use the API port: optional HTTP Basic authentication (`api_username` and
//! `api_password`, as Home Assistant's go2rtc integration sends them), and for WebSockets the
//! same-origin check go2rtc makes, so that a web page elsewhere cannot open a camera through a
//! visitor's browser.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::config::Credentials;

/// The credentials a port asks for (`None` = open), and the options that set them, for the
/// refusal's sentence.
#[derive(Clone, Debug)]
pub struct ApiAuth {
    pub credentials: Option<Credentials>,
    /// Such as "api_username and api_password".
    pub options: &'static str,
}

/// Middleware: lets a request through when the API is open or its Basic credentials match.
pub async fn require_basic(
    State(ApiAuth {
        credentials,
        options,
    }): State<ApiAuth>,
    request: Request,
    next: Next,
) -> Response {
    let Some(credentials) = credentials else {
        return next.run(request).await;
    };
    if basic_matches(request.headers(), &credentials) {
        return next.run(request).await;
    }
    tracing::debug!(path = %request.uri().path(), "API request refused: wrong or no credentials");
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"Vigil\", charset=\"UTF-8\"",
        )],
        format!("This port needs the user name and password set as {options}.\n"),
    )
        .into_response()
}

fn basic_matches(headers: &HeaderMap, credentials: &Credentials) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    basic_credentials_match(encoded, credentials)
}

/// True when `encoded` (the base64 part of an HTTP Basic `Authorization` header, as RTSP sends
/// it too) is `credentials`.
pub fn basic_credentials_match(encoded: &str, credentials: &Credentials) -> bool {
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{}:{}", credentials.username, credentials.password.expose());
    constant_time_eq(&decoded, expected.as_bytes())
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when a WebSocket request comes from a page of the same host (any port), or from a
/// client that sends no `Origin` (Home Assistant core, players, scripts).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Ok(origin) = url::Url::parse(origin) else {
        return false;
    };
    // `host_str` keeps IPv6 brackets, as the Host header does.
    let origin_host = origin.host_str().unwrap_or_default();
    origin_host.eq_ignore_ascii_case(strip_port(host))
}

/// `name:port` → `name`, `[v6]:port` → `[v6]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(k.clone(), v.parse().unwrap());
        }
        map
    }

    #[test]
    fn basic_credentials() {
        let creds = Credentials {
            username: "ha".into(),
            password: Secret::new("pw:with:colons"),
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode("ha:pw:with:colons");
        let good = headers(&[(header::AUTHORIZATION, &format!("Basic {encoded}"))]);
        assert!(basic_matches(&good, &creds));
        let wrong = base64::engine::general_purpose::STANDARD.encode("ha:nope");
        assert!(!basic_matches(
            &headers(&[(header::AUTHORIZATION, &format!("Basic {wrong}"))]),
            &creds
        ));
        assert!(!basic_matches(&headers(&[]), &creds));
        assert!(!basic_matches(
            &headers(&[(header::AUTHORIZATION, "Bearer x")]),
            &creds
        ));
    }

    #[test]
    fn websocket_origins() {
        let check = |origin: Option<&str>, host: &str, expected: bool| {
            let mut pairs = vec![(header::HOST, host)];
            if let Some(o) = origin {
                pairs.push((header::ORIGIN, o));
            }
            assert_eq!(same_origin(&headers(&pairs)), expected, "{origin:?} {host}");
        };
        check(None, "127.0.0.1:1984", true);
        check(Some("http://127.0.0.1:8123"), "127.0.0.1:1984", true);
        check(
            Some("http://homeassistant.local"),
            "homeassistant.local:1984",
            true,
        );
        check(Some("https://evil.example"), "127.0.0.1:1984", false);
        check(Some("http://[::1]:8123"), "[::1]:1984", true);
    }
}

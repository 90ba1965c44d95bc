//! Where the API listens. Inside Home Assistant `api_port` is for Home Assistant itself (its
//! go2rtc integration, the Generic Camera's still image, the camera proxy) and the add-ons
//! beside it, never the home network; players on the LAN (VLC, IP Cam Viewer) get the same API
//! on `lan_port`, off unless set, with credentials of its own.
//!
//! Home Assistant core runs on the host's network, as this add-on does, so it reaches the API
//! on loopback; other add-ons reach a host-network add-on on the Supervisor network's gateway
//! 172.30.32.1 (the Supervisor's `ip_address` of a host-network container).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::net::TcpListener;

use super::bind_on;
use crate::config::{ApiExposure, IpNet, SUPERVISOR_GATEWAY, SUPERVISOR_NETWORK};

/// The listeners of `api_port`: every interface standalone; in the add-on loopback (IPv4
/// required, IPv6 when the host has it) and the Supervisor's gateway when the host has it.
pub async fn bind_api(exposure: ApiExposure, port: u16) -> anyhow::Result<Vec<TcpListener>> {
    if exposure == ApiExposure::Everywhere {
        return Ok(vec![super::bind("api_port", port).await?]);
    }
    let mut listeners = vec![bind_on("api_port", IpAddr::V4(Ipv4Addr::LOCALHOST), port).await?];
    for ip in [IpAddr::V6(Ipv6Addr::LOCALHOST), SUPERVISOR_GATEWAY] {
        match TcpListener::bind((ip, port)).await {
            Ok(listener) => listeners.push(listener),
            // This host has no such address (no IPv6, or no Supervisor network).
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                tracing::debug!(%ip, "api_port not bound on {ip}: the host has no such address");
            }
            Err(e) => return Err(super::port_error("api_port", port, &e)),
        }
    }
    Ok(listeners)
}

/// The peers `api_port` serves: anyone standalone; in the add-on loopback and the Supervisor
/// network (a second line behind the binding, for a LAN that routes to 172.30.32.1).
pub fn api_peers(exposure: ApiExposure) -> Vec<IpNet> {
    match exposure {
        ApiExposure::Everywhere => Vec::new(),
        ApiExposure::Internal => vec![
            IpNet {
                addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                prefix: 8,
            },
            IpNet::host(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            SUPERVISOR_NETWORK,
        ],
    }
}

/// The listener of `lan_port` (every interface), when set.
pub async fn bind_lan(port: Option<u16>) -> anyhow::Result<Option<TcpListener>> {
    match port {
        Some(port) => Ok(Some(super::bind("lan_port", port).await?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internal_api_serves_home_assistant_and_add_ons_only() {
        let peers = api_peers(ApiExposure::Internal);
        let allowed = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            peers.iter().any(|net| net.contains(ip))
        };
        for ip in [
            "127.0.0.1",
            "::1",
            "172.30.32.1",
            "172.30.33.7",
            "::ffff:127.0.0.1",
        ] {
            assert!(allowed(ip), "{ip} refused");
        }
        for ip in ["192.168.1.20", "10.0.0.5", "172.30.34.1", "fe80::1"] {
            assert!(!allowed(ip), "{ip} allowed");
        }
        assert!(api_peers(ApiExposure::Everywhere).is_empty());
    }
}

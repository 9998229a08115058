//! Who asks, and whom they ask: the client's address (the login throttle's key), taken from a
//! forwarded header only when a configured proxy sent it; and the Host a request names, refused
//! unless this server serves it (DNS rebinding: a page of `evil.example` whose name now
//! resolves to 127.0.0.1 must not read the API with the browser's help).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, Settings};

/// The local address of the connection a request came on (set by [`super::serve`]).
#[derive(Clone, Copy, Debug)]
pub struct ServedAt(pub SocketAddr);

/// The address a request came from: the socket's peer; or, when the peer is a trusted proxy,
/// the rightmost address of `X-Forwarded-For` that is not a trusted proxy (the one the first
/// trusted proxy saw: what is left of it the client may have written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The address of a request without a socket (an in-process caller, as tests drive the
    /// router with `oneshot`).
    pub const IN_PROCESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    /// The client of a request from `peer` with `headers`, trusting `X-Forwarded-For` only
    /// from `trusted` proxies. A malformed hop ends the walk at the proxy that passed it on.
    /// Hops are split from the header's bytes: a byte outside ASCII (obs-text, which hyper
    /// accepts) in the client's own part spoils that hop only, not the line the proxy
    /// appended its hop to.
    pub fn of(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> Self {
        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            return ClientAddr(Self::IN_PROCESS);
        };
        let mut client = peer;
        if !trusted.contains(&client) {
            return ClientAddr(client);
        }
        let hops: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
            .map(<[u8]>::trim_ascii)
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(address) = parse_hop(hop) else {
                break;
            };
            client = address;
            if !trusted.contains(&client) {
                break;
            }
        }
        ClientAddr(client)
    }
}

/// A client's network, as the per-client limits (the login throttle, connections) key it: an
/// IPv6 client by its /64, which one subscriber usually holds whole (its other addresses are
/// free to it); an IPv4-mapped address as IPv4.
pub fn network_of(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// One `X-Forwarded-For` hop: an address, with or without a port.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?;
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        Ok(ClientAddr::of(
            peer,
            &parts.headers,
            &state.settings.trusted_proxies,
        ))
    }
}

/// Whether `host` (a Host header, or a request target's authority) is served on a
/// connection to `served_at`: that address, `localhost`, `127.0.0.1` or `[::1]` with its port
/// (no port meaning 80), or a name of `allowed` (`name` for any port, `name:port`).
pub fn host_served(host: &str, served_at: SocketAddr, allowed: &[String]) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = split_host(&host);
    let local = match served_at.ip().to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let own = ["localhost", "127.0.0.1", "[::1]", local.as_str()];
    if own.contains(&name) && port.unwrap_or(80) == served_at.port() {
        return true;
    }
    allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let (allowed_name, allowed_port) = split_host(&entry);
        allowed_name == name && (allowed_port.is_none() || allowed_port == port)
    })
}

/// `name[:port]` (an IPv6 name in brackets); a port that does not parse is kept as none of
/// ours (`Some(0)`).
fn split_host(host: &str) -> (&str, Option<u16>) {
    let (name, port) = match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && (host.starts_with('[') || !host[..i].contains(':')) =>
        {
            (&host[..i], Some(&host[i + 1..]))
        }
        _ => (host, None),
    };
    (name, port.map(|p| p.parse().unwrap_or(0)))
}

/// Refuses (421) a request whose Host this server does not serve, and (400, RFC 9112 §3.2)
/// one with two Host headers or an HTTP/1.1 request without one: a proxy in front that routes
/// on another Host than the one checked here would disagree with the check. Requests without a
/// socket (in-process callers) and HTTP/1.0 without a Host pass.
pub(crate) async fn check_host(
    State(settings): State<Arc<Settings>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(ServedAt(served_at)) = req.extensions().get::<ServedAt>().copied() {
        let hosts = req.headers().get_all(header::HOST).iter().count();
        if hosts > 1 || (hosts == 0 && req.version() >= Version::HTTP_11) {
            return ApiError::BadRequest(
                "A request names its host in exactly one Host header (RFC 9112 §3.2)".into(),
            )
            .into_response();
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            });
        if let Some(host) = host
            && !host_served(&host, served_at, &settings.allowed_hosts)
        {
            tracing::info!(target: "medchain::http", host = ?host, "request for a host not served");
            return ApiError::Refused {
                status: StatusCode::MISDIRECTED_REQUEST,
                message: "This server does not serve that host name (see --allowed-host)".into(),
            }
            .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_forwarded_header_counts_only_from_a_trusted_proxy() {
        let proxy = ip("10.0.0.1");
        let forged = headers(&["203.0.113.9"]);
        // From an untrusted peer, the header is the client's own words: ignored.
        assert_eq!(
            ClientAddr::of(Some(ip("198.51.100.7")), &forged, &[proxy]).0,
            ip("198.51.100.7")
        );
        // From the proxy: the rightmost hop that is not a trusted proxy.
        let chain = headers(&["1.1.1.1, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(
            ClientAddr::of(Some(proxy), &chain, &[proxy, ip("10.0.0.2")]).0,
            ip("203.0.113.9")
        );
        assert_eq!(
            ClientAddr::of(Some(proxy), &chain, &[proxy]).0,
            ip("10.0.0.2")
        );
        // A hop with a port, and an IPv4-mapped peer.
        assert_eq!(
            ClientAddr::of(
                Some(ip("::ffff:10.0.0.1")),
                &headers(&["[2001:db8::1]:443"]),
                &[proxy]
            )
            .0,
            ip("2001:db8::1")
        );
        // A byte outside ASCII spoils only its own hop: the proxy's hop after it counts.
        let mut obs_text = HeaderMap::new();
        obs_text.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xff, 203.0.113.9").unwrap(),
        );
        assert_eq!(
            ClientAddr::of(Some(proxy), &obs_text, &[proxy]).0,
            ip("203.0.113.9")
        );
        // Garbage stops the walk at the proxy that passed it on; no header: the proxy.
        assert_eq!(
            ClientAddr::of(Some(proxy), &headers(&["203.0.113.9, junk"]), &[proxy]).0,
            proxy
        );
        assert_eq!(
            ClientAddr::of(Some(proxy), &HeaderMap::new(), &[proxy]).0,
            proxy
        );
        assert_eq!(
            ClientAddr::of(None, &forged, &[proxy]).0,
            ClientAddr::IN_PROCESS
        );
    }

    #[test]
    fn hosts_served_are_the_own_address_loopback_names_and_the_allowed() {
        let at: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "LOCALHOST:5000",
            "[::1]:5000",
        ] {
            assert!(host_served(host, at, &[]), "{host}");
        }
        for host in [
            "evil.example:5000",
            "127.0.0.1:5001",
            "127.0.0.1",
            "localhost:x",
            "127.0.0.1:5000.evil.example",
            "",
        ] {
            assert!(!host_served(host, at, &[]), "{host}");
        }
        let allowed = ["medchain.example.org".to_string(), "b.example:8443".into()];
        assert!(host_served("medchain.example.org", at, &allowed));
        assert!(host_served("Medchain.Example.org:443", at, &allowed));
        assert!(host_served("b.example:8443", at, &allowed));
        assert!(!host_served("b.example:443", at, &allowed));
        assert!(!host_served("example.org", at, &allowed));
        let v6: SocketAddr = "[2001:db8::5]:80".parse().unwrap();
        assert!(host_served("[2001:db8::5]", v6, &[]));
        assert!(host_served("[2001:db8::5]:80", v6, &[]));
        assert!(!host_served("[2001:db8::6]", v6, &[]));
    }
}

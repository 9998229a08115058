//! HTTP/1.1 by hand over a socket, for the tests of what a client does to a connection: send
//! part of a request and stop, keep a connection idle, come from another address.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One answer read off a socket.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The head, header names lower-cased.
    pub head: String,
    /// The JSON body (`Null` if empty, a string if not JSON).
    pub body: Value,
}

impl Answer {
    /// The value of header `name` (lower case), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim() == name).then(|| v.trim().to_string())
        })
    }

    /// Asserts the API's error shape: `status`, JSON, `success: false`, a message.
    pub fn assert_json_refusal(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json"),
            "{self:?}"
        );
        assert_eq!(self.body["success"], false, "{self:?}");
        assert!(self.body["message"].is_string(), "{self:?}");
    }
}

/// A connection to `addr` from the loopback address `source` (any of 127.0.0.0/8 on Linux).
pub async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// A connection from `from` in the middle of a request's head (the server waits for the
/// rest until the header timeout; at the cap it is busy, never asked to make room).
pub async fn mid_request(from: &str, addr: SocketAddr) -> TcpStream {
    let mut stream = connect_from(from, addr).await;
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .unwrap();
    stream
}

/// The bytes of a request to `addr` with `headers` (and a JSON `body`), kept alive.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Vec<u8> {
    super::seed::request_bytes(addr, method, path, headers, body, false)
}

/// Reads one answer (its body by `Content-Length`), at most `within`. `None` if the
/// connection closed first, or nothing whole came in time.
pub async fn read_answer(stream: &mut TcpStream, within: Duration) -> Option<Answer> {
    tokio::time::timeout(within, read_one(stream))
        .await
        .ok()
        .flatten()
}

async fn read_one(stream: &mut TcpStream) -> Option<Answer> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(Some(0), |v| v.trim().parse().ok())?;
    let mut body = raw[split + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
    };
    Some(Answer { status, head, body })
}

/// Whether the server closed `stream` within `within` (reading nothing more, or the rest of
/// an answer first).
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// One request on a new connection from `source`: its answer.
pub async fn exchange_from(
    source: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Answer {
    let mut stream = connect_from(source, addr).await;
    stream
        .write_all(&request(addr, method, path, headers, body))
        .await
        .unwrap();
    read_answer(&mut stream, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no answer to {method} {path}"))
}

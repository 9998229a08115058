//! A client of the HTTP API as a hospital's front end is one: HTTP/1.1 on a kept-alive
//! connection, JSON bodies, and the cookies the server sets sent back (the session cookie, and
//! the device cookie of `/api/login`), as a browser keeps them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The largest answer read (the bench's answers are a few hundred bytes).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// One kept-alive connection to one hospital's API, with its cookie jar.
pub struct Connection {
    sender: SendRequest<Body>,
    addr: SocketAddr,
    /// Cookies by name, as the server set them (no expiry kept: the bench's sessions outlive
    /// its runs).
    cookies: BTreeMap<String, String>,
}

impl Connection {
    /// Opens a connection to the API at `addr`.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when either side closes: the bench's connections live as long as the run.
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            addr,
            cookies: BTreeMap::new(),
        })
    }

    /// Another connection to the same API with the same cookies: a second tab of a browser.
    pub async fn another(&self) -> anyhow::Result<Connection> {
        let mut connection = Connection::open(self.addr).await?;
        connection.cookies = self.cookies.clone();
        Ok(connection)
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Sends a request and reads its JSON answer (`Null` if the body is not JSON), keeping
    /// the cookies it sets.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            request = request.header(header::COOKIE, jar.join("; "));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(body)?))?,
            None => request.body(Body::empty())?,
        };
        if self.sender.is_closed() {
            // The server closed it (idle too long, or at its cap): a browser opens another.
            let cookies = std::mem::take(&mut self.cookies);
            *self = Connection::open(self.addr).await?;
            self.cookies = cookies;
        }
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        for set in response.headers().get_all(header::SET_COOKIE) {
            let Some((name, value)) = set
                .to_str()
                .ok()
                .and_then(|set| set.split(';').next())
                .and_then(|pair| pair.split_once('='))
            else {
                continue;
            };
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        let status = response.status();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER_BYTES).await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

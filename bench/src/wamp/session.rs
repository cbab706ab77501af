//! One WAMP client session over WebSocket (JSON), as the generator speaks it.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

pub(super) const REALM: &str = "realm1";
pub(super) const HANDSHAKE: Duration = Duration::from_secs(10);

pub(super) const HELLO: u64 = 1;
pub(super) const WELCOME: u64 = 2;
pub(super) const ABORT: u64 = 3;
pub(super) const GOODBYE: u64 = 6;
pub(super) const ERROR: u64 = 8;
pub(super) const PUBLISH: u64 = 16;
pub(super) const PUBLISHED: u64 = 17;
pub(super) const SUBSCRIBE: u64 = 32;
pub(super) const SUBSCRIBED: u64 = 33;
pub(super) const EVENT: u64 = 36;
pub(super) const CALL: u64 = 48;
pub(super) const RESULT: u64 = 50;
pub(super) const REGISTER: u64 = 64;
pub(super) const REGISTERED: u64 = 65;
pub(super) const INVOCATION: u64 = 68;
pub(super) const YIELD: u64 = 70;

pub(super) fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

// ------------------------------------------------------------------------- one WAMP session

pub(super) struct Session {
    ws: WebSocketStream<TcpStream>,
    next_request: u64,
}

impl Session {
    /// WebSocket (`wamp.2.json`) to `addr`, HELLO, wait for WELCOME.
    pub(super) async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::time::timeout(HANDSHAKE, TcpStream::connect(addr))
            .await
            .context("tcp connect timed out")??;
        stream.set_nodelay(true)?;
        let mut request = format!("ws://{addr}/ws").into_client_request()?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("wamp.2.json"),
        );
        let (ws, _) = tokio::time::timeout(
            HANDSHAKE,
            tokio_tungstenite::client_async_with_config(request, stream, None),
        )
        .await
        .context("websocket handshake timed out")??;
        let mut s = Self {
            ws,
            next_request: 1,
        };
        let roles = json!({"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}});
        s.send(json!([HELLO, REALM, {"roles": roles}])).await?;
        s.flush().await?;
        let welcome = tokio::time::timeout(HANDSHAKE, s.recv())
            .await
            .context("no WELCOME in time")??;
        match welcome {
            Some(m) if code(&m) == WELCOME => Ok(s),
            Some(m) if code(&m) == ABORT => bail!("router refused the session: {m:?}"),
            other => bail!("expected WELCOME, got {other:?}"),
        }
    }

    pub(super) fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    pub(super) async fn send(&mut self, msg: Value) -> Result<()> {
        self.ws.feed(WsMessage::text(msg.to_string())).await?;
        Ok(())
    }

    pub(super) async fn flush(&mut self) -> Result<()> {
        self.ws.flush().await?;
        Ok(())
    }

    /// The next WAMP message, or `None` when the connection closed.
    pub(super) async fn recv(&mut self) -> Result<Option<Vec<Value>>> {
        loop {
            let bytes = match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(WsMessage::Text(t))) => t.as_bytes().to_vec(),
                Some(Ok(WsMessage::Binary(b))) => b.to_vec(),
                Some(Ok(WsMessage::Close(_))) => return Ok(None),
                Some(Ok(_)) => continue,
            };
            let value: Value = serde_json::from_slice(&bytes).context("router sent bad JSON")?;
            match value {
                Value::Array(items) => return Ok(Some(items)),
                other => bail!("router sent a non-array message: {other}"),
            }
        }
    }

    /// Send a request and wait for its answer of type `expect`; ERROR or ABORT fail.
    pub(super) async fn request(&mut self, msg: Value, expect: u64) -> Result<Vec<Value>> {
        self.send(msg).await?;
        self.flush().await?;
        loop {
            let m = tokio::time::timeout(HANDSHAKE, self.recv())
                .await
                .context("no answer in time")??
                .context("connection closed")?;
            match code(&m) {
                c if c == expect => return Ok(m),
                ERROR | ABORT => bail!("router answered {m:?}"),
                _ => {}
            }
        }
    }

    pub(super) async fn close(mut self) {
        let _ = self
            .send(json!([GOODBYE, {}, "wamp.close.close_realm"]))
            .await;
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}

pub(super) fn code(m: &[Value]) -> u64 {
    m.first().and_then(Value::as_u64).unwrap_or(0)
}

pub(super) fn int(m: &[Value], i: usize) -> u64 {
    m.get(i).and_then(Value::as_u64).unwrap_or(u64::MAX)
}

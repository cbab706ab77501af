//! A small async WAMP client over tokio-tungstenite, built on `ordo_common::wamp`.
//!
//! One owner task drives one client: requests are sent, and replies are
//! awaited with [`WampClient::recv_matching`], which keeps messages that
//! arrive meanwhile (events, other replies) in a backlog for later calls.
//! Every wait is bounded by a timeout.
//!
//! The same client speaks RawSocket ([`WampClient::join_rawsocket`]): a TCP
//! stream with the 4-byte handshake and 4-byte frame headers, read through a
//! buffer so that a timed-out read loses nothing.
//!
//! This file depends only on external crates (no `crate::` paths), so
//! `entry/tests/process.rs` includes it with `#[path]` as well.

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use ordo_common::wamp::{self, Dict, Message, Serializer, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// How long a single expected message may take to arrive.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(15);

/// The realm MQTT clients share by default, and the one tests join.
pub const REALM: &str = "realm1";

/// An EVENT, unpacked.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Subscription it was delivered for.
    pub subscription: u64,
    /// Publication id (the permanent id in Ordo).
    pub publication: u64,
    /// Event details (`topic` for pattern subscriptions).
    pub details: Dict,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Dict,
}

/// A byte stream a client WebSocket runs over: TCP, or TLS for `wss://`.
pub trait ClientIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientIo for T {}

/// A client WebSocket over TCP or TLS.
pub type ClientWs = WebSocketStream<Box<dyn ClientIo>>;

/// The connection under a [`WampClient`].
enum Conn {
    Ws(Box<ClientWs>),
    Raw {
        stream: TcpStream,
        buf: Vec<u8>,
        pongs: VecDeque<Vec<u8>>,
    },
}

/// The RawSocket serializer code of a serializer (1 JSON, 2 msgpack, 3 CBOR).
pub fn rawsocket_code(ser: Serializer) -> u8 {
    match ser {
        Serializer::Json => 1,
        Serializer::MsgPack => 2,
        Serializer::Cbor => 3,
    }
}

/// Connect over TCP and send a RawSocket handshake request; return the
/// stream and the router's four-byte reply.
pub async fn rawsocket_handshake(
    addr: SocketAddr,
    request: [u8; 4],
) -> anyhow::Result<(TcpStream, [u8; 4])> {
    let mut stream = tokio::time::timeout(RECV_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("tcp connect timed out")??;
    stream.set_nodelay(true)?;
    stream.write_all(&request).await?;
    let mut reply = [0u8; 4];
    tokio::time::timeout(RECV_TIMEOUT, stream.read_exact(&mut reply))
        .await
        .context("rawsocket handshake timed out")??;
    Ok((stream, reply))
}

/// A WAMP client connection.
pub struct WampClient {
    conn: Conn,
    /// The serializer negotiated.
    pub ser: Serializer,
    /// Session id from WELCOME (0 before joining).
    pub session: u64,
    /// WELCOME details.
    pub welcome: Dict,
    next_request: u64,
    backlog: VecDeque<Message>,
}

/// Build a dict from key-value pairs.
pub fn dict<const N: usize>(pairs: [(&str, Value); N]) -> Dict {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Open a WebSocket offering `ser` as the subprotocol; send nothing else.
pub async fn websocket(addr: SocketAddr, ser: Serializer) -> anyhow::Result<ClientWs> {
    let stream = tokio::time::timeout(RECV_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("tcp connect timed out")?
        .with_context(|| format!("tcp connect {addr}"))?;
    stream.set_nodelay(true)?;
    websocket_over(Box::new(stream), &format!("ws://{addr}/"), ser).await
}

/// Do the WebSocket handshake for `url` over an open stream (e.g. TLS for
/// `wss://`), offering `ser` as the subprotocol.
pub async fn websocket_over(
    stream: Box<dyn ClientIo>,
    url: &str,
    ser: Serializer,
) -> anyhow::Result<ClientWs> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(ser.subprotocol()),
    );
    let (ws, response) = tokio::time::timeout(
        RECV_TIMEOUT,
        tokio_tungstenite::client_async_with_config(request, stream, None),
    )
    .await
    .context("websocket handshake timed out")??;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    if chosen != Some(ser.subprotocol()) {
        bail!(
            "server chose subprotocol {chosen:?}, offered {}",
            ser.subprotocol()
        );
    }
    Ok(ws)
}

/// Wrap bytes in the frame type the serializer uses.
pub fn frame(ser: Serializer, bytes: Vec<u8>) -> anyhow::Result<WsMessage> {
    Ok(if ser.is_binary() {
        WsMessage::Binary(bytes.into())
    } else {
        WsMessage::Text(String::from_utf8(bytes)?.into())
    })
}

impl WampClient {
    /// Open a WebSocket and do HELLO/WELCOME on `realm`.
    pub async fn join(addr: SocketAddr, ser: Serializer, realm: &str) -> anyhow::Result<Self> {
        Self::unjoined(addr, ser)
            .await?
            .hello(realm, Dict::new())
            .await
    }

    /// Do the WebSocket handshake for `url` over an open stream (TLS for
    /// `wss://`), then HELLO/WELCOME on `realm`.
    pub async fn join_over(
        stream: Box<dyn ClientIo>,
        url: &str,
        ser: Serializer,
        realm: &str,
    ) -> anyhow::Result<Self> {
        let ws = websocket_over(stream, url, ser).await?;
        Self::over(Conn::Ws(Box::new(ws)), ser)
            .hello(realm, Dict::new())
            .await
    }

    /// Open a RawSocket (announcing 16 MiB messages) and do HELLO/WELCOME on `realm`.
    pub async fn join_rawsocket(
        addr: SocketAddr,
        ser: Serializer,
        realm: &str,
    ) -> anyhow::Result<Self> {
        Self::unjoined_rawsocket(addr, ser)
            .await?
            .hello(realm, Dict::new())
            .await
    }

    /// Send HELLO with the four client roles (callee with `call_canceling`)
    /// plus `extra` details, and wait for WELCOME.
    pub async fn hello(mut self, realm: &str, extra: Dict) -> anyhow::Result<Self> {
        let mut details = extra;
        let mut cancel = Dict::new();
        cancel.insert("call_canceling".into(), Value::Boolean(true));
        cancel.insert("progressive_call_results".into(), Value::Boolean(true));
        let callee = dict([("features", wamp::dict_to_value(cancel))]);
        let roles = ["publisher", "subscriber", "caller", "callee"]
            .into_iter()
            .map(|r| {
                let role = if r == "callee" {
                    wamp::dict_to_value(callee.clone())
                } else {
                    Value::Map(Vec::new())
                };
                (Value::from(r), role)
            })
            .collect();
        details.insert("roles".into(), Value::Map(roles));
        self.send(&Message::Hello {
            realm: realm.to_owned(),
            details,
        })
        .await?;
        match self.recv().await? {
            Message::Welcome { session, details } => {
                self.session = session;
                self.welcome = details;
                Ok(self)
            }
            other => bail!("expected WELCOME, got {other:?}"),
        }
    }

    /// Open a WebSocket without joining a realm.
    pub async fn unjoined(addr: SocketAddr, ser: Serializer) -> anyhow::Result<Self> {
        Ok(Self::over(
            Conn::Ws(Box::new(websocket(addr, ser).await?)),
            ser,
        ))
    }

    /// Open a RawSocket without joining a realm.
    pub async fn unjoined_rawsocket(addr: SocketAddr, ser: Serializer) -> anyhow::Result<Self> {
        let request = [0x7f, 0xf0 | rawsocket_code(ser), 0, 0];
        let (stream, reply) = rawsocket_handshake(addr, request).await?;
        if reply[0] != 0x7f || reply[1] & 0x0f != rawsocket_code(ser) {
            bail!("rawsocket handshake refused: {reply:02x?}");
        }
        let conn = Conn::Raw {
            stream,
            buf: Vec::new(),
            pongs: VecDeque::new(),
        };
        Ok(Self::over(conn, ser))
    }

    fn over(conn: Conn, ser: Serializer) -> Self {
        WampClient {
            conn,
            ser,
            session: 0,
            welcome: Dict::new(),
            next_request: 1,
            backlog: VecDeque::new(),
        }
    }

    /// Send one RawSocket frame of type `kind` (0 message, 1 ping, 2 pong) exactly as given.
    pub async fn send_raw_frame(&mut self, kind: u8, payload: &[u8]) -> anyhow::Result<()> {
        let Conn::Raw { stream, .. } = &mut self.conn else {
            bail!("not a rawsocket connection");
        };
        let len = payload.len();
        let mut frame = vec![kind, (len >> 16) as u8, (len >> 8) as u8, len as u8];
        frame.extend_from_slice(payload);
        tokio::time::timeout(RECV_TIMEOUT, stream.write_all(&frame))
            .await
            .context("send timed out")??;
        Ok(())
    }

    /// Send a RawSocket ping and wait for its pong; return the pong's payload.
    pub async fn ping(&mut self, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.send_raw_frame(1, payload).await?;
        let deadline = Instant::now() + RECV_TIMEOUT;
        let Conn::Raw { stream, buf, pongs } = &mut self.conn else {
            bail!("not a rawsocket connection");
        };
        if let Some(p) = pongs.pop_front() {
            return Ok(p);
        }
        loop {
            match raw_frame(stream, buf, deadline).await? {
                None => bail!("connection closed while waiting for a pong"),
                Some((2, pong)) => return Ok(pong),
                Some((0, bytes)) => {
                    let m = wamp::decode(self.ser, &bytes).map_err(|e| anyhow!("decode: {e}"))?;
                    self.backlog.push_back(m);
                }
                Some(_) => {}
            }
        }
    }

    /// Return a fresh request id.
    pub fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Encode and send one message.
    pub async fn send(&mut self, message: &Message) -> anyhow::Result<()> {
        let bytes = wamp::encode(self.ser, message);
        if let Conn::Raw { .. } = self.conn {
            return self.send_raw_frame(0, &bytes).await;
        }
        self.send_frame(frame(self.ser, bytes)?).await
    }

    /// Queue one message without flushing (flush with [`WampClient::flush`]).
    pub async fn feed(&mut self, message: &Message) -> anyhow::Result<()> {
        let bytes = wamp::encode(self.ser, message);
        let Conn::Ws(ws) = &mut self.conn else {
            return self.send_raw_frame(0, &bytes).await;
        };
        tokio::time::timeout(RECV_TIMEOUT, ws.feed(frame(self.ser, bytes)?))
            .await
            .context("feed timed out")??;
        Ok(())
    }

    /// Flush queued messages.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if let Conn::Ws(ws) = &mut self.conn {
            tokio::time::timeout(RECV_TIMEOUT, ws.flush())
                .await
                .context("flush timed out")??;
        }
        Ok(())
    }

    /// Send one WebSocket frame exactly as given.
    pub async fn send_frame(&mut self, frame: WsMessage) -> anyhow::Result<()> {
        let Conn::Ws(ws) = &mut self.conn else {
            bail!("not a websocket connection");
        };
        tokio::time::timeout(RECV_TIMEOUT, ws.send(frame))
            .await
            .context("send timed out")??;
        Ok(())
    }

    /// Return the next data frame's bytes, or `None` once the connection closes.
    ///
    /// Fails if nothing arrives before `deadline`.
    pub async fn next_frame(&mut self, deadline: Instant) -> anyhow::Result<Option<Vec<u8>>> {
        let ws = match &mut self.conn {
            Conn::Ws(ws) => ws,
            Conn::Raw { stream, buf, pongs } => loop {
                match raw_frame(stream, buf, deadline).await? {
                    None => return Ok(None),
                    Some((0, payload)) => return Ok(Some(payload)),
                    Some((2, payload)) => pongs.push_back(payload),
                    Some(_) => {}
                }
            },
        };
        loop {
            let frame = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| anyhow!("no WAMP message before the deadline"))?;
            match frame {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                Some(Ok(WsMessage::Text(t))) => return Ok(Some(t.as_bytes().to_vec())),
                Some(Ok(WsMessage::Binary(b))) => return Ok(Some(b.to_vec())),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Return the next message (backlog first), waiting at most [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> anyhow::Result<Message> {
        if let Some(m) = self.backlog.pop_front() {
            return Ok(m);
        }
        self.recv_wire(Instant::now() + RECV_TIMEOUT).await
    }

    async fn recv_wire(&mut self, deadline: Instant) -> anyhow::Result<Message> {
        match self.next_frame(deadline).await? {
            Some(bytes) => wamp::decode(self.ser, &bytes).map_err(|e| anyhow!("decode: {e}")),
            None => bail!("connection closed by the router"),
        }
    }

    /// Return the first message `pick` accepts; keep the others for later.
    pub async fn recv_matching(
        &mut self,
        mut pick: impl FnMut(&Message) -> bool,
    ) -> anyhow::Result<Message> {
        if let Some(i) = self.backlog.iter().position(&mut pick) {
            if let Some(m) = self.backlog.remove(i) {
                return Ok(m);
            }
        }
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            let m = self.recv_wire(deadline).await?;
            if pick(&m) {
                return Ok(m);
            }
            self.backlog.push_back(m);
        }
    }

    /// Return the first message `pick` accepts if one arrives within `wait`
    /// (the backlog first); keep the others for later.
    pub async fn recv_matching_within(
        &mut self,
        wait: Duration,
        mut pick: impl FnMut(&Message) -> bool,
    ) -> anyhow::Result<Option<Message>> {
        if let Some(i) = self.backlog.iter().position(&mut pick) {
            return Ok(self.backlog.remove(i));
        }
        let deadline = Instant::now() + wait;
        loop {
            match self.next_frame(deadline).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("connection closed by the router"),
                Ok(Some(bytes)) => {
                    let m = wamp::decode(self.ser, &bytes).map_err(|e| anyhow!("decode: {e}"))?;
                    if pick(&m) {
                        return Ok(Some(m));
                    }
                    self.backlog.push_back(m);
                }
            }
        }
    }

    /// Return the reply to request `request`; an ERROR reply is an `Err`.
    pub async fn reply_to(&mut self, request: u64) -> anyhow::Result<Message> {
        let m = self
            .recv_matching(|m| reply_request(m) == Some(request))
            .await?;
        match m {
            Message::Error { error, .. } => bail!("request {request} failed: {error}"),
            other => Ok(other),
        }
    }

    /// Subscribe and return the subscription id.
    pub async fn subscribe(&mut self, topic: &str, options: Dict) -> anyhow::Result<u64> {
        let request = self.request_id();
        self.send(&Message::Subscribe {
            request,
            options,
            topic: topic.to_owned(),
        })
        .await?;
        match self.reply_to(request).await? {
            Message::Subscribed { subscription, .. } => Ok(subscription),
            other => bail!("expected SUBSCRIBED, got {other:?}"),
        }
    }

    /// Publish without waiting; return the request id.
    pub async fn publish(
        &mut self,
        topic: &str,
        options: Dict,
        args: Vec<Value>,
        kwargs: Dict,
    ) -> anyhow::Result<u64> {
        let request = self.request_id();
        self.send(&Message::Publish {
            request,
            options,
            topic: topic.to_owned(),
            args,
            kwargs,
        })
        .await?;
        Ok(request)
    }

    /// Publish with `acknowledge: true` and return the publication id.
    pub async fn publish_acked(&mut self, topic: &str, args: Vec<Value>) -> anyhow::Result<u64> {
        self.publish_acked_with(topic, Dict::new(), args).await
    }

    /// Publish with `acknowledge: true` plus `options` and return the publication id.
    pub async fn publish_acked_with(
        &mut self,
        topic: &str,
        mut options: Dict,
        args: Vec<Value>,
    ) -> anyhow::Result<u64> {
        options.insert("acknowledge".into(), Value::Boolean(true));
        let request = self.publish(topic, options, args, Dict::new()).await?;
        self.published(request).await
    }

    /// Wait for the PUBLISHED of request `request` and return the publication id.
    pub async fn published(&mut self, request: u64) -> anyhow::Result<u64> {
        match self.reply_to(request).await? {
            Message::Published { publication, .. } => Ok(publication),
            other => bail!("expected PUBLISHED, got {other:?}"),
        }
    }

    /// Return the next EVENT; other messages stay in the backlog.
    pub async fn next_event(&mut self) -> anyhow::Result<Event> {
        match self
            .recv_matching(|m| matches!(m, Message::Event { .. }))
            .await?
        {
            Message::Event {
                subscription,
                publication,
                details,
                args,
                kwargs,
            } => Ok(Event {
                subscription,
                publication,
                details,
                args,
                kwargs,
            }),
            other => bail!("expected EVENT, got {other:?}"),
        }
    }

    /// Return the next EVENT if one arrives within `wait`.
    pub async fn event_within(&mut self, wait: Duration) -> anyhow::Result<Option<Event>> {
        if self
            .backlog
            .iter()
            .any(|m| matches!(m, Message::Event { .. }))
        {
            return self.next_event().await.map(Some);
        }
        let deadline = Instant::now() + wait;
        loop {
            match self.next_frame(deadline).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("connection closed by the router"),
                Ok(Some(bytes)) => {
                    let m = wamp::decode(self.ser, &bytes).map_err(|e| anyhow!("decode: {e}"))?;
                    if matches!(m, Message::Event { .. }) {
                        self.backlog.push_front(m);
                        return self.next_event().await.map(Some);
                    }
                    self.backlog.push_back(m);
                }
            }
        }
    }

    /// Read until the router closes the connection; return every message received
    /// before that (undecodable frames are skipped).
    pub async fn expect_closed(&mut self, wait: Duration) -> anyhow::Result<Vec<Message>> {
        let deadline = Instant::now() + wait;
        let mut seen: Vec<Message> = self.backlog.drain(..).collect();
        loop {
            match self.next_frame(deadline).await {
                Err(_) => bail!("connection still open after {wait:?} (received {seen:?})"),
                Ok(None) => return Ok(seen),
                Ok(Some(bytes)) => {
                    if let Ok(m) = wamp::decode(self.ser, &bytes) {
                        seen.push(m);
                    }
                }
            }
        }
    }

    /// Send GOODBYE and wait for the router's GOODBYE.
    pub async fn leave(mut self) -> anyhow::Result<()> {
        self.send(&Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.close_realm".into(),
        })
        .await?;
        self.recv_matching(|m| matches!(m, Message::Goodbye { .. }))
            .await?;
        Ok(())
    }
}

/// Read one RawSocket frame: `(type, payload)`, or `None` once the connection closed.
///
/// Bytes are read into `buf` with `read_buf`, which is cancel-safe: a
/// timeout loses nothing.
async fn raw_frame(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> anyhow::Result<Option<(u8, Vec<u8>)>> {
    loop {
        if buf.len() >= 4 {
            let len =
                (usize::from(buf[1]) << 16) | (usize::from(buf[2]) << 8) | usize::from(buf[3]);
            if buf.len() >= 4 + len {
                let kind = buf[0];
                let payload = buf[4..4 + len].to_vec();
                buf.drain(..4 + len);
                return Ok(Some((kind, payload)));
            }
        }
        let read = tokio::time::timeout_at(deadline, stream.read_buf(buf))
            .await
            .map_err(|_| anyhow!("no WAMP message before the deadline"))?;
        match read {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Return the request id a router reply answers, if it is a reply.
pub fn reply_request(m: &Message) -> Option<u64> {
    match m {
        Message::Error { request, .. }
        | Message::Published { request, .. }
        | Message::Subscribed { request, .. }
        | Message::Unsubscribed { request, .. }
        | Message::Result { request, .. }
        | Message::Registered { request, .. }
        | Message::Unregistered { request, .. } => Some(*request),
        _ => None,
    }
}

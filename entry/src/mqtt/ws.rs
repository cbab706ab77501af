//! MQTT over WebSocket (MQTT 5 and 3.1.1, section 6): subprotocol `mqtt`, binary frames.
//!
//! ```text
//!  mqtt_ws listener ──► handshake (offers `mqtt`?) ──┐
//!  WAMP WebSocket port ─► wamp::accept (`mqtt`, no wamp.2.*) ─┴─► WsBytes ─► connection::run
//! ```
//!
//! The `_tls` listeners (`mqtt_ws_tls`, `wamp_tls`) run the same code over a
//! TLS stream: everything here is generic over the byte stream under the WebSocket.
//!
//! A frame boundary means nothing to MQTT [MQTT-6.0.0-2]: [`WsBytes`] turns the
//! binary frames into one byte stream (several packets per frame and packets
//! split across frames both work) and each write into one binary frame, so
//! the connection task is the same one TCP clients get. A text frame closes the
//! connection [MQTT-6.0.0-1]. Packet size limits are the codec's, as on TCP;
//! the WebSocket layer bounds one message (memory), see [`message_limit`].

use super::connection;
use crate::Shared;
use bytes::Bytes;
use futures_util::{Sink, Stream};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// The WebSocket subprotocol of MQTT 3.1.1 and 5 ([MQTT-6.0.0-3], [MQTT-6.0.0-4]).
pub const SUBPROTOCOL: &str = "mqtt";
/// The subprotocol MQTT 3.1 clients (e.g. paho's `MQTTv31`) offer.
const SUBPROTOCOL_V31: &str = "mqttv3.1";

/// How long a client may take over the WebSocket handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Return the MQTT subprotocol to answer with, if the client offers one.
pub fn offered_subprotocol(request: &Request) -> Option<&'static str> {
    let mut offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    offered.find_map(|p| {
        if p.eq_ignore_ascii_case(SUBPROTOCOL) {
            Some(SUBPROTOCOL)
        } else if p.eq_ignore_ascii_case(SUBPROTOCOL_V31) {
            Some(SUBPROTOCOL_V31)
        } else {
            None
        }
    })
}

/// Return the largest WebSocket message the `mqtt_ws` listener reads: twice
/// `max_packet_size`, so a full-size packet may share its frame with others.
pub fn message_limit(max_packet_size: usize) -> usize {
    max_packet_size.saturating_mul(2).max(64 * 1024)
}

/// Accept MQTT-over-WebSocket connections on the `mqtt_ws` listener until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(accept(stream, peer, shared));
            }
            Err(e) => {
                tracing::warn!(error = %e, "mqtt websocket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serve one connection of an MQTT-over-WebSocket listener over any byte
/// stream (TCP, or TLS on `mqtt_ws_tls`): WebSocket handshake, then [`run`].
pub async fn accept<S>(stream: S, peer: SocketAddr, shared: Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The error type is tungstenite's; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        let offers_any = request.headers().contains_key("sec-websocket-protocol");
        match offered_subprotocol(request) {
            Some(p) => {
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", HeaderValue::from_static(p));
                Ok(response)
            }
            // Lenient, as mosquitto is: a client that offers no subprotocol at all gets MQTT.
            None if !offers_any => Ok(response),
            None => {
                let mut refuse: ErrorResponse = ErrorResponse::new(Some(
                    "this port speaks MQTT: offer subprotocol mqtt".into(),
                ));
                *refuse.status_mut() = StatusCode::BAD_REQUEST;
                Err(refuse)
            }
        }
    };
    let limit = message_limit(shared.config.max_packet_size);
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let mut stop = shared.shutdown.clone();
    let ws = tokio::select! {
        ws = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => ws,
        _ = stop.changed() => return,
    };
    match ws {
        Ok(Ok(ws)) => run(ws, peer, shared).await,
        Ok(Err(e)) => tracing::info!(%peer, error = %e, "mqtt websocket handshake failed"),
        Err(_) => tracing::info!(%peer, "mqtt websocket handshake timed out"),
    }
}

/// Serve one MQTT connection over an accepted WebSocket until it closes.
pub async fn run<S>(ws: WebSocketStream<S>, peer: SocketAddr, shared: Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reader, writer) = tokio::io::split(WsBytes::new(ws));
    if let Err(e) = connection::run(Box::new(reader), Box::new(writer), shared).await {
        tracing::info!(%peer, error = %e, "mqtt websocket connection closed");
    }
}

/// A WebSocket as a byte stream: binary frames in, one binary frame per write out.
///
/// Reads skip pings and pongs (tungstenite answers pings itself) and end at a
/// close frame; a text frame is an `InvalidData` error. Writes are buffered by
/// tungstenite until `flush`.
pub struct WsBytes<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary frame.
    read: Bytes,
}

impl<S> WsBytes<S> {
    /// Wrap an accepted (or connected) WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsBytes {
            ws,
            read: Bytes::new(),
        }
    }
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::Capacity(e) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("websocket message too large: {e}"),
        ),
        e => io::Error::new(io::ErrorKind::InvalidData, format!("websocket: {e}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.read.is_empty() {
                let n = this.read.len().min(buf.remaining());
                buf.put_slice(&this.read.split_to(n));
                return Poll::Ready(Ok(()));
            }
            // An empty frame is skipped: returning no bytes would mean end of stream.
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(bytes))) => this.read = bytes,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame: MQTT travels in binary frames [MQTT-6.0.0-1]",
                    )))
                }
                None
                | Some(Ok(Message::Close(_)))
                | Some(Err(tungstenite::Error::ConnectionClosed)) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut ws = Pin::new(&mut self.get_mut().ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(io_error)?;
        ws.start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(io_error)
    }
}

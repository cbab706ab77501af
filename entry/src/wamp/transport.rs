//! The two WAMP transports behind one face: a stream of message bytes in, a
//! sink of message bytes out.
//!
//! ```text
//!  WebSocket (text/binary frames) ──┐                 ┌──► WebSocket frames
//!                                   ├─► Rx ─► session ─► Tx
//!  RawSocket (4-byte headers)    ───┘                 └──► RawSocket frames
//! ```
//!
//! The session never sees a transport detail: pings are answered here or by
//! the session through [`Tx::pong`], size limits are enforced here.

use super::rawsocket::{RawReader, RawWriter};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use ordo_common::wamp::Serializer;
use std::pin::Pin;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

/// The frames a WebSocket receives, whatever stream (TCP or TLS) it runs over.
pub type WsFrames = Pin<Box<dyn Stream<Item = Result<WsMessage, tungstenite::Error>> + Send>>;
/// Where a WebSocket's frames go, whatever stream (TCP or TLS) it runs over.
pub type WsSink = Pin<Box<dyn Sink<WsMessage, Error = tungstenite::Error> + Send>>;

/// Why a transport failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    /// The TCP connection under a RawSocket failed.
    #[error("rawsocket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a message larger than the negotiated limit.
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The peer broke the RawSocket framing (reserved bits, unknown frame type).
    #[error("rawsocket framing: {0}")]
    Framing(String),
}

/// What arrives from the peer.
#[derive(Debug)]
pub enum Incoming {
    /// One serialized WAMP message.
    Message(Vec<u8>),
    /// A RawSocket ping to answer with [`Tx::pong`].
    Ping(Vec<u8>),
}

/// The receiving half of a WAMP connection.
pub enum Rx {
    /// WebSocket frames.
    Ws(WsFrames),
    /// RawSocket frames.
    Raw(RawReader),
}

/// The sending half of a WAMP connection.
pub enum Tx {
    /// WebSocket frames, text or binary by serializer.
    Ws(WsSink, Serializer),
    /// RawSocket frames.
    Raw(RawWriter),
}

impl Rx {
    /// Return the next message or ping; `None` once the peer closed.
    ///
    /// Cancel-safe: a call dropped before it completes loses no data.
    pub async fn next(&mut self) -> Result<Option<Incoming>, TransportError> {
        match self {
            Rx::Ws(stream) => loop {
                let frame = match stream.next().await {
                    None => return Ok(None),
                    Some(Err(tungstenite::Error::Capacity(e))) => {
                        return Err(TransportError::TooLarge(capacity_size(&e)))
                    }
                    Some(frame) => frame?,
                };
                return Ok(Some(Incoming::Message(match frame {
                    WsMessage::Text(text) => text.as_bytes().to_vec(),
                    WsMessage::Binary(bytes) => bytes.to_vec(),
                    WsMessage::Close(_) => return Ok(None),
                    _ => continue,
                })));
            },
            Rx::Raw(reader) => reader.next().await,
        }
    }
}

fn capacity_size(e: &tungstenite::error::CapacityError) -> usize {
    match e {
        tungstenite::error::CapacityError::MessageTooLong { size, .. } => *size,
        _ => 0,
    }
}

impl Tx {
    /// Queue one serialized message without flushing.
    pub async fn feed(&mut self, bytes: Vec<u8>) -> Result<(), TransportError> {
        match self {
            Tx::Ws(sink, ser) => {
                let frame = if ser.is_binary() {
                    WsMessage::Binary(bytes.into())
                } else {
                    match String::from_utf8(bytes) {
                        Ok(text) => WsMessage::Text(text.into()),
                        Err(e) => WsMessage::Binary(e.into_bytes().into()),
                    }
                };
                sink.feed(frame).await?;
            }
            Tx::Raw(writer) => writer.feed(&bytes).await?,
        }
        Ok(())
    }

    /// Answer a RawSocket ping.
    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        match self {
            Tx::Ws(..) => Ok(()),
            Tx::Raw(writer) => Ok(writer.pong(payload).await?),
        }
    }

    /// Send everything queued.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        match self {
            Tx::Ws(sink, _) => sink.flush().await?,
            Tx::Raw(writer) => writer.flush().await?,
        }
        Ok(())
    }

    /// Flush and close the connection, ignoring errors (the peer may be gone).
    pub async fn close(&mut self) {
        match self {
            Tx::Ws(sink, _) => {
                let _ = sink.close().await;
            }
            Tx::Raw(writer) => writer.close().await,
        }
    }
}

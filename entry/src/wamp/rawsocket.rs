//! WAMP over RawSocket: plain TCP with a 4-byte handshake and 4-byte frame headers.
//!
//! ```text
//!  client ── 0x7F, LLLL SSSS, 0, 0 ──►  negotiate()  ── 0x7F, LLLL SSSS, 0, 0 ──► client
//!                                        (or 0x7F, EEEE 0000, 0, 0 and close)
//!  then frames:  [0000 0TTT][len: 24 bits BE][payload]   TTT: 0 message, 1 ping, 2 pong
//! ```
//!
//! `LLLL` announces the largest message the sender accepts, `2^(9+LLLL)` bytes;
//! `SSSS` names the serializer (1 JSON, 2 msgpack, 3 CBOR). The error nibble
//! `EEEE` is 1 (serializer unsupported), 2 (maximum message length
//! unacceptable), 3 (use of reserved bits) or 4 (maximum connection count).
//! A first octet other than 0x7F is not RawSocket: the connection is closed
//! without a reply.
//!
//! The handshake decision ([`negotiate`]) and frame parsing ([`parse_frame`])
//! are pure functions; [`serve`] is the tokio shell around them.

use super::session;
use super::transport::{Incoming, Rx, TransportError, Tx};
use crate::Shared;
use bytes::{Buf, BytesMut};
use ordo_common::wamp::Serializer;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The first octet of every RawSocket handshake.
pub const MAGIC: u8 = 0x7f;
/// The largest length exponent: `2^(9+15)` = 16 MiB, the 24-bit frame limit.
const MAX_EXPONENT: u8 = 15;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handshake is refused, with its wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The serializer nibble names no serializer this router speaks.
    SerializerUnsupported = 1,
    /// The peer's maximum message length is not acceptable.
    MaxLengthUnacceptable = 2,
    /// The reserved octets are not zero.
    ReservedBits = 3,
}

/// The outcome of a RawSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Speak `serializer`; never send the peer messages over `peer_max` bytes.
    Accept {
        /// The serializer both sides use.
        serializer: Serializer,
        /// The largest message the peer accepts.
        peer_max: usize,
        /// The four octets to answer with.
        reply: [u8; 4],
    },
    /// Answer with `reply`, then close.
    Refuse {
        /// Why.
        why: Refusal,
        /// The four octets to answer with.
        reply: [u8; 4],
    },
    /// Not a RawSocket client: close without a reply.
    NotRawSocket,
}

/// Return the length exponent to announce for a message size limit: the
/// largest `L` with `2^(9+L) <= max`, at least 0 and at most 15.
pub fn exponent_for(max: usize) -> u8 {
    let mut exp = 0u8;
    while exp < MAX_EXPONENT && (1usize << (9 + exp + 1)) <= max {
        exp += 1;
    }
    exp
}

/// Return the message size limit a length exponent announces.
pub fn limit_of(exponent: u8) -> usize {
    1usize << (9 + exponent.min(MAX_EXPONENT))
}

/// Decide a client's handshake; `ours` is the length exponent this router announces.
pub fn negotiate(request: [u8; 4], ours: u8) -> Handshake {
    let refuse = |why: Refusal| Handshake::Refuse {
        why,
        reply: [MAGIC, (why as u8) << 4, 0, 0],
    };
    if request[0] != MAGIC {
        return Handshake::NotRawSocket;
    }
    if request[2] != 0 || request[3] != 0 {
        return refuse(Refusal::ReservedBits);
    }
    let serializer = match request[1] & 0x0f {
        1 => Serializer::Json,
        2 => Serializer::MsgPack,
        3 => Serializer::Cbor,
        _ => return refuse(Refusal::SerializerUnsupported),
    };
    let code = request[1] & 0x0f;
    let peer_max = limit_of(request[1] >> 4);
    Handshake::Accept {
        serializer,
        peer_max,
        reply: [MAGIC, (ours.min(MAX_EXPONENT) << 4) | code, 0, 0],
    }
}

/// One parsed frame header: its type code and payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// 0 message, 1 ping, 2 pong.
    pub kind: u8,
    /// Payload length in bytes.
    pub len: usize,
}

/// Read a frame header from the first four bytes of `buf`, checking it
/// against `max`; `Ok(None)` when fewer than four bytes are buffered.
pub fn parse_frame(buf: &[u8], max: usize) -> Result<Option<FrameHeader>, TransportError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    if head[0] >> 3 != 0 {
        return Err(TransportError::Framing(format!(
            "reserved bits set in frame header {:#04x}",
            head[0]
        )));
    }
    let kind = head[0] & 0x07;
    if kind > 2 {
        return Err(TransportError::Framing(format!(
            "unknown frame type {kind}"
        )));
    }
    let len = (usize::from(head[1]) << 16) | (usize::from(head[2]) << 8) | usize::from(head[3]);
    if len > max {
        return Err(TransportError::TooLarge(len));
    }
    Ok(Some(FrameHeader { kind, len }))
}

/// Frames from a RawSocket peer.
pub struct RawReader {
    read: OwnedReadHalf,
    buf: BytesMut,
    max: usize,
}

impl RawReader {
    /// Return the next message or ping; `None` at end of stream. Pongs are skipped.
    ///
    /// Cancel-safe: bytes read are kept in the buffer until a frame is complete.
    pub async fn next(&mut self) -> Result<Option<Incoming>, TransportError> {
        loop {
            if let Some(header) = parse_frame(&self.buf, self.max)? {
                if self.buf.len() >= 4 + header.len {
                    self.buf.advance(4);
                    let payload = self.buf.split_to(header.len).to_vec();
                    match header.kind {
                        0 => return Ok(Some(Incoming::Message(payload))),
                        1 => return Ok(Some(Incoming::Ping(payload))),
                        _ => continue,
                    }
                }
                self.buf.reserve(4 + header.len - self.buf.len());
            }
            if self.read.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Frames to a RawSocket peer.
pub struct RawWriter {
    write: BufWriter<OwnedWriteHalf>,
    peer_max: usize,
}

impl RawWriter {
    async fn frame(&mut self, kind: u8, bytes: &[u8]) -> std::io::Result<()> {
        let len = bytes.len();
        let header = [kind, (len >> 16) as u8, (len >> 8) as u8, len as u8];
        self.write.write_all(&header).await?;
        self.write.write_all(bytes).await
    }

    /// Queue one message; one over the peer's limit is dropped with a warning
    /// (RawSocket forbids sending it, and it is no reason to end the session).
    pub async fn feed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.len() > self.peer_max {
            tracing::warn!(
                len = bytes.len(),
                peer_max = self.peer_max,
                "message exceeds the rawsocket peer's limit; not sent"
            );
            return Ok(());
        }
        self.frame(0, bytes).await
    }

    /// Answer a ping with a pong carrying the same payload.
    pub async fn pong(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.frame(2, payload).await?;
        self.write.flush().await
    }

    /// Send everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.write.flush().await
    }

    /// Flush and shut down the sending side.
    pub async fn close(&mut self) {
        let _ = self.write.flush().await;
        let _ = self.write.shutdown().await;
    }
}

/// Accept WAMP RawSocket connections until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = accept(stream, shared).await {
                        tracing::info!(%peer, error = %e, "wamp rawsocket connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "wamp rawsocket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept(mut stream: TcpStream, shared: Shared) -> anyhow::Result<()> {
    let mut request = [0u8; 4];
    let mut stop = shared.shutdown.clone();
    tokio::select! {
        read = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut request)) => { read??; }
        _ = stop.changed() => return Ok(()),
    }
    let max = shared.config.max_wamp_message_size;
    let ours = exponent_for(max);
    match negotiate(request, ours) {
        Handshake::NotRawSocket => anyhow::bail!("not a rawsocket handshake: {request:02x?}"),
        Handshake::Refuse { why, reply } => {
            stream.write_all(&reply).await?;
            let _ = stream.shutdown().await;
            anyhow::bail!("rawsocket handshake refused: {why:?}")
        }
        Handshake::Accept {
            serializer,
            peer_max,
            reply,
        } => {
            stream.write_all(&reply).await?;
            let (read, write) = stream.into_split();
            let rx = Rx::Raw(RawReader {
                read,
                buf: BytesMut::with_capacity(4096),
                max: limit_of(ours),
            });
            let tx = Tx::Raw(RawWriter {
                write: BufWriter::new(write),
                peer_max,
            });
            session::run(tx, rx, serializer, shared).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents() {
        assert_eq!(exponent_for(0), 0);
        assert_eq!(exponent_for(512), 0);
        assert_eq!(exponent_for(1023), 0);
        assert_eq!(exponent_for(1 << 20), 11);
        assert_eq!(exponent_for(usize::MAX), 15);
        assert_eq!(limit_of(15), 1 << 24);
    }

    #[test]
    fn handshake_decisions() {
        match negotiate([MAGIC, 0xf2, 0, 0], 11) {
            Handshake::Accept {
                serializer,
                peer_max,
                reply,
            } => {
                assert_eq!(serializer, Serializer::MsgPack);
                assert_eq!(peer_max, 1 << 24);
                assert_eq!(reply, [MAGIC, 0xb2, 0, 0]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            negotiate([MAGIC, 0x13, 0, 0], 0),
            Handshake::Accept {
                serializer: Serializer::Cbor,
                peer_max: 1024,
                ..
            }
        ));
        assert_eq!(
            negotiate([MAGIC, 0xf4, 0, 0], 11),
            Handshake::Refuse {
                why: Refusal::SerializerUnsupported,
                reply: [MAGIC, 0x10, 0, 0]
            }
        );
        assert_eq!(
            negotiate([MAGIC, 0xf1, 0, 1], 11),
            Handshake::Refuse {
                why: Refusal::ReservedBits,
                reply: [MAGIC, 0x30, 0, 0]
            }
        );
        assert_eq!(negotiate(*b"GET ", 11), Handshake::NotRawSocket);
    }

    #[test]
    fn frame_headers() {
        assert_eq!(parse_frame(&[0, 0, 1], 10).ok(), Some(None));
        assert_eq!(
            parse_frame(&[1, 0, 0, 3], 10).ok(),
            Some(Some(FrameHeader { kind: 1, len: 3 }))
        );
        assert!(matches!(
            parse_frame(&[0, 1, 0, 0], 10),
            Err(TransportError::TooLarge(65536))
        ));
        assert!(matches!(
            parse_frame(&[3, 0, 0, 0], 10),
            Err(TransportError::Framing(_))
        ));
        assert!(matches!(
            parse_frame(&[0x08, 0, 0, 0], 10),
            Err(TransportError::Framing(_))
        ));
    }
}

//! MQTT 3.1.1 framing for the load generator.
//!
//! Control packets (CONNECT, SUBSCRIBE, acks) go through rumqttc's v4 codec; the hot PUBLISH path
//! is encoded by hand into one buffer per batch so the generator allocates nothing per message.
//! Every payload carries a [`Stamp`]: publisher index, sequence number and send time.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, SubAck, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Largest packet accepted from a broker.
pub const MAX_PACKET: usize = 1 << 20;
/// Keep-alive announced in CONNECT; subscribers ping well within it.
pub const KEEP_ALIVE_SECS: u16 = 120;
/// How long connect/subscribe handshakes may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Smallest payload that holds a [`Stamp`]: `"` + 8 + 16 + 16 hex digits + `"`.
pub const MIN_PAYLOAD: usize = 42;

/// What each payload carries so receivers can check loss, order and latency.
///
/// The payload is a JSON string literal (`"<8 hex publisher><16 hex seq><16 hex ns>....."`), so a
/// router that peeks at payloads (e.g. to bridge MQTT to WAMP) sees valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the publisher connection.
    pub publisher: u32,
    /// Per-publisher sequence number, from 0.
    pub seq: u64,
    /// Send time in nanoseconds since the run's epoch.
    pub sent_ns: u64,
}

/// Both halves of a connected client socket plus the bytes read past the last packet.
pub struct Conn {
    /// Read half.
    pub rd: OwnedReadHalf,
    /// Write half.
    pub wr: OwnedWriteHalf,
    /// Unparsed bytes already read from `rd`.
    pub buf: BytesMut,
}

/// Convert 0/1 to the codec's QoS.
pub fn qos_of(level: u8) -> QoS {
    if level == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn put_hex(buf: &mut BytesMut, value: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        buf.put_u8(HEX[((value >> (i * 4)) & 0xf) as usize]);
    }
}

fn parse_hex(bytes: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &b in bytes {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Append one PUBLISH (QoS 0 or 1, `pkid` ignored at QoS 0) carrying `stamp` padded to `payload_len`.
pub fn encode_publish(
    buf: &mut BytesMut,
    topic: &str,
    qos: u8,
    pkid: u16,
    payload_len: usize,
    stamp: Stamp,
) {
    let remaining = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload_len;
    buf.reserve(5 + remaining);
    buf.put_u8(0x30 | (qos << 1));
    let mut len = remaining;
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic.as_bytes());
    if qos > 0 {
        buf.put_u16(pkid);
    }
    buf.put_u8(b'"');
    put_hex(buf, u64::from(stamp.publisher), 8);
    put_hex(buf, stamp.seq, 16);
    put_hex(buf, stamp.sent_ns, 16);
    buf.put_bytes(b'.', payload_len - MIN_PAYLOAD);
    buf.put_u8(b'"');
}

/// Read the [`Stamp`] back from a payload written by [`encode_publish`]; `None` if foreign.
pub fn decode_stamp(payload: &[u8]) -> Option<Stamp> {
    if payload.len() < MIN_PAYLOAD || payload[0] != b'"' {
        return None;
    }
    Some(Stamp {
        publisher: u32::try_from(parse_hex(&payload[1..9])?).ok()?,
        seq: parse_hex(&payload[9..25])?,
        sent_ns: parse_hex(&payload[25..41])?,
    })
}

/// Parse the next complete packet out of `buf`; `Ok(None)` when more bytes are needed.
pub fn next_packet(buf: &mut BytesMut) -> Result<Option<Packet>> {
    match Packet::read(buf, MAX_PACKET) {
        Ok(p) => Ok(Some(p)),
        Err(CodecError::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(anyhow!("malformed packet from broker: {e}")),
    }
}

/// Read until one whole packet is buffered and return it.
pub async fn read_packet(conn: &mut Conn) -> Result<Packet> {
    loop {
        if let Some(p) = next_packet(&mut conn.buf)? {
            return Ok(p);
        }
        if conn.rd.read_buf(&mut conn.buf).await? == 0 {
            bail!("broker closed the connection");
        }
    }
}

/// Write one control packet.
pub async fn write_packet(wr: &mut OwnedWriteHalf, packet: Packet) -> Result<()> {
    let mut out = BytesMut::with_capacity(packet.size());
    packet
        .write(&mut out, MAX_PACKET)
        .map_err(|e| anyhow!("encode: {e}"))?;
    wr.write_all(&out).await?;
    Ok(())
}

/// Open a TCP connection (no Nagle), send CONNECT with a clean session and wait for CONNACK.
pub async fn connect(addr: SocketAddr, client_id: &str) -> Result<Conn> {
    let fut = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (rd, mut wr) = stream.into_split();
        let mut connect = Connect::new(client_id);
        connect.keep_alive = KEEP_ALIVE_SECS;
        connect.clean_session = true;
        write_packet(&mut wr, Packet::Connect(connect)).await?;
        let mut conn = Conn {
            rd,
            wr,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        match read_packet(&mut conn).await? {
            Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Success,
                ..
            }) => Ok(conn),
            other => bail!("CONNECT refused: {other:?}"),
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .with_context(|| format!("connect {client_id} to {addr}: timed out"))?
        .with_context(|| format!("connect {client_id} to {addr}"))
}

/// Subscribe to each topic with its own SUBSCRIBE (the most widely supported form) and wait for
/// every SUBACK; a refused filter is an error.
pub async fn subscribe(conn: &mut Conn, topics: &[String], qos: u8) -> Result<()> {
    let fut = async {
        for (i, topic) in topics.iter().enumerate() {
            let mut sub = Subscribe::new(topic.as_str(), qos_of(qos));
            sub.pkid = u16::try_from(i + 1).context("too many topics")?;
            write_packet(&mut conn.wr, Packet::Subscribe(sub)).await?;
        }
        let mut pending = topics.len();
        while pending > 0 {
            match read_packet(conn).await? {
                Packet::SubAck(SubAck { return_codes, .. }) => {
                    if return_codes.contains(&SubscribeReasonCode::Failure) {
                        bail!("SUBSCRIBE refused");
                    }
                    pending -= 1;
                }
                other => bail!("expected SUBACK, got {other:?}"),
            }
        }
        Ok(())
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .context("subscribe: timed out")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_through_rumqttc() {
        let stamp = Stamp {
            publisher: 7,
            seq: 123_456,
            sent_ns: 987_654_321,
        };
        for qos in [0u8, 1] {
            let mut buf = BytesMut::new();
            encode_publish(&mut buf, "bench/7", qos, 42, 200, stamp);
            let packet = next_packet(&mut buf).ok().flatten();
            let Some(Packet::Publish(p)) = packet else {
                panic!("not a publish: {packet:?}");
            };
            assert_eq!(p.topic, "bench/7");
            assert_eq!(p.payload.len(), 200);
            assert_eq!(p.qos, qos_of(qos));
            if qos == 1 {
                assert_eq!(p.pkid, 42);
            }
            assert!(serde_json::from_slice::<String>(&p.payload).is_ok());
            assert_eq!(decode_stamp(&p.payload), Some(stamp));
        }
    }
}

//! A raw MQTT 3.1.1 or 5 client over one TCP socket, built on `ordo_common::mqtt`
//! (the `*5` methods speak MQTT 5 through `ordo_common::mqtt::v5`).
//!
//! Every packet the test sends and receives is visible, so tests can pipeline
//! publishes, hold acknowledgements back, check packet ids, or write bytes no
//! well-behaved client would. Every read is bounded by a timeout.
//!
//! This file depends only on external crates (no `crate::` paths), so
//! `entry/tests/process.rs` includes it with `#[path]` as well.

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use ordo_common::mqtt::{
    self, v5, ConnAck, Connect, DecodeError, Packet, Publish, QoS, ReasonCode, SubAck, SubAckCode,
    Subscribe, Unsubscribe, Will,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a single expected packet may take to arrive.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest packet the client accepts from the server.
const CLIENT_MAX_PACKET: usize = 16 << 20;

/// A raw MQTT client connection.
pub struct RawMqtt {
    stream: TcpStream,
    inbuf: BytesMut,
    out: BytesMut,
}

/// Build a CONNECT packet with the usual fields.
pub fn connect_packet(client_id: &str, clean_session: bool, keep_alive: u16) -> Connect {
    Connect {
        protocol_level: mqtt::PROTOCOL_LEVEL_3_1_1,
        client_id: client_id.to_owned(),
        clean_session,
        keep_alive,
        will: None,
        username: None,
        password: None,
    }
}

/// Build a will message.
pub fn will(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Will {
    Will {
        topic: topic.to_owned(),
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain,
    }
}

/// Build a PUBLISH packet.
pub fn publish_packet(topic: &str, payload: &[u8], qos: QoS, pkid: u16, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.to_owned(),
        pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Build an MQTT 5 CONNECT without properties.
pub fn connect5_packet(client_id: &str, clean_start: bool, keep_alive: u16) -> v5::Connect {
    v5::Connect {
        protocol_level: v5::PROTOCOL_LEVEL_5,
        client_id: client_id.to_owned(),
        clean_start,
        keep_alive,
        properties: v5::Properties::default(),
        will: None,
        username: None,
        password: None,
    }
}

/// Build an MQTT 5 PUBLISH.
pub fn publish5(topic: &str, payload: &[u8], qos: QoS, pkid: u16, retain: bool) -> v5::Publish {
    v5::Publish {
        dup: false,
        qos,
        retain,
        topic: topic.to_owned(),
        pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
        properties: v5::Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

impl RawMqtt {
    /// Connect with an MQTT 5 CONNECT; return the CONNACK whatever its reason code.
    pub async fn connect5(
        addr: SocketAddr,
        connect: v5::Connect,
    ) -> anyhow::Result<(RawMqtt, v5::ConnAck)> {
        let mut client = Self::tcp(addr).await?;
        client
            .send5(&v5::Packet::Connect(Box::new(connect)))
            .await?;
        match client.recv5().await? {
            v5::Packet::ConnAck(ack) => Ok((client, ack)),
            other => bail!("expected CONNACK, got {other:?}"),
        }
    }

    /// Encode and send one MQTT 5 packet.
    pub async fn send5(&mut self, packet: &v5::Packet) -> anyhow::Result<()> {
        v5::encode(packet, &mut self.out).map_err(|e| anyhow!("encode {packet:?}: {e}"))?;
        self.flush().await
    }

    /// Return the next MQTT 5 packet, waiting at most [`RECV_TIMEOUT`].
    pub async fn recv5(&mut self) -> anyhow::Result<v5::Packet> {
        match self.recv5_within(RECV_TIMEOUT).await? {
            Some(p) => Ok(p),
            None => bail!("no packet within {RECV_TIMEOUT:?}"),
        }
    }

    /// Return the next MQTT 5 packet, or `None` if none arrives within `wait`.
    pub async fn recv5_within(&mut self, wait: Duration) -> anyhow::Result<Option<v5::Packet>> {
        self.recv_with(wait, v5::decode).await
    }

    /// Wait until the server closes the connection; return the MQTT 5 packets received before.
    pub async fn expect_closed5(&mut self, wait: Duration) -> anyhow::Result<Vec<v5::Packet>> {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            while let Ok(Some(packet)) = v5::decode(&mut self.inbuf, CLIENT_MAX_PACKET) {
                seen.push(packet);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.inbuf)).await {
                Err(_) => bail!("connection still open after {wait:?} (received {seen:?})"),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(seen),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Subscribe in MQTT 5 and return the SUBACK reason codes.
    pub async fn subscribe5(
        &mut self,
        pkid: u16,
        properties: v5::Properties,
        filters: &[(&str, v5::SubscriptionOptions)],
    ) -> anyhow::Result<Vec<ReasonCode>> {
        self.send5(&v5::Packet::Subscribe(v5::Subscribe {
            pkid,
            properties,
            filters: filters.iter().map(|(f, o)| ((*f).to_owned(), *o)).collect(),
        }))
        .await?;
        match self.recv5().await? {
            v5::Packet::SubAck(ack) if ack.pkid == pkid => Ok(ack.reasons),
            other => bail!("expected SUBACK {pkid}, got {other:?}"),
        }
    }

    /// Return the next MQTT 5 PUBLISH, acknowledging QoS 1 and 2 (the whole
    /// exchange); fail on any other packet.
    pub async fn recv_publish5(&mut self) -> anyhow::Result<v5::Publish> {
        match self.recv5().await? {
            v5::Packet::Publish(p) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => {
                        self.send5(&v5::Packet::PubAck(v5::Ack::success(p.pkid)))
                            .await?
                    }
                    QoS::ExactlyOnce => {
                        self.send5(&v5::Packet::PubRec(v5::Ack::success(p.pkid)))
                            .await?;
                        match self.recv5().await? {
                            v5::Packet::PubRel(a) if a.pkid == p.pkid => {}
                            other => bail!("expected PUBREL {}, got {other:?}", p.pkid),
                        }
                        self.send5(&v5::Packet::PubComp(v5::Ack::success(p.pkid)))
                            .await?;
                    }
                }
                Ok(p)
            }
            other => bail!("expected PUBLISH, got {other:?}"),
        }
    }

    async fn recv_with<P>(
        &mut self,
        wait: Duration,
        decode: fn(&mut BytesMut, usize) -> Result<Option<P>, DecodeError>,
    ) -> anyhow::Result<Option<P>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(packet) =
                decode(&mut self.inbuf, CLIENT_MAX_PACKET).context("decode from server")?
            {
                return Ok(Some(packet));
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.inbuf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => bail!("connection closed by the server"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e).context("read"),
            }
        }
    }

    /// Open a TCP connection and send nothing yet.
    pub async fn tcp(addr: SocketAddr) -> anyhow::Result<RawMqtt> {
        let stream = tokio::time::timeout(RECV_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("tcp connect timed out")?
            .with_context(|| format!("tcp connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(RawMqtt {
            stream,
            inbuf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::with_capacity(64 * 1024),
        })
    }

    /// Connect with a client id, clean-session flag and keepalive; fail unless accepted.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        clean_session: bool,
        keep_alive: u16,
    ) -> anyhow::Result<(RawMqtt, ConnAck)> {
        Self::connect_with(addr, connect_packet(client_id, clean_session, keep_alive)).await
    }

    /// Connect with an arbitrary CONNECT packet; fail unless the CONNACK accepts it.
    pub async fn connect_with(
        addr: SocketAddr,
        connect: Connect,
    ) -> anyhow::Result<(RawMqtt, ConnAck)> {
        let mut client = Self::tcp(addr).await?;
        client.send(&Packet::Connect(connect)).await?;
        match client.recv().await? {
            Packet::ConnAck(ack) if ack.code == mqtt::ConnectReturnCode::Accepted => {
                Ok((client, ack))
            }
            other => bail!("expected an accepting CONNACK, got {other:?}"),
        }
    }

    /// Encode a packet into the output buffer without sending it.
    pub fn queue(&mut self, packet: &Packet) -> anyhow::Result<()> {
        mqtt::encode(packet, &mut self.out).map_err(|e| anyhow!("encode {packet:?}: {e}"))
    }

    /// Write everything queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = self.out.split();
        tokio::time::timeout(RECV_TIMEOUT, self.stream.write_all(&out))
            .await
            .context("write timed out")??;
        Ok(())
    }

    /// Encode and send one packet.
    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        self.queue(packet)?;
        self.flush().await
    }

    /// Send bytes exactly as given.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        tokio::time::timeout(RECV_TIMEOUT, self.stream.write_all(bytes))
            .await
            .context("write timed out")??;
        Ok(())
    }

    /// Return the next packet, waiting at most [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> anyhow::Result<Packet> {
        match self.recv_within(RECV_TIMEOUT).await? {
            Some(p) => Ok(p),
            None => bail!("no packet within {RECV_TIMEOUT:?}"),
        }
    }

    /// Return the next packet, or `None` if none arrives within `wait`.
    ///
    /// Fails if the server closes the connection.
    pub async fn recv_within(&mut self, wait: Duration) -> anyhow::Result<Option<Packet>> {
        self.recv_with(wait, mqtt::decode).await
    }

    /// Decode one packet already buffered, without reading from the socket.
    pub fn try_next(&mut self) -> anyhow::Result<Option<Packet>> {
        mqtt::decode(&mut self.inbuf, CLIENT_MAX_PACKET).context("decode from server")
    }

    /// Read once from the socket into the buffer, waiting at most [`RECV_TIMEOUT`].
    ///
    /// Fails if the server closes the connection.
    pub async fn fill(&mut self) -> anyhow::Result<()> {
        match tokio::time::timeout(RECV_TIMEOUT, self.stream.read_buf(&mut self.inbuf)).await {
            Err(_) => bail!("nothing received within {RECV_TIMEOUT:?}"),
            Ok(Ok(0)) => bail!("connection closed by the server"),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e).context("read"),
        }
    }

    /// Wait until the server closes the connection; return the packets received before.
    ///
    /// Fails if the connection is still open after `wait`.
    pub async fn expect_closed(&mut self, wait: Duration) -> anyhow::Result<Vec<Packet>> {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            while let Ok(Some(packet)) = mqtt::decode(&mut self.inbuf, CLIENT_MAX_PACKET) {
                seen.push(packet);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.inbuf)).await {
                Err(_) => bail!("connection still open after {wait:?} (received {seen:?})"),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(seen),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Subscribe and return the SUBACK codes.
    pub async fn subscribe(
        &mut self,
        pkid: u16,
        filters: &[(&str, QoS)],
    ) -> anyhow::Result<Vec<SubAckCode>> {
        self.send(&Packet::Subscribe(Subscribe {
            pkid,
            filters: filters.iter().map(|(f, q)| ((*f).to_owned(), *q)).collect(),
        }))
        .await?;
        match self.recv().await? {
            Packet::SubAck(SubAck { pkid: got, codes }) if got == pkid => Ok(codes),
            other => bail!("expected SUBACK {pkid}, got {other:?}"),
        }
    }

    /// Unsubscribe and wait for the UNSUBACK.
    pub async fn unsubscribe(&mut self, pkid: u16, filters: &[&str]) -> anyhow::Result<()> {
        self.send(&Packet::Unsubscribe(Unsubscribe {
            pkid,
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
        }))
        .await?;
        match self.recv().await? {
            Packet::UnsubAck(got) if got == pkid => Ok(()),
            other => bail!("expected UNSUBACK {pkid}, got {other:?}"),
        }
    }

    /// Publish at QoS 1 and wait for its PUBACK (nothing else may arrive meanwhile).
    pub async fn publish_acked(
        &mut self,
        topic: &str,
        payload: &[u8],
        pkid: u16,
        retain: bool,
    ) -> anyhow::Result<()> {
        self.send(&publish_packet(
            topic,
            payload,
            QoS::AtLeastOnce,
            pkid,
            retain,
        ))
        .await?;
        match self.recv().await? {
            Packet::PubAck(got) if got == pkid => Ok(()),
            other => bail!("expected PUBACK {pkid}, got {other:?}"),
        }
    }

    /// Return the next PUBLISH, acknowledging it if it is QoS 1; fail on any other packet.
    pub async fn recv_publish(&mut self) -> anyhow::Result<Publish> {
        match self.recv().await? {
            Packet::Publish(p) => {
                if p.qos == QoS::AtLeastOnce {
                    self.send(&Packet::PubAck(p.pkid)).await?;
                }
                Ok(p)
            }
            other => bail!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Send DISCONNECT and close the socket.
    pub async fn disconnect(mut self) -> anyhow::Result<()> {
        self.send(&Packet::Disconnect).await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}

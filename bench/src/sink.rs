//! The generator's own ceiling: an in-process MQTT "broker" that acks and forwards nothing.
//!
//! It runs on its own thread with a single-threaded runtime (like a one-core broker), answers
//! CONNECT, PUBLISH (PUBACK at QoS 1), SUBSCRIBE and PINGREQ at once, and counts the PUBLISHes it
//! received. Whatever rate the generator reaches against it is the most it can offer a real broker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, SubAck, SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::wire::{next_packet, MAX_PACKET};

/// A running sink; dropping it stops the thread and closes every connection.
pub struct Sink {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Bind 127.0.0.1 on a free port and start serving.
    pub fn start() -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind sink")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let counter = Arc::clone(&received);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("sink runtime")?;
        let thread = std::thread::Builder::new()
            .name("ordo-bench-sink".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = accept_loop(listener, counter) => {}
                    }
                });
            })
            .context("spawn sink thread")?;
        Ok(Self {
            addr,
            received,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counter of PUBLISH packets received so far.
    pub fn received(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.received)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, received: Arc<AtomicU64>) {
    while let Ok((stream, _)) = listener.accept().await {
        let counter = Arc::clone(&received);
        tokio::spawn(async move {
            let _ = serve(stream, counter).await;
        });
    }
}

async fn serve(stream: TcpStream, received: Arc<AtomicU64>) -> Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        if rd.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut publishes = 0;
        while let Some(packet) = next_packet(&mut buf)? {
            let reply = match packet {
                Packet::Connect(_) => Some(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::Success,
                    false,
                ))),
                Packet::Publish(p) => {
                    publishes += 1;
                    (p.pkid != 0).then(|| Packet::PubAck(PubAck::new(p.pkid)))
                }
                Packet::Subscribe(s) => Some(Packet::SubAck(SubAck::new(
                    s.pkid,
                    s.filters
                        .iter()
                        .map(|f| SubscribeReasonCode::Success(f.qos))
                        .collect(),
                ))),
                Packet::PingReq => Some(Packet::PingResp),
                Packet::Disconnect => return Ok(()),
                _ => None,
            };
            if let Some(reply) = reply {
                reply
                    .write(&mut out, MAX_PACKET)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        received.fetch_add(publishes, Ordering::Relaxed);
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
    }
}

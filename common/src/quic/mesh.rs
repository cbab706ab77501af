//! The node mesh: one outgoing QUIC stream per peer, frames in, `(from, Msg)` out.
//!
//! ```text
//!  Mesh::send(to, msg) ──► per-peer queue ──► [peer task] connect, open uni stream,
//!                                              Hello(me), then Msg frames
//!  [accept task] ──► per connection, per uni stream: Hello(from), Msg frames ──► inbox
//! ```
//!
//! The protocol tolerates loss (every request is retried), so the mesh drops
//! rather than blocks: a full per-peer queue drops the message, and a broken
//! connection loses what was in flight and reconnects with backoff. Each
//! direction of a pair uses its own connection; inbound frames wait for room in
//! the inbox, which pushes back on the sender through QUIC flow control.
//!
//! Who a peer is: any holder of a certificate from the cluster CA may connect,
//! and its first frame names it; the name must be one its certificate carries
//! (`sync1`, `ndb2`, `entry3`), or the connection is closed. Outgoing, a node
//! checks that the peer's certificate carries the name it dialled.

use super::{
    client_config, encode_frame, read_frame, server_config, write_frame, NodeIdentity, QuicError,
};
use crate::proto::{Msg, NodeId};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest frame accepted from a peer (a BEGIN of many large bodies).
pub const MAX_FRAME: usize = 512 << 20;
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 16_384;
/// Bytes of kernel buffer asked for each node socket, each way.
pub(super) const SOCKET_BUFFER: usize = 4 << 20;
/// Bytes of queued frames gathered into one stream write.
const MAX_BATCH: usize = 256 << 10;

/// The first frame of every stream: who is speaking.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Hello {
    pub(super) from: NodeId,
}

/// Counters a node exports as metrics.
#[derive(Debug, Default)]
pub struct MeshStats {
    /// Messages dropped because a peer's queue was full or its connection broke.
    pub dropped: AtomicU64,
    /// Frames received from peers.
    pub received: AtomicU64,
    /// Connections opened to peers (reconnects included).
    pub connects: AtomicU64,
}

/// Sends messages to peers; cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    me: NodeId,
    peers: Arc<BTreeMap<NodeId, mpsc::Sender<Msg>>>,
    stats: Arc<MeshStats>,
    endpoint: quinn::Endpoint,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").field("me", &self.me).finish()
    }
}

impl Mesh {
    /// Bind `bind`, accept peers into `inbox`, and start one sender task per peer.
    ///
    /// `peers` may include this node; messages to itself go straight to the inbox.
    /// Call from inside a tokio runtime.
    pub fn start(
        me: NodeId,
        bind: SocketAddr,
        peers: &BTreeMap<NodeId, SocketAddr>,
        identity: &NodeIdentity,
        inbox: mpsc::Sender<(NodeId, Msg)>,
    ) -> Result<Mesh, QuicError> {
        let transport = Arc::new(transport());
        let mut server = server_config(identity)?;
        server.transport_config(transport.clone());
        let mut client = client_config(identity)?;
        client.transport_config(transport);
        let socket = bind_socket(bind).map_err(QuicError::Bind)?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(QuicError::Bind)?;
        endpoint.set_default_client_config(client);
        let stats = Arc::new(MeshStats::default());
        let mut queues = BTreeMap::new();
        for (&peer, &addr) in peers {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            if peer == me {
                tokio::spawn(loopback(me, rx, inbox.clone()));
            } else {
                tokio::spawn(peer_sender(
                    me,
                    peer,
                    addr,
                    endpoint.clone(),
                    rx,
                    stats.clone(),
                ));
            }
            queues.insert(peer, tx);
        }
        tokio::spawn(accept(endpoint.clone(), inbox, stats.clone()));
        Ok(Mesh {
            me,
            peers: Arc::new(queues),
            stats,
            endpoint,
        })
    }

    /// Queue a message for a peer; drop it (and count it) when the peer's queue is full.
    pub fn send(&self, to: NodeId, msg: Msg) {
        match self.peers.get(&to) {
            Some(tx) => {
                if tx.try_send(msg).is_err() {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => tracing::warn!(%to, "message for a node that is not in the cluster file"),
        }
    }

    /// Return this node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Return the mesh counters.
    pub fn stats(&self) -> &MeshStats {
        &self.stats
    }

    /// Return the bound UDP address.
    pub fn local_addr(&self) -> Result<SocketAddr, QuicError> {
        self.endpoint.local_addr().map_err(QuicError::Bind)
    }

    /// Close every connection and stop accepting.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }
}

/// Bind the node's UDP socket with room for bursts in its kernel buffers.
///
/// A `Begin` of a large segment is a burst of full datagrams to every ndb, and several
/// entries burst at once; Linux's default receive buffer (208 KiB, about 90 such datagrams)
/// overflowed on the ndbs under load, and each drop stalls a QUIC stream until the loss is
/// repaired (docs/performance.md, nineteenth day). The kernel caps the request at
/// `net.core.rmem_max` / `wmem_max`; a smaller grant is logged, not fatal.
pub(super) fn bind_socket(bind: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER)),
    ] {
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not enlarge the UDP {what} buffer");
        }
    }
    socket.bind(&bind.into())?;
    let granted = socket.recv_buffer_size().unwrap_or(0);
    // Linux reports twice what it granted (the doubling covers its bookkeeping).
    #[cfg(target_os = "linux")]
    let granted = granted / 2;
    if granted < SOCKET_BUFFER {
        tracing::info!(
            granted,
            wanted = SOCKET_BUFFER,
            "UDP receive buffer smaller than wanted; raise net.core.rmem_max to absorb bursts"
        );
    }
    Ok(socket.into())
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Notice a dead peer within seconds; keep idle links open.
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    t.max_idle_timeout(Some(quinn::VarInt::from_u32(3_000).into()));
    t.stream_receive_window(quinn::VarInt::from_u32(8 << 20));
    t.receive_window(quinn::VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    // Each connection carries one direction of traffic, so no ACK rides on a reply, and
    // QUIC's default (an ACK for every second packet) sent many pure ACKs. Asking peers
    // (the ACK frequency extension; every node sets it) to ack every 11th packet or after
    // 25 ms cut the datagrams per message by a fifth (docs/performance.md, fourteenth day).
    // A packet out of order is still acked at once.
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(quinn::VarInt::from_u32(10));
    acks.max_ack_delay(Some(Duration::from_millis(25)));
    t.ack_frequency_config(Some(acks));
    t
}

async fn loopback(me: NodeId, mut rx: mpsc::Receiver<Msg>, inbox: mpsc::Sender<(NodeId, Msg)>) {
    while let Some(msg) = rx.recv().await {
        if inbox.send((me, msg)).await.is_err() {
            return;
        }
    }
}

async fn peer_sender(
    me: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    mut rx: mpsc::Receiver<Msg>,
    stats: Arc<MeshStats>,
) {
    let mut backoff = Duration::from_millis(20);
    let mut logged_down = false;
    loop {
        let stream = async {
            let conn = super::connect_to(&endpoint, addr, &peer.to_string()).await?;
            let mut send = conn.open_uni().await?;
            write_frame(&mut send, &Hello { from: me }).await?;
            Ok::<_, QuicError>((conn, send))
        }
        .await;
        let (conn, mut send) = match stream {
            Ok(s) => s,
            Err(e) => {
                if !logged_down {
                    tracing::info!(%peer, %addr, error = %e, "peer unreachable; retrying");
                    logged_down = true;
                }
                // Whatever queued while the peer is down is stale: the protocol retries.
                while let Ok(_msg) = rx.try_recv() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                if rx.is_closed() {
                    return;
                }
                continue;
            }
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%peer, %addr, "connected to peer");
        logged_down = false;
        backoff = Duration::from_millis(20);
        let mut batch = Vec::new();
        loop {
            let Some(msg) = rx.recv().await else {
                let _ = send.finish();
                return;
            };
            // Whatever queued meanwhile goes in the same write: one wake of the connection,
            // and small messages share packets.
            batch.clear();
            let mut count = 0;
            let mut next = Some(msg);
            while let Some(msg) = next.take() {
                match encode_frame(&mut batch, &msg) {
                    Ok(()) => count += 1,
                    Err(e) => {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, error = %e, "a message could not be encoded; dropped");
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if let Err(e) = send.write_all(&batch).await {
                stats.dropped.fetch_add(count, Ordering::Relaxed);
                tracing::info!(%peer, error = %e, "lost the connection to a peer; reconnecting");
                break;
            }
        }
        conn.close(0u32.into(), b"reconnect");
    }
}

/// Send `msgs` once to the node `peer` at `addr`, speaking as `me`; return once the peer
/// has read them all.
///
/// For tools that only send, such as the operator's command line (`me` is
/// [`NodeId::Operator`]): a fresh client endpoint, the same mutual TLS and name checks as
/// the mesh (the peer's certificate must carry `peer`'s name, `identity` must carry
/// `me`'s), one stream of `Hello` and frames. Call from inside a tokio runtime.
pub async fn send_once(
    me: NodeId,
    identity: &NodeIdentity,
    peer: NodeId,
    addr: SocketAddr,
    msgs: &[Msg],
) -> Result<(), QuicError> {
    let bind: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(QuicError::Bind)?;
    endpoint.set_default_client_config(client_config(identity)?);
    let conn = super::connect_to(&endpoint, addr, &peer.to_string()).await?;
    let mut send = conn.open_uni().await?;
    write_frame(&mut send, &Hello { from: me }).await?;
    for m in msgs {
        write_frame(&mut send, m).await?;
    }
    // Wait until the peer read to the end (or refused), so nothing is lost to our close.
    let _ = send.finish();
    let _ = send.stopped().await;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    Ok(())
}

async fn accept(
    endpoint: quinn::Endpoint,
    inbox: mpsc::Sender<(NodeId, Msg)>,
    stats: Arc<MeshStats>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let inbox = inbox.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "refused a peer connection");
                    return;
                }
            };
            while let Ok(recv) = conn.accept_uni().await {
                tokio::spawn(read_stream(
                    conn.clone(),
                    recv,
                    inbox.clone(),
                    stats.clone(),
                ));
            }
        });
    }
}

async fn read_stream(
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    inbox: mpsc::Sender<(NodeId, Msg)>,
    stats: Arc<MeshStats>,
) {
    let from = match read_frame::<Hello>(&mut recv, 1024).await {
        Ok(Some(h)) => h.from,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "a peer stream did not start with a hello");
            return;
        }
    };
    // Any cluster certificate gets past TLS; only the node's own may speak for it.
    if !super::peer_is(&conn, &from.to_string()) {
        tracing::warn!(claimed = %from, remote = %conn.remote_address(),
            "a peer's certificate does not name the node it claims to be; refused");
        conn.close(1u32.into(), b"certificate does not match hello");
        return;
    }
    loop {
        match read_frame::<Msg>(&mut recv, MAX_FRAME).await {
            Ok(Some(msg)) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                if inbox.send((from, msg)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(QuicError::Read(_)) => return,
            Err(e) => {
                tracing::warn!(%from, error = %e, "bad frame from a peer; dropping its stream");
                return;
            }
        }
    }
}

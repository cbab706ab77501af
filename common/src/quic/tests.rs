use super::*;
use serde::Deserialize;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Ping {
    n: u64,
    body: Vec<u8>,
}

async fn serve_one(endpoint: quinn::Endpoint) -> Result<Ping, QuicError> {
    let incoming = endpoint
        .accept()
        .await
        .ok_or_else(|| QuicError::Cert("endpoint closed".into()))?;
    let conn = incoming.await?;
    let (mut send, mut recv) = conn.accept_bi().await?;
    let ping: Ping = read_frame(&mut recv, 1 << 20)
        .await?
        .ok_or_else(|| QuicError::Cert("no frame".into()))?;
    write_frame(
        &mut send,
        &Ping {
            n: ping.n + 1,
            body: vec![],
        },
    )
    .await?;
    send.finish().map_err(|e| QuicError::Cert(e.to_string()))?;
    conn.closed().await;
    Ok(ping)
}

#[tokio::test]
async fn nodes_of_one_ca_exchange_frames() {
    let dir = std::env::temp_dir().join(format!("ordo-quic-{}", std::process::id()));
    generate_dev_certs(&dir, &["a", "b"]).expect("certs");
    let a = endpoint(
        "127.0.0.1:0".parse().expect("addr"),
        &load_identity(&dir, "a").expect("a"),
    )
    .expect("a");
    let b = endpoint(
        "127.0.0.1:0".parse().expect("addr"),
        &load_identity(&dir, "b").expect("b"),
    )
    .expect("b");
    let a_addr = a.local_addr().expect("addr");
    let server = tokio::spawn(serve_one(a));
    let conn = connect(&b, a_addr).await.expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    write_frame(
        &mut send,
        &Ping {
            n: 41,
            body: vec![1, 2, 3],
        },
    )
    .await
    .expect("write");
    let reply: Ping = read_frame(&mut recv, 1024)
        .await
        .expect("read")
        .expect("frame");
    assert_eq!(reply.n, 42);
    conn.close(0u32.into(), b"done");
    let got = server.await.expect("join").expect("serve");
    assert_eq!(
        got,
        Ping {
            n: 41,
            body: vec![1, 2, 3]
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn node_from_another_ca_is_refused() {
    let base = std::env::temp_dir().join(format!("ordo-quic-rogue-{}", std::process::id()));
    let (good, rogue) = (base.join("good"), base.join("rogue"));
    generate_dev_certs(&good, &["a"]).expect("certs");
    generate_dev_certs(&rogue, &["x"]).expect("certs");
    let a = endpoint(
        "127.0.0.1:0".parse().expect("addr"),
        &load_identity(&good, "a").expect("a"),
    )
    .expect("a");
    let a_addr = a.local_addr().expect("addr");
    // The rogue trusts the good CA, so only the server's check of the client certificate can refuse it.
    let mut rogue_id = load_identity(&rogue, "x").expect("x");
    rogue_id.ca = load_identity(&good, "a").expect("a").ca;
    let x = endpoint("127.0.0.1:0".parse().expect("addr"), &rogue_id).expect("x");
    let server = tokio::spawn(async move { serve_one(a).await });
    let refused = async {
        let conn = connect(&x, a_addr).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, &Ping { n: 1, body: vec![] }).await?;
        read_frame::<Ping>(&mut recv, 1024).await
    };
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), refused)
        .await
        .expect("bounded");
    assert!(
        !matches!(result, Ok(Some(_))),
        "rogue node got an answer: {result:?}"
    );
    assert!(
        server.await.expect("join").is_err(),
        "server accepted a rogue client"
    );
    let _ = std::fs::remove_dir_all(&base);
}

#[tokio::test]
async fn oversized_frame_is_refused_before_allocation() {
    let dir = std::env::temp_dir().join(format!("ordo-quic-big-{}", std::process::id()));
    generate_dev_certs(&dir, &["a", "b"]).expect("certs");
    let a = endpoint(
        "127.0.0.1:0".parse().expect("addr"),
        &load_identity(&dir, "a").expect("a"),
    )
    .expect("a");
    let b = endpoint(
        "127.0.0.1:0".parse().expect("addr"),
        &load_identity(&dir, "b").expect("b"),
    )
    .expect("b");
    let a_addr = a.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let conn = a.accept().await.expect("incoming").await.expect("conn");
        let (_send, mut recv) = conn.accept_bi().await.expect("bi");
        read_frame::<Ping>(&mut recv, 16).await
    });
    let conn = connect(&b, a_addr).await.expect("connect");
    let (mut send, _recv) = conn.open_bi().await.expect("open");
    write_frame(
        &mut send,
        &Ping {
            n: 1,
            body: vec![0; 100],
        },
    )
    .await
    .expect("write");
    let result = server.await.expect("join");
    assert!(
        matches!(result, Err(QuicError::FrameTooLarge { max: 16, .. })),
        "{result:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Send `hello` then one message to `mesh_addr` as the holder of `identity`;
/// return whether the mesh's inbox got the message.
async fn heard_as(
    identity: &NodeIdentity,
    mesh_addr: std::net::SocketAddr,
    hello: crate::proto::NodeId,
    inbox: &mut tokio::sync::mpsc::Receiver<(crate::proto::NodeId, crate::proto::Msg)>,
) -> bool {
    let client = endpoint("127.0.0.1:0".parse().expect("addr"), identity).expect("client");
    let conn = connect_to(&client, mesh_addr, "sync1")
        .await
        .expect("connect");
    let mut send = conn.open_uni().await.expect("open");
    write_frame(&mut send, &mesh::Hello { from: hello })
        .await
        .expect("hello");
    let msg = crate::proto::Msg::Trim {
        owner: 1,
        segment: 1,
        count: 1,
    };
    write_frame(&mut send, &msg).await.expect("msg");
    let got = tokio::time::timeout(std::time::Duration::from_secs(2), inbox.recv()).await;
    conn.close(0u32.into(), b"done");
    matches!(got, Ok(Some((from, _))) if from == hello)
}

#[tokio::test]
async fn a_peer_is_only_heard_under_its_certificates_name() {
    use crate::proto::NodeId;
    let dir = std::env::temp_dir().join(format!("ordo-quic-name-{}", std::process::id()));
    generate_dev_certs(&dir, &["sync1", "ndb1"]).expect("certs");
    let (tx, mut inbox) = tokio::sync::mpsc::channel(16);
    let sync1 = load_identity(&dir, "sync1").expect("sync1");
    let mesh = mesh::Mesh::start(
        NodeId::Sync(1),
        "127.0.0.1:0".parse().expect("addr"),
        &std::collections::BTreeMap::new(),
        &sync1,
        tx,
    )
    .expect("mesh");
    let addr = mesh.local_addr().expect("addr");
    let ndb1 = load_identity(&dir, "ndb1").expect("ndb1");
    // ndb1's certificate, claiming to be sync2: refused.
    assert!(!heard_as(&ndb1, addr, NodeId::Sync(2), &mut inbox).await);
    // The same certificate under its own name: heard.
    assert!(heard_as(&ndb1, addr, NodeId::Ndb(1), &mut inbox).await);
    // Dialling sync1 by another node's name fails the server check.
    let client = endpoint("127.0.0.1:0".parse().expect("addr"), &ndb1).expect("client");
    assert!(connect_to(&client, addr, "sync2").await.is_err());
    mesh.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A peer whose frame does not decode loses its stream, and nothing after that frame is
/// taken from it; the node and its other peers go on, and the peer is heard again once it
/// reconnects.
#[tokio::test]
async fn a_frame_that_does_not_decode_drops_only_that_peers_stream() {
    use crate::proto::{Msg, NodeId};
    let dir = std::env::temp_dir().join(format!("ordo-quic-garbage-{}", std::process::id()));
    generate_dev_certs(&dir, &["sync1", "ndb1", "ndb2"]).expect("certs");
    let (tx, mut inbox) = tokio::sync::mpsc::channel(16);
    let mesh = mesh::Mesh::start(
        NodeId::Sync(1),
        "127.0.0.1:0".parse().expect("addr"),
        &std::collections::BTreeMap::new(),
        &load_identity(&dir, "sync1").expect("sync1"),
        tx,
    )
    .expect("mesh");
    let addr = mesh.local_addr().expect("addr");
    let ndb1 = load_identity(&dir, "ndb1").expect("ndb1");
    let client = endpoint("127.0.0.1:0".parse().expect("addr"), &ndb1).expect("client");
    let conn = connect_to(&client, addr, "sync1").await.expect("connect");
    let mut send = conn.open_uni().await.expect("open");
    write_frame(
        &mut send,
        &mesh::Hello {
            from: NodeId::Ndb(1),
        },
    )
    .await
    .expect("hello");
    // A well-formed length prefix around bytes that are no message (0xc1 is never valid
    // msgpack), then a valid message the node must not take after it.
    send.write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1])
        .await
        .expect("garbage");
    let trim = Msg::Trim {
        owner: 1,
        segment: 1,
        count: 1,
    };
    write_frame(&mut send, &trim).await.expect("msg");
    let got = tokio::time::timeout(std::time::Duration::from_millis(500), inbox.recv()).await;
    assert!(
        got.is_err(),
        "a message after a bad frame was taken: {got:?}"
    );
    // Another peer is heard as before, and so is ndb1 on a new connection.
    let ndb2 = load_identity(&dir, "ndb2").expect("ndb2");
    assert!(heard_as(&ndb2, addr, NodeId::Ndb(2), &mut inbox).await);
    assert!(heard_as(&ndb1, addr, NodeId::Ndb(1), &mut inbox).await);
    conn.close(0u32.into(), b"done");
    mesh.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Between two meshes, a burst far larger than one batch arrives whole and in order,
/// and a batch of frames decodes back to the same messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_arrives_whole_and_in_order() {
    use crate::proto::{Msg, NodeId};
    let dir = std::env::temp_dir().join(format!("ordo-quic-burst-{}", std::process::id()));
    generate_dev_certs(&dir, &["sync1", "sync2"]).expect("certs");
    let bind = |id| {
        let (tx, rx) = tokio::sync::mpsc::channel(1 << 16);
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
        let addr = probe.local_addr().expect("addr");
        drop(probe);
        (id, addr, tx, rx)
    };
    let (a, a_addr, a_tx, _a_rx) = bind(NodeId::Sync(1));
    let (b, b_addr, b_tx, mut b_rx) = bind(NodeId::Sync(2));
    let peers: std::collections::BTreeMap<_, _> = [(a, a_addr), (b, b_addr)].into();
    let ma = mesh::Mesh::start(
        a,
        a_addr,
        &peers,
        &load_identity(&dir, "sync1").expect("id"),
        a_tx,
    )
    .expect("mesh a");
    let mb = mesh::Mesh::start(
        b,
        b_addr,
        &peers,
        &load_identity(&dir, "sync2").expect("id"),
        b_tx,
    )
    .expect("mesh b");
    let n = 5_000u64;
    for segment in 0..n {
        ma.send(
            b,
            Msg::Trim {
                owner: 1,
                segment,
                count: 1,
            },
        );
    }
    for expect in 0..n {
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), b_rx.recv())
            .await
            .expect("in time")
            .expect("open");
        assert!(
            matches!(got, (from, Msg::Trim { segment, .. }) if from == a && segment == expect),
            "message {expect}: got {got:?}"
        );
    }
    assert_eq!(
        ma.stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    ma.close();
    mb.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn frames_of_one_batch_decode_in_order() {
    let mut batch = Vec::new();
    for n in 0..3 {
        encode_frame(
            &mut batch,
            &Ping {
                n,
                body: vec![n as u8; 10],
            },
        )
        .expect("encode");
    }
    let mut rest = &batch[..];
    for n in 0..3 {
        let len = u32::from_be_bytes(rest[..4].try_into().expect("len")) as usize;
        let ping: Ping = rmp_serde::from_slice(&rest[4..4 + len]).expect("decode");
        assert_eq!(
            ping,
            Ping {
                n,
                body: vec![n as u8; 10]
            }
        );
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty());
}

#[test]
fn a_node_socket_gets_the_buffers_the_kernel_allows() {
    let socket = mesh::bind_socket("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let socket = socket2::SockRef::from(&socket);
    for (limit, granted) in [
        ("rmem_max", socket.recv_buffer_size().expect("rcvbuf")),
        ("wmem_max", socket.send_buffer_size().expect("sndbuf")),
    ] {
        // Linux grants min(asked, limit) and reports twice that; elsewhere, skip.
        let Ok(max) = std::fs::read_to_string(format!("/proc/sys/net/core/{limit}")) else {
            return;
        };
        let max: usize = max.trim().parse().expect("a number");
        assert!(
            granted >= mesh::SOCKET_BUFFER.min(max),
            "{limit} {max}: granted {granted}"
        );
    }
}

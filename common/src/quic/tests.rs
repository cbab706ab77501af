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

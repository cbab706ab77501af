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

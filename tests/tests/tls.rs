//! TLS on the client-facing listeners: rumqttc over `mqtt_tls` and over wss on
//! `mqtt_ws_tls` and `wamp_tls`, WAMP over wss, and bytes that are not a TLS
//! handshake (plain MQTT, a truncated ClientHello, garbage) closing only their
//! own connection. The server certificate comes from `ordo-entry dev-cert`'s code.

use anyhow::{ensure, Context};
use ordo_common::mqtt::{self, Packet};
use ordo_common::wamp::{Dict, Serializer, Value};
use ordo_tests::mqtt_raw::connect_packet;
use ordo_tests::wamp_client::{WampClient, REALM};
use ordo_tests::{Rumqtt, TestNode, TIMEOUT};
use rumqttc::{QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Result = anyhow::Result<()>;

const ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A node with all three TLS listeners, and a client config trusting its certificate.
struct TlsNode {
    node: TestNode,
    client: Arc<rustls::ClientConfig>,
    mqtt_tls: SocketAddr,
    wamp_tls: SocketAddr,
    mqtt_ws_tls: SocketAddr,
    _certs: tempfile::TempDir,
}

async fn tls_node() -> anyhow::Result<TlsNode> {
    let certs = tempfile::tempdir()?;
    let (cert, key) = ordo_entry::tls::write_dev_cert(certs.path())?;
    let client = client_config(&cert)?;
    let node = TestNode::start_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        c.mqtt_tls = Some(ANY_PORT);
        c.wamp_tls = Some(ANY_PORT);
        c.mqtt_ws_tls = Some(ANY_PORT);
    })
    .await?;
    Ok(TlsNode {
        mqtt_tls: node.mqtt_tls.context("mqtt_tls not bound")?,
        wamp_tls: node.wamp_tls.context("wamp_tls not bound")?,
        mqtt_ws_tls: node.mqtt_ws_tls.context("mqtt_ws_tls not bound")?,
        node,
        client,
        _certs: certs,
    })
}

/// A rustls client (ring) that trusts exactly the dev certificate.
fn client_config(cert: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(cert)?)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

fn mqtts_options(id: &str, addr: SocketAddr, tls: &TlsNode) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(id, "localhost", addr.port());
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        tls.client.clone(),
    )));
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(4 << 20, 4 << 20);
    options
}

fn wss_options(id: &str, addr: SocketAddr, tls: &TlsNode) -> rumqttc::MqttOptions {
    let url = format!("wss://localhost:{}/mqtt", addr.port());
    let mut options = rumqttc::MqttOptions::new(id, url, addr.port());
    options.set_transport(Transport::wss_with_config(TlsConfiguration::Rustls(
        tls.client.clone(),
    )));
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(4 << 20, 4 << 20);
    options
}

async fn tls_stream(
    addr: SocketAddr,
    tls: &TlsNode,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?.to_owned();
    let connect = tokio_rustls::TlsConnector::from(tls.client.clone()).connect(name, tcp);
    Ok(tokio::time::timeout(TIMEOUT, connect)
        .await
        .context("tls handshake timed out")??)
}

/// Publish from `from` and expect the payload at `to`, both on topic `topic`.
async fn pass(from: &mut Rumqtt, to: &mut Rumqtt, topic: &str, payload: &str) -> Result {
    from.publish_acked(topic, payload, false).await?;
    let got = to.next_publish().await?;
    ensure!(got.payload == payload.as_bytes(), "got {got:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_over_tls_meets_plain_tcp() -> Result {
    let tls = tls_node().await?;
    let mut secure = Rumqtt::connect_with(mqtts_options("secure", tls.mqtt_tls, &tls))
        .await
        .context("rumqttc over tls")?;
    let mut plain = Rumqtt::connect(tls.node.mqtt, "plain").await?;
    secure.subscribe("tls/in", QoS::AtLeastOnce).await?;
    plain.subscribe("tls/out", QoS::AtLeastOnce).await?;
    pass(&mut plain, &mut secure, "tls/in", "to the tls client").await?;
    pass(&mut secure, &mut plain, "tls/out", "from the tls client").await?;
    // A payload spanning many TLS records.
    let big = vec![b'z'; 300_000];
    plain.publish_acked("tls/in", big.clone(), false).await?;
    ensure!(secure.next_publish().await?.payload == big);
    tls.node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_over_wss_on_both_ports() -> Result {
    let tls = tls_node().await?;
    let mut plain = Rumqtt::connect(tls.node.mqtt, "plain").await?;
    plain.subscribe("wss/out", QoS::AtLeastOnce).await?;
    let ports = [("mqtt_ws_tls", tls.mqtt_ws_tls), ("wamp_tls", tls.wamp_tls)];
    for (i, (name, addr)) in ports.into_iter().enumerate() {
        let mut wss = Rumqtt::connect_with(wss_options(&format!("wss{i}"), addr, &tls))
            .await
            .with_context(|| format!("rumqttc over wss to {name}"))?;
        wss.subscribe("wss/in", QoS::AtLeastOnce).await?;
        pass(&mut plain, &mut wss, "wss/in", name).await?;
        pass(&mut wss, &mut plain, "wss/out", name).await?;
    }
    tls.node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wamp_over_wss_pub_sub_with_mqtt() -> Result {
    let tls = tls_node().await?;
    let url = format!("wss://localhost:{}/", tls.wamp_tls.port());
    let stream = Box::new(tls_stream(tls.wamp_tls, &tls).await?);
    let mut sub = WampClient::join_over(stream, &url, Serializer::Json, REALM).await?;
    sub.subscribe("wss.t", Dict::new()).await?;
    let stream = Box::new(tls_stream(tls.wamp_tls, &tls).await?);
    let mut publisher = WampClient::join_over(stream, &url, Serializer::MsgPack, REALM).await?;
    let mut mqtt = Rumqtt::connect_with(mqtts_options("m", tls.mqtt_tls, &tls)).await?;
    mqtt.subscribe("wss/t", QoS::AtLeastOnce).await?;
    let id = publisher
        .publish_acked("wss.t", vec![Value::from("over wss")])
        .await?;
    let event = sub.next_event().await?;
    ensure!(event.publication == id, "{event:?} vs {id}");
    ensure!(event.args == vec![Value::from("over wss")], "{event:?}");
    let got = mqtt.next_publish().await?;
    ensure!(got.payload.as_ref() == b"\"over wss\"", "{got:?}");
    tls.node.shutdown().await;
    Ok(())
}

/// Read until the server closes; fail if it is still open after `TIMEOUT`.
async fn read_to_close(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut got)).await;
    match read {
        Err(_) => anyhow::bail!("server kept the connection open"),
        // A reset after an alert is a close too.
        Ok(_) => Ok(got),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_close_only_their_connection() -> Result {
    let tls = tls_node().await?;
    let mut good = Rumqtt::connect_with(mqtts_options("good", tls.mqtt_tls, &tls)).await?;
    good.subscribe("bad/t", QoS::AtLeastOnce).await?;

    // Plain MQTT to the TLS port: no CONNACK, just (an alert and) a close.
    let mut plain = TcpStream::connect(tls.mqtt_tls).await?;
    let mut connect = bytes::BytesMut::new();
    mqtt::encode(
        &Packet::Connect(connect_packet("plain", true, 30)),
        &mut connect,
    )?;
    plain.write_all(&connect).await?;
    let reply = read_to_close(&mut plain).await?;
    ensure!(
        reply.first().is_none_or(|&b| b == 0x15),
        "expected a TLS alert or nothing, got {reply:02x?}"
    );

    // Half a ClientHello, held open: the accept loop must not wait for it.
    let mut hello = Vec::new();
    let name = ServerName::try_from("localhost")?.to_owned();
    rustls::ClientConnection::new(tls.client.clone(), name)?.write_tls(&mut hello)?;
    let half = hello.get(..hello.len() / 2).context("empty ClientHello")?;
    let mut stalled = TcpStream::connect(tls.mqtt_tls).await?;
    stalled.write_all(half).await?;
    let mut late = Rumqtt::connect_with(mqtts_options("late", tls.mqtt_tls, &tls))
        .await
        .context("a new TLS client while a handshake is stalled")?;
    pass(&mut late, &mut good, "bad/t", "past a stalled handshake").await?;
    // The truncated hello's sender gives up: the server closes that connection.
    stalled.shutdown().await?;
    read_to_close(&mut stalled).await?;

    // A TLS record header announcing 64 KiB, then noise, on every TLS port.
    for addr in [tls.mqtt_tls, tls.wamp_tls, tls.mqtt_ws_tls] {
        let mut garbage = TcpStream::connect(addr).await?;
        garbage.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).await?;
        garbage.write_all(&[0xa5; 4096]).await?;
        garbage.shutdown().await?;
        read_to_close(&mut garbage).await?;
    }

    pass(&mut late, &mut good, "bad/t", "still working").await?;
    tls.node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_without_a_certificate_is_refused() -> Result {
    let started = TestNode::start_with(|c| c.wamp_tls = Some(ANY_PORT)).await;
    let Err(e) = started else {
        anyhow::bail!("started without tls_cert/tls_key");
    };
    ensure!(
        format!("{e:#}").contains("wamp_tls needs tls_cert"),
        "{e:#}"
    );
    Ok(())
}

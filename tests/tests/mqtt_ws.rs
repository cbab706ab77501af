//! MQTT over WebSocket, on the `mqtt_ws` listener and on the WAMP WebSocket port:
//! rumqttc's WebSocket transport (3.1.1 and 5), and a raw WebSocket client for
//! framing no library produces (several packets per frame, one packet over many
//! frames, text frames, garbage, oversize packets).

use anyhow::{bail, ensure, Context};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use ordo_common::mqtt::{self, v5, Packet, QoS, ReasonCode, SubAckCode};
use ordo_common::wamp::{Dict, Serializer, Value};
use ordo_tests::mqtt_raw::{connect5_packet, connect_packet, publish5, publish_packet};
use ordo_tests::rumqtt5::Rumqtt5;
use ordo_tests::wamp_client::{WampClient, REALM};
use ordo_tests::{Rumqtt, TestNode, TIMEOUT};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

type Result = anyhow::Result<()>;

async fn node() -> anyhow::Result<(TestNode, SocketAddr)> {
    let node =
        TestNode::start_with(|c| c.mqtt_ws = Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
    let ws = node.mqtt_ws.context("mqtt_ws listener not bound")?;
    Ok((node, ws))
}

/// The two places MQTT over WebSocket is served.
fn ws_ports(node: &TestNode, mqtt_ws: SocketAddr) -> [(&'static str, SocketAddr); 2] {
    [("mqtt_ws listener", mqtt_ws), ("wamp port", node.wamp)]
}

fn ws_options(id: &str, addr: SocketAddr) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(id, format!("ws://{addr}/mqtt"), addr.port());
    options.set_transport(rumqttc::Transport::Ws);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(4 << 20, 4 << 20);
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_over_websocket_meets_tcp_and_wamp() -> Result {
    let (node, mqtt_ws) = node().await?;
    let mut wamp = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    wamp.subscribe("ws.t", Dict::new()).await?;
    let mut tcp = Rumqtt::connect(node.mqtt, "tcp").await?;
    tcp.subscribe("ws/t", rumqttc::QoS::AtLeastOnce).await?;
    for (i, (name, addr)) in ws_ports(&node, mqtt_ws).into_iter().enumerate() {
        let mut ws = Rumqtt::connect_with(ws_options(&format!("ws{i}"), addr))
            .await
            .with_context(|| format!("rumqttc over websocket to the {name}"))?;
        ws.subscribe("ws/back", rumqttc::QoS::AtLeastOnce).await?;
        // WebSocket -> TCP and WAMP.
        let payload = format!("{{\"from\":\"{name}\"}}");
        ws.publish_acked("ws/t", payload.clone(), false).await?;
        let got = tcp.next_publish().await?;
        ensure!(got.payload == payload.as_bytes(), "tcp got {got:?}");
        let event = wamp.next_event().await?;
        ensure!(event.args.len() == 1, "wamp got {:?}", event.args);
        // TCP -> WebSocket, a payload much larger than one frame of any client.
        let big = vec![b'x'; 200_000];
        tcp.publish_acked("ws/back", big.clone(), false).await?;
        let got = ws.next_publish().await?;
        ensure!(got.payload == big, "{name}: {} bytes", got.payload.len());
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_over_websocket() -> Result {
    use rumqttc::v5 as r5;
    let (node, mqtt_ws) = node().await?;
    for (i, (name, addr)) in ws_ports(&node, mqtt_ws).into_iter().enumerate() {
        let mut options = r5::MqttOptions::new(format!("v5-{i}"), format!("ws://{addr}/"), 0);
        options.set_transport(rumqttc::Transport::Ws);
        let (mut c, ack) = Rumqtt5::connect_with(options).await?;
        ensure!(
            ack.code == r5::mqttbytes::v5::ConnectReturnCode::Success,
            "{name}: {ack:?}"
        );
        let filter = ordo_tests::rumqtt5::filter("v5ws/#", r5::mqttbytes::QoS::AtLeastOnce);
        c.subscribe(filter).await?;
        c.client
            .publish("v5ws/a", r5::mqttbytes::QoS::AtLeastOnce, false, "hi")
            .await?;
        let got = c.next_publish().await?;
        ensure!(
            got.payload == "hi" && got.topic == "v5ws/a",
            "{name}: {got:?}"
        );
    }
    node.shutdown().await;
    Ok(())
}

/// A raw MQTT-over-WebSocket client: frames exactly as the test writes them.
struct RawWs {
    ws: WebSocketStream<TcpStream>,
    inbuf: BytesMut,
}

impl RawWs {
    /// Open a WebSocket offering `protocols`; return the client and the subprotocol chosen.
    async fn open(addr: SocketAddr, protocols: &str) -> anyhow::Result<(RawWs, Option<String>)> {
        let stream = TcpStream::connect(addr).await?;
        let mut request = format!("ws://{addr}/mqtt").into_client_request()?;
        if !protocols.is_empty() {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_str(protocols)?);
        }
        let (ws, response) =
            tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, stream))
                .await??;
        let chosen = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let raw = RawWs {
            ws,
            inbuf: BytesMut::new(),
        };
        Ok((raw, chosen))
    }

    async fn mqtt(addr: SocketAddr) -> anyhow::Result<RawWs> {
        let (raw, chosen) = Self::open(addr, "mqtt").await?;
        ensure!(chosen.as_deref() == Some("mqtt"), "chose {chosen:?}");
        Ok(raw)
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result {
        self.ws.send(WsMessage::Binary(bytes.into())).await?;
        Ok(())
    }

    /// Return the next 3.1.1 packet, whatever the frames it came in.
    async fn recv(&mut self) -> anyhow::Result<Packet> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(p) = mqtt::decode(&mut self.inbuf, 1 << 24)? {
                return Ok(p);
            }
            self.fill(deadline).await?;
        }
    }

    async fn recv5(&mut self) -> anyhow::Result<v5::Packet> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(p) = v5::decode(&mut self.inbuf, 1 << 24)? {
                return Ok(p);
            }
            self.fill(deadline).await?;
        }
    }

    async fn fill(&mut self, deadline: Instant) -> Result {
        match tokio::time::timeout_at(deadline, self.ws.next()).await {
            Err(_) => bail!("nothing received in time"),
            Ok(Some(Ok(WsMessage::Binary(b)))) => self.inbuf.extend_from_slice(&b),
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => {}
            Ok(other) => bail!("connection ended: {other:?}"),
        }
        Ok(())
    }

    /// Wait until the server closes; fail if it is still open after a while.
    async fn expect_closed(&mut self) -> Result {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => bail!("connection still open"),
                Ok(None | Some(Err(_)) | Some(Ok(WsMessage::Close(_)))) => return Ok(()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

fn encode(packets: &[Packet]) -> anyhow::Result<Vec<u8>> {
    let mut out = BytesMut::new();
    for p in packets {
        mqtt::encode(p, &mut out)?;
    }
    Ok(out.to_vec())
}

fn encode5(packets: &[v5::Packet]) -> anyhow::Result<Vec<u8>> {
    let mut out = BytesMut::new();
    for p in packets {
        v5::encode(p, &mut out)?;
    }
    Ok(out.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_share_frames_and_span_frames() -> Result {
    let (node, mqtt_ws) = node().await?;
    for (name, addr) in ws_ports(&node, mqtt_ws) {
        let mut c = RawWs::mqtt(addr).await?;
        // CONNECT, SUBSCRIBE and PUBLISH in one frame.
        c.send(encode(&[
            Packet::Connect(connect_packet("", true, 30)),
            Packet::Subscribe(mqtt::Subscribe {
                pkid: 1,
                filters: vec![("frames/#".into(), QoS::AtLeastOnce)],
            }),
            publish_packet("frames/one", b"together", QoS::AtLeastOnce, 2, false),
        ])?)
        .await?;
        let mut seen = Vec::new();
        while seen.len() < 4 {
            seen.push(c.recv().await?);
        }
        ensure!(
            matches!(&seen[0], Packet::ConnAck(a) if a.code == mqtt::ConnectReturnCode::Accepted),
            "{name}: {seen:?}"
        );
        ensure!(
            seen.iter().any(|p| matches!(p, Packet::SubAck(s) if s.codes == [SubAckCode::Granted(QoS::AtLeastOnce)])),
            "{name}: {seen:?}"
        );
        ensure!(seen.contains(&Packet::PubAck(2)), "{name}: {seen:?}");
        ensure!(
            seen.iter()
                .any(|p| matches!(p, Packet::Publish(p) if p.payload == "together")),
            "{name}: {seen:?}"
        );
        // One PUBLISH, one byte per frame, with an empty frame and a ping in between.
        let bytes = encode(&[publish_packet(
            "frames/two",
            b"split",
            QoS::AtLeastOnce,
            3,
            false,
        )])?;
        for (i, b) in bytes.iter().enumerate() {
            c.send(vec![*b]).await?;
            if i == 1 {
                c.send(Vec::new()).await?;
                c.ws.send(WsMessage::Ping(b"p".to_vec().into())).await?;
            }
        }
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.push(c.recv().await?);
        }
        ensure!(seen.contains(&Packet::PubAck(3)), "{name}: {seen:?}");
        ensure!(
            seen.iter().any(|p| matches!(p, Packet::Publish(p) if p.payload == "split" && p.topic == "frames/two")),
            "{name}: {seen:?}"
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_that_connection() -> Result {
    let (node, mqtt_ws) = node().await?;
    let mut bystander = Rumqtt::connect_with(ws_options("bystander", mqtt_ws)).await?;
    bystander
        .subscribe("bad/t", rumqttc::QoS::AtLeastOnce)
        .await?;
    for (name, addr) in ws_ports(&node, mqtt_ws) {
        // A text frame [MQTT-6.0.0-1], before and after CONNECT.
        let mut c = RawWs::mqtt(addr).await?;
        c.ws.send(WsMessage::Text("hello".into())).await?;
        c.expect_closed()
            .await
            .context(format!("{name}: text first"))?;
        let mut c = RawWs::mqtt(addr).await?;
        c.send(encode(&[Packet::Connect(connect_packet("t", true, 30))])?)
            .await?;
        ensure!(matches!(c.recv().await?, Packet::ConnAck(_)), "{name}");
        c.ws.send(WsMessage::Text("{}".into())).await?;
        c.expect_closed()
            .await
            .context(format!("{name}: text later"))?;
        // Garbage: a reserved packet type.
        let mut c = RawWs::mqtt(addr).await?;
        c.send(vec![0xF0, 0x00, 0xFF]).await?;
        c.expect_closed()
            .await
            .context(format!("{name}: garbage"))?;
    }
    let mut tcp = Rumqtt::connect(node.mqtt, "tcp").await?;
    tcp.publish_acked("bad/t", "still here", false).await?;
    let got = bystander.next_publish().await?;
    ensure!(got.payload == "still here", "{got:?}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_size_limit_holds_across_frames() -> Result {
    let node = TestNode::start_with(|c| {
        c.mqtt_ws = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.max_packet_size = 4096;
    })
    .await?;
    let mqtt_ws = node.mqtt_ws.context("no mqtt_ws")?;
    for (name, addr) in ws_ports(&node, mqtt_ws) {
        let mut c = RawWs::mqtt(addr).await?;
        c.send(encode5(&[v5::Packet::Connect(Box::new(connect5_packet(
            "big", true, 30,
        )))])?)
        .await?;
        match c.recv5().await? {
            v5::Packet::ConnAck(a) => ensure!(
                a.properties.maximum_packet_size == Some(4096),
                "{name}: {a:?}"
            ),
            other => bail!("{name}: {other:?}"),
        }
        // Under the limit, in two frames: accepted.
        let ok = encode5(&[v5::Packet::Publish(publish5(
            "size/ok",
            &[1; 3000],
            QoS::AtLeastOnce,
            1,
            false,
        ))])?;
        let (a, b) = ok.split_at(1000);
        c.send(a.to_vec()).await?;
        c.send(b.to_vec()).await?;
        ensure!(
            matches!(c.recv5().await?, v5::Packet::PubAck(a) if a.pkid == 1),
            "{name}"
        );
        // Over the limit, in frames of 1000 bytes each: DISCONNECT 0x95, closed.
        let big = encode5(&[v5::Packet::Publish(publish5(
            "size/big",
            &[2; 6000],
            QoS::AtLeastOnce,
            2,
            false,
        ))])?;
        for chunk in big.chunks(1000) {
            if c.send(chunk.to_vec()).await.is_err() {
                break;
            }
        }
        match c.recv5().await {
            Ok(v5::Packet::Disconnect(d)) => {
                ensure!(d.reason == ReasonCode::PACKET_TOO_LARGE, "{name}: {d:?}")
            }
            other => bail!("{name}: expected DISCONNECT 0x95, got {other:?}"),
        }
        c.expect_closed().await?;
    }
    // Valid MQTT (PINGREQs) in one WebSocket message over the listener's limit
    // (2 x max_packet_size, at least 64 KiB): closed by the WebSocket layer.
    let mut c = RawWs::mqtt(mqtt_ws).await?;
    c.send(encode(&[Packet::Connect(connect_packet(
        "pings", true, 30,
    ))])?)
    .await?;
    ensure!(matches!(c.recv().await?, Packet::ConnAck(_)));
    c.send(encode(&vec![Packet::PingReq; 1000])?).await?;
    ensure!(c.recv().await? == Packet::PingResp, "pings in one frame");
    let _ = c.send(encode(&vec![Packet::PingReq; 100_000])?).await;
    let closed = async {
        loop {
            c.recv().await?;
        }
    };
    let ended: anyhow::Result<()> = closed.await;
    ensure!(
        ended.is_err_and(|e| e.to_string().contains("connection ended")),
        "oversize frame"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_negotiation() -> Result {
    let (node, mqtt_ws) = node().await?;
    // The WAMP port: a WAMP subprotocol wins over mqtt; mqtt alone is MQTT.
    let (_, chosen) = RawWs::open(node.wamp, "mqtt, wamp.2.json").await?;
    ensure!(chosen.as_deref() == Some("wamp.2.json"), "{chosen:?}");
    let (_, chosen) = RawWs::open(node.wamp, "mqtt").await?;
    ensure!(chosen.as_deref() == Some("mqtt"), "{chosen:?}");
    ensure!(RawWs::open(node.wamp, "").await.is_err(), "no subprotocol");
    // The mqtt_ws listener: mqtt, or no subprotocol at all; never WAMP.
    ensure!(
        RawWs::open(mqtt_ws, "wamp.2.json").await.is_err(),
        "wamp on the MQTT port"
    );
    let (mut c, chosen) = RawWs::open(mqtt_ws, "").await?;
    ensure!(chosen.is_none(), "{chosen:?}");
    c.send(encode(&[Packet::Connect(connect_packet("np", true, 30))])?)
        .await?;
    ensure!(matches!(c.recv().await?, Packet::ConnAck(_)));
    // WAMP still works on its port.
    let mut w = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    w.subscribe("still.wamp", Dict::new()).await?;
    w.publish_acked("still.wamp", vec![Value::from(1)]).await?;
    node.shutdown().await;
    Ok(())
}

//! The WAMP front door: WebSocket (this module) and RawSocket ([`rawsocket`]),
//! each with `wamp.2.json`, `wamp.2.msgpack` and `wamp.2.cbor`.
//!
//! ```text
//!  WebSocket ─┐                 ┌─ pubsub: PUBLISH ─► sequencer; router ─► EVENT
//!             ├─► transport ─► session ─ dealer: CALL/INVOCATION/YIELD/CANCEL
//!  RawSocket ─┘                 └─ meta: wamp.session.*, wamp.subscription.*, wamp.registration.*
//! ```
//!
//! Each connection negotiates a serializer in its transport's handshake, then
//! runs one [`session`] task. A WebSocket client offering only subprotocol
//! `mqtt` is handed to the MQTT front door (`crate::mqtt::ws`). Publications go through the sequencer like MQTT
//! publishes, so PUBLISHED and EVENT carry the message's permanent id.
//! The `wamp_tls` listener (`wss://`) runs [`accept`] over a TLS stream.

pub mod auth;
pub mod broker;
pub mod dealer;
pub mod fox;
mod meta;
mod pubsub;
pub mod rawsocket;
mod session;
pub mod transport;

use crate::Shared;
use ordo_common::wamp::Serializer;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Accept WAMP WebSocket connections until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(accept(stream, peer, shared));
            }
            Err(e) => {
                tracing::warn!(error = %e, "wamp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// What the client's Sec-WebSocket-Protocol asked for.
#[derive(Clone, Copy)]
enum Chosen {
    Wamp(Serializer),
    /// MQTT over WebSocket, handed to the MQTT connection task.
    Mqtt,
}

/// Serve one connection of a WAMP WebSocket listener over any byte stream
/// (TCP, or TLS on `wamp_tls`): WebSocket handshake, then a WAMP session or,
/// for subprotocol `mqtt`, an MQTT connection.
pub async fn accept<S>(stream: S, peer: SocketAddr, shared: Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Err(e) = accept_ws(stream, peer, shared).await {
        tracing::info!(%peer, error = %e, "wamp connection closed");
    }
}

async fn accept_ws<S>(stream: S, peer: SocketAddr, shared: Shared) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let chosen: Arc<Mutex<Option<Chosen>>> = Arc::new(Mutex::new(None));
    let slot = chosen.clone();
    // The error type is tungstenite's; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = move |request: &Request,
                         mut response: Response|
          -> Result<Response, ErrorResponse> {
        let offered = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find_map(Serializer::from_subprotocol);
        // A WAMP subprotocol wins; `mqtt` alone makes this an MQTT connection.
        let offered = match (offered, crate::mqtt::ws::offered_subprotocol(request)) {
            (Some(ser), _) => Some((Chosen::Wamp(ser), ser.subprotocol())),
            (None, Some(mqtt)) => Some((Chosen::Mqtt, mqtt)),
            (None, None) => None,
        };
        match offered {
            Some((chosen, subprotocol)) => {
                response.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_static(subprotocol),
                );
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(chosen);
                }
                Ok(response)
            }
            None => {
                let mut refuse = ErrorResponse::new(Some(
                    "no supported subprotocol (offer wamp.2.json, wamp.2.msgpack, wamp.2.cbor or mqtt)"
                        .into(),
                ));
                *refuse.status_mut() = StatusCode::BAD_REQUEST;
                Err(refuse)
            }
        }
    };
    let max = shared.config.max_wamp_message_size;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    // A client that never finishes the handshake must not hold a task (or shutdown) forever.
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let mut stop = shared.shutdown.clone();
    let ws = tokio::select! {
        ws = tokio::time::timeout(std::time::Duration::from_secs(10), handshake) => ws??,
        _ = stop.changed() => return Ok(()),
    };
    let chosen = chosen.lock().ok().and_then(|s| *s);
    let serializer = match chosen {
        Some(Chosen::Wamp(serializer)) => serializer,
        Some(Chosen::Mqtt) => {
            // The WebSocket message limit stays max_wamp_message_size here; MQTT packets are
            // held to max_packet_size by the codec whatever their framing.
            crate::mqtt::ws::run(ws, peer, shared).await;
            return Ok(());
        }
        None => anyhow::bail!("handshake finished without a subprotocol"),
    };
    let (sink, stream) = futures_util::StreamExt::split(ws);
    let tx = transport::Tx::Ws(Box::pin(sink), serializer);
    session::run(tx, transport::Rx::Ws(Box::pin(stream)), serializer, shared).await?;
    Ok(())
}

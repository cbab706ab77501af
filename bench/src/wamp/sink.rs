//! The built-in WAMP sink: the generator's own ceiling.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::session::*;

// ------------------------------------------------------------------------- the WAMP sink

/// The generator's own ceiling: an in-process WAMP "router" on its own thread (one-core
/// runtime) that answers HELLO, SUBSCRIBE, REGISTER, PUBLISH (PUBLISHED) and CALL (RESULT with
/// the call's arguments) at once and delivers nothing: no EVENTs, no INVOCATIONs.
pub(super) struct WampSink {
    pub(super) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WampSink {
    pub(super) fn start() -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind WAMP sink")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("sink runtime")?;
        let thread = std::thread::Builder::new()
            .name("ordo-bench-wamp-sink".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let accept = async {
                        while let Ok((stream, _)) = listener.accept().await {
                            tokio::spawn(sink_connection(stream));
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = accept => {}
                    }
                });
            })
            .context("spawn WAMP sink thread")?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for WampSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// WebSocket handshake callback: answer with the `wamp.2.json` subprotocol.
#[allow(clippy::result_large_err)] // the signature tungstenite asks for
fn choose_json(
    _: &tokio_tungstenite::tungstenite::handshake::server::Request,
    mut response: tokio_tungstenite::tungstenite::handshake::server::Response,
) -> Result<
    tokio_tungstenite::tungstenite::handshake::server::Response,
    tokio_tungstenite::tungstenite::handshake::server::ErrorResponse,
> {
    response.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("wamp.2.json"),
    );
    Ok(response)
}

async fn sink_connection(stream: TcpStream) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, choose_json).await?;
    let mut next_id = 1u64;
    while let Some(msg) = ws.next().await {
        let text = match msg? {
            WsMessage::Text(t) => t,
            WsMessage::Close(_) => break,
            _ => continue,
        };
        let m: Vec<Value> = serde_json::from_str(text.as_str())?;
        let request = m.get(1).cloned().unwrap_or(Value::Null);
        next_id += 1;
        let reply = match code(&m) {
            HELLO => json!([WELCOME, next_id, {"roles": {"broker": {}, "dealer": {}}}]),
            SUBSCRIBE => json!([SUBSCRIBED, request, next_id]),
            REGISTER => json!([REGISTERED, request, next_id]),
            PUBLISH => json!([PUBLISHED, request, next_id]),
            CALL => json!([RESULT, request, {}, m.get(4).cloned().unwrap_or(json!([]))]),
            GOODBYE => json!([GOODBYE, {}, "wamp.close.goodbye_and_out"]),
            _ => continue,
        };
        ws.send(WsMessage::text(reply.to_string())).await?;
    }
    Ok(())
}

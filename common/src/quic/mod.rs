//! QUIC between nodes: mutual TLS under one cluster CA, and length-prefixed frames.
//!
//! Every node holds a certificate signed by the cluster CA and presents it both
//! as a server and as a client; a peer without one is refused during the
//! handshake. Frames are a 4-byte big-endian length followed by the msgpack
//! encoding (`rmp-serde`) of the message; the length is checked against a
//! maximum before anything is allocated.
//!
//! Why msgpack and not bincode: bincode is unmaintained (RUSTSEC-2025-0141),
//! and rmp-serde is maintained and already used by the store and the WAMP codec,
//! so the tree gains no new serializer.

mod certs;
pub mod mesh;
pub mod metrics;
pub mod node;

pub use certs::{generate_dev_certs, load_identity, NodeIdentity};
pub use mesh::{send_once, Mesh};

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// The name every node certificate carries, and every client verifies.
pub const SERVER_NAME: &str = "ordo-node";
/// ALPN protocol id of Ordo's node-to-node protocol.
pub const ALPN: &[u8] = b"ordo/1";

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// Reading or writing certificate files failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A certificate or key could not be generated or parsed.
    #[error("certificate: {0}")]
    Cert(String),
    /// TLS configuration was rejected.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// Binding the UDP socket failed.
    #[error("bind: {0}")]
    Bind(std::io::Error),
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was refused.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing a frame failed.
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading a frame failed.
    #[error("read: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// A frame announced more bytes than allowed.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A frame did not decode as the expected message.
    #[error("decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// A message could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

fn roots(identity: &NodeIdentity) -> Result<rustls::RootCertStore, QuicError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.ca.clone())?;
    Ok(roots)
}

/// Build a server config that requires a client certificate from the cluster CA.
pub fn server_config(identity: &NodeIdentity) -> Result<quinn::ServerConfig, QuicError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(identity)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| QuicError::Cert(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| QuicError::Cert(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

/// Build a client config that trusts only the cluster CA and presents this node's certificate.
pub fn client_config(identity: &NodeIdentity) -> Result<quinn::ClientConfig, QuicError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| QuicError::Cert(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// Bind an endpoint that both accepts and opens authenticated connections.
///
/// Call from inside a tokio runtime.
pub fn endpoint(bind: SocketAddr, identity: &NodeIdentity) -> Result<quinn::Endpoint, QuicError> {
    let mut endpoint =
        quinn::Endpoint::server(server_config(identity)?, bind).map_err(QuicError::Bind)?;
    endpoint.set_default_client_config(client_config(identity)?);
    Ok(endpoint)
}

/// Connect to a peer node and wait for the handshake (both certificates checked).
pub async fn connect(
    endpoint: &quinn::Endpoint,
    peer: SocketAddr,
) -> Result<quinn::Connection, QuicError> {
    Ok(endpoint.connect(peer, SERVER_NAME)?.await?)
}

/// Connect to the node named `name` (`sync1`, `ndb2`, ...): its certificate
/// must carry that name, so a node cannot answer for another.
pub async fn connect_to(
    endpoint: &quinn::Endpoint,
    peer: SocketAddr,
    name: &str,
) -> Result<quinn::Connection, QuicError> {
    Ok(endpoint.connect(peer, name)?.await?)
}

/// Whether the client certificate `conn`'s peer presented (already verified
/// against the cluster CA) names `name`.
pub fn peer_is(conn: &quinn::Connection, name: &str) -> bool {
    let Some(identity) = conn.peer_identity() else {
        return false;
    };
    let Ok(chain) = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>() else {
        return false;
    };
    let Some(leaf) = chain.first() else {
        return false;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// Write one frame: length, then the msgpack encoding of `message`.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
) -> Result<(), QuicError> {
    let mut frame = Vec::new();
    encode_frame(&mut frame, message)?;
    send.write_all(&frame).await?;
    Ok(())
}

/// Append one frame (length prefix, then the msgpack body) to `buf`; on error `buf` is unchanged.
pub fn encode_frame<T: Serialize>(buf: &mut Vec<u8>, message: &T) -> Result<(), QuicError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    if let Err(e) = rmp_serde::encode::write(buf, message) {
        buf.truncate(start);
        return Err(e.into());
    }
    let len = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Read one frame; `Ok(None)` when the stream ended cleanly between frames.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<T>, QuicError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = u32::from_be_bytes(len) as usize;
    if size > max {
        return Err(QuicError::FrameTooLarge { size, max });
    }
    let mut body = vec![0u8; size];
    recv.read_exact(&mut body).await?;
    Ok(Some(rmp_serde::from_slice(&body)?))
}

#[cfg(test)]
mod tests;

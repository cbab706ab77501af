//! TLS on the client-facing listeners: `mqtt_tls`, `wamp_tls` (wss) and `mqtt_ws_tls`.
//!
//! ```text
//!  TcpListener ─► accept loop ─► spawn ─► handshake (timeout) ─► the door's plain-TCP code path
//!                 (never waits                 │ fails: log, close this one connection
//!                  on a client)                ▼
//!                                   TlsStream<TcpStream> (AsyncRead + AsyncWrite)
//! ```
//!
//! The certificate and key are PEM files (`tls_cert`, `tls_key`), loaded once
//! at start-up with the `ring` provider. [`write_dev_cert`] makes a
//! self-signed pair for localhost (`ordo-entry dev-cert`).

use crate::Shared;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
pub use tokio_rustls::server::TlsStream;
pub use tokio_rustls::TlsAcceptor;

/// How long a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up at start-up (or a dev certificate written).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A TLS listener is configured but `tls_cert` or `tls_key` is not.
    #[error("listener {listener} needs tls_cert and tls_key (PEM files; `ordo-entry dev-cert` writes a pair for localhost)")]
    MissingCert {
        /// The configuration key of the listener.
        listener: &'static str,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("tls setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// rcgen could not make a development certificate.
    #[error("dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File {
        path: path.to_owned(),
        source,
    })
}

/// Build the acceptor every TLS listener shares from a PEM certificate chain
/// (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let pem_err = |path: &Path, why: String| TlsError::Pem {
        path: path.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(cert, "no CERTIFICATE block".into()));
    }
    let key_der =
        PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| pem_err(key, e.to_string()))?;
    // The provider is named, not taken from a process default: nothing else may pick aws-lc.
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Return the acceptor for the configured TLS listeners: `None` when none is
/// set, an error when one is set without `tls_cert`/`tls_key`.
pub fn from_config(config: &crate::Config) -> Result<Option<TlsAcceptor>, TlsError> {
    let wanted = [
        ("mqtt_tls", config.mqtt_tls),
        ("wamp_tls", config.wamp_tls),
        ("mqtt_ws_tls", config.mqtt_ws_tls),
    ];
    let Some((listener, _)) = wanted.iter().find(|(_, addr)| addr.is_some()) else {
        return Ok(None);
    };
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => acceptor(cert, key).map(Some),
        _ => Err(TlsError::MissingCert { listener }),
    }
}

/// Accept TLS connections on `listener` until the task is aborted, handing
/// each finished handshake to `serve` (the door's per-connection code).
///
/// The handshake runs in the connection's own task under a timeout, so a slow
/// or hostile client holds only itself up; a failed one is logged and closed.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Shared,
    door: &'static str,
    serve: F,
) where
    F: Fn(TlsStream<TcpStream>, SocketAddr, Shared) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (acceptor, shared, serve) = (acceptor.clone(), shared.clone(), serve.clone());
                tokio::spawn(async move {
                    if let Some(tls) = handshake(&acceptor, stream, peer, &shared, door).await {
                        serve(tls, peer, shared).await;
                    }
                });
            }
            Err(e) => {
                tracing::warn!(door, error = %e, "tls accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    door: &'static str,
) -> Option<TlsStream<TcpStream>> {
    let mut stop = shared.shutdown.clone();
    let accepted = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
        _ = stop.changed() => return None,
    };
    match accepted {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::info!(%peer, door, error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, door, "tls handshake timed out");
            None
        }
    }
}

/// Write a self-signed certificate for `localhost`, 127.0.0.1 and ::1 to
/// `dir/cert.pem` and its key to `dir/key.pem`, for development and tests.
///
/// Clients trust it by taking `cert.pem` as their CA file. Returns both paths.
pub fn write_dev_cert(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let file_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::File { path, source }
    };
    std::fs::create_dir_all(dir).map_err(file_err(dir))?;
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Ordo development (localhost)");
    // A leaf, not a CA: webpki refuses a CA certificate as a server's own.
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).map_err(file_err(&cert_path))?;
    std::fs::write(&key_path, key.serialize_pem()).map_err(file_err(&key_path))?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_cert_loads_and_missing_files_are_errors() -> Result<(), TlsError> {
        let dir = std::env::temp_dir().join(format!("ordo-tls-unit-{}", std::process::id()));
        let (cert, key) = write_dev_cert(&dir)?;
        acceptor(&cert, &key)?;
        // Cert and key swapped: neither file holds what it should.
        assert!(matches!(acceptor(&key, &cert), Err(TlsError::Pem { .. })));
        assert!(matches!(
            acceptor(&dir.join("nope.pem"), &key),
            Err(TlsError::File { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn a_tls_listener_without_a_cert_is_refused() {
        let config = crate::Config {
            mqtt_tls: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..crate::Config::default()
        };
        assert!(matches!(
            from_config(&config),
            Err(TlsError::MissingCert {
                listener: "mqtt_tls"
            })
        ));
        assert!(matches!(from_config(&crate::Config::default()), Ok(None)));
    }
}

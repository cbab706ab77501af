//! Cluster certificates: a CA and one certificate per node, for development and tests.

use super::{QuicError, SERVER_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// What a node needs to join the cluster: the CA to trust, its chain and key.
#[derive(Debug)]
pub struct NodeIdentity {
    /// The cluster CA certificate.
    pub ca: CertificateDer<'static>,
    /// This node's certificate chain (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

fn cert_err(e: impl std::fmt::Display) -> QuicError {
    QuicError::Cert(e.to_string())
}

fn write(path: &Path, contents: &str) -> Result<(), QuicError> {
    std::fs::write(path, contents).map_err(|source| QuicError::File {
        path: path.display().to_string(),
        source,
    })
}

fn read(path: &Path) -> Result<String, QuicError> {
    std::fs::read_to_string(path).map_err(|source| QuicError::File {
        path: path.display().to_string(),
        source,
    })
}

fn ca_params() -> Result<CertificateParams, QuicError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Ordo cluster CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Write `ca.pem`/`ca.key` (unless present) and `<name>.pem`/`<name>.key` for each node into `dir`.
///
/// For development and tests: the CA key sits next to the certificates.
pub fn generate_dev_certs(dir: &Path, names: &[&str]) -> Result<(), QuicError> {
    std::fs::create_dir_all(dir).map_err(|source| QuicError::File {
        path: dir.display().to_string(),
        source,
    })?;
    let (ca_cert_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca_key = if ca_key_path.exists() && ca_cert_path.exists() {
        KeyPair::from_pem(&read(&ca_key_path)?).map_err(cert_err)?
    } else {
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = ca_params()?.self_signed(&key).map_err(cert_err)?;
        write(&ca_cert_path, &cert.pem())?;
        write(&ca_key_path, &key.serialize_pem())?;
        key
    };
    // Same subject and key as the stored CA certificate, so signatures chain to it.
    let issuer = Issuer::new(ca_params()?, ca_key);
    for name in names {
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned(), (*name).to_owned()])
            .map_err(cert_err)?;
        params.distinguished_name.push(DnType::CommonName, *name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
        write(&dir.join(format!("{name}.pem")), &cert.pem())?;
        write(&dir.join(format!("{name}.key")), &key.serialize_pem())?;
    }
    Ok(())
}

/// Load the CA and one node's certificate and key from `dir` (as written by [`generate_dev_certs`]).
pub fn load_identity(dir: &Path, name: &str) -> Result<NodeIdentity, QuicError> {
    let ca =
        CertificateDer::from_pem_slice(read(&dir.join("ca.pem"))?.as_bytes()).map_err(cert_err)?;
    let chain = CertificateDer::pem_slice_iter(read(&dir.join(format!("{name}.pem")))?.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    let key = PrivateKeyDer::from_pem_slice(read(&dir.join(format!("{name}.key")))?.as_bytes())
        .map_err(cert_err)?;
    Ok(NodeIdentity { ca, chain, key })
}

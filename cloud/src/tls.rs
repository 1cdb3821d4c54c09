//! TLS identity of the cloud worker: loading PEM files and creating a self-signed pair for trials.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS setup failures, each naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file is missing or not PEM certificates.
    #[error("cannot read certificate file {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A private key file is missing or holds no usable key.
    #[error("cannot read private key file {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate/key combination.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the TLS configuration.
    #[error("QUIC cannot use this TLS configuration: {0}")]
    Quic(String),
    /// Generating a certificate failed.
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A generated file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads every certificate of a PEM chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// Reads the private key (PKCS#8, PKCS#1 or SEC1 PEM).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The process-wide rustls crypto provider (ring).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the QUIC server crypto: TLS 1.3 only, ALPN `jmdc/2` (and `jmdc/1`, answered with a
/// typed version error); with `clients`, every client
/// must present a certificate that verifier accepts (`crate::identity::client_verifier`).
pub fn server_crypto(
    cert: &Path,
    key: &Path,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut tls = builder.with_single_cert(certs, key)?;
    // Version 1 stays acceptable at the handshake so that an old edge gets a typed
    // `UnsupportedVersion` reply to its first request rather than a failed handshake.
    tls.alpn_protocols = vec![
        jmdc_core::protocol::ALPN.to_vec(),
        jmdc_core::protocol::ALPN_V1.to_vec(),
    ];
    quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))
}

/// Creates a self-signed certificate for `names` and writes `cert` and `key` as PEM.
/// The key file is created with mode 0600.
pub fn generate_self_signed(names: &[String], cert: &Path, key: &Path) -> Result<(), TlsError> {
    let pair = rcgen::generate_simple_self_signed(names.to_vec())?;
    write_file(cert, pair.cert.pem().as_bytes(), 0o644)?;
    write_file(key, pair.signing_key.serialize_pem().as_bytes(), 0o600)?;
    Ok(())
}

pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let wrap = |source| TlsError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(wrap)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(wrap)?;
    file.write_all(bytes).map_err(wrap)
}

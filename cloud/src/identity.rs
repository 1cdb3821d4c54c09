//! Device identity: devices prove who they are with a certificate from the device CA (mutual
//! TLS); certificates on the deny list (SHA-256 fingerprints, re-read on SIGHUP) are refused;
//! the name a connection proved (the certificate's common name) is what logs and limits use,
//! not the `device_id` a request claims.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::tls::{crypto_provider, load_certs, TlsError};

/// The SHA-256 fingerprint of a certificate (DER), lower-case hex: what the deny list holds and
/// what `jmdc-cloud fingerprint` prints.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Revoked device certificates: a file of fingerprints, one per line (`#` starts a comment;
/// `:` separators and upper case accepted), re-read by [`RevocationList::reload`].
#[derive(Debug, Default)]
pub struct RevocationList {
    path: Option<PathBuf>,
    revoked: RwLock<HashSet<String>>,
}

impl RevocationList {
    /// The list in `path` (none: nothing is revoked).
    pub fn load(path: Option<&Path>) -> Result<Arc<Self>, TlsError> {
        let list = Self {
            path: path.map(Path::to_path_buf),
            revoked: RwLock::new(HashSet::new()),
        };
        list.reload()?;
        Ok(Arc::new(list))
    }

    /// Re-reads the file; on error the list in force stays. Returns the number of entries.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let text = std::fs::read_to_string(path).map_err(|e| TlsError::Certificate {
            path: path.display().to_string(),
            reason: format!("revocation list: {e}"),
        })?;
        let mut set = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let hex: String = entry
                .chars()
                .filter(|c| *c != ':')
                .collect::<String>()
                .to_ascii_lowercase();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(TlsError::Certificate {
                    path: path.display().to_string(),
                    reason: format!(
                        "revocation list line {}: `{entry}` is not a SHA-256 fingerprint \
                         (64 hex digits; `jmdc-cloud fingerprint --cert device.pem`)",
                        n + 1
                    ),
                });
            }
            set.insert(hex);
        }
        let len = set.len();
        *self.revoked.write().unwrap_or_else(|p| p.into_inner()) = set;
        Ok(len)
    }

    /// Whether the certificate `der` is revoked.
    pub fn is_revoked(&self, der: &[u8]) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&fingerprint(der))
    }

    /// Entries in force.
    pub fn len(&self) -> usize {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// WebPKI verification against the device CA (chain, validity period, key usage), then the
/// deny list.
#[derive(Debug)]
struct DenyListVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<RevocationList>,
}

impl ClientCertVerifier for DenyListVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.revoked.is_revoked(end_entity.as_ref()) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The verifier of device certificates: issued by a CA in `ca` (PEM), valid now, not revoked.
pub fn client_verifier(
    ca: &Path,
    revoked: Arc<RevocationList>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::Certificate {
            path: ca.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .map_err(|e| TlsError::Certificate {
            path: ca.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(DenyListVerifier { inner, revoked }))
}

/// The device a connection proved to be: its certificate's common name (else its first DNS
/// name, else its fingerprint); `None` without a client certificate.
pub fn device_name(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let der = certs.first()?;
    Some(name_of(der.as_ref()))
}

/// Common name, first DNS name or fingerprint of a certificate.
pub fn name_of(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return fingerprint(der);
    };
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return cn.to_owned();
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                return (*dns).to_owned();
            }
        }
    }
    fingerprint(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deny_list_reads_fingerprints_and_names_bad_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("revoked.txt");
        let fp = fingerprint(b"a certificate");
        let with_colons: String = fp
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        std::fs::write(&path, format!("# revoked\n{with_colons}  # lost Pi\n\n")).expect("write");
        let list = RevocationList::load(Some(&path)).expect("load");
        assert!(list.is_revoked(b"a certificate"));
        assert!(!list.is_revoked(b"another"));
        std::fs::write(&path, "not-a-fingerprint\n").expect("write");
        let err = list.reload().expect_err("bad line");
        assert!(err.to_string().contains("line 1"), "{err}");
        assert_eq!(list.len(), 1, "the list in force stays");
        std::fs::write(&path, "").expect("write");
        assert_eq!(list.reload().expect("empty"), 0);
        assert!(!list.is_revoked(b"a certificate"));
        assert!(RevocationList::load(None).expect("none").is_empty());
    }
}

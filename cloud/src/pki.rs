//! A small certificate authority for a jmdc deployment: the device CA, the worker's certificate
//! and one certificate per device (`jmdc-cloud gen-ca`, `gen-cert --ca-cert …`,
//! `gen-device-cert`; `docs/reliability.md`). Keys are ECDSA P-256; private keys are written with
//! mode 0600.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::tls::{write_file, TlsError};

/// Validity of a certificate: from `not_before` for `days` days.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// Length of validity in days.
    pub days: i64,
}

impl Validity {
    /// From an hour ago (clock skew) for `days` days.
    pub fn days_from_now(days: i64) -> Self {
        Self {
            not_before: OffsetDateTime::now_utc() - Duration::hours(1),
            days,
        }
    }

    fn apply(self, params: &mut CertificateParams) {
        params.not_before = self.not_before;
        params.not_after = self.not_before + Duration::days(self.days);
    }
}

fn named(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "jmdc");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Creates a CA (`name` as its common name) and writes its certificate and key as PEM.
pub fn generate_ca(
    name: &str,
    validity: Validity,
    cert: &Path,
    key: &Path,
) -> Result<(), TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = named(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity.apply(&mut params);
    let key_pair = KeyPair::generate()?;
    let ca = params.self_signed(&key_pair)?;
    write_file(cert, ca.pem().as_bytes(), 0o644)?;
    write_file(key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    Ok(())
}

/// The CA of `ca_cert`/`ca_key` (PEM files) as an issuer.
fn load_issuer(ca_cert: &Path, ca_key: &Path) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| TlsError::Certificate {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let key = KeyPair::from_pem(&read(ca_key)?).map_err(|e| TlsError::Key {
        path: ca_key.display().to_string(),
        reason: e.to_string(),
    })?;
    Issuer::from_ca_cert_pem(&read(ca_cert)?, key).map_err(|e| TlsError::Certificate {
        path: ca_cert.display().to_string(),
        reason: e.to_string(),
    })
}

/// Issues a certificate signed by the CA: for a worker (`server`: TLS server auth, `names` as
/// DNS names / IP addresses) or a device (client auth, `names[0]` as its common name: the
/// identity the worker logs).
pub fn issue(
    ca_cert: &Path,
    ca_key: &Path,
    names: &[String],
    server: bool,
    validity: Validity,
    cert: &Path,
    key: &Path,
) -> Result<(), TlsError> {
    let issuer = load_issuer(ca_cert, ca_key)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let common_name = names.first().map_or("jmdc", String::as_str);
    params.distinguished_name = named(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.use_authority_key_identifier_extension = true;
    validity.apply(&mut params);
    let key_pair = KeyPair::generate()?;
    let issued = params.signed_by(&key_pair, &issuer)?;
    write_file(cert, issued.pem().as_bytes(), 0o644)?;
    write_file(key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    Ok(())
}

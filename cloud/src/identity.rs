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
        let set = parse_deny_list(&text).map_err(|e| TlsError::Certificate {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let len = set.len();
        *self.revoked.write().unwrap_or_else(|p| p.into_inner()) = set;
        Ok(len)
    }

    /// Whether the certificate `der` is revoked: its fingerprint is listed, or that of an
    /// [`ecdsa_twins`] encoding of it (the same certificate with the other valid form of its
    /// signature, which anyone holding it can make: without this a revoked device got back in).
    pub fn is_revoked(&self, der: &[u8]) -> bool {
        let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        if revoked.is_empty() {
            return false;
        }
        revoked.contains(&fingerprint(der))
            || ecdsa_twins(der)
                .iter()
                .any(|twin| revoked.contains(&fingerprint(twin)))
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

/// A line of a deny list that is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "revocation list line {line}: `{entry}` is not a SHA-256 fingerprint \
     (64 hex digits; `jmdc-cloud fingerprint --cert device.pem`)"
)]
pub struct DenyListError {
    /// 1-based line number.
    pub line: usize,
    /// The line without its comment and surrounding blanks.
    pub entry: String,
}

/// Parses the text of a deny list: one SHA-256 fingerprint per line (64 hex digits, `:`
/// separators and upper case accepted), `#` starts a comment, blank lines ignored. Returns the
/// fingerprints in lower-case hex without separators (as [`fingerprint`] prints them), or the
/// first line that is not one.
pub fn parse_deny_list(text: &str) -> Result<HashSet<String>, DenyListError> {
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
            return Err(DenyListError {
                line: n + 1,
                entry: entry.to_owned(),
            });
        }
        set.insert(hex);
    }
    Ok(set)
}

/// Orders of the P-256 and P-384 groups (big-endian): the ECDSA curves of device CAs.
const ECDSA_ORDERS: [&[u8]; 2] = [
    &[
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ],
    &[
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37,
        0x2d, 0xdf, 0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc,
        0xc5, 0x29, 0x73,
    ],
];

/// One DER element at the start of `der`: (tag, content, the rest). Definite lengths of up to
/// four bytes only; `None` for anything else.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Appends a DER element (definite length) to `out`.
fn push_der(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

/// `n − s` for big-endian unsigned integers with `0 < s < n`, as a DER INTEGER's content.
fn order_minus(n: &[u8], s: &[u8]) -> Option<Vec<u8>> {
    let s: Vec<u8> = s.iter().copied().skip_while(|b| *b == 0).collect();
    if s.is_empty() || s.len() > n.len() {
        return None;
    }
    let mut padded = vec![0u8; n.len() - s.len()];
    padded.extend_from_slice(&s);
    if padded.as_slice() >= n {
        return None;
    }
    let mut out = vec![0u8; n.len()];
    let mut borrow = 0i16;
    for i in (0..n.len()).rev() {
        let mut d = i16::from(n[i]) - i16::from(padded[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    let mut value: Vec<u8> = out.into_iter().skip_while(|b| *b == 0).collect();
    if value.first().is_some_and(|b| b & 0x80 != 0) {
        value.insert(0, 0);
    }
    Some(value)
}

/// The other encodings of a certificate that carry an equally valid ECDSA signature: `(r, s)`
/// and `(r, n − s)` both verify, so whoever holds a certificate can make a second one with
/// another fingerprint without the CA's key. Empty for certificates that are not signed with
/// ECDSA (or do not parse). The deny list refuses these twins too.
pub fn ecdsa_twins(der: &[u8]) -> Vec<Vec<u8>> {
    const SEQUENCE: u8 = 0x30;
    const BIT_STRING: u8 = 0x03;
    const INTEGER: u8 = 0x02;
    let twins = || -> Option<Vec<Vec<u8>>> {
        let (SEQUENCE, cert, _) = der_element(der)? else {
            return None;
        };
        let (SEQUENCE, _, after_tbs) = der_element(cert)? else {
            return None;
        };
        let tbs = &cert[..cert.len() - after_tbs.len()];
        let (SEQUENCE, _, after_alg) = der_element(after_tbs)? else {
            return None;
        };
        let alg = &after_tbs[..after_tbs.len() - after_alg.len()];
        let (BIT_STRING, bits, []) = der_element(after_alg)? else {
            return None;
        };
        let (0, sig) = bits.split_first().map(|(u, s)| (*u, s))? else {
            return None;
        };
        let (SEQUENCE, pair, []) = der_element(sig)? else {
            return None;
        };
        let (INTEGER, r, after_r) = der_element(pair)? else {
            return None;
        };
        let (INTEGER, s, []) = der_element(after_r)? else {
            return None;
        };
        let mut out = Vec::new();
        for n in ECDSA_ORDERS {
            let Some(other) = order_minus(n, s) else {
                continue;
            };
            let mut pair = Vec::new();
            push_der(&mut pair, INTEGER, r);
            push_der(&mut pair, INTEGER, &other);
            let mut sig = Vec::new();
            push_der(&mut sig, SEQUENCE, &pair);
            let mut bits = vec![0u8];
            bits.extend_from_slice(&sig);
            let mut body = tbs.to_vec();
            body.extend_from_slice(alg);
            push_der(&mut body, BIT_STRING, &bits);
            let mut twin = Vec::new();
            push_der(&mut twin, SEQUENCE, &body);
            if twin != der {
                out.push(twin);
            }
        }
        Some(out)
    };
    twins().unwrap_or_default()
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

/// The longest common or DNS name taken as a device name (a DNS name is at most 253 bytes).
pub const MAX_NAME_BYTES: usize = 253;

/// Whether `name` may stand for a device in logs and limits: not empty, at most
/// [`MAX_NAME_BYTES`], no control characters (a name with a line break would forge log lines).
fn usable_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.chars().any(char::is_control)
}

/// Common name, first DNS name or fingerprint of a certificate: the first of them that is a
/// usable name (not empty, at most [`MAX_NAME_BYTES`], no control characters). Anything that
/// does not parse as a certificate gets its fingerprint. Never panics, never returns an empty
/// name (`cloud/fuzz`: `device_name_der`, `device_name_mutated`).
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
        .filter(|cn| usable_name(cn))
    {
        return cn.to_owned();
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                if usable_name(dns) {
                    return (*dns).to_owned();
                }
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

    #[test]
    fn the_deny_list_parser_normalises_and_names_the_first_bad_line() {
        let fp = fingerprint(b"x");
        let text = format!("# c\n\n  {}  # lost\r\n{fp}\nzz\n", fp.to_ascii_uppercase());
        let err = parse_deny_list(&text).expect_err("zz");
        assert_eq!((err.line, err.entry.as_str()), (5, "zz"));
        let set = parse_deny_list(&text.replace("zz", "")).expect("good");
        assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![fp.clone()]);
        // 64 characters, but not all hex digits (one is a multi-byte character).
        let almost = format!("{}é", &fp[..62]);
        assert!(parse_deny_list(&almost).is_err());
    }

    fn certificate(common_name: &str, dns: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let names = dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        let mut dn = rcgen::DistinguishedName::new();
        if !common_name.is_empty() {
            dn.push(rcgen::DnType::CommonName, common_name);
        }
        params.distinguished_name = dn;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn a_revoked_certificate_with_its_other_ecdsa_signature_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = |name: &str| dir.path().join(name);
        let validity = crate::pki::Validity::days_from_now(30);
        crate::pki::generate_ca("ca", validity, &p("ca.pem"), &p("ca-key.pem")).expect("CA");
        let names = ["pi-lost".to_owned()];
        crate::pki::issue(
            &p("ca.pem"),
            &p("ca-key.pem"),
            &names,
            false,
            validity,
            &p("pi.pem"),
            &p("pi-key.pem"),
        )
        .expect("device certificate");
        let der = load_certs(&p("pi.pem")).expect("pem").remove(0);
        let twins = ecdsa_twins(der.as_ref());
        assert!(!twins.is_empty(), "an ECDSA-signed certificate has a twin");
        let open = client_verifier(&p("ca.pem"), Arc::default()).expect("verifier");
        let now = UnixTime::now();
        // The twin is a valid certificate of its own, with another fingerprint, the same name.
        let accepted: Vec<&Vec<u8>> = twins
            .iter()
            .filter(|t| {
                open.verify_client_cert(&CertificateDer::from(t.as_slice()), &[], now)
                    .is_ok()
            })
            .collect();
        assert_eq!(
            accepted.len(),
            1,
            "exactly one twin (the CA's curve) verifies"
        );
        let twin = accepted[0];
        assert_ne!(fingerprint(twin), fingerprint(der.as_ref()));
        assert_eq!(name_of(twin), "pi-lost");
        // Twins of twins are the original.
        assert!(ecdsa_twins(twin).iter().any(|t| t[..] == der[..]));
        // Revoked by the fingerprint of the certificate as issued: both encodings are refused.
        std::fs::write(p("revoked.txt"), fingerprint(der.as_ref()) + "\n").expect("list");
        let list = RevocationList::load(Some(&p("revoked.txt"))).expect("list");
        let revoking = client_verifier(&p("ca.pem"), list.clone()).expect("verifier");
        assert!(revoking.verify_client_cert(&der, &[], now).is_err());
        assert!(
            revoking
                .verify_client_cert(&CertificateDer::from(twin.as_slice()), &[], now)
                .is_err(),
            "the revoked device got in with its certificate's other signature"
        );
        // Revoked by the twin's fingerprint (whichever encoding the operator had): the same.
        std::fs::write(p("revoked.txt"), fingerprint(twin) + "\n").expect("list");
        list.reload().expect("reload");
        assert!(revoking.verify_client_cert(&der, &[], now).is_err());
        assert!(ecdsa_twins(b"not DER").is_empty());
    }

    #[test]
    fn device_names_are_printable_and_never_empty() {
        assert_eq!(name_of(&certificate("pi-01", &["pi-dns"])), "pi-01");
        // A common name that would forge a log line is not used: the DNS name is.
        let forged = certificate("pi-01\nWARN connection refused device=pi-02", &["pi-dns"]);
        assert_eq!(name_of(&forged), "pi-dns");
        // No usable name at all: the fingerprint.
        let nameless = certificate("", &[]);
        assert_eq!(name_of(&nameless), fingerprint(&nameless));
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        let too_long = certificate(&long, &[]);
        assert_eq!(name_of(&too_long), fingerprint(&too_long));
        assert_eq!(name_of(b"not DER"), fingerprint(b"not DER"));
    }
}

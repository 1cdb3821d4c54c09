//! What the fuzz targets over the worker's identity paths check, shared by `device_name_der`
//! (arbitrary bytes as a client certificate) and `device_name_mutated` (a real device
//! certificate with fuzzer edits).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jmdc_cloud::identity::{self, RevocationList};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

/// A device certificate as `jmdc-cloud gen-device-cert --device fuzz-device-01` issues it (DER;
/// `certs/README.md`).
pub const DEVICE_CERT: &[u8] = include_bytes!("../certs/device.der");
/// The CA that issued [`DEVICE_CERT`] (PEM; its key was thrown away).
pub const DEVICE_CA_PEM: &[u8] = include_bytes!("../certs/device-ca.pem");
/// The name in [`DEVICE_CERT`] (common name and DNS name).
pub const DEVICE_NAME: &str = "fuzz-device-01";

/// 2026-12-05, within the validity of both certificates: runs do not depend on the clock.
pub fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_796_454_687))
}

/// The worker's client-certificate verifier for the fuzz CA: without a deny list, and with a
/// deny list holding [`DEVICE_CERT`]'s fingerprint.
struct Verifiers {
    open: Arc<dyn ClientCertVerifier>,
    revoking: Arc<dyn ClientCertVerifier>,
}

fn verifiers() -> &'static Verifiers {
    static VERIFIERS: OnceLock<Verifiers> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        // `client_verifier` and the deny list read files, as in the worker.
        let dir = std::env::temp_dir().join(format!("jmdc-cloud-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        let ca = dir.join("device-ca.pem");
        std::fs::write(&ca, DEVICE_CA_PEM).expect("write the CA");
        let deny = dir.join("revoked.txt");
        let entry = format!("{}  # fuzz-device-01\n", identity::fingerprint(DEVICE_CERT));
        std::fs::write(&deny, entry).expect("write the deny list");
        let open = identity::client_verifier(&ca, RevocationList::load(None).expect("no list"))
            .expect("verifier");
        let revoked = RevocationList::load(Some(&deny)).expect("deny list");
        let revoking = identity::client_verifier(&ca, revoked).expect("verifier");
        let _ = std::fs::remove_dir_all(&dir);
        let v = Verifiers { open, revoking };
        // The setup itself: the issued certificate passes, and is refused once revoked.
        let cert = CertificateDer::from(DEVICE_CERT);
        assert!(v.open.verify_client_cert(&cert, &[], now()).is_ok());
        assert!(v.revoking.verify_client_cert(&cert, &[], now()).is_err());
        // …and so is its ECDSA twin, which verifies: the twin check is exercised.
        let twin_verifies = identity::ecdsa_twins(DEVICE_CERT).iter().any(|t| {
            let t = CertificateDer::from(t.as_slice());
            v.open.verify_client_cert(&t, &[], now()).is_ok()
        });
        assert!(twin_verifies, "the issued certificate has a valid twin");
        v
    })
}

/// What must hold for any bytes a client presents as its certificate:
///
/// - `identity::name_of` does not panic and gives a usable device name: not empty, at most
///   [`identity::MAX_NAME_BYTES`], no control characters (it goes into log lines and is the key
///   of `max_connections_per_device`);
/// - the worker's verifier (WebPKI + deny list) does not panic; what it accepts was issued by the
///   CA: its name is [`DEVICE_NAME`];
/// - whatever encoding of the issued certificate the verifier accepts — these bytes, or their
///   [`identity::ecdsa_twins`] (the other valid form of the ECDSA signature, which got a revoked
///   device back in before the deny list checked it) — the deny list that holds the issued
///   certificate's fingerprint refuses it.
pub fn check_certificate(der: &[u8]) {
    let name = identity::name_of(der);
    assert!(!name.is_empty(), "empty device name");
    assert!(
        name.len() <= identity::MAX_NAME_BYTES,
        "device name too long: {name:?}"
    );
    assert!(
        !name.chars().any(char::is_control),
        "control character in {name:?}"
    );
    check_verified(der);
    for twin in identity::ecdsa_twins(der) {
        check_verified(&twin);
    }
}

fn check_verified(der: &[u8]) {
    let v = verifiers();
    let cert = CertificateDer::from(der);
    if v.open.verify_client_cert(&cert, &[], now()).is_ok() {
        assert_eq!(
            identity::name_of(der),
            DEVICE_NAME,
            "accepted a certificate the CA did not issue"
        );
        assert!(
            v.revoking.verify_client_cert(&cert, &[], now()).is_err(),
            "a re-encoded revoked certificate passed the deny list"
        );
    }
}

//! QUIC (quinn + rustls, self-signed certificate) through the link emulator: handshakes and
//! echoes for two clients over a 2×10 ms link, and a bulk upload through a 10 Mbit/s uplink.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{loopback, SERIAL, TEST_LIMIT};
use jmdc_bench::linkemu::{LinkParams, Relay, RelayConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const ALPN: &[u8] = b"linkemu-test";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A QUIC server on loopback answering each bidirectional stream with
/// `"<bytes received>:" + first 16 bytes`, plus a client configuration that trusts it.
fn quic_pair() -> (quinn::Endpoint, quinn::ClientConfig) {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert: CertificateDer<'static> = pair.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.signing_key.serialize_der()));

    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server cert");
    server_tls.alpn_protocols = vec![ALPN.to_vec()];
    let server_crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).expect("quic server crypto");
    let server = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(server_crypto)),
        loopback(),
    )
    .expect("server endpoint");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![ALPN.to_vec()];
    let client_crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).expect("quic client crypto");
    (server, quinn::ClientConfig::new(Arc::new(client_crypto)))
}

/// Serves connections until the endpoint closes.
fn serve(endpoint: quinn::Endpoint) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let Ok(data) = recv.read_to_end(64 << 20).await else {
                            return;
                        };
                        let mut reply = format!("{}:", data.len()).into_bytes();
                        reply.extend_from_slice(&data[..data.len().min(16)]);
                        let _ = send.write_all(&reply).await;
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    })
}

async fn connect(
    target: SocketAddr,
    config: quinn::ClientConfig,
) -> (quinn::Endpoint, quinn::Connection) {
    let mut endpoint = quinn::Endpoint::client(loopback()).expect("client endpoint");
    endpoint.set_default_client_config(config);
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        endpoint.connect(target, "localhost").expect("connect"),
    )
    .await
    .expect("handshake within 5 s")
    .expect("handshake");
    (endpoint, conn)
}

async fn request(conn: &quinn::Connection, body: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send.write_all(body).await.expect("write");
    send.finish().expect("finish");
    recv.read_to_end(1 << 16).await.expect("read reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_round_trips_through_the_relay_for_two_clients() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_LIMIT, async {
        let (server, client_config) = quic_pair();
        let server_addr = server.local_addr().expect("server address");
        let server_task = serve(server.clone());
        let link = LinkParams::unlimited()
            .with_rate_mbit(20.0)
            .with_delay(Duration::from_millis(10));
        let relay = Relay::bind(RelayConfig::new(loopback(), server_addr).with_both(link))
            .await
            .expect("relay");

        let (ep_a, conn_a) = connect(relay.local_addr(), client_config.clone()).await;
        let (ep_b, conn_b) = connect(relay.local_addr(), client_config).await;
        let begun = Instant::now();
        let (a, b) = tokio::join!(
            request(&conn_a, b"hello from a"),
            request(&conn_b, b"hello from b")
        );
        let elapsed = begun.elapsed();
        assert_eq!(a, b"12:hello from a");
        assert_eq!(b, b"12:hello from b");
        let rtt_a = conn_a.stats().path.rtt;
        eprintln!(
            "QUIC through 2×10 ms: request/response {:.2} ms, quinn rtt {:.2} ms",
            elapsed.as_secs_f64() * 1e3,
            rtt_a.as_secs_f64() * 1e3
        );
        assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
        assert!(
            rtt_a >= Duration::from_millis(20) && rtt_a < Duration::from_millis(40),
            "{rtt_a:?}"
        );
        let stats = relay.stats();
        assert_eq!(stats.sessions_total, 2);
        conn_a.close(0u32.into(), b"done");
        conn_b.close(0u32.into(), b"done");
        ep_a.wait_idle().await;
        ep_b.wait_idle().await;
        relay.shutdown().await;
        server.close(0u32.into(), b"done");
        server_task.abort();
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_bulk_upload_is_bounded_by_the_link_rate() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_LIMIT, async {
        let (server, client_config) = quic_pair();
        let server_addr = server.local_addr().expect("server address");
        let server_task = serve(server.clone());
        let up = LinkParams::unlimited()
            .with_rate_mbit(10.0)
            .with_delay(Duration::from_millis(10))
            .with_queue_bytes(64 * 1024);
        let down = LinkParams::unlimited().with_delay(Duration::from_millis(10));
        let relay = Relay::bind(
            RelayConfig::new(loopback(), server_addr)
                .with_uplink(up)
                .with_downlink(down),
        )
        .await
        .expect("relay");
        let (endpoint, conn) = connect(relay.local_addr(), client_config).await;
        let size = 1 << 20;
        let body = vec![7u8; size];
        let begun = Instant::now();
        let reply = request(&conn, &body).await;
        let elapsed = begun.elapsed();
        assert!(reply.starts_with(format!("{size}:").as_bytes()));
        let goodput = size as f64 * 8.0 / elapsed.as_secs_f64();
        let stats = relay.stats();
        eprintln!(
            "QUIC 1 MiB upload through 10 Mbit/s, 2×10 ms: {:.0} ms, goodput {:.2} Mbit/s; uplink {}",
            elapsed.as_secs_f64() * 1e3,
            goodput / 1e6,
            stats.uplink
        );
        // The link carries QUIC and UDP payload overhead too: goodput stays below the rate.
        assert!(goodput < 10e6, "goodput {goodput} above the link rate");
        assert!(goodput > 5e6, "goodput {goodput} far below the link rate");
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        relay.shutdown().await;
        server.close(0u32.into(), b"done");
        server_task.abort();
    })
    .await
    .expect("test finished in time");
}

//! HTTPS to ClickHouse. The shared ClickHouse 18.16 serves HTTPS itself (on
//! `CLICKHOUSE_HTTPS_PORT`, 8443, with a test CA's certificate for `localhost`: see
//! `scripts/clickhouse.sh`); for the cases a server's own configuration cannot show (a
//! certificate for another name, a required client certificate) a TLS proxy made here with
//! rustls, in front of whichever engine the run uses, presents certificates made here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use event_ingest::{Application, Config};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::helpers::{
    batch, clickhouse_url, modern_engine, skip, spawn_app, test_env, unique_database,
};

/// The test CA of `scripts/clickhouse.sh` (one per machine, as the script lays it out), and
/// where the shared ClickHouse serves HTTPS.
fn shared_https() -> (PathBuf, u16) {
    let state = std::env::var("XDG_STATE_HOME")
        .unwrap_or_else(|_| format!("{}/.local/state", std::env::var("HOME").unwrap_or_default()));
    let dir = std::env::var("CLICKHOUSE_TLS_DIR")
        .unwrap_or_else(|_| format!("{state}/event-ingest/clickhouse-tls"));
    let port = std::env::var("CLICKHOUSE_HTTPS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8443);
    (Path::new(&dir).join("ca.crt"), port)
}

/// A CA made for one test, the certificates it signs, and their PEM files.
pub(crate) struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let name = format!("event-ingest test CA {}", uuid::Uuid::new_v4().simple());
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            ca,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The CA's certificate as a PEM file.
    pub(crate) fn ca_file(&self) -> String {
        self.write("ca.crt", &self.ca.pem())
    }

    /// A certificate for `names` signed by the CA, and its key, as PEM files.
    pub(crate) fn issue(&self, file: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        (
            self.write(&format!("{file}.crt"), &cert.pem()),
            self.write(&format!("{file}.key"), &key.serialize_pem()),
        )
    }

    fn write(&self, name: &str, pem: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_string()
    }
}

/// A TLS proxy on a free local port presenting `cert`/`key`, asking for a client
/// certificate signed by `client_ca` when given, and passing each connection on to the
/// run's ClickHouse. Returns its port.
async fn tls_proxy(cert: &str, key: &str, client_ca: Option<&str>) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, tls_proxy_on(listener, cert, key, client_ca))
}

/// [`tls_proxy`] on `listener`. Aborting the handle closes its connections too.
fn tls_proxy_on(
    listener: TcpListener,
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> JoinHandle<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(event_ingest::crypto::provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let config = builder
        .with_single_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let upstream = clickhouse_url().trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        // The connections' tasks go with the proxy's (a set aborts its tasks when dropped).
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            connections.spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else {
                    return; // the handshake failed: the client sees why
                };
                let Ok(mut server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    })
}

/// What `Application::build` answers for `overrides`: `Err` with its message.
async fn build(overrides: &[(&str, &str)]) -> Result<(), String> {
    let config = Config::from_vars(test_env(&unique_database(), overrides)).unwrap();
    match Application::build(config).await {
        Ok(app) => {
            app.handle().stop(true).await;
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn events_reach_clickhouse_over_its_own_https_with_the_ca_file() {
    if modern_engine() {
        return skip(
            "tls::events_reach_clickhouse_over_its_own_https_with_the_ca_file",
            "the modern engine's test double serves plain HTTP (the proxy tests cover it)",
        );
    }
    let (ca, port) = shared_https();
    let port = port.to_string();
    let app = spawn_app(&[
        ("CLICKHOUSE_HOST", "https://localhost"),
        ("CLICKHOUSE_PORT", &port),
        ("CLICKHOUSE_CA_FILE", ca.to_str().unwrap()),
    ])
    .await;
    assert_eq!(app.post_events(batch(0, 5)).await.status(), 200);
    app.wait_for_rows(5).await;
    let health: Value = app.get("/v1/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    app.stop().await;
}

#[tokio::test]
async fn a_server_certificate_not_trusted_stops_start_up_naming_the_host_and_the_reason() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["localhost", "127.0.0.1"]);
    let (port, proxy) = tls_proxy(&cert, &key, None).await;
    let port = port.to_string();
    // The system's roots do not know the test CA.
    let err = build(&[
        ("CLICKHOUSE_HOST", "https://localhost"),
        ("CLICKHOUSE_PORT", &port),
    ])
    .await
    .unwrap_err();
    assert!(
        err.contains(&format!("https://localhost:{port}")) && err.contains("UnknownIssuer"),
        "{err}"
    );
    // Another CA's bundle: the same.
    let other_pki = Pki::new();
    let other = other_pki.ca_file();
    let err = build(&[
        ("CLICKHOUSE_HOST", "https://localhost"),
        ("CLICKHOUSE_PORT", &port),
        ("CLICKHOUSE_CA_FILE", &other),
    ])
    .await
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    proxy.abort();
}

#[tokio::test]
async fn a_certificate_for_another_name_stops_start_up() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["clickhouse.example"]);
    let (port, proxy) = tls_proxy(&cert, &key, None).await;
    let port = port.to_string();
    let ca = pki.ca_file();
    for host in ["https://localhost", "https://127.0.0.1"] {
        let err = build(&[
            ("CLICKHOUSE_HOST", host),
            ("CLICKHOUSE_PORT", &port),
            ("CLICKHOUSE_CA_FILE", &ca),
        ])
        .await
        .unwrap_err();
        assert!(err.contains("not valid for name"), "{host}: {err}");
    }
    proxy.abort();
}

#[tokio::test]
async fn an_ip_address_in_the_certificate_is_verified_like_a_name() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["127.0.0.1"]);
    let (port, proxy) = tls_proxy(&cert, &key, None).await;
    let port = port.to_string();
    let app = spawn_app(&[
        ("CLICKHOUSE_HOST", "https://127.0.0.1"),
        ("CLICKHOUSE_PORT", &port),
        ("CLICKHOUSE_CA_FILE", &pki.ca_file()),
    ])
    .await;
    assert_eq!(app.post_events(batch(0, 3)).await.status(), 200);
    app.wait_for_rows(3).await;
    app.stop().await;
    proxy.abort();
}

/// A server whose certificate changes while the service runs (rotated to one the service
/// does not trust): `/v1/health` says ClickHouse is unavailable and why.
#[tokio::test]
async fn a_certificate_changed_while_running_shows_in_health_with_the_reason() {
    if modern_engine() {
        return skip(
            "tls::a_certificate_changed_while_running_shows_in_health_with_the_reason",
            "the modern engine's test double closes each connection after its answer, which \
             behind this test's proxy fails the kept health connection on every ping",
        );
    }
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["localhost"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = tls_proxy_on(listener, &cert, &key, None);
    let port_text = port.to_string();
    let app = spawn_app(&[
        ("CLICKHOUSE_HOST", "https://localhost"),
        ("CLICKHOUSE_PORT", &port_text),
        ("CLICKHOUSE_CA_FILE", &pki.ca_file()),
    ])
    .await;
    // Answering over HTTPS.
    crate::helpers::within(crate::helpers::PATIENCE, async {
        while app.get("/v1/health").await.json::<Value>().await.unwrap()["status"] != "ok" {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    // Rotated to a certificate of another CA, on the same port.
    proxy.abort();
    let other = Pki::new();
    let (cert, key) = other.issue("server", &["localhost"]);
    let listener = crate::helpers::within(crate::helpers::PATIENCE, async {
        loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => return listener,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    let proxy = tls_proxy_on(listener, &cert, &key, None);
    let health = crate::helpers::within(crate::helpers::PATIENCE, async {
        loop {
            let health: Value = app.get("/v1/health").await.json().await.unwrap();
            let error = health["error"].as_str().unwrap_or_default();
            if health["status"] == "unavailable" && error.contains("UnknownIssuer") {
                return health;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(health["clickhouse_version"].is_null(), "{health}");
    app.stop().await;
    proxy.abort();
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_a_server_that_requires_one() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["localhost"]);
    let (client_cert, client_key) = pki.issue("client", &["event-ingest"]);
    let ca = pki.ca_file();
    let (port, proxy) = tls_proxy(&cert, &key, Some(&ca)).await;
    let port = port.to_string();
    let app = spawn_app(&[
        ("CLICKHOUSE_HOST", "https://localhost"),
        ("CLICKHOUSE_PORT", &port),
        ("CLICKHOUSE_CA_FILE", &ca),
        ("CLICKHOUSE_CLIENT_CERT_FILE", &client_cert),
        ("CLICKHOUSE_CLIENT_KEY_FILE", &client_key),
    ])
    .await;
    assert_eq!(app.post_events(batch(0, 4)).await.status(), 200);
    app.wait_for_rows(4).await;
    app.stop().await;

    // Without it the server refuses the handshake: nothing is stored, health says why.
    let app = spawn_app(&[
        ("CLICKHOUSE_HOST", "https://localhost"),
        ("CLICKHOUSE_PORT", &port),
        ("CLICKHOUSE_CA_FILE", &ca),
    ])
    .await;
    let health: Value = app.get("/v1/health").await.json().await.unwrap();
    assert_eq!(health["status"], "unavailable", "{health}");
    app.stop().await;
    proxy.abort();
}

#[tokio::test]
async fn skipping_verification_is_allowed_and_shown() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["clickhouse.example"]);
    let (port, proxy) = tls_proxy(&cert, &key, None).await;
    let port = port.to_string();
    let app = spawn_app(&[
        ("CLICKHOUSE_HOST", "https://localhost"),
        ("CLICKHOUSE_PORT", &port),
        ("CLICKHOUSE_TLS_SKIP_VERIFY", "true"),
    ])
    .await;
    assert_eq!(app.post_events(batch(0, 2)).await.status(), 200);
    app.wait_for_rows(2).await;
    let status: Value = app.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["clickhouse_tls_unverified"], true, "{status}");
    app.stop().await;
    proxy.abort();
}

#[tokio::test]
async fn unreadable_tls_files_stop_start_up_naming_the_file() {
    let err = build(&[
        ("CLICKHOUSE_HOST", "https://localhost"),
        ("CLICKHOUSE_CA_FILE", "/nonexistent/ca.pem"),
    ])
    .await
    .unwrap_err();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let pki = Pki::new();
    let (cert, _) = pki.issue("client", &["x"]);
    let err = build(&[
        ("CLICKHOUSE_HOST", "https://localhost"),
        ("CLICKHOUSE_CLIENT_CERT_FILE", &cert),
    ])
    .await
    .unwrap_err();
    assert!(err.contains("CLICKHOUSE_CLIENT_KEY_FILE"), "{err}");
}

/// `https://` for an app listening with a certificate (its address is `http://...`).
pub(crate) fn https(app: &crate::helpers::TestApp) -> String {
    app.address.replace("http://127.0.0.1", "https://localhost")
}

/// A client trusting `ca` (a PEM file).
pub(crate) fn trusting(ca: &str, http1_only: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca);
    match http1_only {
        true => builder.http1_only(),
        false => builder,
    }
    .build()
    .unwrap()
}

/// The certificate a TLS server at `port` presents, trusting `ca`.
async fn presented(port: u16, ca: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(event_ingest::crypto::provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn the_listener_serves_https_with_http2_and_http1() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("listener", &["localhost", "127.0.0.1"]);
    let ca = pki.ca_file();
    let app = spawn_app(&[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &key)]).await;
    let url = format!("{}/v1/events", https(&app));
    let answer = trusting(&ca, false)
        .post(&url)
        .body(batch(0, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), reqwest::Version::HTTP_2, "HTTP/2 by ALPN");
    let answer = trusting(&ca, true)
        .post(&url)
        .body(batch(3, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), reqwest::Version::HTTP_11);
    app.wait_for_rows(5).await;
    // curl, as an operator would.
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--cacert",
            &ca,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(format!("{}/v1/live", https(&app)))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{out:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("listener", &["localhost"]);
    let ca = pki.ca_file();
    let app = spawn_app(&[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &key)]).await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let first = presented(port, &ca).await;
    // A bad pair (half written) leaves the one in use.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    // Nothing to wait for but time: two of the files' one-second checks.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(presented(port, &ca).await, first, "the old one stays");
    // The renewal, as certbot writes it: new files in place.
    let (renewed, renewed_key) = pki.issue("renewed", &["localhost"]);
    std::fs::copy(&renewed_key, &key).unwrap();
    std::fs::copy(&renewed, &cert).unwrap();
    let expected = {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(&renewed).unwrap().to_vec()
    };
    crate::helpers::within(crate::helpers::PATIENCE, async {
        while presented(port, &ca).await != expected {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    app.stop().await;
}

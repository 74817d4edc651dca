//! HTTPS to ClickHouse: the rustls client configuration every sink's connections share
//! (roots, an optional client certificate, or no verification when asked for), built once
//! from files at start-up, and the HTTP client the `clickhouse` crate sends through.
//!
//! Host names and IP addresses in the server's certificate are both verified (rustls's
//! WebPKI verifier). Connections are kept alive and pooled per client, so a handshake is
//! paid per connection, not per insert.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where the TLS material comes from (`CLICKHOUSE_CA_FILE`, `CLICKHOUSE_CLIENT_CERT_FILE`,
/// `CLICKHOUSE_CLIENT_KEY_FILE`, `CLICKHOUSE_TLS_SKIP_VERIFY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM bundle of the CAs to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain to present to a server that asks for one.
    pub client_cert: Option<PathBuf>,
    /// Its PEM private key.
    pub client_key: Option<PathBuf>,
    /// Accept any certificate (testing only; warned about at start-up).
    pub skip_verify: bool,
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A PEM file could not be read (the file and the reason said).
    #[error("{0}")]
    Read(String),
    /// rustls refused the material (a key that does not match its certificate, ...).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// How long an idle pooled connection is kept: under ClickHouse's own keep-alive (3 s).
const POOL_IDLE: Duration = Duration::from_secs(2);
/// TCP keep-alive on every connection.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

impl TlsFiles {
    /// The client configuration for these files: the CA bundle, else the system's roots,
    /// else the bundled Mozilla set; a client certificate when given.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = Arc::new(crate::crypto::provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match self.skip_verify {
            true => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
            false => builder.with_root_certificates(self.roots()?),
        };
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = crate::crypto::certificates(cert).map_err(file)?;
                builder
                    .with_client_auth_cert(chain, crate::crypto::private_key(key).map_err(file)?)?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(path), None) | (None, Some(path)) => {
                return Err(file_error(
                    path,
                    "CLICKHOUSE_CLIENT_CERT_FILE and CLICKHOUSE_CLIENT_KEY_FILE go together",
                ));
            }
        };
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &self.ca_file {
            let (added, _) =
                roots.add_parsable_certificates(crate::crypto::certificates(ca).map_err(file)?);
            if added == 0 {
                return Err(file_error(ca, "no usable CA certificate in it"));
            }
            return Ok(roots);
        }
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        Ok(roots)
    }
}

fn file_error(path: &Path, why: &str) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// A problem reading a file, as the crypto module says it (the file named already).
fn file(why: String) -> TlsError {
    TlsError::Read(why)
}

/// A `clickhouse` client sending over HTTPS (or plain HTTP, for an `http://` URL) with
/// `config`: one connection pool per client, kept alive.
pub fn client(config: Arc<ClientConfig>) -> clickhouse::Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*config).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let pool = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(connector);
    clickhouse::Client::with_http_client(pool)
}

/// Whether an error from a request is the server's certificate failing verification
/// (unknown CA, a name it does not cover, expired): not something a retry fixes.
pub fn is_certificate_error(message: &str) -> bool {
    message.contains("invalid peer certificate") || message.contains("InvalidCertificate")
}

/// `CLICKHOUSE_TLS_SKIP_VERIFY`: accepts any certificate, still checking the handshake's
/// signatures with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

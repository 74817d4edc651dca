//! HTTPS on the listeners (`TLS_CERT_FILE`, `TLS_KEY_FILE`): rustls, HTTP/2 offered by ALPN
//! beside HTTP/1.1, and a certificate read again ([`ListenerTls::reload`], called when its
//! files change or on `SIGHUP`), so a renewal needs no restart. Connections already open
//! keep the certificate they began with; new ones get the new one. A new pair that does not load (half written, a key that
//! does not match) leaves the one in use and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// The listeners' certificate and what serves it.
pub struct ListenerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    certificates: Arc<Current>,
    acceptor: TlsAcceptor,
}

/// The certificate new connections get.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

impl ListenerTls {
    /// Loads the certificate chain and key from their PEM files.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, String> {
        let key = load(cert_file, key_file)?;
        let certificates = Arc::new(Current(RwLock::new(Arc::new(key))));
        let provider = Arc::new(crate::crypto::provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(certificates.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            certificates,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// What accepts the listeners' connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Loads the files again (they changed, or `SIGHUP`). A pair that does not load
    /// leaves the one in use.
    pub fn reload(&self) {
        match load(&self.cert_file, &self.key_file) {
            Ok(key) => {
                *self.certificates.0.write() = Arc::new(key);
                log::info!(
                    "TLS certificate {} loaded again; new connections get it",
                    self.cert_file.display()
                );
            }
            Err(why) => log::warn!("TLS certificate not replaced, the one in use stays: {why}"),
        }
    }
}

/// A certificate chain and its key, checked to belong together.
fn load(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let chain = crate::crypto::certificates(cert_file)?;
    let key = crate::crypto::private_key(key_file)?;
    let provider = crate::crypto::provider();
    let key = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("{} and {}: {e}", cert_file.display(), key_file.display()))?;
    Ok(key)
}

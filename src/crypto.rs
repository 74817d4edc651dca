//! TLS material for HTTPS to ClickHouse and on the listeners, read the same way for both
//! (PEM certificates and keys), and the one crypto provider: rustls's *ring* provider,
//! which builds with a C compiler alone (aws-lc-rs needs CMake), at the cost of the
//! post-quantum hybrid key exchange rustls offers with aws-lc-rs only (hence its deprecation
//! note on *ring*'s default).
//!
//! Shared by the stages; imports none of them.

/// The provider every TLS configuration of the service is built with.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificates of a PEM file, or why not (the file named).
pub fn certificates(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match certs.is_empty() {
        true => Err(format!("{}: no PEM certificate in it", path.display())),
        false => Ok(certs),
    }
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1), or why not (the file named).
pub fn private_key(
    path: &std::path::Path,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

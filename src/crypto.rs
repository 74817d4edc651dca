//! The one TLS crypto provider, for HTTPS to ClickHouse and on the listeners: rustls's
//! *ring* provider, which builds with a C compiler alone (aws-lc-rs needs CMake), at the
//! cost of the post-quantum hybrid key exchange rustls offers with aws-lc-rs only (hence its
//! deprecation note on *ring*'s default).
//!
//! Shared by the stages; imports none of them.

/// The provider every TLS configuration of the service is built with.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

//! TLS for `https` URLs, behind the `tls` cargo feature (the harness enables it; the CNI
//! plugins, which only talk to the router on loopback, are built without it). rustls with
//! the ring provider; trust is the system's roots (`/etc/ssl/certs`, through
//! rustls-native-certs) plus any PEM certificates the caller adds, e.g. a test's
//! self-signed CA or a cluster's private one.

use super::connect::Io;
use crate::{Error, ErrorKind, Result};
use tokio::net::TcpStream;

/// How `https` connections are verified. Without the `tls` feature every `https` URL fails
/// with a clear error.
#[derive(Clone, Default)]
pub struct Tls {
    #[cfg(feature = "tls")]
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    #[cfg(feature = "tls")]
    config: std::sync::Arc<std::sync::OnceLock<Result<std::sync::Arc<rustls::ClientConfig>>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

#[cfg(feature = "tls")]
impl Tls {
    /// Also trusts the certificates in `pem` (one or more `BEGIN CERTIFICATE` blocks).
    pub fn with_root_pem(mut self, pem: &[u8]) -> Result<Tls> {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::new(ErrorKind::InvalidConfig, format!("read CA PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "read CA PEM: no certificate in it",
            ));
        }
        self.extra_roots.extend(certs);
        self.config = Default::default();
        Ok(self)
    }

    /// The client config, built once (loading the system roots reads many files).
    fn config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>> {
        self.config
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                // Unreadable system roots are not fatal: a private CA may be all we need.
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                for cert in &self.extra_roots {
                    roots.add(cert.clone()).map_err(|e| {
                        Error::new(ErrorKind::InvalidConfig, format!("add CA certificate: {e}"))
                    })?;
                }
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::new(ErrorKind::Internal, format!("configure TLS: {e}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Ok(std::sync::Arc::new(config))
            })
            .clone()
    }

    pub(crate) async fn wrap(&self, tcp: TcpStream, host: &str) -> Result<Box<dyn Io>> {
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("TLS server name {host:?}: {e}"),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.config()?);
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("TLS handshake with {host}: {e}")))?;
        Ok(Box::new(stream))
    }
}

#[cfg(not(feature = "tls"))]
impl Tls {
    pub(crate) async fn wrap(&self, _tcp: TcpStream, host: &str) -> Result<Box<dyn Io>> {
        Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("connect to https://{host}: built without TLS (cargo feature `tls`)"),
        ))
    }
}

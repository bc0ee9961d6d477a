//! TLS for the tests and the instruments: a certificate made once per process (`lab_cert`), the
//! server arguments that serve it, and a rustls client configuration that trusts its CA.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;

pub use lab_cert::Files;

/// A CA and a server certificate for 127.0.0.1 (see `lab_cert`), and a client that trusts the CA.
#[derive(Debug)]
pub struct TestCert {
    pub files: Files,
    /// Trusts the CA, offers ALPN `http/1.1`, TLS 1.3 and 1.2, and keeps session tickets: a
    /// second connection with the same configuration resumes.
    pub client: Arc<ClientConfig>,
}

impl TestCert {
    /// The flags that make a server speak TLS with this certificate.
    pub fn server_args(&self) -> [&str; 4] {
        let utf8 = "a UTF-8 temporary path";
        [
            "--tls-cert",
            self.files.cert.to_str().expect(utf8),
            "--tls-key",
            self.files.key.to_str().expect(utf8),
        ]
    }

    /// A fresh client configuration trusting the CA (its own session cache: nothing to resume).
    pub fn fresh_client(&self) -> Arc<ClientConfig> {
        client_config(&self.files.ca).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// This process's test certificate, made at the first call in a directory of its own.
pub fn test_cert() -> &'static TestCert {
    static CERT: OnceLock<TestCert> = OnceLock::new();
    CERT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("acceptlab-cert-{}", std::process::id()));
        let files = lab_cert::make(&dir).unwrap_or_else(|e| panic!("making a test certificate: {e}"));
        let client = client_config(&files.ca).unwrap_or_else(|e| panic!("{e}"));
        TestCert { files, client }
    })
}

/// A rustls client (ring provider) that trusts the CA certificates in the PEM file `ca` (or, with
/// `None`, any certificate at all: `--insecure`), offers ALPN `http/1.1`, TLS 1.3 and 1.2.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--cacert {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| format!("--cacert {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--cacert {}: no CERTIFICATE in it", ca.display()));
    }
    let mut config = builder()?.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A rustls client that accepts any server certificate (`lab-load --insecure`): for load, not for
/// trust; the handshake's cost to the server is the same.
pub fn insecure_client_config() -> Result<Arc<ClientConfig>, String> {
    let mut config = builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// ring with X25519 first, as the servers have it (`loopkit::tls::crypto_provider`), and curl.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    Arc::new(provider)
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, String> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))
}

/// Accepts every certificate, checking only that the signatures it is shown are well made.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

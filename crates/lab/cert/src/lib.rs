//! A small CA and a server certificate it signs, for the servers' `--tls-cert` / `--tls-key` and the
//! clients' CA (`lab-load --cacert`, `curl --cacert`): `make cert`, and the TLS tests.
//!
//! The server certificate is an end entity (CA:FALSE, serverAuth) for `127.0.0.1` and `localhost`,
//! with the CA as its issuer: rustls-based clients refuse a self-signed certificate with CA:TRUE
//! as an end entity, so one self-signed certificate would not do. Keys are ECDSA P-256, as
//! issue 34's nginx reference figures used.
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// The files [`make`] writes.
#[derive(Debug, Clone)]
pub struct Files {
    /// The CA's certificate: what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate, PEM (`--tls-cert`).
    pub cert: PathBuf,
    /// The server's private key, PEM PKCS#8 (`--tls-key`).
    pub key: PathBuf,
}

impl Files {
    /// Where [`make`] puts its files in `dir`.
    pub fn in_dir(dir: &Path) -> Files {
        Files { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") }
    }
}

/// Makes a CA and a server certificate for 127.0.0.1 and localhost signed by it, into `dir`
/// (created if missing): `ca.pem`, `server.pem`, `server.key`.
pub fn make(dir: &Path) -> Result<Files, String> {
    let fail = |what: &str, e: rcgen::Error| format!("{what}: {e}");
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", e))?;
    ca.distinguished_name.push(DnType::CommonName, "acceptlab test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| fail("CA certificate", e))?;

    let key = KeyPair::generate().map_err(|e| fail("server key", e))?;
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(|e| fail("server", e))?;
    server.distinguished_name.push(DnType::CommonName, "localhost");
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server.signed_by(&key, &ca_cert, &ca_key).map_err(|e| fail("server certificate", e))?;

    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = Files::in_dir(dir);
    for (path, text) in
        [(&files.ca, ca_cert.pem()), (&files.cert, cert.pem()), (&files.key, key.serialize_pem())]
    {
        fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(files)
}

//! `--tls-self-signed DIR`: a throw-away CA and a server certificate for 127.0.0.1 and localhost, so clients that
//! refuse http authorities (MSAL) can talk to the sim. Only `DIR/ca.pem` is meant to be trusted by clients.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM material for the server; the CA's certificate was written to `DIR/ca.pem`.
pub struct ServerCert {
    pub cert_chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert").finish_non_exhaustive()
    }
}

/// Generates the CA and server certificate and writes `ca.pem` (plus `server.pem`, the certificate only) in `dir`.
pub fn generate(dir: &Path) -> anyhow::Result<ServerCert> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "microsoft-sim local CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - time::Duration::hours(1);
    ca_params.not_after = now + time::Duration::days(365);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Strict verifiers (Python 3.13's VERIFY_X509_STRICT) require the authority key identifier.
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(90);
    let server_cert = params.signed_by(&server_key, &issuer)?;

    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).context("writing ca.pem")?;
    std::fs::write(dir.join("server.pem"), server_cert.pem()).context("writing server.pem")?;
    Ok(ServerCert {
        cert_chain_pem: format!("{}{}", server_cert.pem(), ca_cert.pem()),
        key_pem: server_key.serialize_pem(),
    })
}

/// A rustls server configuration for `cert` (HTTP/1.1 and h2 offered), with the aws-lc-rs provider chosen
/// explicitly so the process never depends on a global default.
pub fn server_config(cert: &ServerCert) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the certificate chain")?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .context("parsing the key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

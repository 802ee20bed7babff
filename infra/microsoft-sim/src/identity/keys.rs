//! The token-signing keys: RS256 key pairs with a self-signed certificate each (for `x5c`/`x5t`), the JWKS
//! document, and rollover. Microsoft keeps publishing a rolled-over key for a while after it stops signing with
//! it, so tokens signed before a rollover still validate; the sim keeps the previous keys published the same way.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// How many keys stay published (the signing key plus the ones rolled over before it).
const PUBLISHED_KEYS: usize = 3;

pub struct SigningKey {
    kid: String,
    x5t: String,
    n: String,
    e: String,
    cert_der: Vec<u8>,
    key_pair: KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn generate() -> anyhow::Result<SigningKey> {
        let key_pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        let pkcs8 = key_pair
            .as_der()
            .map_err(|_| anyhow::anyhow!("RSA key encoding failed"))?;
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let cert_key =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "accounts.accesscontrol.windows.net",
        );
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(5 * 365);
        let cert = params.self_signed(&cert_key)?;
        let cert_der = cert.der().to_vec();

        // Microsoft's kid and x5t are both the base64url SHA-1 thumbprint of the certificate.
        let thumbprint =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert_der);
        let x5t = URL_SAFE_NO_PAD.encode(thumbprint.as_ref());
        let components: PublicKeyComponents<Vec<u8>> = key_pair.public_key().into();
        Ok(SigningKey {
            kid: x5t.clone(),
            x5t,
            n: URL_SAFE_NO_PAD.encode(strip_leading_zeros(&components.n)),
            e: URL_SAFE_NO_PAD.encode(strip_leading_zeros(&components.e)),
            cert_der,
            key_pair,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut sig = vec![0; self.key_pair.public_modulus_len()];
        self.key_pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut sig,
            )
            .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
        Ok(sig)
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            self.key_pair.public_key().as_ref(),
        )
        .verify(message, sig)
        .is_ok()
    }

    fn jwk(&self, issuer: &str) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.x5t,
            "n": self.n,
            "e": self.e,
            "x5c": [STANDARD.encode(&self.cert_der)],
            "issuer": issuer,
        })
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[start..]
}

/// Published keys, newest (the signing key) first, with the JWKS endpoint's counters.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<SigningKey>,
    /// JWKS documents served (control API: how often relying parties fetched).
    pub fetches: u64,
    /// The next this-many JWKS requests answer 503 (control API: an outage of the keys endpoint).
    pub outage: u32,
}

impl KeySet {
    pub fn generate() -> anyhow::Result<KeySet> {
        Ok(KeySet {
            keys: vec![SigningKey::generate()?],
            fetches: 0,
            outage: 0,
        })
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.keys[0]
    }

    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Starts signing with a new key; the previous ones stay published until pushed out.
    pub fn rotate(&mut self) -> anyhow::Result<&SigningKey> {
        self.keys.insert(0, SigningKey::generate()?);
        self.keys.truncate(PUBLISHED_KEYS);
        Ok(&self.keys[0])
    }

    /// Stops publishing `kid` (an emergency withdrawal: tokens it signed stop validating once a relying party
    /// refetches the JWKS). The signing key cannot be withdrawn while it signs: roll over first.
    pub fn withdraw(&mut self, kid: &str) -> Result<(), WithdrawError> {
        if self.signing_key().kid == kid {
            return Err(WithdrawError::SigningKey);
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.kid != kid);
        if self.keys.len() == before {
            return Err(WithdrawError::Unknown);
        }
        Ok(())
    }

    /// The published kids, the signing key's first.
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// The JWKS document; `issuer` is the templated issuer Microsoft puts on every key of `common`.
    pub fn jwks(&self, issuer: &str) -> Value {
        json!({ "keys": self.keys.iter().map(|k| k.jwk(issuer)).collect::<Vec<_>>() })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawError {
    SigningKey,
    Unknown,
}

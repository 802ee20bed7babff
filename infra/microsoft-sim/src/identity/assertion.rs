//! `private_key_jwt` client authentication: the checks Entra makes on a `client_assertion`, per "Microsoft identity
//! platform application authentication certificate credentials"
//! (https://learn.microsoft.com/entra/identity-platform/certificate-credentials, read 2026-12-05): a JWT signed
//! RS256 or PS256 by a certificate registered on the app, named in the header by `x5t#S256` (SHA-256 thumbprint) or
//! `x5t` (SHA-1), with `aud` the token endpoint, `iss` = `sub` = the client id, `nbf`/`exp` around now and a `jti`.
//! A `jti` is required but may be presented again while the assertion is valid: Microsoft's own MSAL for Python
//! caches its assertion and reuses it for 540 seconds (`msal/oauth2cli/assertion.py`, `AutoRefresher(...,
//! expires_in=540)`, msal 1.39.0, read 2026-12-05), which Entra could not allow if it refused a replayed `jti`.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

use super::errors::{self, StsError};
use crate::state::Sim;
use crate::world::KeyCredential;

/// `client_assertion_type` of a JWT assertion (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Clock skew allowed on `nbf` and `exp` (Entra publishes none; five minutes is the usual validator default).
const SKEW: time::Duration = time::Duration::minutes(5);

fn part(value: &str) -> Result<Value, StsError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| errors::assertion_malformed("The client assertion is not a JWT."))
}

fn thumbprint_matches(registered: &Option<String>, presented: &[u8]) -> bool {
    registered
        .as_deref()
        .and_then(|hex_value| hex::decode(hex_value.replace(':', "")).ok())
        .is_some_and(|bytes| bytes == presented)
}

/// Checks `assertion` for `client_id` at the token endpoint `token_url`; records its `jti`.
pub fn verify(
    sim: &Sim,
    client_id: &str,
    keys: &[KeyCredential],
    token_url: &str,
    assertion_type: Option<&str>,
    assertion: &str,
) -> Result<(), StsError> {
    if assertion_type != Some(JWT_BEARER) {
        return Err(errors::assertion_malformed(
            "The client_assertion_type must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.",
        ));
    }
    let mut parts = assertion.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(errors::assertion_malformed(
            "The client assertion is not a JWT.",
        ));
    };
    let header = part(h)?;
    let claims = part(p)?;
    let algorithm: &'static dyn signature::VerificationAlgorithm =
        match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") => &signature::RSA_PSS_2048_8192_SHA256,
            _ => {
                return Err(errors::assertion_malformed(
                    "The client assertion's alg is not RS256 or PS256.",
                ));
            }
        };
    let (presented, sha256) = match (
        header.get("x5t#S256").and_then(Value::as_str),
        header.get("x5t").and_then(Value::as_str),
    ) {
        (Some(value), _) => (value, true),
        (None, Some(value)) => (value, false),
        (None, None) => {
            return Err(errors::assertion_malformed(
                "No certificate thumbprint specified in token header.",
            ));
        }
    };
    // MSAL Python pads its base64url thumbprint ("...="), and Entra accepts it: padding is ignored here too.
    let presented = URL_SAFE_NO_PAD
        .decode(presented.trim_end_matches('='))
        .map_err(|_| errors::assertion_malformed("The certificate thumbprint is not base64url."))?;
    let shown = hex::encode_upper(&presented);
    let key = keys
        .iter()
        .find(|key| {
            if sha256 {
                thumbprint_matches(&key.thumbprint_sha256, &presented)
            } else {
                thumbprint_matches(&key.thumbprint_sha1, &presented)
            }
        })
        .ok_or_else(|| errors::assertion_key_not_found(client_id, &shown))?;
    let public_key = STANDARD
        .decode(&key.public_key)
        .map_err(|_| errors::assertion_bad_signature(client_id, &shown))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| errors::assertion_bad_signature(client_id, &shown))?;
    let signing_input = &assertion.as_bytes()[..h.len() + 1 + p.len()];
    UnparsedPublicKey::new(algorithm, &public_key)
        .verify(signing_input, &signature)
        .map_err(|_| errors::assertion_bad_signature(client_id, &shown))?;

    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    if !text("iss").eq_ignore_ascii_case(client_id) || !text("sub").eq_ignore_ascii_case(client_id)
    {
        return Err(errors::assertion_client_mismatch());
    }
    if !text("aud").eq_ignore_ascii_case(token_url) {
        return Err(errors::assertion_audience(text("aud")));
    }
    let now = sim.now();
    // NumericDate may be fractional (RFC 7519 §2; MSAL Python sends `time.time()` floats).
    let number = |name: &str| {
        claims
            .get(name)
            .and_then(|value| value.as_i64().or_else(|| value.as_f64().map(|f| f as i64)))
    };
    let (Some(exp), nbf) = (number("exp"), number("nbf")) else {
        return Err(errors::assertion_malformed(
            "The client assertion has no exp claim.",
        ));
    };
    let nbf = nbf.unwrap_or(i64::MIN);
    if now.unix_timestamp() < nbf.saturating_sub(SKEW.whole_seconds())
        || now.unix_timestamp() > exp.saturating_add(SKEW.whole_seconds())
    {
        return Err(errors::assertion_time_range(now, nbf, exp));
    }
    let jti = text("jti");
    if jti.is_empty() {
        return Err(errors::assertion_malformed(
            "The client assertion has no jti claim.",
        ));
    }
    Ok(())
}

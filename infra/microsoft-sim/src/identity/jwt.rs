//! Compact JWS (RS256) encoding and verification for id_tokens and the sim's access tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::keys::{KeySet, SigningKey};

/// Signs `claims` with `key`. The header carries `kid` only, as v2 tokens do; `x5t` is added for v1-style
/// access tokens, which Microsoft also signs with both.
pub fn sign(key: &SigningKey, claims: &Value, with_x5t: bool) -> anyhow::Result<String> {
    let mut header = json!({ "typ": "JWT", "alg": "RS256", "kid": key.kid() });
    if with_x5t {
        header["x5t"] = Value::String(key.kid().to_owned());
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
    );
    let sig = key.sign(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    Malformed,
    UnknownKey,
    BadSignature,
}

/// Checks structure, `alg`, `kid` against the published keys and the signature; returns the claims.
/// Time and audience checks are the caller's.
pub fn verify(keys: &KeySet, token: &str) -> Result<Value, VerifyError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };
    let header: Value = decode_part(h)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(VerifyError::Malformed);
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(VerifyError::Malformed)?;
    let key = keys.find(kid).ok_or(VerifyError::UnknownKey)?;
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| VerifyError::Malformed)?;
    let signing_input_len = h.len() + 1 + p.len();
    if !key.verify(&token.as_bytes()[..signing_input_len], &sig) {
        return Err(VerifyError::BadSignature);
    }
    decode_part(p)
}

/// The payload without any verification: only for diagnostics such as the request log.
pub fn peek_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    decode_part(payload).ok()
}

fn decode_part(part: &str) -> Result<Value, VerifyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| VerifyError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)
}

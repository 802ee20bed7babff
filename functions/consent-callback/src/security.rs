//! The random values of a flow (state, nonce, PKCE verifier, browser-binding cookie), their
//! hashes and constant-time comparison, and the binding cookie itself.
//!
//! The binding cookie ties a callback to the browser that started the flow (login CSRF and
//! session fixation, RFC 9700 §4.7): only its SHA-256 is stored with the state.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connector_core::secret::{PkceVerifier, SecretString};
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Lifetime of a flow: state record and binding cookie.
pub const FLOW_TTL_SECONDS: i64 = 600;

/// 32 bytes (256 bits) from the operating system's RNG, base64url without padding (43 chars).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS RNG failing means the machine cannot do cryptography at all: nothing to recover.
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A PKCE verifier (43 characters of the unreserved set, RFC 7636 §4.1) and its S256 challenge.
pub fn pkce_pair() -> (PkceVerifier, String) {
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (PkceVerifier::new(verifier), challenge)
}

/// Hex SHA-256, for storing the binding cookie's value.
pub fn sha256_hex(value: &str) -> String {
    hex_lower(&Sha256::digest(value.as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Whether `presented` (the cookie from the browser) hashes to `stored_hash`, in constant time.
pub fn binding_matches(presented: &SecretString, stored_hash: &str) -> bool {
    let presented_hash = sha256_hex(presented.secret());
    presented_hash.len() == stored_hash.len()
        && bool::from(presented_hash.as_bytes().ct_eq(stored_hash.as_bytes()))
}

/// Constant-time equality of two strings (nonce checks).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The browser-binding cookie: `__Host-` prefixed and `Secure` on https.
#[derive(Clone, Copy, Debug)]
pub struct BindingCookie {
    pub secure: bool,
}

impl BindingCookie {
    pub fn name(self) -> &'static str {
        if self.secure {
            "__Host-o365c-flow"
        } else {
            "o365c-flow"
        }
    }

    /// `Set-Cookie` for a fresh flow.
    pub fn set(self, value: &str) -> String {
        self.header(value, FLOW_TTL_SECONDS)
    }

    /// `Set-Cookie` that removes it once the flow is over.
    pub fn clear(self) -> String {
        self.header("", 0)
    }

    fn header(self, value: &str, max_age: i64) -> String {
        cookie_header(self.name(), value, max_age, "Lax", self.secure)
    }

    /// The cookie's value from the request's `Cookie` headers (see [`read_cookie`]).
    pub fn read(self, headers: &http::HeaderMap) -> Option<SecretString> {
        read_cookie(headers, self.name())
    }
}

/// `Set-Cookie` for one of our cookies: host-only (`Path=/`, no `Domain`), `HttpOnly`,
/// `Secure` on https.
pub fn cookie_header(
    name: &str,
    value: &str,
    max_age: i64,
    same_site: &str,
    secure: bool,
) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite={same_site}{secure}")
}

/// The value of cookie `name` from the request's `Cookie` headers. Several values (a
/// planted duplicate) make it ambiguous: treated as absent; so is an empty or overlong one.
pub fn read_cookie(headers: &http::HeaderMap, name: &str) -> Option<SecretString> {
    let mut found = None;
    for header in headers.get_all(http::header::COOKIE) {
        let Ok(header) = header.to_str() else {
            continue;
        };
        for pair in header.split(';') {
            let Some((key, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if key.trim() == name {
                if found.is_some() {
                    return None;
                }
                found = Some(value.trim().to_owned());
            }
        }
    }
    found
        .filter(|value| !value.is_empty() && value.len() <= 128)
        .map(SecretString::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_256_bit_and_distinct() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("base64url").len(), 32);
    }

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let (verifier, challenge) = pkce_pair();
        assert_eq!(
            challenge,
            URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.secret().as_bytes()))
        );
    }

    #[test]
    fn binding_compares_hashes() {
        let value = random_token();
        let stored = sha256_hex(&value);
        assert_eq!(stored.len(), 64);
        assert!(binding_matches(&SecretString::new(value.clone()), &stored));
        assert!(!binding_matches(&SecretString::new("other"), &stored));
        assert!(!binding_matches(&SecretString::new(value), "short"));
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }

    #[test]
    fn cookie_attributes_and_parsing() {
        let secure = BindingCookie { secure: true };
        let set = secure.set("v1");
        assert_eq!(
            set,
            "__Host-o365c-flow=v1; Max-Age=600; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(secure.clear().contains("Max-Age=0"));
        let plain = BindingCookie { secure: false };
        assert_eq!(
            plain.set("v2"),
            "o365c-flow=v2; Max-Age=600; Path=/; HttpOnly; SameSite=Lax"
        );

        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "a=1; o365c-flow=abc; b=2".parse().expect("header"),
        );
        assert_eq!(plain.read(&headers).expect("present").secret(), "abc");
        assert!(secure.read(&headers).is_none());
        headers.append(
            http::header::COOKIE,
            "o365c-flow=planted".parse().expect("header"),
        );
        assert!(plain.read(&headers).is_none(), "duplicates are ambiguous");
    }
}

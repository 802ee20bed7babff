//! The Microsoft identity platform (login.microsoftonline.com): OIDC discovery, JWKS, `/authorize` with its HTML
//! sign-in and consent pages, `/adminconsent`, `/token`, and the access tokens Graph accepts. Owns the signing
//! keys, authorization codes, refresh tokens and sign-in sessions.

pub mod access;
pub mod jwt;
pub mod keys;
pub mod scopes;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::Router;

use crate::state::SharedSim;

pub use access::{AccessClaims, AccessTokenError};

pub struct IdentityState {
    keys: RwLock<keys::KeySet>,
}

impl IdentityState {
    pub fn new() -> anyhow::Result<IdentityState> {
        Ok(IdentityState {
            keys: RwLock::new(keys::KeySet::generate()?),
        })
    }

    pub fn keys(&self) -> RwLockReadGuard<'_, keys::KeySet> {
        self.keys.read().expect("keys lock")
    }

    pub fn keys_mut(&self) -> RwLockWriteGuard<'_, keys::KeySet> {
        self.keys.write().expect("keys lock")
    }
}

/// Every identity route, at the same paths as login.microsoftonline.com.
pub fn router() -> Router<SharedSim> {
    Router::new()
}

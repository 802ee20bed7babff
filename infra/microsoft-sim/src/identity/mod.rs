//! The Microsoft identity platform (login.microsoftonline.com): OIDC discovery, JWKS, `/authorize` with its HTML
//! sign-in and consent pages, `/adminconsent`, `/token`, and the access tokens Graph accepts. Owns the signing
//! keys, authorization codes, refresh tokens and sign-in sessions.

pub mod access;
pub mod assertion;
pub mod authorize;
pub mod discovery;
pub mod errors;
pub mod flows;
pub mod jwt;
pub mod keys;
pub mod pages;
pub mod scopes;
pub mod testing;
pub mod token;

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::Router;
use axum::routing::{get, post};

use crate::state::{SharedSim, Sim};

pub use access::{AccessClaims, AccessTokenError};

pub struct IdentityState {
    keys: RwLock<keys::KeySet>,
    flows: Mutex<flows::Flows>,
    /// Token responses leave `scope` out (`POST /_sim/token-scope {"mode":"omit"}`): the
    /// auth-code flow doc marks it optional ("if omitted, the token is for the scopes
    /// requested"), so the connector must cope with its absence.
    omit_token_scope: std::sync::atomic::AtomicBool,
}

impl IdentityState {
    pub fn new() -> anyhow::Result<IdentityState> {
        Ok(IdentityState {
            keys: RwLock::new(keys::KeySet::generate()?),
            flows: Mutex::new(flows::Flows::default()),
            omit_token_scope: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn keys(&self) -> RwLockReadGuard<'_, keys::KeySet> {
        self.keys.read().expect("keys lock")
    }

    pub fn keys_mut(&self) -> RwLockWriteGuard<'_, keys::KeySet> {
        self.keys.write().expect("keys lock")
    }

    pub fn flows(&self) -> MutexGuard<'_, flows::Flows> {
        self.flows.lock().expect("flows lock")
    }

    pub fn omit_token_scope(&self) -> bool {
        self.omit_token_scope
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_omit_token_scope(&self, omit: bool) {
        self.omit_token_scope
            .store(omit, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The tenant segment of an identity URL, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    Common,
    Organizations,
    /// A specific tenant (given by GUID or verified domain).
    Tenant {
        id: String,
        region: String,
    },
}

impl Authority {
    pub fn resolve(sim: &Sim, segment: &str) -> Result<Authority, errors::StsError> {
        if segment.eq_ignore_ascii_case("common") {
            return Ok(Authority::Common);
        }
        if segment.eq_ignore_ascii_case("organizations") {
            return Ok(Authority::Organizations);
        }
        if segment.eq_ignore_ascii_case("consumers") {
            return Err(errors::consumers_not_supported());
        }
        let dir = sim.directory();
        match dir.tenant(segment) {
            Some(t) => Ok(Authority::Tenant {
                id: t.id.clone(),
                region: t.region.clone(),
            }),
            None => Err(errors::tenant_not_found(segment)),
        }
    }

    /// Whether a user of `tenant_id` may sign in through this authority.
    pub fn admits(&self, tenant_id: &str) -> bool {
        match self {
            Authority::Common | Authority::Organizations => true,
            Authority::Tenant { id, .. } => id.eq_ignore_ascii_case(tenant_id),
        }
    }
}

/// Every identity route, at the same paths as login.microsoftonline.com.
pub fn router() -> Router<SharedSim> {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(discovery::keys))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize::authorize_get).post(authorize::authorize_post),
        )
        .route("/{tenant}/v2.0/adminconsent", get(authorize::admin_consent))
        .route("/{tenant}/login", post(authorize::sign_in))
        .route("/{tenant}/Consent/Set", post(authorize::consent_set))
        .route(
            "/{tenant}/consent/request",
            post(authorize::request_approval),
        )
        .route("/{tenant}/interrupt/back", post(authorize::back_to_app))
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .route("/error", get(authorize::error_info))
}

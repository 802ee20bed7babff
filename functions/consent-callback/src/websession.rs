//! Web sessions of the administrator's page (`/admin`) and the user's settings (`/me`): a
//! server-side record bound to (tenant, user, role), referenced by a random 256-bit id in
//! the `__Host-o365s` cookie, and the per-session CSRF token of every form.
//!
//! The record lives in the auth sessions table (AUTH_SESSIONS_TABLE, TTL on `expiresAt`)
//! under the key `web#{sha256(cookie value)}`: the cookie value itself is never stored, and
//! a flow's `state` (43 base64url characters) can never name such a key. `requestedTenant`
//! carries the tenant, so offboarding a tenant (connectorctl) deletes its sessions too.
//! Expiry is enforced on read (`expiresAt > now`); TTL only removes forgotten records.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use crate::security::{cookie_header, read_cookie};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use connector_core::domain::{TenantId, UserId};
use connector_core::ports::StoreError;
use connector_core::secret::SecretString;

/// Lifetime of a web session, cookie and record: 20 minutes, not renewed.
pub const WEB_SESSION_TTL_SECONDS: i64 = 1200;

/// Key prefix of web sessions in the auth sessions table.
pub const KEY_PREFIX: &str = "web#";

/// What a session may do: an administrator sees `/admin` (and their own `/me`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    fn parse(value: &str) -> Option<Role> {
        match value {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// One signed-in browser.
#[derive(Clone)]
pub struct WebSession {
    /// SHA-256 (hex) of the cookie's value.
    pub id_hash: String,
    /// From the validated id_token's `tid`: the only tenant this session ever sees.
    pub tenant_id: TenantId,
    /// From the validated id_token's `oid`.
    pub user_id: UserId,
    pub role: Role,
    /// The directory role that made this an administrator's session.
    pub admin_role: Option<String>,
    pub upn: String,
    /// The per-session CSRF token every form carries.
    pub csrf: String,
    /// Epoch seconds.
    pub expires_at: i64,
}

impl fmt::Debug for WebSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSession")
            .field("tenant_id", &self.tenant_id)
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait WebSessionStore: Send + Sync {
    async fn create(&self, session: &WebSession) -> Result<(), StoreError>;
    /// The session if it exists and has not expired at `now` (epoch seconds).
    async fn get(&self, id_hash: &str, now: i64) -> Result<Option<WebSession>, StoreError>;
    async fn delete(&self, id_hash: &str) -> Result<(), StoreError>;
}

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn backend(
    operation: &'static str,
    table: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Backend {
        operation,
        resource: table.to_owned(),
        source: Box::new(error),
    }
}

/// The DynamoDB adapter, in the auth sessions table.
pub struct DynamoWebSessionStore {
    client: Client,
    table: String,
}

impl DynamoWebSessionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn to_item(session: &WebSession) -> Item {
    let mut item = Item::from([
        (
            "state".to_owned(),
            s(format!("{KEY_PREFIX}{}", session.id_hash)),
        ),
        ("kind".to_owned(), s("web_session")),
        (
            "requestedTenant".to_owned(),
            s(session.tenant_id.to_string()),
        ),
        ("userId".to_owned(), s(session.user_id.to_string())),
        ("role".to_owned(), s(session.role.as_str())),
        ("upn".to_owned(), s(&session.upn)),
        ("csrf".to_owned(), s(&session.csrf)),
        (
            "expiresAt".to_owned(),
            AttributeValue::N(session.expires_at.to_string()),
        ),
    ]);
    if let Some(role) = &session.admin_role {
        item.insert("adminRole".into(), s(role));
    }
    item
}

fn from_item(item: &Item, id_hash: &str, table: &str) -> Result<WebSession, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        resource: table.to_owned(),
        key: "(a web session)".into(),
        source: format!("attribute {what} missing or invalid").into(),
    };
    let text = |name: &str| item.get(name).and_then(|value| value.as_s().ok()).cloned();
    let required = |name: &str| text(name).ok_or_else(|| corrupt(name));
    Ok(WebSession {
        id_hash: id_hash.to_owned(),
        tenant_id: TenantId::parse(&required("requestedTenant")?)
            .map_err(|_| corrupt("requestedTenant"))?,
        user_id: UserId::parse(&required("userId")?).map_err(|_| corrupt("userId"))?,
        role: Role::parse(&required("role")?).ok_or_else(|| corrupt("role"))?,
        admin_role: text("adminRole"),
        upn: text("upn").unwrap_or_default(),
        csrf: required("csrf")?,
        expires_at: item
            .get("expiresAt")
            .and_then(|value| value.as_n().ok())
            .and_then(|value| value.parse::<i64>().ok())
            .ok_or_else(|| corrupt("expiresAt"))?,
    })
}

#[async_trait]
impl WebSessionStore for DynamoWebSessionStore {
    #[tracing::instrument(skip_all)]
    async fn create(&self, session: &WebSession) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(session)))
            .condition_expression("attribute_not_exists(#s)")
            .expression_attribute_names("#s", "state")
            .send()
            .await
            .map_err(|error| backend("PutItem", &self.table, error))?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn get(&self, id_hash: &str, now: i64) -> Result<Option<WebSession>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("state", s(format!("{KEY_PREFIX}{id_hash}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        match output.item {
            Some(item) if !item.is_empty() => {
                let session = from_item(&item, id_hash, &self.table)?;
                Ok((session.expires_at > now).then_some(session))
            }
            _ => Ok(None),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn delete(&self, id_hash: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("state", s(format!("{KEY_PREFIX}{id_hash}")))
            .send()
            .await
            .map_err(|error| backend("DeleteItem", &self.table, error))?;
        Ok(())
    }
}

/// Same contract, in a map.
#[derive(Default)]
pub struct MemoryWebSessionStore {
    sessions: Mutex<HashMap<String, WebSession>>,
}

#[async_trait]
impl WebSessionStore for MemoryWebSessionStore {
    async fn create(&self, session: &WebSession) -> Result<(), StoreError> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session.id_hash.clone(), session.clone());
        Ok(())
    }

    async fn get(&self, id_hash: &str, now: i64) -> Result<Option<WebSession>, StoreError> {
        Ok(self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id_hash)
            .filter(|session| session.expires_at > now)
            .cloned())
    }

    async fn delete(&self, id_hash: &str) -> Result<(), StoreError> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id_hash);
        Ok(())
    }
}

/// The session cookie: `__Host-o365s` (HttpOnly; Secure; SameSite=Strict; Path=/) on https;
/// on plain-http loopback (tests, the demo) `o365s` without `Secure`, as the flow cookie.
#[derive(Clone, Copy, Debug)]
pub struct SessionCookie {
    pub secure: bool,
}

impl SessionCookie {
    pub fn name(self) -> &'static str {
        if self.secure { "__Host-o365s" } else { "o365s" }
    }

    pub fn set(self, value: &str) -> String {
        self.header(value, WEB_SESSION_TTL_SECONDS)
    }

    pub fn clear(self) -> String {
        self.header("", 0)
    }

    fn header(self, value: &str, max_age: i64) -> String {
        cookie_header(self.name(), value, max_age, "Strict", self.secure)
    }

    /// The value from the request's `Cookie` headers (see [`read_cookie`]).
    pub fn read(self, headers: &http::HeaderMap) -> Option<SecretString> {
        read_cookie(headers, self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> WebSession {
        WebSession {
            id_hash: "ab".repeat(32),
            tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("tid"),
            user_id: UserId::parse("00000000-0000-0000-0000-000000000001").expect("oid"),
            role: Role::Admin,
            admin_role: Some("Global Administrator".into()),
            upn: "admin@contoso.com".into(),
            csrf: "csrf-token".into(),
            expires_at: 2_000,
        }
    }

    #[test]
    fn cookie_attributes() {
        let secure = SessionCookie { secure: true };
        assert_eq!(
            secure.set("v"),
            "__Host-o365s=v; Max-Age=1200; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(secure.clear().contains("Max-Age=0"));
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "__Host-o365s=abc; x=1".parse().expect("header"),
        );
        assert_eq!(secure.read(&headers).expect("present").secret(), "abc");
        headers.append(
            http::header::COOKIE,
            "__Host-o365s=planted".parse().expect("header"),
        );
        assert!(secure.read(&headers).is_none());
    }

    #[test]
    fn item_round_trip_and_debug() {
        let item = to_item(&session());
        assert_eq!(item["state"], s(format!("web#{}", "ab".repeat(32))));
        let back = from_item(&item, &"ab".repeat(32), "t").expect("decodes");
        assert_eq!(back.role, Role::Admin);
        assert_eq!(back.csrf, "csrf-token");
        let debug = format!("{:?}", session());
        assert!(!debug.contains("csrf-token") && !debug.contains("admin@contoso.com"));
    }

    #[tokio::test]
    async fn memory_store_honours_expiry() {
        let store = MemoryWebSessionStore::default();
        store.create(&session()).await.expect("created");
        assert!(
            store
                .get(&"ab".repeat(32), 1_999)
                .await
                .expect("ok")
                .is_some()
        );
        assert!(
            store
                .get(&"ab".repeat(32), 2_000)
                .await
                .expect("ok")
                .is_none()
        );
        store.delete(&"ab".repeat(32)).await.expect("deleted");
        assert!(store.get(&"ab".repeat(32), 0).await.expect("ok").is_none());
    }
}

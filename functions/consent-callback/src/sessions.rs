//! Server-side records of the flows in progress, keyed by their `state`: the
//! [`AuthSessionStore`] port, its DynamoDB adapter (AUTH_SESSIONS_TABLE) and an in-memory twin.
//!
//! A record is consumed exactly once: a conditional delete that also requires it to be
//! unexpired, returning the old item. Of two callbacks racing with the same state, one gets
//! the record and the other nothing. DynamoDB's TTL removes forgotten records lazily; the
//! condition is what enforces the 10 minutes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use connector_core::domain::FeatureBundle;
use connector_core::ports::StoreError;
use connector_core::secret::PkceVerifier;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Which flow a state was issued for; a state is only valid at its own callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    AdminConsent,
    /// The administrator's OpenID sign-in that follows a reported admin consent: the proof of
    /// who consented, in which tenant, with which directory roles. Answered at `/auth/callback`.
    AdminVerify,
    SignIn,
    /// A sign-in to the administrator's page `/admin` (`openid profile` only).
    AdminPortal,
    /// A sign-in to the user's settings page `/me` (`openid profile` only).
    UserPortal,
}

impl Flow {
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::AdminConsent => "admin_consent",
            Flow::AdminVerify => "admin_verify",
            Flow::SignIn => "sign_in",
            Flow::AdminPortal => "admin_portal",
            Flow::UserPortal => "user_portal",
        }
    }

    fn parse(value: &str) -> Option<Flow> {
        match value {
            "admin_consent" => Some(Flow::AdminConsent),
            "admin_verify" => Some(Flow::AdminVerify),
            "sign_in" => Some(Flow::SignIn),
            "admin_portal" => Some(Flow::AdminPortal),
            "user_portal" => Some(Flow::UserPortal),
            _ => None,
        }
    }
}

/// One flow in progress.
#[derive(Clone)]
pub struct AuthSession {
    /// 256 random bits, base64url: the key.
    pub state: String,
    pub flow: Flow,
    /// The bundle consented to (admin consent) or that the sign-in asked for.
    pub bundle: FeatureBundle,
    /// The tenant the flow was started for, as given (GUID or domain), if any.
    pub requested_tenant: Option<String>,
    /// The path segment used at Microsoft (`organizations` or a tenant GUID); the token
    /// request goes to the same authority.
    pub authority: String,
    /// The scope string sent to Microsoft.
    pub scope: String,
    pub pkce_verifier: Option<PkceVerifier>,
    pub nonce: Option<String>,
    /// SHA-256 (hex) of the browser-binding cookie's value.
    pub binding_hash: String,
    pub created_at: OffsetDateTime,
    /// Epoch seconds.
    pub expires_at: i64,
}

impl fmt::Debug for AuthSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The state itself is a bearer value for the next 10 minutes: never printed.
        f.debug_struct("AuthSession")
            .field("flow", &self.flow)
            .field("bundle", &self.bundle)
            .field("requested_tenant", &self.requested_tenant)
            .field("authority", &self.authority)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait AuthSessionStore: Send + Sync {
    /// Stores a new record; a state that already exists is a conflict (never overwritten).
    async fn create(&self, session: &AuthSession) -> Result<(), StoreError>;
    /// Deletes and returns the record if it exists and has not expired at `now`; `None`
    /// for a missing, already consumed or expired state.
    async fn consume(
        &self,
        state: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AuthSession>, StoreError>;
}

// ---------------------------------------------------------------------------------------
// DynamoDB

pub struct DynamoAuthSessionStore {
    client: Client,
    table: String,
}

impl DynamoAuthSessionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
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

fn to_item(session: &AuthSession) -> Result<Item, StoreError> {
    let created = session
        .created_at
        .format(&Rfc3339)
        .map_err(|error| StoreError::Corrupt {
            resource: "auth session".into(),
            key: "createdAt".into(),
            source: Box::new(error),
        })?;
    let mut item = Item::from([
        ("state".to_owned(), s(&session.state)),
        ("flow".to_owned(), s(session.flow.as_str())),
        ("bundle".to_owned(), s(session.bundle.as_str())),
        ("authority".to_owned(), s(&session.authority)),
        ("scope".to_owned(), s(&session.scope)),
        ("bindingHash".to_owned(), s(&session.binding_hash)),
        ("createdAt".to_owned(), s(created)),
        (
            "expiresAt".to_owned(),
            AttributeValue::N(session.expires_at.to_string()),
        ),
    ]);
    if let Some(tenant) = &session.requested_tenant {
        item.insert("requestedTenant".into(), s(tenant));
    }
    if let Some(verifier) = &session.pkce_verifier {
        item.insert("pkceVerifier".into(), s(verifier.secret()));
    }
    if let Some(nonce) = &session.nonce {
        item.insert("nonce".into(), s(nonce));
    }
    Ok(item)
}

fn from_item(item: &Item, table: &str) -> Result<AuthSession, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        resource: table.to_owned(),
        key: "(a state)".into(),
        source: format!("attribute {what} missing or invalid").into(),
    };
    let text = |name: &str| item.get(name).and_then(|value| value.as_s().ok()).cloned();
    let required = |name: &str| text(name).ok_or_else(|| corrupt(name));
    let flow = Flow::parse(&required("flow")?).ok_or_else(|| corrupt("flow"))?;
    let bundle = FeatureBundle::parse(&required("bundle")?).map_err(|_| corrupt("bundle"))?;
    let created_at = OffsetDateTime::parse(&required("createdAt")?, &Rfc3339)
        .map_err(|_| corrupt("createdAt"))?;
    let expires_at = item
        .get("expiresAt")
        .and_then(|value| value.as_n().ok())
        .and_then(|value| value.parse::<i64>().ok())
        .ok_or_else(|| corrupt("expiresAt"))?;
    Ok(AuthSession {
        state: required("state")?,
        flow,
        bundle,
        requested_tenant: text("requestedTenant"),
        authority: required("authority")?,
        scope: required("scope")?,
        pkce_verifier: text("pkceVerifier").map(PkceVerifier::new),
        nonce: text("nonce"),
        binding_hash: required("bindingHash")?,
        created_at,
        expires_at,
    })
}

#[async_trait]
impl AuthSessionStore for DynamoAuthSessionStore {
    #[tracing::instrument(skip_all, fields(flow = session.flow.as_str()))]
    async fn create(&self, session: &AuthSession) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(session)?))
            .condition_expression("attribute_not_exists(#s)")
            .expression_attribute_names("#s", "state")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict {
                    what: "auth session".into(),
                })
            }
            Err(error) => Err(backend("PutItem", &self.table, error)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn consume(
        &self,
        state: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AuthSession>, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("state", s(state))
            .condition_expression("attribute_exists(#s) AND #e > :now")
            .expression_attribute_names("#s", "state")
            .expression_attribute_names("#e", "expiresAt")
            .expression_attribute_values(
                ":now",
                AttributeValue::N(now.unix_timestamp().to_string()),
            )
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes {
                Some(item) if !item.is_empty() => from_item(&item, &self.table).map(Some),
                _ => Ok(None),
            },
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(error) => Err(backend("DeleteItem", &self.table, error)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// In memory

/// Same contract as the DynamoDB adapter, in a map.
#[derive(Default)]
pub struct MemoryAuthSessionStore {
    sessions: Mutex<HashMap<String, AuthSession>>,
}

impl MemoryAuthSessionStore {
    /// How many records are stored (consumed ones are gone).
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl AuthSessionStore for MemoryAuthSessionStore {
    async fn create(&self, session: &AuthSession) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.contains_key(&session.state) {
            return Err(StoreError::Conflict {
                what: "auth session".into(),
            });
        }
        sessions.insert(session.state.clone(), session.clone());
        Ok(())
    }

    async fn consume(
        &self,
        state: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AuthSession>, StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get(state) {
            Some(session) if session.expires_at > now.unix_timestamp() => {
                Ok(sessions.remove(state))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    pub(crate) fn session(state: &str, now: OffsetDateTime) -> AuthSession {
        AuthSession {
            state: state.to_owned(),
            flow: Flow::SignIn,
            bundle: FeatureBundle::Calendar,
            requested_tenant: Some("contoso.com".into()),
            authority: "organizations".into(),
            scope: "openid profile".into(),
            pkce_verifier: Some(PkceVerifier::new("verifier-value-xyz")),
            nonce: Some("nonce-1".into()),
            binding_hash: "ab".repeat(32),
            created_at: now,
            expires_at: now.unix_timestamp() + 600,
        }
    }

    #[tokio::test]
    async fn memory_store_consumes_once_and_honours_expiry() {
        let store = MemoryAuthSessionStore::default();
        let now = datetime!(2026-03-01 10:00 UTC);
        store.create(&session("s1", now)).await.expect("created");
        assert!(matches!(
            store.create(&session("s1", now)).await,
            Err(StoreError::Conflict { .. })
        ));
        let got = store
            .consume("s1", now)
            .await
            .expect("ok")
            .expect("present");
        assert_eq!(got.nonce.as_deref(), Some("nonce-1"));
        assert!(store.consume("s1", now).await.expect("ok").is_none());
        assert!(store.consume("unknown", now).await.expect("ok").is_none());

        store.create(&session("s2", now)).await.expect("created");
        let later = now + time::Duration::seconds(600);
        assert!(store.consume("s2", later).await.expect("ok").is_none());
    }

    #[test]
    fn debug_hides_the_state_and_verifier() {
        let rendered = format!(
            "{:?}",
            session("secret-state-value", OffsetDateTime::UNIX_EPOCH)
        );
        assert!(!rendered.contains("secret-state-value"));
        assert!(!rendered.contains("verifier-value-xyz"));
    }

    #[test]
    fn item_round_trip() {
        let now = datetime!(2026-03-01 10:00 UTC);
        let original = session("s3", now);
        let item = to_item(&original).expect("encodes");
        assert_eq!(
            item["expiresAt"],
            AttributeValue::N((now.unix_timestamp() + 600).to_string())
        );
        let back = from_item(&item, "t").expect("decodes");
        assert_eq!(back.state, "s3");
        assert_eq!(back.flow, Flow::SignIn);
        assert_eq!(back.created_at, now);
        assert_eq!(
            back.pkce_verifier.expect("verifier").secret(),
            "verifier-value-xyz"
        );
        let mut broken = item.clone();
        broken.insert("flow".into(), s("other"));
        assert!(from_item(&broken, "t").is_err());
    }
}

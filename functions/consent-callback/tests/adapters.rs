//! This crate's own DynamoDB adapters against moto (template.yaml's tables): the
//! auth-session store's single, unexpired consumption and the domain aliases.

use connector_core::domain::{FeatureBundle, TenantId};
use connector_core::ports::StoreError;
use connector_core::secret::PkceVerifier;
use consent_callback::domains::{DynamoTenantDomains, TenantDomains as _};
use consent_callback::sessions::{
    AuthSession, AuthSessionStore as _, DynamoAuthSessionStore, Flow,
};
use time::OffsetDateTime;

fn session(state: &str, now: OffsetDateTime) -> AuthSession {
    AuthSession {
        state: state.to_owned(),
        flow: Flow::SignIn,
        bundle: FeatureBundle::Mail,
        requested_tenant: Some("contoso.com".into()),
        authority: "organizations".into(),
        scope: FeatureBundle::Mail.request_scope_string(),
        pkce_verifier: Some(PkceVerifier::new("v".repeat(43))),
        nonce: Some("nonce-value".into()),
        binding_hash: "ab".repeat(32),
        created_at: now.replace_nanosecond(0).expect("whole seconds"),
        expires_at: now.unix_timestamp() + 600,
    }
}

#[tokio::test]
async fn sessions_are_consumed_once_and_only_before_they_expire() {
    let stack = local_stack::test_stack().await.expect("local stack");
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let store = DynamoAuthSessionStore::new(client, stack.var("AUTH_SESSIONS_TABLE"));
    let now = OffsetDateTime::now_utc();

    store.create(&session("s-1", now)).await.expect("created");
    assert!(matches!(
        store.create(&session("s-1", now)).await,
        Err(StoreError::Conflict { .. })
    ));
    let got = store
        .consume("s-1", now)
        .await
        .expect("consumed")
        .expect("present");
    assert_eq!(got.flow, Flow::SignIn);
    assert_eq!(got.bundle, FeatureBundle::Mail);
    assert_eq!(got.requested_tenant.as_deref(), Some("contoso.com"));
    assert_eq!(
        got.pkce_verifier.expect("verifier").secret(),
        "v".repeat(43)
    );
    assert_eq!(got.nonce.as_deref(), Some("nonce-value"));
    assert_eq!(
        got.created_at,
        now.replace_nanosecond(0).expect("whole seconds")
    );
    assert!(
        store.consume("s-1", now).await.expect("ok").is_none(),
        "replay"
    );
    assert!(
        store
            .consume("never-issued", now)
            .await
            .expect("ok")
            .is_none()
    );

    store.create(&session("s-2", now)).await.expect("created");
    let expired = now + time::Duration::seconds(600);
    assert!(
        store.consume("s-2", expired).await.expect("ok").is_none(),
        "expired at exactly expiresAt"
    );
    assert!(
        store.consume("s-2", now).await.expect("ok").is_some(),
        "an expired attempt did not delete it"
    );
}

#[tokio::test]
async fn domain_aliases_point_at_the_last_tenant_seen() {
    let stack = local_stack::test_stack().await.expect("local stack");
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let domains = DynamoTenantDomains::new(client, stack.var("TENANTS_TABLE"));
    let (first, second) = (
        TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid"),
        TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid"),
    );
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        domains
            .tenant_for_domain("contoso.example")
            .await
            .expect("read"),
        None
    );
    domains
        .record_domain("contoso.example", &first, now)
        .await
        .expect("recorded");
    assert_eq!(
        domains
            .tenant_for_domain("contoso.example")
            .await
            .expect("read"),
        Some(first)
    );
    domains
        .record_domain("contoso.example", &second, now)
        .await
        .expect("recorded");
    assert_eq!(
        domains
            .tenant_for_domain("contoso.example")
            .await
            .expect("read"),
        Some(second)
    );
}

//! `connectorctl subscriptions`: a user's change-notification subscriptions as the
//! connector keeps them (SubscriptionsTable): per kind, Graph's subscription id and
//! resource, when it expires and whether it is healthy (the schedules then poll the user
//! only every SUBSCRIBED_POLL_MINUTES), when it was renewed, or why its creation failed.
//! Never the client state (only its digest is kept, and that is not shown either).

use anyhow::Result;
use aws_config::BehaviorVersion;
use connector_core::adapters::dynamodb::DynamoSubscriptionStore;
use connector_core::config::{table_name, vars};
use connector_core::domain::{SyncKind, TenantId, UserId, UserKey};
use connector_core::notifications::{SubscriptionStore, UserSubscription};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    kind: SyncKind,
    /// `healthy`, `renewal_due`, `expired`, `failed` or `none`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    expires_at: Option<OffsetDateTime>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    created_at: Option<OffsetDateTime>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    renewed_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<connector_core::notifications::CreateFailure>,
}

fn row(kind: SyncKind, found: Option<&UserSubscription>, now: OffsetDateTime) -> Row {
    let active = found.and_then(|f| f.active.as_ref());
    let failure = found.and_then(|f| f.failure.clone());
    let state = match (active, &failure) {
        (Some(a), _) if a.expires_at <= now => "expired",
        (Some(a), _) if a.due_for_renewal(now) => "renewal_due",
        (Some(_), _) => "healthy",
        (None, Some(_)) => "failed",
        (None, None) => "none",
    };
    Row {
        kind,
        state,
        subscription_id: active.map(|a| a.id.clone()),
        resource: active.map(|a| a.resource.clone()),
        expires_at: active.map(|a| a.expires_at),
        created_at: active.map(|a| a.created_at),
        renewed_at: active.and_then(|a| a.renewed_at),
        failure,
    }
}

fn at(time: Option<OffsetDateTime>) -> String {
    time.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// Prints both kinds of one user's subscriptions (needs SUBSCRIPTIONS_TABLE).
pub async fn show(tenant: &str, user: &str, json: bool) -> Result<()> {
    let key = UserKey::new(TenantId::parse(tenant)?, UserId::parse(user)?);
    let table = table_name(&env, vars::SUBSCRIPTIONS_TABLE)?;
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoSubscriptionStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let found = store.user_subscriptions(&key).await?;
    let now = OffsetDateTime::now_utc();
    let rows: Vec<Row> = SyncKind::ALL
        .iter()
        .map(|kind| row(*kind, found.iter().find(|f| f.kind == *kind), now))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<9} {:<12} {:<38} {:<13} {:<21} {:<21} DETAIL",
        "KIND", "STATE", "SUBSCRIPTION", "RESOURCE", "EXPIRES", "RENEWED"
    );
    for row in &rows {
        let detail = row
            .failure
            .as_ref()
            .map(|f| format!("{} (retry after {})", f.reason, at(Some(f.retry_at))))
            .unwrap_or_default();
        println!(
            "{:<9} {:<12} {:<38} {:<13} {:<21} {:<21} {detail}",
            row.kind.as_str(),
            row.state,
            row.subscription_id.as_deref().unwrap_or("-"),
            row.resource.as_deref().unwrap_or("-"),
            at(row.expires_at),
            at(row.renewed_at),
        );
    }
    Ok(())
}

//! Explicit Consent Mode from the operator's chair: `tenant-switches` shows or flips a
//! tenant's switches (what `/admin` and the platform API's `PATCH .../switches` change),
//! and `consent-meetings` shows a host's meetings under the mode: status, times, guests'
//! answers and the decision (addresses, never links: the links are credentials).

use anyhow::{Context, Result};
use aws_config::BehaviorVersion;
use connector_core::adapters::dynamodb::{DynamoConsentMeetingStore, DynamoTenantStore};
use connector_core::config::{table_name, vars};
use connector_core::domain::{TenantId, TenantSwitches, UserId, UserKey};
use connector_core::ports::{ConsentMeetingStore, TenantStore};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn on_off(value: bool) -> &'static str {
    if value { "on" } else { "off" }
}

/// The switches to change (`None`: leave as it is).
#[derive(Clone, Copy, Debug, Default)]
pub struct SwitchChanges {
    pub mail: Option<bool>,
    pub calendar: Option<bool>,
    pub teams: Option<bool>,
    pub explicit_consent: Option<bool>,
    pub change_notifications: Option<bool>,
}

/// Shows the tenant's switches, after applying the given ones.
pub async fn tenant_switches(tenant: &str, changes: SwitchChanges, json: bool) -> Result<()> {
    let tenant_id = TenantId::parse(tenant).context("--tenant must be the tenant id (a GUID)")?;
    let table = table_name(&|name: &str| std::env::var(name).ok(), vars::TENANTS_TABLE)?;
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoTenantStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let record = store
        .get_tenant(&tenant_id)
        .await?
        .with_context(|| format!("no tenant {tenant_id}"))?;
    let mut switches: TenantSwitches = record.switches;
    let apply = |value: &mut bool, change: Option<bool>| {
        if let Some(on) = change {
            *value = on;
        }
    };
    apply(&mut switches.mail_sync, changes.mail);
    apply(&mut switches.calendar_sync, changes.calendar);
    apply(&mut switches.teams_sharing, changes.teams);
    apply(&mut switches.explicit_consent, changes.explicit_consent);
    apply(
        &mut switches.change_notifications,
        changes.change_notifications,
    );
    if switches != record.switches {
        store
            .set_switches(&tenant_id, switches, OffsetDateTime::now_utc())
            .await?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&switches)?);
    } else {
        println!(
            "{tenant_id}: email sync {}, calendar sync {}, Teams sharing {}, explicit consent mode {}, change notifications {}",
            on_off(switches.mail_sync),
            on_off(switches.calendar_sync),
            on_off(switches.teams_sharing),
            on_off(switches.explicit_consent),
            on_off(switches.change_notifications)
        );
    }
    Ok(())
}

fn at(value: OffsetDateTime) -> String {
    value.format(&Rfc3339).unwrap_or_default()
}

/// A host's meetings under Explicit Consent Mode.
pub async fn consent_meetings(tenant: &str, user: &str, json_out: bool) -> Result<()> {
    let key = UserKey::new(
        TenantId::parse(tenant).context("--tenant must be the tenant id (a GUID)")?,
        UserId::parse(user).context("--user must be the user's object id (a GUID)")?,
    );
    let table = table_name(
        &|name: &str| std::env::var(name).ok(),
        vars::ACTIVITIES_TABLE,
    )?;
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoConsentMeetingStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let meetings = store.list_consent_meetings(&key).await?;
    if json_out {
        let rows: Vec<_> = meetings
            .iter()
            .map(|m| {
                json!({
                    "calendarEventId": m.event_id,
                    "status": m.status.as_str(),
                    "stopReason": m.stop_reason,
                    "start": at(m.start),
                    "requestedAt": m.requested_at.map(at),
                    "guests": m.guests.iter().map(|g| json!({
                        "address": g.address,
                        "answer": g.answer.map(|a| a.as_str()),
                    })).collect::<Vec<_>>(),
                    "decision": m.decision.as_ref().map(|d| json!({
                        "record": d.record, "declined": d.declined, "noAnswer": d.no_answer,
                        "decidedAt": at(d.decided_at),
                    })),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if meetings.is_empty() {
        println!("{key}: no meeting under explicit consent mode");
    }
    for m in &meetings {
        let answers: Vec<String> = m
            .guests
            .iter()
            .map(|g| {
                format!(
                    "{} {}",
                    g.address,
                    g.answer.map_or("no answer", |a| a.as_str())
                )
            })
            .collect();
        let decision = m.decision.as_ref().map_or("not yet".to_owned(), |d| {
            if d.record {
                "record".to_owned()
            } else {
                format!(
                    "do not record (declined {:?}, no answer {:?})",
                    d.declined, d.no_answer
                )
            }
        });
        println!(
            "{} starts {} [{}{}]: {}; decision: {decision}",
            m.event_id,
            at(m.start),
            m.status.as_str(),
            m.stop_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            answers.join(", ")
        );
    }
    Ok(())
}

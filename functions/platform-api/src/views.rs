//! The JSON the API answers with (docs/api/openapi.yaml names each shape). Views are built
//! here, not by serializing the records, so internal attributes (secret names, S3 keys,
//! parking) stay inside.

use connector_core::domain::meeting_consent::{ConsentMeeting, page_url};
use connector_core::domain::{
    Activity, ActivityContent, Connection, Feature, SyncKind, SyncMeta, Tenant,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn rfc3339(at: OffsetDateTime) -> Value {
    at.format(&Rfc3339).map_or(Value::Null, Value::String)
}

fn optional_time(at: Option<OffsetDateTime>) -> Value {
    at.map_or(Value::Null, rfc3339)
}

fn features(set: &std::collections::BTreeSet<Feature>) -> Vec<&'static str> {
    set.iter().map(|feature| feature.as_str()).collect()
}

pub(crate) fn tenant_view(tenant: &Tenant) -> Value {
    json!({
        "tenantId": tenant.tenant_id.as_str(),
        "displayName": tenant.display_name,
        "consent": {
            "mode": tenant.consent_mode.as_str(),
            "state": tenant.consent_state.as_str(),
            "grantedBundles": tenant.granted_bundles.iter().map(|b| b.as_str()).collect::<Vec<_>>(),
            "grantedFeatures": features(&tenant.granted_scopes.usable_features()),
            "consentedAt": optional_time(tenant.consented_at),
        },
        "switches": tenant.switches,
        "updatedAt": rfc3339(tenant.updated_at),
    })
}

pub(crate) fn connection_view(connection: &Connection) -> Value {
    json!({
        "tenantId": connection.tenant_id.as_str(),
        "userId": connection.user_id.as_str(),
        "upn": connection.upn,
        "mail": connection.mail,
        "displayName": connection.display_name,
        "status": connection.status.as_str(),
        "statusReason": connection.status_reason,
        "statusChangedAt": rfc3339(connection.status_changed_at),
        "features": features(&connection.granted_scopes.usable_features()),
        "switches": connection.switches,
        "createdAt": rfc3339(connection.created_at),
        "updatedAt": rfc3339(connection.updated_at),
    })
}

/// One kind's sync, as `connectorctl status` shows it: stage and since when, last success,
/// the last run's and total figures, the last error, when it is parked until, and whether a
/// worker holds the lease now.
pub(crate) fn sync_view(
    connection: &Connection,
    kind: SyncKind,
    meta: Option<&SyncMeta>,
    running: bool,
    now: OffsetDateTime,
) -> Value {
    let enabled = connection.wants_sync(kind, None, now)
        || connection
            .parked_until
            .get(kind)
            .is_some_and(|until| until > now);
    let Some(meta) = meta else {
        return json!({ "enabled": enabled, "running": running, "stage": Value::Null });
    };
    json!({
        "enabled": enabled,
        "running": running,
        "stage": meta.stage.as_str(),
        "stageSince": rfc3339(meta.stage_since),
        "lastSuccessAt": optional_time(meta.last_success_at),
        "nextAttemptAt": optional_time(meta.next_attempt_at),
        "lastError": meta.last_error.as_ref().map(|failure| json!({
            "code": failure.code,
            "message": failure.message,
            "at": rfc3339(failure.at),
        })),
        "lastRun": meta.last_run,
        "totals": meta.totals,
        "skipped": meta.skipped.len(),
        "updatedAt": rfc3339(meta.updated_at),
    })
}

/// An activity: `full` with its whole body, participants and matches (read back from the
/// body store); else the bounded item as listed (no body; `truncated` when participants,
/// matches or subject were cut to the item's limits).
pub(crate) fn activity_view(activity: &Activity, full: bool) -> Value {
    let mut content = serde_json::to_value(&activity.content).unwrap_or(Value::Null);
    let mut truncated = false;
    if let Value::Object(map) = &mut content {
        truncated = !full && map.remove("detail").is_some();
        map.remove("detail");
        if !full {
            map.remove("bodyText");
        }
    }
    let kind = match activity.content {
        ActivityContent::Mail(_) => "mail",
        ActivityContent::Meeting(_) => "meeting",
    };
    json!({
        "tenantId": activity.tenant_id.as_str(),
        "userId": activity.user_id.as_str(),
        "activityId": activity.activity_id.as_str(),
        "kind": kind,
        "datedAt": rfc3339(activity.dated_at()),
        "importedAt": rfc3339(activity.imported_at),
        "matches": activity.matches,
        "truncated": truncated,
        "content": content,
    })
}

/// A meeting under Explicit Consent Mode: its links (the invite's, and each guest's for the
/// platform's emails), the answers, and the decision once made.
pub(crate) fn consent_meeting_view(meeting: &ConsentMeeting, public_base_url: &str) -> Value {
    let guests: Vec<Value> = meeting
        .guests
        .iter()
        .map(|guest| {
            json!({
                "address": guest.address,
                "link": page_url(public_base_url, &guest.token),
                "answer": guest.answer.map(|answer| answer.as_str()),
                "answeredAt": optional_time(guest.answered_at),
            })
        })
        .collect();
    json!({
        "calendarEventId": meeting.event_id,
        "status": meeting.status.as_str(),
        "stopReason": meeting.stop_reason,
        "start": rfc3339(meeting.start),
        "end": rfc3339(meeting.end),
        "joinUrl": meeting.join_url,
        "inviteLink": page_url(public_base_url, &meeting.link_token),
        "guests": guests,
        "requestDueAt": rfc3339(meeting.request_due_at),
        "requestedAt": optional_time(meeting.requested_at),
        "decisionDueAt": rfc3339(meeting.decision_due_at()),
        "decision": meeting.decision.as_ref().map(|decision| json!({
            "record": decision.record,
            "declined": decision.declined,
            "noAnswer": decision.no_answer,
            "startsAt": rfc3339(decision.starts_at),
            "decidedAt": rfc3339(decision.decided_at),
        })),
        "updatedAt": rfc3339(meeting.updated_at),
    })
}

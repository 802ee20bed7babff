//! The platform API on moto (tables and bucket created from template.yaml by local-stack),
//! called with API Gateway HTTP API payload 2.0 events shaped like the real ones (as
//! `sam local generate-event apigateway http-api-proxy` prints them, plus
//! `requestContext.authorizer.iam`), through the same handler the Lambda runtime calls.
//! Every response body is validated against the schema of its operation and status in
//! docs/api/openapi.yaml.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoConnectionStore, DynamoConsentMeetingStore, DynamoSyncStateStore,
    DynamoTenantStore,
};
use connector_core::adapters::s3::{S3BodyStore, s3_client};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::adapters::teams_dynamodb::DynamoShareTargetStore;
use connector_core::config::{Tables, vars};
use connector_core::domain::*;
use connector_core::ports::*;
use connector_core::secret::{RefreshToken, TokenRecord};
use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent};
use platform_api::lambda::Handler;
use platform_api::{App, Ports, SystemClock};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

const PRINCIPAL: &str = "arn:aws:sts::123456789012:assumed-role/platform-backend/session-1";

struct Api {
    handler: Handler,
    tenants: Arc<DynamoTenantStore>,
    connections: Arc<DynamoConnectionStore>,
    sync: Arc<DynamoSyncStateStore>,
    activities: Arc<DynamoActivityStore>,
    bodies: Arc<S3BodyStore>,
    vault: Arc<SecretsManagerVault>,
    consent_meetings: Arc<DynamoConsentMeetingStore>,
    openapi: Value,
}

const PUBLIC_BASE_URL: &str = "https://connector.example";

struct Answer {
    status: u16,
    headers: Value,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn api() -> Result<Api> {
    let stack = local_stack::test_stack().await?;
    let lookup = |name: &str| stack.env.get(name).cloned();
    let tables = Tables::from_lookup(lookup)?;
    let bucket = stack.var(vars::MESSAGE_BODIES_BUCKET).to_owned();
    let dynamodb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let bodies = Arc::new(S3BodyStore::new(
        s3_client(aws_sdk_s3::config::Builder::from(&stack.sdk), true),
        bucket,
    ));
    let tenants = Arc::new(DynamoTenantStore::new(dynamodb.clone(), &tables.tenants));
    let connections = Arc::new(DynamoConnectionStore::new(
        dynamodb.clone(),
        &tables.connections,
    ));
    let sync = Arc::new(DynamoSyncStateStore::new(
        dynamodb.clone(),
        &tables.sync_state,
    ));
    let activities = Arc::new(
        DynamoActivityStore::new(dynamodb.clone(), &tables.activities).with_bodies(bodies.clone()),
    );
    let vault = Arc::new(SecretsManagerVault::new(
        aws_sdk_secretsmanager::Client::new(&stack.sdk),
    ));
    let consent_meetings = Arc::new(DynamoConsentMeetingStore::new(
        dynamodb.clone(),
        &tables.activities,
    ));
    let ports = Ports {
        subscriptions: None,
        consent_meetings: Some((consent_meetings.clone(), PUBLIC_BASE_URL.to_owned())),
        tenants: tenants.clone(),
        connections: connections.clone(),
        sync: sync.clone(),
        activities: activities.clone(),
        bodies: bodies.clone(),
        targets: Arc::new(DynamoShareTargetStore::new(dynamodb, &tables.sync_state)),
        vault: vault.clone(),
        clock: Arc::new(SystemClock),
        lease_wait: Duration::from_secs(2),
    };
    let yaml = std::fs::read_to_string(local_stack::repo_root().join("docs/api/openapi.yaml"))?;
    let openapi: Value = serde_yaml::from_str(&yaml).context("docs/api/openapi.yaml")?;
    Ok(Api {
        handler: Handler::new(Arc::new(App::new(ports))),
        tenants,
        connections,
        sync,
        activities,
        bodies,
        vault,
        consent_meetings,
        openapi,
    })
}

/// An HTTP API payload 2.0 event as API Gateway sends it for an `AWS_IAM` route.
fn event(method: &str, path: &str, query: &str, body: Option<&str>, signed: bool) -> Value {
    let mut context = json!({
        "accountId": "123456789012",
        "apiId": "p1a2b3c4d5",
        "domainName": "p1a2b3c4d5.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": "p1a2b3c4d5",
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": "10.0.0.10",
            "userAgent": "aws-sdk-rust/1.0"
        },
        "requestId": "Cx1yVhE2IAMEVbQ=",
        "routeKey": format!("{method} {path}"),
        "stage": "$default",
        "time": "06/Dec/2026:05:00:00 +0000",
        "timeEpoch": 1796446800000u64
    });
    if signed {
        context["authorizer"] = json!({
            "iam": {
                "accessKey": "ASIAEXAMPLE",
                "accountId": "123456789012",
                "callerId": "AROAEXAMPLE:session-1",
                "cognitoIdentity": null,
                "principalOrgId": null,
                "userArn": PRINCIPAL,
                "userId": "AROAEXAMPLE:session-1"
            }
        });
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            "accept": "application/json",
            "content-type": "application/json",
            "host": "p1a2b3c4d5.execute-api.us-east-1.amazonaws.com",
            "x-amz-date": "20261206T050000Z",
            "x-forwarded-proto": "https"
        },
        "requestContext": context,
        "isBase64Encoded": false
    });
    if !query.is_empty() {
        let mut params = serde_json::Map::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            params.insert(k.into_owned(), Value::String(v.into_owned()));
        }
        event["queryStringParameters"] = Value::Object(params);
    }
    if let Some(body) = body {
        event["body"] = Value::String(body.to_owned());
    }
    event
}

impl Api {
    async fn call_event(&self, event: Value) -> Result<Answer> {
        let payload: LambdaRequest = serde_json::from_value(event)?;
        let out = self
            .handler
            .serve(LambdaEvent::new(payload, Context::default()))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Answer {
            status: out["statusCode"].as_u64().unwrap_or(0) as u16,
            headers: out["headers"].clone(),
            // lambda_http sends a body whose content type it does not know as text
            // (application/x-ndjson) base64-encoded; API Gateway decodes it for the client.
            body: match (out["body"].as_str(), out["isBase64Encoded"].as_bool()) {
                (Some(body), Some(true)) => {
                    use base64::Engine as _;
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(body)?)?
                }
                (body, _) => body.unwrap_or_default().to_owned(),
            },
        })
    }

    /// Calls and validates the answer against the OpenAPI document: `template` is the
    /// document's path (`/api/v1/tenants/{tenantId}`).
    async fn call(
        &self,
        method: &str,
        template: &str,
        path: &str,
        query: &str,
        body: Option<&str>,
    ) -> Result<Answer> {
        let answer = self
            .call_event(event(method, path, query, body, true))
            .await?;
        self.validate(method, template, &answer)?;
        Ok(answer)
    }

    fn validate(&self, method: &str, template: &str, answer: &Answer) -> Result<()> {
        let operation = &self.openapi["paths"][template][method.to_ascii_lowercase()];
        ensure!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let status = answer.status.to_string();
        let mut response = &operation["responses"][&status];
        ensure!(
            response.is_object(),
            "{method} {template}: status {status} is not documented (body {})",
            answer.body
        );
        if let Some(reference) = response["$ref"].as_str() {
            response = self
                .openapi
                .pointer(reference.trim_start_matches('#'))
                .context("dangling response $ref")?;
        }
        let Some(content) = response["content"].as_object() else {
            ensure!(
                answer.body.is_empty(),
                "{method} {template} {status}: body not documented"
            );
            return Ok(());
        };
        let content_type = answer.headers["content-type"].as_str().unwrap_or_default();
        let media = content.get(content_type).with_context(|| {
            format!("{method} {template} {status}: {content_type} not documented")
        })?;
        // The operation's schema with the document's components beside it, so its
        // `#/components/...` references resolve (OpenAPI 3.1 schemas are JSON Schema 2020-12).
        let mut schema = media["schema"].clone();
        schema["components"] = self.openapi["components"].clone();
        schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        let validator = jsonschema::draft202012::new(&schema)
            .map_err(|e| anyhow!("schema of {method} {template} {status}: {e}"))?;
        let instances: Vec<Value> = if content_type == "application/x-ndjson" {
            answer
                .body
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?
        } else {
            vec![serde_json::from_str(&answer.body)?]
        };
        for instance in &instances {
            let errors: Vec<String> = validator
                .iter_errors(instance)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            ensure!(
                errors.is_empty(),
                "{method} {template} {status} does not match the OpenAPI document: {errors:?}\n{instance}"
            );
        }
        Ok(())
    }
}

fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn mail(owner: &UserKey, n: u32, received: OffsetDateTime, body: &str) -> Activity {
    Activity::new(
        owner.clone(),
        ActivityContent::Mail(MailActivity {
            immutable_id: format!("AAMkAD{n:06}="),
            internet_message_id: Some(format!("<m{n}@fabrikam.com>")),
            conversation_id: None,
            folder_id: "inbox".into(),
            subject: format!("Proposal {n}"),
            participants: vec![Participant {
                role: ParticipantRole::From,
                address: "buyer@fabrikam.com".into(),
                name: Some("Buyer".into()),
            }],
            sent_at: Some(received),
            received_at: Some(received),
            body_preview: "Hello".into(),
            body_text: body.into(),
            has_attachments: false,
            web_link: None,
            detail: None,
        }),
        vec![],
        datetime!(2026-12-01 00:00 UTC),
    )
}

fn meeting(owner: &UserKey, n: u32, end: OffsetDateTime) -> Activity {
    Activity::new(
        owner.clone(),
        ActivityContent::Meeting(MeetingActivity {
            immutable_id: format!("AAMkEV{n:06}="),
            ical_uid: None,
            series_master_id: None,
            occurrence_start: None,
            subject: format!("Demo {n}"),
            start: end - time::Duration::hours(1),
            end,
            is_all_day: false,
            organizer: None,
            attendees: vec![],
            online_meeting_provider: None,
            join_url: Some("https://teams.microsoft.com/l/meetup-join/x".into()),
            location: None,
            show_as: None,
            is_cancelled: false,
            web_link: None,
        }),
        vec![],
        datetime!(2026-12-01 00:00 UTC),
    )
}

/// A tenant with one active user (mail + calendar granted), a token, sync metas, and
/// `activities` stored.
async fn seed(api: &Api, activities: &[Activity]) -> Result<UserKey> {
    let now = OffsetDateTime::now_utc();
    let tenant_id = TenantId::parse(&guid())?;
    let mut tenant = Tenant::new(tenant_id.clone(), ConsentMode::Preauthorized, now);
    tenant.granted_bundles.insert(FeatureBundle::All);
    tenant.granted_scopes = FeatureBundle::All.scope_set();
    tenant.consent_state = ConsentState::Confirmed;
    api.tenants.put_tenant(&tenant).await?;
    let key = UserKey::new(tenant_id.clone(), UserId::parse(&guid())?);
    let connection = Connection::new_active(
        tenant_id,
        key.user_id.clone(),
        "adele@contoso.com",
        FeatureBundle::All.scope_set(),
        now,
    );
    api.connections.upsert_connection(&connection).await?;
    api.vault
        .put_token(
            &key,
            &TokenRecord {
                refresh_token: RefreshToken::new("refresh-token-value"),
                scopes: FeatureBundle::All.scope_set(),
                updated_at: now,
            },
        )
        .await?;
    for kind in SyncKind::ALL {
        let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), kind);
        let mut meta = SyncMeta::new(now);
        meta.enter(SyncStage::Idle, now);
        api.sync.put_meta(&sync_key, &meta).await?;
    }
    let owned: Vec<Activity> = activities
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a.tenant_id = key.tenant_id.clone();
            a.user_id = key.user_id.clone();
            a
        })
        .collect();
    api.activities.upsert_activities(&owned).await?;
    Ok(key)
}

fn base(key: &UserKey) -> String {
    format!(
        "/api/v1/tenants/{}/connections/{}",
        key.tenant_id, key.user_id
    )
}

const T_TENANT: &str = "/api/v1/tenants/{tenantId}";
const T_TENANT_SWITCHES: &str = "/api/v1/tenants/{tenantId}/switches";
const T_CONNECTIONS: &str = "/api/v1/tenants/{tenantId}/connections";
const T_CONNECTION: &str = "/api/v1/tenants/{tenantId}/connections/{userId}";
const T_USER_SWITCHES: &str = "/api/v1/tenants/{tenantId}/connections/{userId}/switches";
const T_DISCONNECT: &str = "/api/v1/tenants/{tenantId}/connections/{userId}/disconnect";
const T_SYNC: &str = "/api/v1/tenants/{tenantId}/connections/{userId}/sync";
const T_ACTIVITIES: &str = "/api/v1/tenants/{tenantId}/connections/{userId}/activities";
const T_ACTIVITY: &str = "/api/v1/tenants/{tenantId}/connections/{userId}/activities/{activityId}";
const T_EXPORT: &str = "/api/v1/tenants/{tenantId}/connections/{userId}/export";
const T_CONSENT_MEETINGS: &str = "/api/v1/tenants/{tenantId}/connections/{userId}/consent-meetings";
const T_CONSENT_MEETING: &str =
    "/api/v1/tenants/{tenantId}/connections/{userId}/consent-meetings/{calendarEventId}";

fn encoded(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_documented_and_writes_through_the_ports() -> Result<()> {
    let api = api().await?;
    let body = "Dear Adele, the proposal is attached. ".repeat(50);
    let key = seed(
        &api,
        &[
            mail(
                &UserKey::parse(
                    "00000000-0000-0000-0000-000000000000#00000000-0000-0000-0000-000000000000",
                )?,
                1,
                datetime!(2026-11-02 10:00 UTC),
                &body,
            ),
            meeting(
                &UserKey::parse(
                    "00000000-0000-0000-0000-000000000000#00000000-0000-0000-0000-000000000000",
                )?,
                2,
                datetime!(2026-11-03 10:00 UTC),
            ),
        ],
    )
    .await?;
    let tenant_path = format!("/api/v1/tenants/{}", key.tenant_id);

    let tenant = api.call("GET", T_TENANT, &tenant_path, "", None).await?;
    ensure!(tenant.status == 200, "{}", tenant.body);
    ensure!(tenant.json()["consent"]["state"] == "confirmed");

    // Tenant switches: what the store (and so the next fan-out) reads.
    let patched = api
        .call(
            "PATCH",
            T_TENANT_SWITCHES,
            &format!("{tenant_path}/switches"),
            "",
            Some(r#"{"mailSync": false, "explicitConsent": true, "changeNotifications": false}"#),
        )
        .await?;
    ensure!(patched.status == 200, "{}", patched.body);
    let stored = api
        .tenants
        .get_tenant(&key.tenant_id)
        .await?
        .context("tenant")?;
    ensure!(
        stored.switches
            == TenantSwitches {
                mail_sync: false,
                calendar_sync: true,
                teams_sharing: true,
                explicit_consent: true,
                change_notifications: false,
            },
        "{:?}",
        stored.switches
    );

    let list = api
        .call(
            "GET",
            T_CONNECTIONS,
            &format!("{tenant_path}/connections"),
            "",
            None,
        )
        .await?;
    ensure!(list.status == 200 && list.json()["items"].as_array().map(Vec::len) == Some(1));
    let one = api.call("GET", T_CONNECTION, &base(&key), "", None).await?;
    ensure!(
        one.status == 200 && one.json()["status"] == "active",
        "{}",
        one.body
    );

    // User switches: the fan-out's own read (the active index) sees them.
    let switched = api
        .call(
            "PATCH",
            T_USER_SWITCHES,
            &format!("{}/switches", base(&key)),
            "",
            Some(r#"{"calendarSync": false, "internalMeetings": true}"#),
        )
        .await?;
    ensure!(switched.status == 200, "{}", switched.body);
    let mut seen = None;
    let mut token = None;
    loop {
        let page = api.connections.query_active(100, token.as_ref()).await?;
        seen = seen.or(page.items.into_iter().find(|c| c.key() == key));
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    let seen = seen.context("the fan-out's index does not list the user")?;
    ensure!(!seen.wants_sync(SyncKind::Calendar, None, OffsetDateTime::now_utc()));
    ensure!(seen.wants_sync(SyncKind::Mail, None, OffsetDateTime::now_utc()));
    ensure!(seen.switches.internal_meetings);

    let sync = api
        .call("GET", T_SYNC, &format!("{}/sync", base(&key)), "", None)
        .await?;
    ensure!(sync.status == 200, "{}", sync.body);
    ensure!(sync.json()["mail"]["stage"] == "idle" && sync.json()["calendar"]["enabled"] == false);

    let listed = api
        .call(
            "GET",
            T_ACTIVITIES,
            &format!("{}/activities", base(&key)),
            "",
            None,
        )
        .await?;
    ensure!(listed.status == 200, "{}", listed.body);
    let items = listed.json()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(items.len() == 2, "{}", listed.body);
    ensure!(items.iter().all(|i| i["content"].get("bodyText").is_none()));

    let mail_id = ActivityId::mail("AAMkAD000001=");
    let activity_path = format!("{}/activities/{}", base(&key), encoded(mail_id.as_str()));
    let got = api
        .call("GET", T_ACTIVITY, &activity_path, "", None)
        .await?;
    ensure!(got.status == 200, "{}", got.body);
    ensure!(
        got.json()["content"]["bodyText"] == body.as_str(),
        "body not read back"
    );

    let export = api
        .call("GET", T_EXPORT, &format!("{}/export", base(&key)), "", None)
        .await?;
    ensure!(export.status == 200);
    ensure!(export.body.lines().count() == 2 && export.body.contains(&body));

    let deleted = api
        .call("DELETE", T_ACTIVITY, &activity_path, "", None)
        .await?;
    ensure!(
        deleted.status == 204 && deleted.body.is_empty(),
        "{}",
        deleted.body
    );
    ensure!(api.activities.get_activity(&key, &mail_id).await?.is_none());
    ensure!(
        api.bodies.count_prefix(&user_body_prefix(&key)).await? == 0,
        "the body object outlived its activity"
    );
    let again = api
        .call("GET", T_ACTIVITY, &activity_path, "", None)
        .await?;
    ensure!(again.status == 404 && again.code() == "activity_not_found");
    let again = api
        .call("DELETE", T_ACTIVITY, &activity_path, "", None)
        .await?;
    ensure!(again.status == 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_without_principal_bad_input_and_unknowns_write_nothing() -> Result<()> {
    let api = api().await?;
    let key = seed(&api, &[]).await?;
    let tenant_path = format!("/api/v1/tenants/{}", key.tenant_id);
    let before_tenant = api.tenants.get_tenant(&key.tenant_id).await?;
    let before_connection = api.connections.get_connection(&key).await?;

    // No IAM principal: 403 on every route, whatever the method, and nothing written.
    for (method, template, path, body) in [
        ("GET", T_TENANT, tenant_path.clone(), None),
        (
            "PATCH",
            T_TENANT_SWITCHES,
            format!("{tenant_path}/switches"),
            Some(r#"{"mailSync":false}"#),
        ),
        (
            "GET",
            T_CONNECTIONS,
            format!("{tenant_path}/connections"),
            None,
        ),
        ("GET", T_CONNECTION, base(&key), None),
        (
            "PATCH",
            T_USER_SWITCHES,
            format!("{}/switches", base(&key)),
            Some(r#"{"mailSync":false}"#),
        ),
        (
            "POST",
            T_DISCONNECT,
            format!("{}/disconnect", base(&key)),
            None,
        ),
        ("GET", T_SYNC, format!("{}/sync", base(&key)), None),
        (
            "GET",
            T_ACTIVITIES,
            format!("{}/activities", base(&key)),
            None,
        ),
        (
            "GET",
            T_ACTIVITY,
            format!("{}/activities/mail%23x", base(&key)),
            None,
        ),
        (
            "DELETE",
            T_ACTIVITY,
            format!("{}/activities/mail%23x", base(&key)),
            None,
        ),
        ("GET", T_EXPORT, format!("{}/export", base(&key)), None),
    ] {
        let answer = api
            .call_event(event(method, &path, "", body, false))
            .await?;
        ensure!(
            answer.status == 403 && answer.code() == "missing_iam_principal",
            "{method} {path}: {}",
            answer.body
        );
        api.validate(method, template, &answer)?;
    }
    // An unreadable query without a principal is still a 403, not a 400.
    let answer = api
        .call_event(event(
            "GET",
            &format!("{}/activities", base(&key)),
            "from=a b",
            None,
            false,
        ))
        .await?;
    ensure!(answer.status == 403, "{}", answer.body);
    ensure!(api.tenants.get_tenant(&key.tenant_id).await? == before_tenant);
    ensure!(api.connections.get_connection(&key).await? == before_connection);
    ensure!(api.vault.get_token(&key).await?.is_some());

    // Bad input: 4xx with a code, nothing written, the input never echoed.
    let evil = "<script>alert(1)</script>";
    for (method, template, path, query, body, status, code) in [
        (
            "GET",
            T_TENANT,
            "/api/v1/tenants/not-a-guid".to_owned(),
            "",
            None,
            400,
            "invalid_tenant_id",
        ),
        (
            "GET",
            T_TENANT,
            format!("/api/v1/tenants/{}", encoded(evil)),
            "",
            None,
            400,
            "invalid_tenant_id",
        ),
        (
            "PATCH",
            T_TENANT_SWITCHES,
            format!("{tenant_path}/switches"),
            "",
            Some("not json"),
            400,
            "invalid_json",
        ),
        (
            "PATCH",
            T_TENANT_SWITCHES,
            format!("{tenant_path}/switches"),
            "",
            Some("[true]"),
            400,
            "invalid_body",
        ),
        (
            "PATCH",
            T_TENANT_SWITCHES,
            format!("{tenant_path}/switches"),
            "",
            Some("{}"),
            422,
            "empty_patch",
        ),
        (
            "PATCH",
            T_TENANT_SWITCHES,
            format!("{tenant_path}/switches"),
            "",
            Some(r#"{"mailSync":"no"}"#),
            422,
            "invalid_switches",
        ),
        (
            "PATCH",
            T_TENANT_SWITCHES,
            format!("{tenant_path}/switches"),
            "",
            Some(r#"{"mailSync":false,"evil":1}"#),
            422,
            "invalid_switches",
        ),
        (
            "PATCH",
            T_USER_SWITCHES,
            format!("{}/switches", base(&key)),
            "",
            Some(r#"{"teamsSharing":false}"#),
            422,
            "invalid_switches",
        ),
        (
            "GET",
            T_ACTIVITIES,
            format!("{}/activities", base(&key)),
            "limit=0",
            None,
            400,
            "invalid_limit",
        ),
        (
            "GET",
            T_ACTIVITIES,
            format!("{}/activities", base(&key)),
            "limit=100000",
            None,
            400,
            "invalid_limit",
        ),
        (
            "GET",
            T_ACTIVITIES,
            format!("{}/activities", base(&key)),
            "from=yesterday",
            None,
            400,
            "invalid_from",
        ),
        (
            "GET",
            T_ACTIVITIES,
            format!("{}/activities", base(&key)),
            "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            None,
            400,
            "invalid_range",
        ),
        (
            "GET",
            T_ACTIVITIES,
            format!("{}/activities", base(&key)),
            "pageToken=%3Cscript%3E",
            None,
            400,
            "invalid_page_token",
        ),
        (
            "GET",
            T_ACTIVITIES,
            format!("{}/activities", base(&key)),
            "pageToken=bm90LWEtdG9rZW4",
            None,
            400,
            "invalid_page_token",
        ),
        (
            "GET",
            T_ACTIVITIES,
            format!("{}/activities", base(&key)),
            "from=a b",
            None,
            400,
            "invalid_query",
        ),
        (
            "GET",
            T_ACTIVITY,
            format!("{}/activities/{}", base(&key), encoded(evil)),
            "",
            None,
            400,
            "invalid_activity_id",
        ),
        (
            "GET",
            T_TENANT,
            format!("/api/v1/tenants/{}", guid()),
            "",
            None,
            404,
            "tenant_not_found",
        ),
        (
            "GET",
            T_CONNECTIONS,
            format!("/api/v1/tenants/{}/connections", guid()),
            "",
            None,
            404,
            "tenant_not_found",
        ),
        (
            "PATCH",
            T_TENANT_SWITCHES,
            format!("/api/v1/tenants/{}/switches", guid()),
            "",
            Some(r#"{"mailSync":false}"#),
            404,
            "tenant_not_found",
        ),
        (
            "GET",
            T_CONNECTION,
            format!("{tenant_path}/connections/{}", guid()),
            "",
            None,
            404,
            "connection_not_found",
        ),
        (
            "POST",
            T_DISCONNECT,
            format!("{tenant_path}/connections/{}/disconnect", guid()),
            "",
            None,
            404,
            "connection_not_found",
        ),
        (
            "GET",
            T_ACTIVITIES,
            format!("{tenant_path}/connections/{}/activities", guid()),
            "",
            None,
            404,
            "connection_not_found",
        ),
        (
            "GET",
            T_ACTIVITY,
            format!("{}/activities/mail%23missing", base(&key)),
            "",
            None,
            404,
            "activity_not_found",
        ),
    ] {
        let answer = if query.contains(' ') {
            let answer = api
                .call_event(event(method, &path, query, body, true))
                .await?;
            api.validate(method, template, &answer)?;
            answer
        } else {
            api.call(method, template, &path, query, body).await?
        };
        ensure!(
            answer.status == status && answer.code() == code,
            "{method} {path}?{query}: {} {}",
            answer.status,
            answer.body
        );
        ensure!(
            !answer.body.contains("<script"),
            "input echoed: {}",
            answer.body
        );
    }
    // A token issued for another user is refused, not run against this user's partition.
    let other = seed(
        &api,
        &(0..3)
            .map(|n| meeting(&key, n, datetime!(2026-11-01 10:00 UTC)))
            .collect::<Vec<_>>(),
    )
    .await?;
    let page = api
        .call(
            "GET",
            T_ACTIVITIES,
            &format!("{}/activities", base(&other)),
            "limit=1",
            None,
        )
        .await?;
    let token = page.json()["nextPageToken"]
        .as_str()
        .context("a next page")?
        .to_owned();
    let stolen = api
        .call(
            "GET",
            T_ACTIVITIES,
            &format!("{}/activities", base(&key)),
            &format!("pageToken={token}"),
            None,
        )
        .await?;
    ensure!(
        stolen.status == 400 && stolen.code() == "invalid_page_token",
        "{}",
        stolen.body
    );

    // Unknown route and method.
    let answer = api
        .call_event(event("GET", "/api/v1/nothing", "", None, true))
        .await?;
    ensure!(answer.status == 404 && answer.code() == "not_found");
    let answer = api
        .call_event(event("DELETE", &tenant_path, "", None, true))
        .await?;
    ensure!(
        answer.status == 405 && answer.headers["allow"] == "GET",
        "{:?}",
        answer.headers
    );

    ensure!(
        api.tenants.get_tenant(&key.tenant_id).await? == before_tenant,
        "a refused request wrote the tenant"
    );
    ensure!(
        api.connections.get_connection(&key).await? == before_connection,
        "a refused request wrote the connection"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_meetings_are_read_with_their_links_and_answers() -> Result<()> {
    use connector_core::domain::meeting_consent::{Answer, ConsentMeeting, page_url};
    use connector_core::ports::ConsentMeetingStore as _;
    let api = api().await?;
    let key = seed(&api, &[]).await?;
    let base = format!(
        "/api/v1/tenants/{}/connections/{}",
        key.tenant_id, key.user_id
    );
    let empty = api
        .call(
            "GET",
            T_CONSENT_MEETINGS,
            &format!("{base}/consent-meetings"),
            "",
            None,
        )
        .await?;
    ensure!(
        empty.status == 200 && empty.json()["items"] == json!([]),
        "{}",
        empty.body
    );

    let now = OffsetDateTime::now_utc();
    let start = now + time::Duration::days(2);
    let event_id = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg1B==";
    let mut meeting = ConsentMeeting::new(
        &key,
        event_id,
        start,
        start + time::Duration::minutes(30),
        [
            "ann@fabrikam.example".to_owned(),
            "ben@fabrikam.example".to_owned(),
        ],
        now,
    );
    meeting.join_url = Some("https://teams.microsoft.com/l/meetup-join/x".into());
    meeting.activate(now);
    meeting.answer(0, Answer::DoNotRecord, now);
    let saved = api
        .consent_meetings
        .save_consent_meeting(&meeting, None)
        .await?
        .context("saved")?;

    let list = api
        .call(
            "GET",
            T_CONSENT_MEETINGS,
            &format!("{base}/consent-meetings"),
            "",
            None,
        )
        .await?;
    ensure!(list.status == 200, "{}", list.body);
    let item = &list.json()["items"][0];
    ensure!(item["calendarEventId"] == event_id, "{item}");
    ensure!(item["status"] == "active");
    ensure!(item["inviteLink"] == page_url(PUBLIC_BASE_URL, &saved.link_token));
    ensure!(item["guests"][0]["address"] == "ann@fabrikam.example");
    ensure!(item["guests"][0]["answer"] == "do_not_record");
    ensure!(item["guests"][0]["link"] == page_url(PUBLIC_BASE_URL, &saved.guests[0].token));
    ensure!(item["guests"][1]["answer"] == Value::Null);
    ensure!(item["decision"] == Value::Null);

    let encoded = event_id.replace('=', "%3D");
    let one = api
        .call(
            "GET",
            T_CONSENT_MEETING,
            &format!("{base}/consent-meetings/{encoded}"),
            "",
            None,
        )
        .await?;
    ensure!(one.status == 200 && one.json() == *item, "{}", one.body);
    let missing = api
        .call(
            "GET",
            T_CONSENT_MEETING,
            &format!("{base}/consent-meetings/unknown"),
            "",
            None,
        )
        .await?;
    ensure!(missing.status == 404 && missing.code() == "consent_meeting_not_found");
    // Another user's meetings are not this user's.
    let other = seed(&api, &[]).await?;
    let theirs = api
        .call(
            "GET",
            T_CONSENT_MEETINGS,
            &format!(
                "/api/v1/tenants/{}/connections/{}/consent-meetings",
                other.tenant_id, other.user_id
            ),
            "",
            None,
        )
        .await?;
    ensure!(theirs.json()["items"] == json!([]), "{}", theirs.body);
    // The activities listing does not show them.
    let activities = api
        .call("GET", T_ACTIVITIES, &format!("{base}/activities"), "", None)
        .await?;
    ensure!(
        activities.json()["items"] == json!([]),
        "{}",
        activities.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_returns_every_activity_in_range_exactly_once() -> Result<()> {
    let api = api().await?;
    let placeholder = UserKey::parse(
        "00000000-0000-0000-0000-000000000000#00000000-0000-0000-0000-000000000000",
    )?;
    let start = datetime!(2026-10-01 00:00 UTC);
    let activities: Vec<Activity> = (0..60)
        .map(|n| {
            let at = start + time::Duration::days(i64::from(n));
            if n % 3 == 0 {
                meeting(&placeholder, n, at)
            } else {
                mail(&placeholder, n, at, "short body")
            }
        })
        .collect();
    let key = seed(&api, &activities).await?;
    let (from, to) = (
        datetime!(2026-10-11 00:00 UTC),
        datetime!(2026-11-15 00:00 UTC),
    );
    let expected: BTreeSet<String> = activities
        .iter()
        .filter(|a| a.dated_at() >= from && a.dated_at() < to)
        .map(|a| a.activity_id.to_string())
        .collect();
    ensure!(expected.len() == 35);
    let range = "from=2026-10-11T00:00:00Z&to=2026-11-15T00:00:00Z";
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &token {
            Some(token) => format!("{range}&limit=7&pageToken={token}"),
            None => format!("{range}&limit=7"),
        };
        let page = api
            .call(
                "GET",
                T_ACTIVITIES,
                &format!("{}/activities", base(&key)),
                &query,
                None,
            )
            .await?;
        ensure!(page.status == 200, "{}", page.body);
        let body = page.json();
        let items = body["items"].as_array().cloned().unwrap_or_default();
        ensure!(items.len() <= 7);
        for item in items {
            *seen
                .entry(item["activityId"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        pages += 1;
        ensure!(pages < 100, "paging does not end");
        match body["nextPageToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    ensure!(seen.values().all(|&n| n == 1), "duplicates: {seen:?}");
    ensure!(
        seen.keys().cloned().collect::<BTreeSet<_>>() == expected,
        "missing or extra: {seen:?}"
    );

    // The export walks the same range, one line per activity with its body.
    let export = api
        .call(
            "GET",
            T_EXPORT,
            &format!("{}/export", base(&key)),
            range,
            None,
        )
        .await?;
    let ids: Vec<String> = export
        .body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .map(|v| v["activityId"].as_str().unwrap_or_default().to_owned())
        })
        .collect::<Result<_, _>>()?;
    ensure!(ids.len() == 35 && ids.iter().cloned().collect::<BTreeSet<_>>() == expected);
    ensure!(export.headers.get("x-next-page-token").is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_deletes_what_the_cli_deletes() -> Result<()> {
    let api = api().await?;
    let placeholder = UserKey::parse(
        "00000000-0000-0000-0000-000000000000#00000000-0000-0000-0000-000000000000",
    )?;
    let key = seed(
        &api,
        &[
            mail(&placeholder, 1, datetime!(2026-11-02 10:00 UTC), "body one"),
            mail(&placeholder, 2, datetime!(2026-11-03 10:00 UTC), "body two"),
            meeting(&placeholder, 3, datetime!(2026-11-04 10:00 UTC)),
        ],
    )
    .await?;
    ensure!(api.bodies.count_prefix(&user_body_prefix(&key)).await? == 2);
    let answer = api
        .call(
            "POST",
            T_DISCONNECT,
            &format!("{}/disconnect", base(&key)),
            "",
            None,
        )
        .await?;
    ensure!(answer.status == 200, "{}", answer.body);
    ensure!(
        answer.json()["activitiesDeleted"] == 3 && answer.json()["connection"] == "disconnected"
    );
    ensure!(api.vault.get_token(&key).await?.is_none(), "secret kept");
    ensure!(
        api.bodies.count_prefix(&user_body_prefix(&key)).await? == 0,
        "bodies kept"
    );
    ensure!(
        api.activities
            .list_activities(&key, 10, None)
            .await?
            .items
            .is_empty()
    );
    for kind in SyncKind::ALL {
        let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), kind);
        ensure!(
            api.sync.get_meta(&sync_key).await?.is_none(),
            "sync state kept"
        );
    }
    let connection = api
        .connections
        .get_connection(&key)
        .await?
        .context("record kept")?;
    ensure!(connection.status == ConnectionStatus::Disconnected && connection.upn.is_empty());

    // Idempotent; switches of a disconnected user are refused.
    let again = api
        .call(
            "POST",
            T_DISCONNECT,
            &format!("{}/disconnect", base(&key)),
            "",
            None,
        )
        .await?;
    ensure!(again.status == 200 && again.json()["previousStatus"] == "disconnected");
    let refused = api
        .call(
            "PATCH",
            T_USER_SWITCHES,
            &format!("{}/switches", base(&key)),
            "",
            Some(r#"{"mailSync":true}"#),
        )
        .await?;
    ensure!(refused.status == 409 && refused.code() == "connection_disconnected");
    let sync = api
        .call("GET", T_SYNC, &format!("{}/sync", base(&key)), "", None)
        .await?;
    ensure!(
        sync.status == 200 && sync.json()["mail"]["stage"].is_null(),
        "{}",
        sync.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_a_running_sync_stopped_is_pending_until_called_again() -> Result<()> {
    let api = api().await?;
    let placeholder = UserKey::parse(
        "00000000-0000-0000-0000-000000000000#00000000-0000-0000-0000-000000000000",
    )?;
    let key = seed(
        &api,
        &[
            mail(&placeholder, 1, datetime!(2026-11-02 10:00 UTC), "body one"),
            mail(&placeholder, 2, datetime!(2026-11-03 10:00 UTC), "body two"),
        ],
    )
    .await?;
    ensure!(api.bodies.count_prefix(&user_body_prefix(&key)).await? == 2);
    // A mail worker is in the middle of a run.
    let mail_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), SyncKind::Mail);
    ensure!(
        api.sync
            .acquire_lease(&mail_key, "worker-1", Duration::from_secs(300))
            .await?
    );
    let path = format!("{}/disconnect", base(&key));
    let disconnect = || api.call("POST", T_DISCONNECT, &path, "", None);
    let refused = disconnect().await?;
    ensure!(
        refused.status == 409 && refused.code() == "sync_running",
        "{}",
        refused.body
    );
    let connection = api.call("GET", T_CONNECTION, &base(&key), "", None).await?;
    ensure!(connection.status == 200, "{}", connection.body);
    ensure!(
        connection.json()["status"] == "disconnected"
            && connection.json()["statusReason"] == "disconnect_pending",
        "{}",
        connection.body
    );
    ensure!(api.vault.get_token(&key).await?.is_none(), "secret kept");
    ensure!(
        api.activities
            .list_activities(&key, 10, None)
            .await?
            .items
            .len()
            == 2,
        "nothing is deleted under the running sync"
    );

    // The run ends; calling again finishes it.
    ensure!(api.sync.release_lease(&mail_key, "worker-1").await?);
    let answer = disconnect().await?;
    ensure!(answer.status == 200, "{}", answer.body);
    ensure!(
        answer.json()["activitiesDeleted"] == 2
            && answer.json()["connection"] == "disconnected"
            && answer.json()["previousStatus"] == "disconnected",
        "{}",
        answer.body
    );
    ensure!(
        api.bodies.count_prefix(&user_body_prefix(&key)).await? == 0,
        "bodies kept"
    );
    ensure!(
        api.activities
            .list_activities(&key, 10, None)
            .await?
            .items
            .is_empty()
    );
    for kind in SyncKind::ALL {
        let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), kind);
        ensure!(
            api.sync.get_meta(&sync_key).await?.is_none(),
            "sync state kept"
        );
        ensure!(api.sync.get_lease(&sync_key).await?.is_none(), "lease kept");
    }
    let connection = api.call("GET", T_CONNECTION, &base(&key), "", None).await?;
    ensure!(
        connection.json()["statusReason"] == "operator_disconnected",
        "{}",
        connection.body
    );
    Ok(())
}

//! Change notifications end to end, on the real path: microsoft-sim's subscriptions (its
//! validation handshake and notifications reach this function's webhook route over HTTP),
//! moto with the template's resources, and the template's SQS event sources driving
//! mail-sync's and the subscriptions function's real handlers (local_stack's event source
//! mapping, as Lambda polls). No fan-out runs in these tests: every sync after the user's
//! first import is woken by a notification.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use connector_core::adapters::dynamodb::DynamoCrmIndex;
use connector_core::clock::OffsetClock;
use connector_core::domain::{CrmSnapshot, SyncKind, UserKey};
use connector_core::notifications::Subscription;
use connector_core::notifications::manager::Manager;
use connector_core::ports::{ActivityStore as _, CrmIndex as _};
use connector_core::sync::{FanOutOptions, LogSummarySink};
use local_stack::esm::{EsmHandle, EsmOptions, event_source_mappings, spawn_mapping};
use local_stack::invoke::InProcessInvoker;
use serde_json::{Value, json};
use support::guid;
use support::live::{Landing, Live, disconnect_from_me, sign_in, tenant_json};

/// Adele of a tenant whose CRM knows Dana, signed in, her first import done and her mail
/// subscription created (by the run's request, through SubscriptionQueue).
struct Subscribed {
    live: Live,
    owner: UserKey,
    upn: String,
    /// Reasons of the mail sync jobs the worker ran, in order.
    runs: Arc<Mutex<Vec<String>>>,
    mappings: Vec<EsmHandle>,
}

impl Subscribed {
    async fn start() -> Self {
        let (tid, user) = (guid(), guid());
        let dns = format!(
            "contoso{}.example",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let upn = format!("adele@{dns}");
        let live = Live::start(
            false,
            vec![tenant_json(
                &tid,
                &dns,
                json!({"userConsent": "allowed"}),
                &[(&user, &upn, &[])],
            )],
        )
        .await;
        let owner = UserKey::parse(&format!("{tid}#{user}")).expect("key");
        let opportunity = (time::OffsetDateTime::now_utc() - time::Duration::days(30)).date();
        let crm = json!({
            "tenantId": tid,
            "accounts": [{"id": "001N", "name": "Northwind", "domains": []}],
            "contacts": [{"id": "003D", "email": "dana@northwind.example", "accountId": "001N"}],
            "opportunities": [{"id": "0061", "accountId": "001N", "isClosed": false,
                               "createdDate": format!("{opportunity}")}],
        });
        DynamoCrmIndex::new(
            aws_sdk_dynamodb::Client::new(&live.stack.sdk),
            live.core.tables.crm.clone(),
        )
        .replace_snapshot(
            &CrmSnapshot::from_json_slice(crm.to_string().as_bytes()).expect("CRM file"),
        )
        .await
        .expect("CRM");

        // The template's SQS event sources of mail-sync and the subscriptions function.
        let mail = Arc::new(
            mail_sync::build_app(
                &live.core,
                mail_sync::MailSettings::default(),
                live.stack.var("MESSAGE_BODIES_BUCKET"),
                &live.stack.sdk,
                Arc::new(LogSummarySink),
                FanOutOptions::default(),
            )
            .expect("mail-sync"),
        );
        let runs: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = runs.clone();
        let manager = live.manager.clone();
        let invoker = InProcessInvoker::new()
            .with("mail-sync", move |event: Value| {
                let mail = mail.clone();
                let seen = seen.clone();
                async move {
                    for record in event["Records"].as_array().into_iter().flatten() {
                        let job: Value =
                            serde_json::from_str(record["body"].as_str().unwrap_or("{}"))
                                .unwrap_or_default();
                        let reason = job["reason"].as_str().unwrap_or_default().to_owned();
                        seen.lock().expect("runs").push(reason);
                    }
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
                    mail_sync::handle(&mail, event, deadline)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .with("subscriptions", move |event: Value| {
                let manager = manager.clone();
                async move {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                    subscriptions::handle(&manager, event, deadline)
                        .await
                        .map_err(|e| e.to_string())
                }
            });
        let invoker = Arc::new(invoker);
        let template =
            local_stack::template::Template::load(&local_stack::template_path()).expect("template");
        let sqs = aws_sdk_sqs::Client::new(&live.stack.sdk);
        let mappings = event_source_mappings(&template, &live.stack.provisioned)
            .expect("mappings")
            .into_iter()
            .filter(|m| m.binary == "mail-sync" || m.binary == "subscriptions")
            .map(|m| {
                spawn_mapping(
                    m,
                    sqs.clone(),
                    invoker.clone(),
                    EsmOptions {
                        wait_time_seconds: 1,
                    },
                )
            })
            .collect();

        // Sign-in queues the first import; its completed run asks for the subscription.
        let browser = live.browser();
        let done = sign_in(
            &live,
            &browser,
            &format!("/auth/login?login_hint={upn}"),
            &upn,
        )
        .await;
        assert!(matches!(done, Landing::App(_)), "{done:?}");
        let this = Self {
            live,
            owner,
            upn,
            runs,
            mappings,
        };
        this.wait_for_subscription(None).await;
        this
    }

    /// The user's mail subscription, once it exists (and is not `other`).
    async fn wait_for_subscription(&self, other: Option<&str>) -> Subscription {
        for _ in 0..300 {
            let found = self
                .live
                .manager
                .store
                .user_subscriptions(&self.owner)
                .await
                .expect("store");
            if let Some(active) = found
                .into_iter()
                .filter(|s| s.kind == SyncKind::Mail)
                .find_map(|s| s.active)
                && Some(active.id.as_str()) != other
            {
                return active;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no mail subscription was created; runs: {:?}", self.runs());
    }

    fn runs(&self) -> Vec<String> {
        self.runs.lock().expect("runs").clone()
    }

    /// The sim's live subscriptions of our app.
    async fn sim_subscriptions(&self) -> Vec<Value> {
        self.live
            .control_get("/_sim/subscriptions")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Dana writes to Adele: the message lands in her Inbox (and the sim notifies).
    async fn arrive(&self, subject: &str) {
        self.live
            .control(
                &format!("/_sim/users/{}/messages", self.upn),
                json!({"folder": "inbox", "message": {
                    "subject": subject,
                    "from": {"emailAddress": {"address": "dana@northwind.example", "name": "Dana"}},
                    "toRecipients": [{"emailAddress": {"address": self.upn}}],
                }}),
            )
            .await;
    }

    async fn stored(&self) -> usize {
        self.live
            .activities
            .list_activities(&self.owner, 1000, None)
            .await
            .expect("activities")
            .items
            .len()
    }

    /// Waits until `n` activities are stored (a failure timeout, not a speed check).
    async fn wait_stored(&self, n: usize) {
        for _ in 0..600 {
            if self.stored().await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} of {n} activities stored; runs: {:?}",
            self.stored().await,
            self.runs()
        );
    }

    /// Waits until `n` runs with `reason` happened.
    async fn wait_runs(&self, reason: &str, n: usize) {
        for _ in 0..300 {
            if self.runs().iter().filter(|r| *r == reason).count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fewer than {n} {reason} runs: {:?}", self.runs());
    }

    async fn stop(self) {
        for mapping in self.mappings {
            mapping.stop().await.expect("stop");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_arriving_in_a_subscribed_mailbox_is_stored_without_any_scheduled_run() {
    let world = Subscribed::start().await;
    let subscription = world.wait_for_subscription(None).await;
    assert_eq!(subscription.resource, "me/messages");
    let at_sim = world.sim_subscriptions().await;
    assert_eq!(at_sim.len(), 1, "{at_sim:?}");
    assert_eq!(at_sim[0]["id"], subscription.id.as_str());
    assert_eq!(at_sim[0]["changeType"], "created,deleted");
    assert_eq!(
        at_sim[0]["notificationUrl"],
        world.live.url("/notifications/graph")
    );
    // Only a digest of the client state is kept.
    assert_ne!(
        at_sim[0]["clientState"].as_str(),
        Some(subscription.client_state.to_hex().as_str())
    );
    assert!(
        subscription
            .client_state
            .matches(at_sim[0]["clientState"].as_str().expect("state"))
    );
    assert_eq!(world.stored().await, 0);

    world.arrive("Renewal terms").await;
    world.wait_stored(1).await;
    let runs = world.runs();
    assert_eq!(runs, ["initial", "notified"], "no scheduled run");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_100_changes_causes_at_most_two_runs() {
    let world = Subscribed::start().await;
    for n in 0..100 {
        world.arrive(&format!("Quote {n}")).await;
    }
    world.wait_stored(100).await;
    // Notifications still in flight could only wake runs that find nothing new.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let notified = world.runs().iter().filter(|r| *r == "notified").count();
    assert!(
        (1..=2).contains(&notified),
        "{notified} runs: {:?}",
        world.runs()
    );
    assert_eq!(world.stored().await, 100, "nothing stored twice");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_notification_is_refused_and_changes_nothing() {
    let world = Subscribed::start().await;
    let subscription = world.wait_for_subscription(None).await;
    let forged = json!({"value": [{
        "subscriptionId": subscription.id,
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00.0000000Z",
        "changeType": "created",
        "resource": "Users/x/Messages/y",
        "clientState": "guessed",
        "tenantId": world.owner.tenant_id.as_str(),
    }]});
    let client = reqwest::Client::new();
    for path in ["/notifications/graph", "/notifications/graph/lifecycle"] {
        let mut body = forged.clone();
        if path.ends_with("lifecycle") {
            body["value"][0]["lifecycleEvent"] = json!("subscriptionRemoved");
        }
        let answer = client
            .post(world.live.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        // The same answer as for a real one: nothing tells why it did nothing.
        assert_eq!(answer.status(), 202);
        assert_eq!(answer.text().await.expect("body"), "");
    }
    let not_a_batch = client
        .post(world.live.url("/notifications/graph"))
        .body("{\"hello\": 1}")
        .send()
        .await
        .expect("POST");
    assert_eq!(not_a_batch.status(), 400);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(world.runs(), ["initial"], "no run was woken");
    assert_eq!(
        world.wait_for_subscription(None).await,
        subscription,
        "the subscription is untouched"
    );
    assert_eq!(world.sim_subscriptions().await.len(), 1);
    // The debounce was not claimed by the forgery: a real change still syncs.
    world.arrive("Real").await;
    world.wait_stored(1).await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_notifications_renew_resync_and_recreate() {
    let world = Subscribed::start().await;
    let first = world.wait_for_subscription(None).await;
    let lifecycle = |event: &str| {
        let path = format!("/_sim/subscriptions/{}/lifecycle", first.id);
        let body = json!({ "lifecycleEvent": event });
        let live = &world.live;
        async move { live.control(&path, body).await }
    };

    // reauthorizationRequired: renewed at Graph (PATCH), same subscription.
    lifecycle("reauthorizationRequired").await;
    let mut renewed = None;
    for _ in 0..100 {
        let current = world.wait_for_subscription(None).await;
        if current.renewed_at.is_some() {
            renewed = Some(current);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed = renewed.expect("renewed");
    assert_eq!(renewed.id, first.id);

    // missed: the whole delta round at once, which finds the message Graph did not tell of.
    world.arrive("While notifications were lost").await;
    world.wait_stored(1).await;
    lifecycle("missed").await;
    world.wait_runs("resync", 1).await;

    // subscriptionRemoved: a successor is created, and a resync runs.
    lifecycle("subscriptionRemoved").await;
    let second = world.wait_for_subscription(Some(&first.id)).await;
    assert_ne!(second.id, first.id);
    let at_sim = world.sim_subscriptions().await;
    assert_eq!(at_sim.len(), 1, "{at_sim:?}");
    assert_eq!(at_sim[0]["id"], second.id.as_str());
    assert!(
        world
            .live
            .manager
            .store
            .by_id(&first.id)
            .await
            .expect("store")
            .is_none(),
        "the removed one's record is gone"
    );
    // Once the successor exists, a resync finds what changed while there was none.
    world.wait_runs("resync", 2).await;
    // Notifications of the successor wake syncs.
    world.arrive("After the successor").await;
    world.wait_stored(2).await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_renewal_pass_renews_before_expiry() {
    let world = Subscribed::start().await;
    let first = world.wait_for_subscription(None).await;
    // Four days and a half later (both clocks): under 60 hours remain.
    let ahead = time::Duration::hours(108);
    world
        .live
        .control(
            "/_sim/clock/advance",
            json!({ "seconds": ahead.whole_seconds() }),
        )
        .await;
    let clock = Arc::new(OffsetClock::new());
    clock.advance(ahead);
    let later = Manager {
        clock,
        ..Manager::clone(&world.live.manager)
    };
    let report = later.renewal_pass(100, None).await.expect("pass");
    assert_eq!(
        (report.complete, report.renewed, report.failed),
        (true, 1, 0),
        "{report:?}"
    );
    let renewed = world.wait_for_subscription(None).await;
    assert_eq!(renewed.id, first.id);
    assert!(renewed.expires_at > first.expires_at + time::Duration::hours(100));
    let at_sim = world.sim_subscriptions().await;
    let sim_expiry = time::OffsetDateTime::parse(
        at_sim[0]["expirationDateTime"].as_str().expect("expiry"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    assert_eq!(sim_expiry, renewed.expires_at);
    // A second pass right after finds nothing due.
    let again = later.renewal_pass(100, None).await.expect("pass");
    assert_eq!(again.renewed, 0);
    // Out of time before it starts: nothing done, and it says so.
    let late = later
        .renewal_pass(100, Some(tokio::time::Instant::now()))
        .await
        .expect("pass");
    assert_eq!((late.complete, late.scanned), (false, 0));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnecting_deletes_the_subscriptions() {
    let world = Subscribed::start().await;
    let subscription = world.wait_for_subscription(None).await;
    let browser = world.live.browser();
    let (status, _) = disconnect_from_me(&world.live, &browser, &world.upn).await;
    assert!(status < 400, "{status}");
    assert!(
        world.sim_subscriptions().await.is_empty(),
        "deleted at Graph"
    );
    let store = &world.live.manager.store;
    assert!(
        store
            .user_subscriptions(&world.owner)
            .await
            .expect("store")
            .is_empty()
    );
    assert!(
        store
            .by_id(&subscription.id)
            .await
            .expect("store")
            .is_none()
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_creation_waits_and_a_tenant_switched_off_loses_its_subscription() {
    use connector_core::notifications::manager::{NotificationUrls, Outcome};

    let world = Subscribed::start().await;
    let manager = &world.live.manager;
    // Graph cannot reach the notification URL: its handshake fails, the creation is
    // recorded as failed and not tried again before its time.
    let report = manager.cancel_all(&world.owner).await.expect("cancel");
    assert_eq!((report.cancelled, report.left_to_expire), (1, 0));
    let unreachable = Manager {
        urls: NotificationUrls {
            change: "http://127.0.0.1:9/notifications/graph".into(),
            lifecycle: "http://127.0.0.1:9/notifications/graph/lifecycle".into(),
        },
        ..Manager::clone(manager)
    };
    let outcome = unreachable
        .ensure(&world.owner, SyncKind::Mail)
        .await
        .expect("ensure");
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: "validation_failed".into()
        }
    );
    assert_eq!(
        manager
            .ensure(&world.owner, SyncKind::Mail)
            .await
            .expect("ensure"),
        Outcome::Waiting,
        "not again within the hour"
    );
    assert!(world.sim_subscriptions().await.is_empty());

    // Back to a healthy one (a failure older than its wait), then the administrator turns
    // change notifications off: the next ensure deletes it at Graph and here.
    // (Graph's clock moves with ours: it refuses expirations past 10,070 minutes.)
    let clock = Arc::new(OffsetClock::new());
    clock.advance(time::Duration::minutes(61));
    world
        .live
        .control("/_sim/clock/advance", json!({ "seconds": 61 * 60 }))
        .await;
    let later = Manager {
        clock,
        ..Manager::clone(manager)
    };
    assert!(matches!(
        later
            .ensure(&world.owner, SyncKind::Mail)
            .await
            .expect("ensure"),
        Outcome::Created { .. }
    ));
    assert_eq!(world.sim_subscriptions().await.len(), 1);
    let mut tenant = world
        .live
        .tenant(world.owner.tenant_id.as_str())
        .await
        .expect("tenant");
    tenant.switches.change_notifications = false;
    manager
        .tenants
        .put_tenant(&tenant)
        .await
        .expect("switch off");
    assert_eq!(
        manager
            .ensure(&world.owner, SyncKind::Mail)
            .await
            .expect("ensure"),
        Outcome::Removed
    );
    assert!(world.sim_subscriptions().await.is_empty());
    assert_eq!(
        manager
            .ensure(&world.owner, SyncKind::Mail)
            .await
            .expect("ensure"),
        Outcome::NotWanted
    );
    world.stop().await;
}

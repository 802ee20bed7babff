//! Issue 13 item 6, "Teams never posts twice", against moto and microsoft-sim: Graph
//! takes the post and then its answer is lost (a 5xx after storing, the connection
//! dropped after storing, an answer slower than the client's timeout). The record says
//! "sent, outcome unknown" before the POST leaves, so the redelivery reads the channel or
//! chat back, finds the post and completes the key without posting again. A post that
//! did not land is read back and posted once; a post Graph refused outright is posted
//! again without reading back; a grant that cannot read back dead-letters instead of
//! risking a second post.

mod support;

use std::time::Duration;

use connector_core::domain::{Connection, ScopeSet};
use connector_core::ports::ConnectionStore as _;
use connector_core::teams::idempotency::record_id;
use connector_core::teams::{IdempotencyStore as _, RecordState};
use serde_json::{Value, json};
use support::*;
use teams_post::{Outcome, Settings};

/// The sim's messages whose content holds `marker`.
async fn posts_of(env: &Env, marker: &str) -> Vec<Value> {
    env.sim_messages()
        .await
        .into_iter()
        .filter(|message| {
            message["content"]
                .as_str()
                .is_some_and(|content| content.contains(marker))
        })
        .collect()
}

fn outcomes(reports: &[teams_post::BatchReport]) -> Vec<Outcome> {
    reports
        .iter()
        .flat_map(|report| report.outcomes.iter().map(|(_, outcome)| outcome.clone()))
        .collect()
}

/// GETs of a channel's or chat's messages the sim saw.
async fn read_backs(env: &Env) -> usize {
    env.sim_requests()
        .await
        .iter()
        .filter(|request| {
            request["method"] == "GET"
                && request["path"]
                    .as_str()
                    .is_some_and(|path| path.ends_with("/messages"))
        })
        .count()
}

/// One message, posted under `fault`, ends as exactly one post in the sim: the first
/// attempt is retried as an unknown outcome, the second finds the post and completes the
/// key with its id.
async fn exactly_one_post_under(env: &Env, key: &str, target: Value, marker: &str, fault: Value) {
    env.fault(fault).await;
    env.send(&[env.post(
        key,
        ADELE,
        target,
        &format!("<p>{marker} <b>signed</b></p>"),
    )])
    .await;
    let reports = env.drain(Duration::from_secs(60)).await;
    let outcomes = outcomes(&reports);
    let posts = posts_of(env, marker).await;
    assert_eq!(posts.len(), 1, "{posts:#?} {outcomes:?}");
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(
        matches!(&outcomes[0], Outcome::RetryLater { code, .. } if code.starts_with("outcome_unknown:")),
        "{outcomes:?}"
    );
    let Outcome::AlreadyPosted { message_id, .. } = &outcomes[1] else {
        panic!("the redelivery finds the post: {outcomes:?}");
    };
    assert_eq!(Some(message_id.as_str()), posts[0]["id"].as_str());
    assert_eq!(read_backs(env).await, 1);
    let record = env
        .idempotency
        .get_record(&record_id(&env.tenant_id(), key))
        .await
        .expect("record")
        .expect("kept");
    let RecordState::Completed(result) = record.state else {
        panic!("completed: {record:?}");
    };
    assert_eq!(&result.message_id, message_id);
}

#[tokio::test]
async fn a_5xx_after_the_channel_post_landed_posts_once() {
    let env = Env::start().await;
    exactly_one_post_under(
        &env,
        "k-5xx-after",
        channel(SALES, GENERAL),
        "Renewal-5xx",
        json!({"method": "POST", "pathPrefix": format!("/v1.0/teams/{SALES}/channels/"),
               "status": 503, "after": "fail"}),
    )
    .await;
}

#[tokio::test]
async fn a_dropped_connection_after_the_new_chat_post_landed_posts_once() {
    let env = Env::start().await;
    // `/v1.0/chats/` (with the slash): the chat's messages, not the chat's creation.
    exactly_one_post_under(
        &env,
        "k-drop-after",
        new_chat(&[MEGAN_UPN], None),
        "Renewal-drop",
        json!({"method": "POST", "pathPrefix": "/v1.0/chats/", "after": "drop"}),
    )
    .await;
    assert_eq!(env.sim_chats().await.len(), 1, "one chat created");
}

#[tokio::test]
async fn an_answer_slower_than_the_post_timeout_posts_once() {
    let env = Env::start_with(
        &uuid::Uuid::new_v4().to_string(),
        Settings::default(),
        |config| config.post_timeout = Duration::from_secs(1),
    )
    .await;
    // A chat first (the 1:1 of Adele and Megan), then the slow post into it.
    env.send(&[env.post(
        "k-open",
        MEGAN,
        new_chat(&[ADELE_UPN], None),
        "<p>hello</p>",
    )])
    .await;
    env.drain(Duration::from_secs(30)).await;
    exactly_one_post_under(
        &env,
        "k-slow",
        chat(ADELE_MEGAN_CHAT),
        "Renewal-slow",
        json!({"method": "POST", "pathPrefix": "/v1.0/chats/", "after": "delay", "delayMs": 3000}),
    )
    .await;
}

#[tokio::test]
async fn a_5xx_before_the_post_landed_is_read_back_then_posted_once() {
    let env = Env::start().await;
    // An ordinary fault answers before the handler runs: nothing stored, yet the client
    // cannot tell it from the cases above.
    env.fault(
        json!({"method": "POST", "pathPrefix": format!("/v1.0/teams/{SALES}/channels/"),
                     "status": 503}),
    )
    .await;
    env.send(&[env.post(
        "k-5xx-before",
        ADELE,
        channel(SALES, DEALS),
        "<p>Renewal-before</p>",
    )])
    .await;
    let outcomes = outcomes(&env.drain(Duration::from_secs(60)).await);
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(
        matches!(&outcomes[1], Outcome::Posted { .. }),
        "{outcomes:?}"
    );
    assert_eq!(posts_of(&env, "Renewal-before").await.len(), 1);
    assert_eq!(read_backs(&env).await, 1, "read back before posting again");
}

#[tokio::test]
async fn a_refused_post_is_posted_again_without_reading_back() {
    let env = Env::start().await;
    env.fault(
        json!({"method": "POST", "pathPrefix": format!("/v1.0/teams/{SALES}/channels/"),
                     "status": 429, "retryAfter": 1}),
    )
    .await;
    env.send(&[env.post("k-429", ADELE, channel(SALES, DEALS), "<p>Renewal-429</p>")])
        .await;
    let outcomes = outcomes(&env.drain(Duration::from_secs(60)).await);
    assert!(
        matches!(&outcomes[0], Outcome::RetryLater { code, .. } if code == "graph_throttled"),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes.last(), Some(Outcome::Posted { .. })),
        "{outcomes:?}"
    );
    assert_eq!(posts_of(&env, "Renewal-429").await.len(), 1);
    assert_eq!(read_backs(&env).await, 0, "a 429 proves nothing was posted");
}

#[tokio::test]
async fn without_a_read_scope_an_unknown_outcome_is_dead_lettered_not_posted_again() {
    let env = Env::start().await;
    // Adele's grant from before the read scopes joined the teams bundle.
    let key = env.user_key(ADELE);
    let mut connection: Connection = env
        .connections
        .get_connection(&key)
        .await
        .expect("read")
        .expect("connected");
    connection.granted_scopes = ScopeSet::parse(
        "openid profile email offline_access Team.ReadBasic.All Channel.ReadBasic.All ChannelMessage.Send Chat.Create ChatMessage.Send",
    );
    env.connections
        .upsert_connection(&connection)
        .await
        .expect("connection");
    env.fault(
        json!({"method": "POST", "pathPrefix": format!("/v1.0/teams/{SALES}/channels/"),
                     "status": 504, "after": "fail"}),
    )
    .await;
    env.send(&[env.post(
        "k-unknown",
        ADELE,
        channel(SALES, GENERAL),
        "<p>Renewal-unknown</p>",
    )])
    .await;
    let outcomes = outcomes(&env.drain(Duration::from_secs(60)).await);
    assert!(
        matches!(outcomes.last(), Some(Outcome::DeadLettered { code }) if code.as_str() == "outcome_unknown"),
        "{outcomes:?}"
    );
    assert_eq!(posts_of(&env, "Renewal-unknown").await.len(), 1);
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].report.as_ref().expect("a reason").code,
        "outcome_unknown"
    );
}

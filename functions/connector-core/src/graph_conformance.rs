//! Microsoft's Graph error, throttling and `$batch` examples (the conformance corpus) served
//! verbatim by a loopback server to the real [`MailboxSession`]: each ends as its source says
//! (a 429 waits its `Retry-After`, a 410 sync-state answer means start over, a `$batch`
//! answer keeps each item's status and error code).

use std::time::Duration;

use serde_json::Value;

use super::tests::FixedBearer;
use super::*;
use crate::conformance::{body_bytes, example, examples, serve};

/// No retries at all: the first answer decides.
fn no_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 1,
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
        throttle_retries: 0,
        max_retry_after: Duration::from_secs(120),
    }
}

async fn get_once(example: &Value) -> (Result<Bytes, GraphError>, usize) {
    let (base, served) = serve(example).await;
    let client =
        GraphClient::new(graph_http_client().expect("a client"), &base).with_retry(no_retries());
    let session = client.session("user@contoso.com", &FixedBearer, None);
    let result = session
        .get("/me/mailFolders/inbox/messages/delta", &[])
        .await;
    (result, served.lock().expect("log").len())
}

#[tokio::test]
async fn throttled_answers_wait_their_retry_after() {
    for (name, example) in examples("throttling", "") {
        if example["response"]["status"] != 429 {
            continue;
        }
        let (result, served) = get_once(&example).await;
        assert_eq!(served, 1, "{name}");
        let Err(GraphError::Throttled { retry_after }) = result else {
            panic!("{name}: {result:?}");
        };
        if let Some(seconds) = example["meaning"]["retry_after_seconds"].as_f64() {
            assert_eq!(retry_after, Duration::from_secs_f64(seconds), "{name}");
        }
    }
}

#[tokio::test]
async fn sync_state_answers_mean_start_over() {
    let mut seen = 0;
    for (name, example) in examples("mail", "") {
        if example["meaning"]["resync"] != true {
            continue;
        }
        seen += 1;
        let (result, _) = get_once(&example).await;
        let error = result.expect_err(&name);
        assert!(error.is_sync_state_lost(), "{name}: {error:?}");
        assert_eq!(
            error.status(),
            example["response"]["status"].as_u64().map(|s| s as u16),
            "{name}"
        );
        if let Some(code) = example["response"]["body"]["error"]["code"].as_str() {
            assert_eq!(error.code(), Some(code), "{name}");
        }
    }
    assert!(seen >= 4, "the corpus holds the four sync-state forms");
}

#[tokio::test]
async fn a_mixed_batch_answer_keeps_each_items_status_and_code() {
    let example = example("batch/batch-response-mixed.json");
    let (base, served) = serve(&example).await;
    let client =
        GraphClient::new(graph_http_client().expect("a client"), &base).with_retry(no_retries());
    let session = client.session("user@contoso.com", &FixedBearer, None);
    let requests: Vec<BatchRequest> = (1..=5)
        .map(|id| BatchRequest {
            id: id.to_string(),
            url: format!("/me/messages/{id}"),
            prefer: Vec::new(),
        })
        .collect();
    let items = session.batch(&requests).await.expect("a batch answer");
    assert_eq!(served.lock().expect("log").len(), 1, "nothing to retry");
    let expected = example["meaning"]["items"].as_object().expect("items");
    assert_eq!(items.len(), expected.len());
    for item in &items {
        let meaning = &expected[&item.id];
        assert_eq!(
            u64::from(item.status),
            meaning["status"].as_u64().expect("a status"),
            "{}",
            item.id
        );
        if let Some(code) = meaning.get("error_code") {
            assert_eq!(item.error_code().as_deref(), code.as_str(), "{}", item.id);
            assert_eq!(item.to_error().status(), Some(item.status), "{}", item.id);
        }
    }
}

#[tokio::test]
async fn a_throttled_batch_item_waits_the_items_retry_after() {
    let example = example("batch/batch-response-throttled-and-dependent.json");
    let (base, _) = serve(&example).await;
    let client =
        GraphClient::new(graph_http_client().expect("a client"), &base).with_retry(no_retries());
    let session = client.session("user@contoso.com", &FixedBearer, None);
    let requests: Vec<BatchRequest> = ["1", "2", "3"]
        .into_iter()
        .map(|id| BatchRequest {
            id: id.to_owned(),
            url: format!("/me/messages/{id}"),
            prefer: Vec::new(),
        })
        .collect();
    let result = session.batch_serial(&requests).await;
    let Err(GraphError::Throttled { retry_after }) = result else {
        panic!("{result:?}");
    };
    let seconds = example["meaning"]["items"]["1"]["retry_after_seconds"]
        .as_f64()
        .expect("seconds");
    assert_eq!(retry_after, Duration::from_secs_f64(seconds));
}

#[test]
fn batch_items_parse_as_documented() {
    for (name, example) in examples("batch", "batch-response-") {
        let answer: BatchAnswer = serde_json::from_slice(&body_bytes(&example))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let expected = example["meaning"]["items"].as_object().expect("items");
        assert_eq!(answer.responses.len(), expected.len(), "{name}");
        for item in answer.responses {
            let meaning = &expected[&item.id];
            assert_eq!(
                u64::from(item.status),
                meaning["status"].as_u64().expect("status"),
                "{name}"
            );
            let parsed = BatchItem {
                id: item.id.clone(),
                status: item.status,
                body: item.body,
            };
            if let Some(code) = meaning.get("error_code") {
                assert_eq!(
                    parsed.error_code().as_deref(),
                    code.as_str(),
                    "{name} {}",
                    item.id
                );
            }
            if let Some(seconds) = meaning["retry_after_seconds"].as_f64() {
                let after = item
                    .headers
                    .iter()
                    .find(|(header, _)| header.eq_ignore_ascii_case("retry-after"))
                    .and_then(|(_, value)| parse_retry_after(value));
                assert_eq!(
                    after,
                    Some(Duration::from_secs_f64(seconds)),
                    "{name} {}",
                    item.id
                );
            }
        }
    }
}

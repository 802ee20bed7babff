//! Message delta against the in-process sim: paging to the deltaLink, page sizes, the `$filter` cap, change
//! rounds (live add / update / delete / move), eviction, ImmutableId, and the query errors Graph gives.

mod mail_support;

use std::collections::BTreeSet;

use mail_support::*;
use reqwest::Method;
use serde_json::json;

fn inbox_delta(server: &microsoft_sim::SimServer, query: &str) -> String {
    format!(
        "{}/v1.0/me/mailFolders/inbox/messages/delta{query}",
        server.base_url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2500_message_folder_pages_to_its_delta_link_without_duplicates() {
    let server = start().await;
    let token = token(&server, ADELE, &["Mail.Read"]).await;

    // Default page: 10, with a nextLink whose token encodes the query.
    let (status, _, first) = get(
        &inbox_delta(&server, "?$select=subject,from,receivedDateTime"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["value"].as_array().unwrap().len(), 10);
    assert!(
        first["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/v1.0/$metadata#Collection(message)")
    );
    let next = first["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{}/v1.0/me/mailFolders/", server.base_url())),
        "{next}"
    );
    assert!(next.contains("/messages/delta?$skiptoken="), "{next}");
    assert!(
        !next.contains("select"),
        "the query lives in the token: {next}"
    );
    let item = &first["value"][0];
    let keys: BTreeSet<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "@odata.type",
            "@odata.etag",
            "id",
            "subject",
            "from",
            "receivedDateTime"
        ]),
        "{item}"
    );
    assert!(item["id"].as_str().unwrap().starts_with("AAMk"));

    // The whole folder with a larger page.
    let (items, delta_link, requests) = walk_delta(
        &inbox_delta(&server, "?$select=subject"),
        &token,
        &["odata.maxpagesize=200"],
    )
    .await;
    assert_eq!(items.len(), ADELE_INBOX);
    assert_eq!(ids(&items).len(), ADELE_INBOX, "no duplicates");
    assert_eq!(requests, ADELE_INBOX.div_ceil(200));
    assert!(items.iter().all(|i| i.get("@removed").is_none()));
    assert!(delta_link.contains("$deltatoken="), "{delta_link}");
    let (_, _, inbox) = get(
        &format!("{}/v1.0/me/mailFolders/inbox", server.base_url()),
        &token,
        &[],
    )
    .await;
    assert_eq!(inbox["totalItemCount"], ADELE_INBOX);

    // A second round on an unchanged folder: empty value and a new deltaLink, in one request.
    let (status, _, again) = get(&delta_link, &token, &["odata.maxpagesize=200"]).await;
    assert_eq!(status, 200);
    assert_eq!(again["value"], json!([]));
    assert!(again.get("@odata.nextLink").is_none());
    assert!(
        again["@odata.deltaLink"]
            .as_str()
            .unwrap()
            .contains("$deltatoken=")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn maxpagesize_is_honoured_up_to_1000() {
    let server = start().await;
    let token = token(&server, ADELE, &["Mail.Read"]).await;
    let (_, _, page) = get(&inbox_delta(&server, ""), &token, &["odata.maxpagesize=37"]).await;
    assert_eq!(page["value"].as_array().unwrap().len(), 37);
    let (_, _, page) = get(
        &inbox_delta(&server, "?$top=5"),
        &token,
        &["odata.maxpagesize=5000"],
    )
    .await;
    assert_eq!(
        page["value"].as_array().unwrap().len(),
        1000,
        "$top is ignored, the page capped at 1000"
    );
    // The page size is per request, not part of the token.
    let next = page["@odata.nextLink"].as_str().unwrap().to_owned();
    let (_, _, page) = get(&next, &token, &["odata.maxpagesize=3"]).await;
    assert_eq!(page["value"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn filter_caps_the_round_at_the_5000_newest_messages() {
    let server = start().await;
    let token = token(&server, ADELE, &["Mail.Read"]).await;
    let base = server.base_url();
    let year_ago = (time::OffsetDateTime::now_utc() - time::Duration::days(400))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let url = format!(
        "{base}/v1.0/me/mailFolders/archive/messages/delta?$select=receivedDateTime&$filter=receivedDateTime+ge+{year_ago}&$orderby=receivedDateTime+desc"
    );
    let (items, _, _) = walk_delta(&url, &token, &["odata.maxpagesize=1000"]).await;
    assert_eq!(
        items.len(),
        5_000,
        "{ADELE_ARCHIVE} match the filter, Graph returns 5,000"
    );
    let dates: Vec<String> = items
        .iter()
        .map(|i| i["receivedDateTime"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        dates.windows(2).all(|w| w[0] >= w[1]),
        "$orderby=receivedDateTime desc"
    );
    // They are the newest 5,000: the list endpoint's 5,001st newest is older than all of them.
    let (_, _, list) = get(
        &format!(
            "{base}/v1.0/me/mailFolders/archive/messages?$select=receivedDateTime&$top=1&$skip=5000"
        ),
        &token,
        &[],
    )
    .await;
    let next_older = list["value"][0]["receivedDateTime"].as_str().unwrap();
    assert!(dates.last().unwrap().as_str() >= next_older);

    // A narrower filter returns exactly what it matches.
    let month_ago = (time::OffsetDateTime::now_utc() - time::Duration::days(30))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let url = format!(
        "{base}/v1.0/me/mailFolders/archive/messages/delta?$filter=receivedDateTime+gt+{month_ago}"
    );
    let (items, _, _) = walk_delta(&url, &token, &["odata.maxpagesize=1000"]).await;
    let mut expected = 0;
    let mut list_url = format!(
        "{base}/v1.0/me/mailFolders/archive/messages?$select=id&$top=1000&$filter=receivedDateTime+gt+{month_ago}"
    );
    loop {
        let (_, _, page) = get(&list_url, &token, &[]).await;
        expected += page["value"].as_array().unwrap().len();
        match page["@odata.nextLink"].as_str() {
            Some(n) => list_url = n.to_owned(),
            None => break,
        }
    }
    assert!(expected > 100 && expected < 5_000, "{expected}");
    assert_eq!(items.len(), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cap_keeps_the_newest_oldest_or_arbitrary_messages_as_the_control_says() {
    let server = start().await;
    let token = token(&server, ADELE, &["Mail.Read"]).await;
    let base = server.base_url();
    let (status, cap) = control(&server, Method::GET, "/_sim/delta-cap", None).await;
    assert_eq!(status, 200);
    assert_eq!(cap, json!({"limit": 5000, "order": "newest", "seed": 0}));
    for bad in [
        json!({"order": "middle"}),
        json!({"limit": 0}),
        json!({"cap": 3}),
    ] {
        let (status, body) =
            control(&server, Method::POST, "/_sim/delta-cap", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let year_ago = (time::OffsetDateTime::now_utc() - time::Duration::days(400))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let delta = format!(
        "{base}/v1.0/me/mailFolders/inbox/messages/delta?$select=receivedDateTime&$filter=receivedDateTime+ge+{year_ago}&$orderby=receivedDateTime+desc"
    );
    // The window by the message list, newest first (filter and orderby on the same property).
    let mut window = Vec::new();
    let mut list = format!(
        "{base}/v1.0/me/mailFolders/inbox/messages?$select=id&$filter=receivedDateTime+ge+{year_ago}&$orderby=receivedDateTime+desc&$top=1000&$count=true"
    );
    let mut counted = None;
    loop {
        let (status, _, page) = get(&list, &token, &[]).await;
        assert_eq!(status, 200, "{page}");
        counted = counted.or(page["@odata.count"].as_u64());
        window.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_owned()),
        );
        match page["@odata.nextLink"].as_str() {
            Some(n) => list = n.to_owned(),
            None => break,
        }
    }
    assert!(window.len() > 300, "{}", window.len());
    assert_eq!(
        counted,
        Some(window.len() as u64),
        "@odata.count is the whole window"
    );

    let round = |order: &'static str, seed: u64| {
        let (server, token, delta) = (&server, &token, &delta);
        async move {
            let (status, _) = control(
                server,
                Method::POST,
                "/_sim/delta-cap",
                Some(json!({"limit": 100, "order": order, "seed": seed})),
            )
            .await;
            assert_eq!(status, 200);
            let (items, _, _) = walk_delta(delta, token, &["odata.maxpagesize=30"]).await;
            assert_eq!(items.len(), 100, "{order}");
            let ids: Vec<String> = items
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect();
            ids
        }
    };
    assert_eq!(round("newest", 0).await, window[..100].to_vec());
    assert_eq!(
        round("oldest", 0).await,
        window[window.len() - 100..].to_vec()
    );
    let arbitrary = round("arbitrary", 5).await;
    let positions: Vec<usize> = arbitrary
        .iter()
        .map(|id| window.iter().position(|w| w == id).expect("in the window"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "newest first, each once"
    );
    assert!(
        positions[0] < 100 && positions[99] >= window.len() - 100,
        "spread: {positions:?}"
    );
    assert_eq!(round("arbitrary", 5).await, arbitrary, "seeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn live_changes_arrive_in_the_next_round_as_items_and_removals() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let base = server.base_url();
    let (items, delta_link, _) =
        walk_delta(&inbox_delta(&server, "?$select=subject"), &token, &[]).await;
    assert_eq!(items.len(), 3);
    let by_subject = |s: &str| {
        items.iter().find(|i| i["subject"] == s).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let renewal = by_subject("Renewal pricing");
    assert_eq!(
        renewal, "AAMkWorldMessage1=",
        "ids from the world file are kept"
    );
    let lunch = by_subject("Team lunch");
    let review = by_subject("Quarterly review");

    let (status, added) = control(
        &server,
        Method::POST,
        &format!("/_sim/users/{MEGAN}/messages"),
        Some(json!({"folder": "inbox", "message": {"subject": "New lead", "from": {"emailAddress": {"name": "Zoe", "address": "zoe@crm-account-9.example"}}}})),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    let (status, _) = control(
        &server,
        Method::PATCH,
        &format!("/_sim/users/{MEGAN}/messages/{lunch}"),
        Some(json!({"subject": "Team lunch (moved to 1pm)"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = control(
        &server,
        Method::DELETE,
        &format!("/_sim/users/{MEGAN}/messages/{review}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, moved) = control(
        &server,
        Method::POST,
        &format!("/_sim/users/{MEGAN}/messages/{renewal}/move"),
        Some(json!({"folder": "Projects"})),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_ne!(moved["id"], renewal);

    let (items, next_delta, requests) = walk_delta(&delta_link, &token, &[]).await;
    assert_eq!(requests, 1);
    let removed: BTreeSet<String> = items
        .iter()
        .filter(|i| i.get("@removed").is_some())
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(removed, BTreeSet::from([review.clone(), renewal.clone()]));
    for r in items.iter().filter(|i| i.get("@removed").is_some()) {
        assert_eq!(r["@removed"], json!({"reason": "deleted"}));
        assert_eq!(r["@odata.type"], "#microsoft.graph.message");
    }
    let updated = items
        .iter()
        .find(|i| i["id"] == lunch.as_str())
        .expect("updated message");
    assert_eq!(updated["subject"], "Team lunch (moved to 1pm)");
    let created = items
        .iter()
        .find(|i| i["id"] == added["id"])
        .expect("created message");
    assert_eq!(created["subject"], "New lead");
    assert_eq!(items.len(), 4);

    // The moved message shows up in its new folder's delta, with its new id.
    let (_, _, projects) = get(
        &format!("{base}/v1.0/me/mailFolders?$select=displayName"),
        &token,
        &[],
    )
    .await;
    let projects_id = projects["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["displayName"] == "Projects")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (items, _, _) = walk_delta(
        &format!("{base}/v1.0/me/mailFolders/{projects_id}/messages/delta"),
        &token,
        &[],
    )
    .await;
    assert_eq!(
        ids(&items),
        BTreeSet::from([moved["id"].as_str().unwrap().to_owned()])
    );

    // changeType=created: a round that only reports creations.
    let (_, created_link, _) =
        walk_delta(&inbox_delta(&server, "?changeType=created"), &token, &[]).await;
    let (_, _) = control(
        &server,
        Method::PATCH,
        &format!("/_sim/users/{MEGAN}/messages/{lunch}"),
        Some(json!({"isRead": false})),
    )
    .await;
    let (_, fresh) = control(
        &server,
        Method::POST,
        &format!("/_sim/users/{MEGAN}/messages"),
        Some(json!({"folder": "inbox", "message": {"subject": "Another"}})),
    )
    .await;
    let (items, _, _) = walk_delta(&created_link, &token, &[]).await;
    assert_eq!(
        ids(&items),
        BTreeSet::from([fresh["id"].as_str().unwrap().to_owned()])
    );

    // Replaying an old deltaLink is harmless: it answers again.
    let (again, _, _) = walk_delta(&next_delta, &token, &[]).await;
    assert_eq!(
        again.len(),
        2,
        "the update and the creation after the second round"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn evicted_tokens_get_410_sync_state_not_found() {
    let server = start().await;
    let token = token(&server, ADELE, &["Mail.Read"]).await;
    let (_, _, first) = get(&inbox_delta(&server, ""), &token, &[]).await;
    let next = first["@odata.nextLink"].as_str().unwrap().to_owned();
    let (status, evicted) = control(
        &server,
        Method::POST,
        &format!("/_sim/users/{ADELE}/delta/evict"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(evicted["generation"], 2);
    let (status, headers, body) = get(&next, &token, &[]).await;
    assert_eq!(status, 410);
    assert_graph_error(
        &body,
        "SyncStateNotFound",
        "The sync state generation is not found; generation=1;[highest=2]",
    );
    assert!(headers.contains_key("request-id"));
    // A fresh initial round works again.
    let (status, _, _) = get(&inbox_delta(&server, ""), &token, &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn immutable_ids_survive_a_move_and_rest_ids_do_not() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let base = server.base_url();
    let immutable = ["IdType=\"ImmutableId\""];
    let (status, headers, page) = get(
        &inbox_delta(&server, "?$select=subject"),
        &token,
        &immutable,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["preference-applied"], "IdType=\"ImmutableId\"");
    let renewal = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["subject"] == "Renewal pricing")
        .unwrap();
    let immutable_id = renewal["id"].as_str().unwrap().to_owned();
    assert!(immutable_id.starts_with("AAkALgAA"), "{immutable_id}");
    let delta_link = page["@odata.deltaLink"].as_str().unwrap().to_owned();

    let (_, moved) = control(
        &server,
        Method::POST,
        &format!("/_sim/users/{MEGAN}/messages/{immutable_id}/move"),
        Some(json!({"folder": "archive"})),
    )
    .await;
    assert_eq!(moved["immutableId"], immutable_id.as_str());
    let new_rest = moved["id"].as_str().unwrap();

    // The old REST id is gone; the immutable id still finds the message, now in the archive.
    let (status, _, body) = get(
        &format!("{base}/v1.0/me/messages/AAMkWorldMessage1="),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 404);
    assert_graph_error(
        &body,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    );
    let (status, _, by_imm) = get(
        &format!("{base}/v1.0/me/messages/{immutable_id}?$select=parentFolderId"),
        &token,
        &immutable,
    )
    .await;
    assert_eq!(status, 200, "{by_imm}");
    assert_eq!(by_imm["id"], immutable_id.as_str());
    let (_, _, archive) = get(&format!("{base}/v1.0/me/mailFolders/archive"), &token, &[]).await;
    assert_eq!(by_imm["parentFolderId"], archive["id"]);
    let (status, _, by_rest) = get(
        &format!("{base}/v1.0/me/messages/{new_rest}?$select=subject"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(by_rest["id"], new_rest);

    // A deltaLink obtained with immutable ids works without the header (and vice versa): the removal names the
    // id in the form the request asks for.
    let (items, _, _) = walk_delta(&delta_link, &token, &[]).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], "AAMkWorldMessage1=");
    let (items, _, _) = walk_delta(&delta_link, &token, &immutable).await;
    assert_eq!(items[0]["id"], immutable_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_refuses_what_graph_refuses() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let (status, _, body) = get(
        &inbox_delta(&server, "?$filter=subject+eq+'x'"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_graph_error(
        &body,
        "ErrorInvalidUrlQuery",
        "The '$filter' parameter value is not supported for 'Messages' resource; only a value of 'receivedDateTime ge value' is supported.",
    );
    let (status, _, body) = get(
        &inbox_delta(&server, "?$filter=receivedDateTime+lt+2026-01-01T00:00:00Z"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get(&inbox_delta(&server, "?$orderby=subject"), &token, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "ErrorInvalidUrlQuery");
    let (status, _, body) = get(&inbox_delta(&server, "?$select=subject,nope"), &token, &[]).await;
    assert_eq!(status, 400);
    assert_graph_error(
        &body,
        "RequestBroker--ParseUri",
        "Could not find a property named 'nope' on type 'microsoft.graph.message'.",
    );
    let (status, _, body) = get(&inbox_delta(&server, "?$search=lunch"), &token, &[]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get(&inbox_delta(&server, "?$skiptoken=garbage"), &token, &[]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get(
        &format!(
            "{}/v1.0/me/mailFolders/not-a-folder/messages/delta",
            server.base_url()
        ),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "ErrorInvalidIdMalformed", "Id is malformed.");
    let (status, _, body) = get(
        &format!(
            "{}/v1.0/me/mailFolders/clutter/messages/delta",
            server.base_url()
        ),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // A token minted for one folder cannot page another.
    let (_, _, first) = get(
        &inbox_delta(&server, "?$select=subject"),
        &token,
        &["odata.maxpagesize=1"],
    )
    .await;
    let next = first["@odata.nextLink"].as_str().unwrap();
    let token_part = next.split("$skiptoken=").nth(1).unwrap();
    let wrong = format!(
        "{}/v1.0/me/mailFolders/archive/messages/delta?$skiptoken={token_part}",
        server.base_url()
    );
    let (status, _, _) = get(&wrong, &token, &[]).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_read_basic_strips_the_body_and_the_preview() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.ReadBasic"]).await;
    let (items, _, _) = walk_delta(&inbox_delta(&server, ""), &token, &[]).await;
    assert_eq!(items.len(), 3);
    for item in &items {
        assert!(
            item.get("body").is_none() && item.get("bodyPreview").is_none(),
            "{item}"
        );
        assert!(item["subject"].is_string());
    }
    let full = mail_support::token(&server, MEGAN, &["Mail.Read"]).await;
    let (items, _, _) = walk_delta(&inbox_delta(&server, ""), &full, &[]).await;
    let renewal = items
        .iter()
        .find(|i| i["subject"] == "Renewal pricing")
        .unwrap();
    assert_eq!(
        renewal["bodyPreview"],
        "Hello Megan,\r\nPrices & terms attached.".replace("\r\n", " ")
    );
    assert_eq!(renewal["body"]["contentType"], "html");
}

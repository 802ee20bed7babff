//! `$search` on message lists (https://learn.microsoft.com/graph/search-query-parameter, "Using $search on message
//! collections", read 2026-12-06): participants and the single fields, received and sent dates, AND/OR, order by
//! sent date, the 1,000-result cap with nextLinks, `$top` paging, and the 400s (syntax the sim does not support,
//! `$orderby` or `$filter` with `$search`, `$search` on delta). Scopes, the request log and throttling are the
//! list's.

mod mail_support;

use std::collections::BTreeSet;

use mail_support::*;
use microsoft_sim::{SimOptions, SimServer, World};
use reqwest::Method;
use serde_json::{Value, json};

const BULK_ID: &str = "4b6d8f0a-2c4e-4a6b-8d0f-1a3c5e7b9d21";
const BULK: &str = "bulk@contoso.example";
/// Messages with the bulk client in the bulk mailbox, and others.
const BULK_MATCHING: usize = 1_200;
const BULK_OTHER: usize = 30;
const BULK_CLIENT: &str = "client@bulk-account.example";
/// What the connector selects.
const CONNECTOR_SELECT: &str = "id,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo,receivedDateTime,sentDateTime,isDraft,parentFolderId";

fn who(name: &str, address: &str) -> Value {
    json!({"emailAddress": {"name": name, "address": address}})
}

fn message(
    subject: &str,
    sent: &str,
    received: &str,
    from: Value,
    to: &[Value],
    cc: &[Value],
    bcc: &[Value],
) -> Value {
    json!({"subject": subject, "sentDateTime": sent, "receivedDateTime": received, "from": from,
           "toRecipients": to, "ccRecipients": cc, "bccRecipients": bcc,
           "body": {"contentType": "text", "content": format!("About {subject}.")}})
}

fn world() -> World {
    let megan = who("Megan Bowen", MEGAN);
    let jane = who("Jane Doe", "jane@acme.com");
    let bob = who("Bob Smith", "bob@initech.com");
    let inbox = json!([
        message(
            "inbox-from-jane",
            "2026-06-10T08:00:00Z",
            "2026-06-10T08:01:00Z",
            jane.clone(),
            std::slice::from_ref(&megan),
            &[],
            &[]
        ),
        message(
            "inbox-from-janet",
            "2026-06-11T08:00:00Z",
            "2026-06-11T08:00:00Z",
            who("Janet Doe-Smith", "janet@acme.com"),
            std::slice::from_ref(&megan),
            &[],
            &[]
        ),
        message(
            "inbox-other-domain",
            "2026-06-09T08:00:00Z",
            "2026-06-09T08:00:00Z",
            who("Jane Roe", "jane@acme.co"),
            std::slice::from_ref(&megan),
            &[],
            &[]
        ),
        message(
            "inbox-bob-followup",
            "2026-06-06T10:00:00Z",
            "2026-06-06T10:00:00Z",
            bob.clone(),
            std::slice::from_ref(&megan),
            &[],
            &[]
        ),
        message(
            "inbox-bob-cc",
            "2026-04-01T23:30:00Z",
            "2026-04-02T00:10:00Z",
            who("Dave", "dave@x.example"),
            std::slice::from_ref(&megan),
            std::slice::from_ref(&bob),
            &[]
        )
    ]);
    let sent = json!([message(
        "sent-to-jane",
        "2026-06-12T09:00:00Z",
        "2026-06-12T09:00:00Z",
        megan.clone(),
        &[who("Jane", "Jane@Acme.com")],
        &[],
        &[]
    )]);
    let archive = json!([message(
        "archive-cc-jane",
        "2026-05-20T12:00:00Z",
        "2026-05-20T12:00:00Z",
        who("Carol", "carol@contoso.example"),
        std::slice::from_ref(&megan),
        std::slice::from_ref(&jane),
        &[]
    )]);
    let deleted = json!([message(
        "deleted-bcc-jane",
        "2026-06-01T00:30:00Z",
        "2026-06-01T00:30:00Z",
        megan.clone(),
        &[who("X", "x@other.example")],
        &[],
        std::slice::from_ref(&jane)
    )]);
    let mut draft = message(
        "drafts-to-jane",
        "2026-06-15T07:00:00Z",
        "2026-06-15T07:00:00Z",
        megan.clone(),
        std::slice::from_ref(&jane),
        &[],
        &[],
    );
    draft["isDraft"] = json!(true);
    let projects = json!([message(
        "projects-bob",
        "2026-06-05T10:00:00Z",
        "2026-06-07T10:00:00Z",
        bob.clone(),
        std::slice::from_ref(&megan),
        &[],
        &[]
    )]);

    let mut bulk_inbox = Vec::new();
    let mut bulk_archive = Vec::new();
    let client = who("Client Contact", BULK_CLIENT);
    let owner = who("Bulk User", BULK);
    for i in 0..BULK_MATCHING + BULK_OTHER {
        // One message an hour from 2026-01-01, sent a minute before it is received.
        let received = 1_767_225_600 + 3_600 * i as i64;
        let at = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let matching = i % 41 != 7;
        let other = who("Someone", &format!("someone{i}@elsewhere.example"));
        let (from, to) = if matching {
            (client.clone(), owner.clone())
        } else {
            (other, owner.clone())
        };
        let m = message(
            &format!("bulk-{i}"),
            &at(received - 60),
            &at(received),
            from,
            &[to],
            &[],
            &[],
        );
        if i % 2 == 0 {
            bulk_inbox.push(m)
        } else {
            bulk_archive.push(m)
        }
    }
    let world = json!({
        "apps": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "redirectUris": [REDIRECT_URI],
                  "displayName": "Connector", "permissions": ["User.Read", "Mail.Read"]}],
        "tenants": [{
            "id": TENANT, "displayName": "Contoso", "verifiedDomains": ["contoso.example"], "userConsent": "allowed",
            "grants": [{"clientId": CLIENT_ID, "principal": "allUsers",
                        "scopes": ["openid", "profile", "email", "offline_access", "User.Read", "Mail.Read", "Mail.ReadBasic"]}],
            "users": [
                {"id": MEGAN_ID, "userPrincipalName": MEGAN, "mail": MEGAN, "displayName": "Megan Bowen",
                 "mailbox": "exchangeOnline",
                 "mailFolders": [
                    {"wellKnownName": "inbox", "displayName": "Inbox", "messages": inbox},
                    {"wellKnownName": "sentitems", "displayName": "Sent Items", "messages": sent},
                    {"wellKnownName": "archive", "displayName": "Archive", "messages": archive},
                    {"wellKnownName": "deleteditems", "displayName": "Deleted Items", "messages": deleted},
                    {"wellKnownName": "drafts", "displayName": "Drafts", "messages": [draft]},
                    {"displayName": "Projects", "messages": projects}
                 ]},
                {"id": BULK_ID, "userPrincipalName": BULK, "mail": BULK, "displayName": "Bulk User",
                 "mailbox": "exchangeOnline",
                 "mailFolders": [
                    {"wellKnownName": "inbox", "displayName": "Inbox", "messages": bulk_inbox},
                    {"wellKnownName": "archive", "displayName": "Archive", "messages": bulk_archive}
                 ]}
            ]
        }]
    });
    World::from_json(&world.to_string()).expect("search world")
}

async fn start_search_sim() -> SimServer {
    let mut options = SimOptions::new(world());
    options.auto_approve = true;
    SimServer::start(options).await.expect("sim starts")
}

/// `GET {base}/v1.0{path}?$search="{kql}"&{extra}` with the query percent-encoded as a client sends it.
fn search_url(base: &str, path: &str, kql: &str, extra: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&format!("{base}/v1.0{path}")).unwrap();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("$search", &format!("\"{kql}\""));
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

/// Every page of a search from `url`; the items, and the number of pages.
async fn all_pages(url: &str, token: &str) -> (Vec<Value>, usize) {
    let mut url = url.to_owned();
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let (status, _, body) = get(&url, token, &[]).await;
        assert_eq!(status, 200, "{url}: {body}");
        pages += 1;
        items.extend(body["value"].as_array().expect("value").iter().cloned());
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => return (items, pages),
        }
    }
}

fn subjects(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|m| m["subject"].as_str().expect("subject").to_owned())
        .collect()
}

fn subject_set(items: &[Value]) -> BTreeSet<String> {
    subjects(items).into_iter().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

async fn search_subjects(base: &str, token: &str, path: &str, kql: &str) -> Vec<String> {
    let (items, _) = all_pages(
        &search_url(
            base,
            path,
            kql,
            &[("$select", "subject,sentDateTime"), ("$top", "100")],
        ),
        token,
    )
    .await;
    subjects(&items)
}

#[tokio::test(flavor = "multi_thread")]
async fn participant_address_search_spans_every_folder_and_only_that_address() {
    let server = start_search_sim().await;
    let base = server.base_url();
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let url = search_url(
        &base,
        "/me/messages",
        "participants:jane@acme.com",
        &[("$select", CONNECTOR_SELECT)],
    );
    let (status, headers, page) = get(&url, &token, &[]).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let items = page["value"].as_array().unwrap();
    // from, to (any case), cc, bcc; Inbox, Sent Items, Archive, Deleted Items and Drafts; not janet@acme.com,
    // not jane@acme.co.
    assert_eq!(items.len(), 5, "{page}");
    for item in items {
        for field in CONNECTOR_SELECT.split(',') {
            assert!(item.get(field).is_some(), "{field} selected: {item}");
        }
        assert!(
            item.get("subject").is_none(),
            "only what $select names: {item}"
        );
    }
    let folders: BTreeSet<&str> = items
        .iter()
        .map(|m| m["parentFolderId"].as_str().unwrap())
        .collect();
    assert_eq!(folders.len(), 5, "five folders");
    assert_eq!(
        items.iter().filter(|m| m["isDraft"] == true).count(),
        1,
        "the draft is included"
    );
    assert!(page.get("@odata.nextLink").is_none());

    let found = search_subjects(&base, &token, "/me/messages", "participants:jane@acme.com").await;
    assert_eq!(
        found.iter().cloned().collect::<BTreeSet<_>>(),
        set(&[
            "inbox-from-jane",
            "sent-to-jane",
            "archive-cc-jane",
            "deleted-bcc-jane",
            "drafts-to-jane"
        ])
    );
    // Property names and values in any case; the /users/{upn} form.
    let upper = search_subjects(
        &base,
        &token,
        &format!("/users/{MEGAN}/messages"),
        "PARTICIPANTS:JANE@ACME.COM",
    )
    .await;
    assert_eq!(upper, found);
    // One folder only on the folder route.
    let inbox = search_subjects(
        &base,
        &token,
        "/me/mailFolders/inbox/messages",
        "participants:jane@acme.com",
    )
    .await;
    assert_eq!(inbox, ["inbox-from-jane"]);
    assert!(
        search_subjects(
            &base,
            &token,
            "/me/messages",
            "participants:nobody@acme.com"
        )
        .await
        .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn from_and_recipients_search_their_own_fields() {
    let server = start_search_sim().await;
    let base = server.base_url();
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let s = |kql: &'static str| {
        let (base, token) = (base.clone(), token.clone());
        async move {
            search_subjects(&base, &token, "/me/messages", kql)
                .await
                .into_iter()
                .collect::<BTreeSet<_>>()
        }
    };
    assert_eq!(s("from:jane@acme.com").await, set(&["inbox-from-jane"]));
    assert_eq!(
        s("recipients:jane@acme.com").await,
        set(&[
            "sent-to-jane",
            "archive-cc-jane",
            "deleted-bcc-jane",
            "drafts-to-jane"
        ])
    );
    assert_eq!(
        s("to:jane@acme.com").await,
        set(&["sent-to-jane", "drafts-to-jane"])
    );
    assert_eq!(s("cc:jane@acme.com").await, set(&["archive-cc-jane"]));
    assert_eq!(s("bcc:jane@acme.com").await, set(&["deleted-bcc-jane"]));
    assert_eq!(
        s("from:bob@initech.com").await,
        set(&["inbox-bob-followup", "projects-bob"])
    );
    assert_eq!(
        s("recipients:bob@initech.com").await,
        set(&["inbox-bob-cc"])
    );
    // Alias (an address's local part) and display-name words: "specified as an SMTP address, display name, or alias".
    assert_eq!(
        s("from:jane").await,
        set(&["inbox-from-jane", "inbox-other-domain"])
    );
    assert_eq!(
        s("from:doe").await,
        set(&["inbox-from-jane"]),
        "Doe-Smith is one word"
    );
    assert_eq!(s("from:\\\"jane doe\\\"").await, set(&["inbox-from-jane"]));
    assert_eq!(s("from:jan").await, set(&[]), "whole words only");
    // A bare word: from, subject and body.
    assert_eq!(s("followup").await, set(&["inbox-bob-followup"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn received_and_sent_bounds_compare_utc_days() {
    let server = start_search_sim().await;
    let base = server.base_url();
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let s = |kql: &'static str| {
        let (base, token) = (base.clone(), token.clone());
        async move {
            search_subjects(&base, &token, "/me/messages", kql)
                .await
                .into_iter()
                .collect::<BTreeSet<_>>()
        }
    };
    // projects-bob was sent on the 5th and received on the 7th.
    assert_eq!(
        s("from:bob@initech.com AND received:2026-06-07").await,
        set(&["projects-bob"])
    );
    assert_eq!(
        s("from:bob@initech.com received:06/07/2026").await,
        set(&["projects-bob"])
    );
    assert_eq!(
        s("from:bob@initech.com AND sent:2026-06-05").await,
        set(&["projects-bob"])
    );
    assert_eq!(
        s("from:bob@initech.com AND sent>2026-06-05").await,
        set(&["inbox-bob-followup"])
    );
    assert_eq!(
        s("from:bob@initech.com AND received>2026-06-06").await,
        set(&["projects-bob"])
    );
    assert_eq!(
        s("from:bob@initech.com AND sent>=2026-06-05 AND sent<=2026-06-05").await,
        set(&["projects-bob"])
    );
    // deleted-bcc-jane: 2026-06-01T00:30Z is on the 1st (UTC days, bounds inclusive with >= and <=).
    assert_eq!(
        s("participants:jane@acme.com AND received<2026-06-01").await,
        set(&["archive-cc-jane"])
    );
    assert_eq!(
        s("participants:jane@acme.com AND received>=2026-06-01 AND received<=2026-06-10").await,
        set(&["deleted-bcc-jane", "inbox-from-jane"])
    );
    // inbox-bob-cc: sent 04-01 23:30, received 04-02 00:10.
    assert_eq!(
        s("cc:bob@initech.com sent:2026-04-01").await,
        set(&["inbox-bob-cc"])
    );
    assert_eq!(s("cc:bob@initech.com received:2026-04-01").await, set(&[]));
}

#[tokio::test(flavor = "multi_thread")]
async fn or_of_addresses_comes_back_newest_sent_first() {
    let server = start_search_sim().await;
    let base = server.base_url();
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let found = search_subjects(
        &base,
        &token,
        "/me/messages",
        "participants:jane@acme.com OR participants:bob@initech.com",
    )
    .await;
    // By sent date, not received: projects-bob (sent 06-05, received 06-07) after inbox-bob-followup (06-06).
    assert_eq!(
        found,
        [
            "drafts-to-jane",
            "sent-to-jane",
            "inbox-from-jane",
            "inbox-bob-followup",
            "projects-bob",
            "deleted-bcc-jane",
            "archive-cc-jane",
            "inbox-bob-cc"
        ]
    );
    // AND binds tighter than OR; parentheses group.
    let tight = search_subjects(
        &base,
        &token,
        "/me/messages",
        "participants:jane@acme.com OR participants:bob@initech.com AND sent<2026-06-01",
    )
    .await;
    assert_eq!(
        tight.len(),
        6,
        "every jane message and inbox-bob-cc: {tight:?}"
    );
    let grouped = search_subjects(
        &base,
        &token,
        "/me/messages",
        "(participants:jane@acme.com OR participants:bob@initech.com) AND sent<2026-06-01",
    )
    .await;
    assert_eq!(grouped, ["archive-cc-jane", "inbox-bob-cc"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn top_pages_through_a_search_with_next_links() {
    let server = start_search_sim().await;
    let base = server.base_url();
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let kql = "participants:jane@acme.com OR participants:bob@initech.com";
    let url = search_url(
        &base,
        "/me/messages",
        kql,
        &[("$select", "subject"), ("$top", "3")],
    );
    let (status, _, first) = get(&url, &token, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(first["value"].as_array().unwrap().len(), 3);
    let next = first["@odata.nextLink"].as_str().expect("a nextLink");
    let parsed = url::Url::parse(next).unwrap();
    assert_eq!(parsed.path(), "/v1.0/me/messages");
    let query: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert!(
        query.contains(&("$search".into(), format!("\"{kql}\""))),
        "{next}"
    );
    assert!(
        query.contains(&("$select".into(), "subject".into())),
        "{next}"
    );
    assert!(query.contains(&("$top".into(), "3".into())), "{next}");
    assert!(query.contains(&("$skip".into(), "3".into())), "{next}");
    let (items, pages) = all_pages(&url, &token).await;
    assert_eq!(pages, 3);
    let whole = search_subjects(&base, &token, "/me/messages", kql).await;
    assert_eq!(
        subjects(&items),
        whole,
        "pages are the unpaged result in order"
    );
    let (items, pages) = all_pages(
        &search_url(
            &base,
            "/me/mailFolders/inbox/messages",
            "participants:acme",
            &[],
        ),
        &token,
    )
    .await;
    assert_eq!(
        (items.len(), pages),
        (0, 1),
        "acme is a domain, not an alias or a name word"
    );
    // Out-of-range $top as on the list.
    let (status, _, body) = get(
        &search_url(&base, "/me/messages", kql, &[("$top", "1001")]),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_returns_at_most_1000_results() {
    let server = start_search_sim().await;
    let base = server.base_url();
    let token = token(&server, BULK, &["Mail.Read"]).await;
    let kql = format!("participants:{BULK_CLIENT}");
    let url = search_url(
        &base,
        "/me/messages",
        &kql,
        &[("$select", "subject,sentDateTime,from"), ("$top", "300")],
    );
    let (items, pages) = all_pages(&url, &token).await;
    assert_eq!(
        items.len(),
        1_000,
        "the cap, not the {BULK_MATCHING} matches"
    );
    assert_eq!(
        pages, 4,
        "300 + 300 + 300 + 100, and no nextLink after the 1,000th"
    );
    assert!(
        items
            .iter()
            .all(|m| m["from"]["emailAddress"]["address"] == BULK_CLIENT)
    );
    assert_eq!(subject_set(&items).len(), 1_000, "no duplicates");
    let sent: Vec<&str> = items
        .iter()
        .map(|m| m["sentDateTime"].as_str().unwrap())
        .collect();
    assert!(sent.windows(2).all(|w| w[0] > w[1]), "newest sent first");
    // The 1,000 newest: the oldest matching 200 are not reachable.
    assert_eq!(
        items[0]["subject"],
        format!("bulk-{}", BULK_MATCHING + BULK_OTHER - 1)
    );
    let (_, _, beyond) = get(
        &search_url(&base, "/me/messages", &kql, &[("$skip", "1000")]),
        &token,
        &[],
    )
    .await;
    assert_eq!(beyond["value"], json!([]));
    assert!(beyond.get("@odata.nextLink").is_none());
    let (_, _, last) = get(
        &search_url(
            &base,
            "/me/messages",
            &kql,
            &[("$skip", "990"), ("$top", "25")],
        ),
        &token,
        &[],
    )
    .await;
    assert_eq!(last["value"].as_array().unwrap().len(), 10);
    assert!(last.get("@odata.nextLink").is_none());
    // With the default page size the 100th page is the last.
    let (_, _, p99) = get(
        &search_url(
            &base,
            "/me/messages",
            &kql,
            &[("$skip", "980"), ("$select", "id")],
        ),
        &token,
        &[],
    )
    .await;
    let next = p99["@odata.nextLink"]
        .as_str()
        .expect("a 100th page follows");
    let (_, _, p100) = get(next, &token, &[]).await;
    assert_eq!(p100["value"].as_array().unwrap().len(), 10);
    assert!(p100.get("@odata.nextLink").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_search_syntax_and_options_are_400() {
    let server = start_search_sim().await;
    let base = server.base_url();
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    for kql in [
        "subject:pizza",
        "NOT from:jane@acme.com",
        "(from:jane@acme.com",
        "from:jane@acme.com OR",
        "received:2026-13-01",
        "received=2026-06-01",
        "size:1..500000",
        "from:ja*",
        "participants>=jane@acme.com",
    ] {
        let (status, _, body) =
            get(&search_url(&base, "/me/messages", kql, &[]), &token, &[]).await;
        assert_eq!(status, 400, "{kql}: {body}");
        assert_eq!(body["error"]["code"], "BadRequest", "{kql}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("microsoft-sim supports $search on messages with"),
            "{body}"
        );
    }
    let jane = "participants:jane@acme.com";
    // Options `$search` does not combine with: (path, option, error code and message;
    // `None`: any 400).
    type Refusal<'a> = (&'a str, (&'a str, &'a str), Option<(&'a str, &'a str)>);
    let refused: [Refusal; 3] = [
        (
            "/me/messages",
            ("$orderby", "receivedDateTime desc"),
            Some((
                "SearchWithOrderBy",
                "The query parameter '$orderBy' is not supported with '$search'.",
            )),
        ),
        (
            "/me/mailFolders/inbox/messages",
            ("$filter", "receivedDateTime ge 2026-01-01T00:00:00Z"),
            Some((
                "ErrorInvalidUrlQuery",
                "The query parameter '$filter' is not supported with '$search'.",
            )),
        ),
        ("/me/messages", ("$count", "true"), None),
    ];
    for (path, option, error) in refused {
        let (status, _, body) = get(&search_url(&base, path, jane, &[option]), &token, &[]).await;
        assert_eq!(status, 400, "{path} with {option:?}: {body}");
        if let Some((code, message)) = error {
            assert_graph_error(&body, code, message);
        }
    }
    // Delta: "There is no support for $search", on the first call and on a round's links.
    let delta_message = "The query parameter '$search' is not supported on message delta.";
    let (status, _, body) = get(
        &search_url(&base, "/me/mailFolders/inbox/messages/delta", jane, &[]),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "ErrorInvalidUrlQuery", delta_message);
    let (_, delta_link, _) = walk_delta(
        &format!("{base}/v1.0/me/mailFolders/inbox/messages/delta"),
        &token,
        &[],
    )
    .await;
    let with_search = format!("{delta_link}&%24search=%22{jane}%22");
    let (status, _, body) = get(&with_search, &token, &[]).await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "ErrorInvalidUrlQuery", delta_message);
}

#[tokio::test(flavor = "multi_thread")]
async fn search_is_scoped_logged_and_throttled_like_the_list() {
    let server = start_search_sim().await;
    let base = server.base_url();
    let url = search_url(&base, "/me/messages", "participants:jane@acme.com", &[]);
    // Mail.ReadBasic: no body; no mail scope at all: 403.
    let basic = token(&server, MEGAN, &["Mail.ReadBasic"]).await;
    let (status, _, page) = get(&url, &basic, &[]).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["value"].as_array().unwrap().len(), 5);
    assert!(page["value"][0].get("body").is_none() && page["value"][0].get("subject").is_some());
    let user_only = token(&server, MEGAN, &["User.Read"]).await;
    let (status, _, body) = get(&url, &user_only, &[]).await;
    assert_eq!(status, 403);
    assert_graph_error(
        &body,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    );

    let (_, log) = control(&server, Method::GET, "/_sim/requests", None).await;
    let entries = log["value"].as_array().unwrap();
    let logged = entries
        .iter()
        .filter(|e| {
            e["path"] == "/v1.0/me/messages"
                && e["query"].as_str().is_some_and(|q| q.contains("search"))
        })
        .count();
    assert_eq!(logged, 2, "{log}");

    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let (status, _) = control(
        &server,
        Method::POST,
        "/_sim/throttle",
        Some(json!({"budget": 2})),
    )
    .await;
    assert_eq!(status, 200);
    control(&server, Method::DELETE, "/_sim/mailbox-stats", None).await;
    for _ in 0..2 {
        assert_eq!(get(&url, &token, &[]).await.0, 200);
    }
    let (status, headers, body) = get(&url, &token, &[]).await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
}

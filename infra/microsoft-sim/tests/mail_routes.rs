//! `/me`, mail folders, message lists and a message by id, with the errors Graph gives for scopes, mailboxes
//! and users, and gzip.

mod mail_support;

use std::io::Read as _;

use mail_support::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn me_returns_the_profile_and_honours_select() {
    let server = start().await;
    let base = server.base_url();
    let token = token(&server, MEGAN, &["User.Read"]).await;
    let (status, headers, me) = get(&format!("{base}/v1.0/me"), &token, &[]).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        me["@odata.context"],
        format!("{base}/v1.0/$metadata#users/$entity")
    );
    assert_eq!(me["id"], MEGAN_ID);
    assert_eq!(me["userPrincipalName"], MEGAN);
    assert_eq!(me["mail"], MEGAN);
    assert_eq!(me["displayName"], "Megan Bowen");
    assert_eq!(me["jobTitle"], "Account Executive");
    assert_eq!(me["businessPhones"], json!([]));
    assert_eq!(me["mobilePhone"], Value::Null);
    let (_, _, me) = get(
        &format!("{base}/v1.0/me?$select=displayName,mail"),
        &token,
        &[],
    )
    .await;
    assert_eq!(me.as_object().unwrap().len(), 3, "{me}");
    assert!(
        me.get("id").is_none(),
        "directory objects return only what $select names"
    );
    assert_eq!(
        me["@odata.context"],
        format!("{base}/v1.0/$metadata#users(displayName,mail)/$entity")
    );

    // Mail.Read alone does not read the profile.
    let mail_only = mail_support::token(&server, MEGAN, &["Mail.Read"]).await;
    let (status, _, body) = get(&format!("{base}/v1.0/me"), &mail_only, &[]).await;
    assert_eq!(status, 403);
    assert_graph_error(
        &body,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_folders_page_by_ten_and_resolve_well_known_names() {
    let server = start().await;
    let base = server.base_url();
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    // 9 standard visible folders + Projects + Receipts.
    let (status, _, page) = get(&format!("{base}/v1.0/me/mailFolders"), &token, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        page["@odata.context"],
        format!("{base}/v1.0/$metadata#users('{MEGAN_ID}')/mailFolders")
    );
    let first = page["value"].as_array().unwrap().clone();
    assert_eq!(first.len(), 10);
    let next = page["@odata.nextLink"].as_str().unwrap();
    assert_eq!(next, format!("{base}/v1.0/me/mailFolders?%24skip=10"));
    let (_, _, rest) = get(next, &token, &[]).await;
    assert_eq!(rest["value"].as_array().unwrap().len(), 1);
    assert!(rest.get("@odata.nextLink").is_none());
    let names: Vec<String> = first
        .iter()
        .chain(rest["value"].as_array().unwrap())
        .map(|f| f["displayName"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "Archive",
        "Deleted Items",
        "Drafts",
        "Inbox",
        "Junk Email",
        "Outbox",
        "Sent Items",
        "Projects",
        "Receipts",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let inbox = first.iter().find(|f| f["displayName"] == "Inbox").unwrap();
    assert_eq!(inbox["totalItemCount"], 3);
    assert_eq!(inbox["unreadItemCount"], 2);
    assert_eq!(inbox["isHidden"], false);
    assert!(inbox["id"].as_str().unwrap().starts_with("AQMk"));
    let keys: Vec<&String> = inbox.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "v1.0 mailFolder fields: {keys:?}");

    // Hidden folders only when asked.
    let (_, _, all) = get(
        &format!("{base}/v1.0/me/mailFolders?includeHiddenFolders=true&$top=50"),
        &token,
        &[],
    )
    .await;
    assert_eq!(all["value"].as_array().unwrap().len(), 12);
    assert!(
        all["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["isHidden"] == true)
    );

    // Well-known names resolve case-insensitively to the same folder.
    for name in ["inbox", "Inbox", "INBOX"] {
        let (status, _, folder) =
            get(&format!("{base}/v1.0/me/mailFolders/{name}"), &token, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(folder["id"], inbox["id"]);
    }
    let (status, _, folder) = get(
        &format!(
            "{base}/v1.0/me/mailfolders/{}?$select=displayName",
            inbox["id"].as_str().unwrap()
        ),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(folder.as_object().unwrap().len(), 3, "{folder}");

    // Child folders.
    let projects = names.iter().position(|n| n == "Projects").unwrap();
    let projects = first
        .iter()
        .chain(rest["value"].as_array().unwrap())
        .nth(projects)
        .unwrap();
    assert_eq!(projects["childFolderCount"], 1);
    let (_, _, children) = get(
        &format!(
            "{base}/v1.0/me/mailFolders/{}/childFolders",
            projects["id"].as_str().unwrap()
        ),
        &token,
        &[],
    )
    .await;
    assert_eq!(children["value"][0]["displayName"], "Northwind");
    assert_eq!(children["value"][0]["parentFolderId"], projects["id"]);
    assert_eq!(children["value"][0]["totalItemCount"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn message_lists_page_filter_and_order() {
    let server = start().await;
    let base = server.base_url();
    let token = token(&server, ADELE, &["Mail.Read"]).await;
    let (status, _, page) = get(
        &format!("{base}/v1.0/me/mailFolders/inbox/messages?$select=receivedDateTime&$top=100"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let values = page["value"].as_array().unwrap();
    assert_eq!(values.len(), 100);
    let dates: Vec<&str> = values
        .iter()
        .map(|v| v["receivedDateTime"].as_str().unwrap())
        .collect();
    assert!(
        dates.windows(2).all(|w| w[0] >= w[1]),
        "newest first by default"
    );
    let next = page["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.contains("%24skip=100") && next.contains("%24top=100"),
        "{next}"
    );
    let (_, _, second) = get(next, &token, &[]).await;
    assert!(second["value"][0]["receivedDateTime"].as_str().unwrap() <= *dates.last().unwrap());

    let (_, _, asc) = get(
        &format!(
            "{base}/v1.0/me/messages?$select=receivedDateTime&$orderby=receivedDateTime+asc&$top=5"
        ),
        &token,
        &[],
    )
    .await;
    let asc: Vec<&str> = asc["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["receivedDateTime"].as_str().unwrap())
        .collect();
    assert!(asc.windows(2).all(|w| w[0] <= w[1]));

    let cutoff = dates[49];
    let (_, _, filtered) = get(
        &format!("{base}/v1.0/me/mailFolders/inbox/messages?$select=receivedDateTime&$top=1000&$filter=receivedDateTime+ge+{cutoff}"),
        &token,
        &[],
    )
    .await;
    let n = filtered["value"].as_array().unwrap().len();
    assert!((50..60).contains(&n), "{n}");

    // /me/messages spans folders: the inbox, the archive and the drafts.
    let (_, _, all) = get(
        &format!("{base}/v1.0/me/messages?$select=id&$top=1000&$skip=8000"),
        &token,
        &[],
    )
    .await;
    let total = 8000 + all["value"].as_array().unwrap().len();
    assert_eq!(
        total,
        ADELE_INBOX + ADELE_ARCHIVE + ADELE_INBOX / 50 + ADELE_ARCHIVE / 50
    );

    // $count=true: the whole filtered total beside a one-message page.
    let (_, _, counted) = get(
        &format!("{base}/v1.0/me/mailFolders/inbox/messages?$select=id&$top=1&$count=true&$filter=receivedDateTime+ge+{cutoff}"),
        &token,
        &[],
    )
    .await;
    assert_eq!(counted["@odata.count"], n);
    assert_eq!(counted["value"].as_array().unwrap().len(), 1);
    assert!(counted["@odata.nextLink"].is_string());

    for (query, code) in [
        ("$count=maybe", "ErrorInvalidUrlQuery"),
        ("$top=1001", "ErrorInvalidUrlQuery"),
        ("$top=0", "ErrorInvalidUrlQuery"),
        ("$filter=subject+eq+'x'", "ErrorInvalidUrlQuery"),
        ("$orderby=subject", "ErrorInvalidUrlQuery"),
        ("$select=bogus", "RequestBroker--ParseUri"),
    ] {
        let (status, _, body) = get(&format!("{base}/v1.0/me/messages?{query}"), &token, &[]).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_by_id_with_select_and_body_content_type() {
    let server = start().await;
    let base = server.base_url();
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let url = format!("{base}/v1.0/me/messages/AAMkWorldMessage1=");
    let (status, headers, html) = get(&url, &token, &[]).await;
    assert_eq!(status, 200, "{html}");
    assert!(headers.get("preference-applied").is_none());
    assert_eq!(
        html["@odata.context"],
        format!("{base}/v1.0/$metadata#users('{MEGAN_ID}')/messages/$entity")
    );
    assert_eq!(html["body"]["contentType"], "html");
    assert_eq!(html["subject"], "Renewal pricing");
    assert_eq!(
        html["from"]["emailAddress"]["address"],
        "dana@crm-account-1.example"
    );
    assert_eq!(html["sender"], html["from"], "sender defaults to from");
    assert_eq!(html["receivedDateTime"], "2026-01-10T09:00:00Z");
    assert!(html["@odata.etag"].as_str().unwrap().starts_with("W/\""));
    assert!(html["internetMessageId"].as_str().unwrap().starts_with('<'));
    for field in [
        "changeKey",
        "conversationId",
        "parentFolderId",
        "webLink",
        "lastModifiedDateTime",
        "createdDateTime",
    ] {
        assert!(html[field].is_string(), "{field}: {html}");
    }

    let (status, headers, text) = get(
        &format!("{url}?$select=subject,body"),
        &token,
        &["outlook.body-content-type=\"text\""],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["preference-applied"],
        "outlook.body-content-type=\"text\""
    );
    assert_eq!(
        text["body"],
        json!({"contentType": "text", "content": "Hello Megan,\r\nPrices & terms attached."})
    );
    assert_eq!(
        text.as_object().unwrap().len(),
        5,
        "@odata.context, @odata.etag, id, subject, body: {text}"
    );

    // A folder-scoped id lookup only finds messages of that folder.
    let (status, _, _) = get(
        &format!("{base}/v1.0/me/mailFolders/inbox/messages/AAMkWorldMessage1="),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = get(
        &format!("{base}/v1.0/me/mailFolders/archive/messages/AAMkWorldMessage1="),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, body) = get(&format!("{base}/v1.0/me/messages/garbage"), &token, &[]).await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "ErrorInvalidIdMalformed", "Id is malformed.");
}

#[tokio::test(flavor = "multi_thread")]
async fn mailboxes_that_rest_cannot_reach_and_users_that_are_not_you() {
    let server = start().await;
    let base = server.base_url();
    for (upn, message) in [
        (ONPREM, "REST API is not yet supported for this mailbox."),
        (
            NOMAIL,
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        ),
    ] {
        let token = token(&server, upn, &["Mail.Read", "User.Read"]).await;
        for path in [
            "/me/mailFolders",
            "/me/mailFolders/inbox/messages/delta",
            "/me/messages",
        ] {
            let (status, _, body) = get(&format!("{base}/v1.0{path}"), &token, &[]).await;
            assert_eq!(status, 404, "{upn} {path}");
            assert_graph_error(&body, "MailboxNotEnabledForRESTAPI", message);
        }
        let (status, _, _) = get(&format!("{base}/v1.0/me"), &token, &[]).await;
        assert_eq!(status, 200, "the profile does not need a mailbox");
    }

    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let (status, _, by_upn) = get(
        &format!("{base}/v1.0/users/{MEGAN}/mailFolders/inbox"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, by_id) = get(
        &format!("{base}/v1.0/users/{MEGAN_ID}/mailFolders/inbox"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(by_upn["id"], by_id["id"]);
    let (_, _, page) = get(
        &format!("{base}/v1.0/users/{MEGAN}/mailFolders/inbox/messages/delta"),
        &token,
        &["odata.maxpagesize=1"],
    )
    .await;
    assert!(
        page["@odata.nextLink"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/v1.0/users/{MEGAN}/mailFolders/"))
    );
    let (status, _, body) = get(&format!("{base}/v1.0/users/{ADELE}/messages"), &token, &[]).await;
    assert_eq!(status, 403);
    assert_graph_error(
        &body,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    );
    let (status, _, body) = get(
        &format!("{base}/v1.0/users/ghost@contoso.example/messages"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, 404);
    assert_graph_error(
        &body,
        "ErrorInvalidUser",
        "The requested user 'ghost@contoso.example' is invalid.",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_and_tokens() {
    let server = start().await;
    let base = server.base_url();
    let profile_only = token(&server, MEGAN, &["User.Read"]).await;
    for path in [
        "/me/mailFolders",
        "/me/messages",
        "/me/mailFolders/inbox/messages/delta",
        "/me/messages/AAMkWorldMessage1=",
    ] {
        let (status, _, body) = get(&format!("{base}/v1.0{path}"), &profile_only, &[]).await;
        assert_eq!(status, 403, "{path}");
        assert_graph_error(
            &body,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    }
    let response = client()
        .get(format!("{base}/v1.0/me/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=\"\"")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_are_gzipped_when_asked() {
    let server = start().await;
    let token = token(&server, ADELE, &["Mail.Read"]).await;
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let url = format!(
        "{}/v1.0/me/mailFolders/inbox/messages/delta",
        server.base_url()
    );
    let response = raw
        .get(&url)
        .bearer_auth(&token)
        .header("Accept-Encoding", "gzip")
        .header("Prefer", "odata.maxpagesize=100")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = response.bytes().await.unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut json)
        .unwrap();
    let body: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(body["value"].as_array().unwrap().len(), 100);
    assert!(
        compressed.len() * 3 < json.len(),
        "{} vs {}",
        compressed.len(),
        json.len()
    );
    let plain = raw.get(&url).bearer_auth(&token).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
}

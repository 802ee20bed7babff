//! Teams against an in-process sim: joined teams, channel visibility and OData options, channel and chat
//! messages with their limits, one-on-one chat reuse, and what the control API shows.

mod calendar_support;

use calendar_support::*;
use reqwest::Method;
use serde_json::{Value, json};

const SALES: &str = "0a5e7c3b-91d2-4e6f-8a1b-2c3d4e5f6a7b";
const MARKETING: &str = "1b6f8d4c-a2e3-4f70-9b2c-3d4e5f6a7b8c";
const HOST_TEAM: &str = "2c7a9e5d-b3f4-4a81-8c3d-4e5f6a7b8c9d";
const GENERAL: &str = "19:0a5e7c3b91d24e6f@thread.tacv2";
const DEALS: &str = "19:deals7c3b91d24e6f@thread.tacv2";
const SECRET: &str = "19:secret3b91d24e6f@thread.tacv2";
const PARTNERS: &str = "19:partners91d24e6f@thread.tacv2";

fn teams() -> [Value; 3] {
    let general = json!({"id": GENERAL, "displayName": "General", "membershipType": "standard"});
    let deals = json!({"id": DEALS, "displayName": "Deals", "membershipType": "private", "description": "Open deals"});
    [
        json!([
            {"id": SALES, "displayName": "Sales", "description": "Sales team", "channels": [
                general, deals,
                {"id": PARTNERS, "displayName": "Partners", "membershipType": "shared", "hostTeamId": HOST_TEAM}
            ]},
            {"id": MARKETING, "displayName": "Marketing", "description": null,
             "channels": [{"id": "19:mkt@thread.tacv2", "displayName": "General", "membershipType": "standard"}]}
        ]),
        json!([{"id": SALES, "displayName": "Sales", "description": "Sales team", "channels": [general, deals]}]),
        json!([{"id": SALES, "displayName": "Sales", "description": "Sales team", "channels": [
            general,
            {"id": SECRET, "displayName": "Secret", "membershipType": "private"}
        ]}]),
    ]
}

async fn sim() -> TestSim {
    start(world(json!([]), teams())).await
}

fn names(reply: &Reply) -> Vec<String> {
    let mut names: Vec<String> = reply.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["displayName"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn joined_teams_and_channels_show_only_what_the_caller_belongs_to() {
    let sim = sim().await;
    let adele = sim
        .token(ADELE_UPN, "Team.ReadBasic.All Channel.ReadBasic.All")
        .await;
    let joined = sim.get(&adele, "/v1.0/me/joinedTeams", &[]).await;
    assert_eq!(joined.status, 200, "{:#}", joined.body);
    assert_eq!(
        joined.body["value"],
        json!([
            {"id": SALES, "displayName": "Sales", "description": "Sales team"},
            {"id": MARKETING, "displayName": "Marketing", "description": null}
        ])
    );

    let channels = sim
        .get(&adele, &format!("/v1.0/teams/{SALES}/channels"), &[])
        .await;
    assert_eq!(channels.status, 200, "{:#}", channels.body);
    assert_eq!(names(&channels), ["Deals", "General"]);
    let deals = channels.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == DEALS)
        .unwrap();
    assert_eq!(deals["membershipType"], "private");
    assert_eq!(deals["description"], "Open deals");
    assert_eq!(deals["tenantId"], TENANT);
    assert!(
        deals["webUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://teams.microsoft.com/l/channel/19%3Adeals")
    );
    assert!(deals.get("@odata.id").is_none());

    let cara = sim.token(CARA_UPN, "Channel.ReadBasic.All").await;
    assert_eq!(
        names(
            &sim.get(&cara, &format!("/v1.0/teams/{SALES}/channels"), &[])
                .await
        ),
        ["General", "Secret"]
    );

    let private = sim
        .get(
            &adele,
            &format!("/v1.0/teams/{SALES}/channels?$filter=membershipType%20eq%20'private'"),
            &[],
        )
        .await;
    assert_eq!(names(&private), ["Deals"]);
    let selected = sim
        .get(
            &adele,
            &format!("/v1.0/teams/{SALES}/channels?$select=displayName"),
            &[],
        )
        .await;
    for channel in selected.body["value"].as_array().unwrap() {
        let mut keys: Vec<&str> = channel
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["displayName", "id"]);
    }
    let bad = sim
        .get(
            &adele,
            &format!("/v1.0/teams/{SALES}/channels?$select=colour"),
            &[],
        )
        .await;
    bad.assert_graph_error(
        400,
        "BadRequest",
        "Could not find a property named 'colour' on type 'microsoft.graph.channel'.",
    );

    let all = sim
        .get(&adele, &format!("/v1.0/teams/{SALES}/allChannels"), &[])
        .await;
    assert_eq!(names(&all), ["Deals", "General", "Partners"]);
    let partners = all.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == PARTNERS)
        .unwrap();
    assert_eq!(
        partners["@odata.id"],
        format!(
            "{}/v1.0/tenants/{TENANT}/teams/{HOST_TEAM}/channels/{PARTNERS}",
            sim.base
        )
    );

    let ben = sim.token(BEN_UPN, "Channel.ReadBasic.All").await;
    sim.get(&ben, &format!("/v1.0/teams/{MARKETING}/channels"), &[])
        .await
        .assert_graph_error(403, "Forbidden", "Forbidden");
    let unknown = sim
        .get(
            &ben,
            "/v1.0/teams/3d8b0f6e-c4a5-4b92-9d4e-5f6a7b8c9d0e/channels",
            &[],
        )
        .await;
    assert_eq!(unknown.status, 404);
    let no_scope = sim.token(ADELE_UPN, "User.Read").await;
    sim.get(&no_scope, "/v1.0/me/joinedTeams", &[])
        .await
        .assert_graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
}

#[tokio::test]
async fn channel_messages_are_created_with_graphs_shape_and_limits() {
    let sim = sim().await;
    let adele = sim.token(ADELE_UPN, "ChannelMessage.Send").await;
    let path = format!("/v1.0/teams/{SALES}/channels/{}/messages", enc(DEALS));
    let html = "<p>Deal <b>Contoso</b> closed</p>";
    let posted = sim
        .post(
            &adele,
            &path,
            json!({"body": {"contentType": "html", "content": html}}),
        )
        .await;
    assert_eq!(posted.status, 201, "{:#}", posted.body);
    let m = &posted.body;
    let id = m["id"].as_str().unwrap();
    assert!(
        id.len() >= 13 && id.bytes().all(|b| b.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(m["etag"], id);
    assert_eq!(m["messageType"], "message");
    assert_eq!(m["body"], json!({"contentType": "html", "content": html}));
    assert_eq!(
        m["channelIdentity"],
        json!({"teamId": SALES, "channelId": DEALS})
    );
    assert_eq!(m["chatId"], Value::Null);
    assert_eq!(m["from"]["user"]["id"], ADELE);
    assert_eq!(m["from"]["user"]["displayName"], "Adele Vance");
    assert_eq!(m["from"]["user"]["userIdentityType"], "aadUser");
    let created = m["createdDateTime"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && created.len() == "2021-03-29T03:53:52.035Z".len(),
        "{created}"
    );
    assert!(m["webUrl"].as_str().unwrap().starts_with(&format!(
        "https://teams.microsoft.com/l/message/{}/{id}?groupId={SALES}",
        enc(DEALS)
    )));
    assert!(
        m["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/messages/$entity")
    );

    let text = sim
        .post(&adele, &path, json!({"body": {"content": "plain words"}}))
        .await;
    assert_eq!(text.status, 201);
    assert_eq!(text.body["body"]["contentType"], "text");
    assert!(text.body["id"].as_str().unwrap().parse::<u64>().unwrap() > id.parse::<u64>().unwrap());

    let limit = "x".repeat(28 * 1024);
    let general = format!("/v1.0/teams/{SALES}/channels/{}/messages", enc(GENERAL));
    assert_eq!(
        sim.post(&adele, &general, json!({"body": {"content": limit}}))
            .await
            .status,
        201
    );
    let over = sim
        .post(
            &adele,
            &general,
            json!({"body": {"content": format!("{limit}x")}}),
        )
        .await;
    over.assert_graph_error(413, "RequestEntityTooLarge", "Request Entity too large");

    let secret = sim
        .post(
            &adele,
            &format!("/v1.0/teams/{SALES}/channels/{}/messages", enc(SECRET)),
            json!({"body": {"content": "hi"}}),
        )
        .await;
    secret.assert_graph_error(403, "Forbidden", "Forbidden");
    let no_body = sim
        .post(&adele, &general, json!({"subject": "nothing"}))
        .await;
    no_body.assert_graph_error(400, "BadRequest", "Missing required property 'body'.");
    let reader = sim.token(ADELE_UPN, "Channel.ReadBasic.All").await;
    sim.post(&reader, &general, json!({"body": {"content": "hi"}}))
        .await
        .assert_graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );

    let log = sim.control(Method::GET, "/_sim/teams/messages", None).await;
    let log = log.body.as_array().unwrap();
    assert_eq!(log.len(), 3, "the refused posts are not recorded: {log:#?}");
    assert_eq!(log[0]["id"], id);
    assert_eq!(log[0]["teamId"], SALES);
    assert_eq!(log[0]["channelId"], DEALS);
    assert_eq!(log[0]["chatId"], Value::Null);
    assert_eq!(log[0]["senderId"], ADELE);
    assert_eq!(log[0]["senderUserPrincipalName"], ADELE_UPN);
    assert_eq!(log[0]["contentType"], "html");
    assert_eq!(log[0]["content"], html);
    assert_eq!(log[0]["clientId"], CLIENT_ID);
}

#[tokio::test]
async fn a_channel_takes_four_messages_a_second_from_one_app() {
    let sim = sim().await;
    let ben = sim.token(BEN_UPN, "ChannelMessage.Send").await;
    let path = format!("/v1.0/teams/{SALES}/channels/{}/messages", enc(GENERAL));
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for n in 0..5 {
        let reply = sim
            .post(
                &ben,
                &path,
                json!({"body": {"content": format!("update {n}")}}),
            )
            .await;
        if reply.status == 429 {
            retry_after = reply.header("retry-after").map(str::to_owned);
            assert_eq!(reply.body["error"]["code"], "TooManyRequests");
        }
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses, [201, 201, 201, 201, 429]);
    assert_eq!(retry_after.as_deref(), Some("1"));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        sim.post(&ben, &path, json!({"body": {"content": "later"}}))
            .await
            .status,
        201
    );
    let off = sim
        .control(
            Method::POST,
            "/_sim/teams/rate-limit",
            Some(json!({"perChannelPerSecond": 0})),
        )
        .await;
    assert_eq!(off.status, 204);
    for n in 0..6 {
        assert_eq!(
            sim.post(
                &ben,
                &path,
                json!({"body": {"content": format!("burst {n}")}})
            )
            .await
            .status,
            201
        );
    }
}

fn member(bind: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"], "user@odata.bind": bind})
}

#[tokio::test]
async fn chats_reuse_one_on_one_and_take_messages_from_members() {
    let sim = sim().await;
    let adele = sim.token(ADELE_UPN, "Chat.Create ChatMessage.Send").await;
    let one = sim
        .post(
            &adele,
            "/v1.0/chats",
            json!({"chatType": "oneOnOne", "members": [
                member(&format!("https://graph.microsoft.com/v1.0/users('{ADELE}')")),
                member(&format!("https://graph.microsoft.com/v1.0/users('{BEN_UPN}')")),
            ]}),
        )
        .await;
    assert_eq!(one.status, 201, "{:#}", one.body);
    let mut pair = [ADELE, BEN];
    pair.sort_unstable();
    let chat_id = format!("19:{}_{}@unq.gbl.spaces", pair[0], pair[1]);
    assert_eq!(one.body["id"], chat_id.as_str());
    assert_eq!(one.body["chatType"], "oneOnOne");
    assert_eq!(one.body["topic"], Value::Null);
    assert_eq!(one.body["tenantId"], TENANT);
    assert!(
        one.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#chats/$entity")
    );

    // The same pair again, named the other way round: the existing chat comes back.
    let again = sim
        .post(
            &adele,
            "/v1.0/chats",
            json!({"chatType": "oneOnOne", "members": [
                member(&format!("{}/v1.0/users('{BEN}')", sim.base)),
                member(&format!("https://graph.microsoft.com/v1.0/users('{ADELE_UPN}')")),
            ]}),
        )
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, one.body);

    let group = sim
        .post(
            &adele,
            "/v1.0/chats",
            json!({"chatType": "group", "topic": "Deal room", "members": [
                member(&format!("https://graph.microsoft.com/v1.0/users('{ADELE}')")),
                member(&format!("https://graph.microsoft.com/v1.0/users('{BEN}')")),
                member(&format!("https://graph.microsoft.com/v1.0/users('{CARA_UPN}')")),
            ]}),
        )
        .await;
    assert_eq!(group.status, 201);
    assert!(group.body["id"].as_str().unwrap().ends_with("@thread.v2"));
    assert_eq!(group.body["topic"], "Deal room");

    let outsider = sim
        .post(
            &adele,
            "/v1.0/chats",
            json!({"chatType": "oneOnOne", "members": [
                member(&format!("https://graph.microsoft.com/v1.0/users('{BEN}')")),
                member(&format!("https://graph.microsoft.com/v1.0/users('{CARA}')")),
            ]}),
        )
        .await;
    assert_eq!(outsider.status, 403, "{:#}", outsider.body);
    let titled = sim
        .post(
            &adele,
            "/v1.0/chats",
            json!({"chatType": "oneOnOne", "topic": "no", "members": [
                member(&format!("https://graph.microsoft.com/v1.0/users('{ADELE}')")),
                member(&format!("https://graph.microsoft.com/v1.0/users('{BEN}')")),
            ]}),
        )
        .await;
    assert_eq!(titled.status, 400);
    let stranger = sim
        .post(
            &adele,
            "/v1.0/chats",
            json!({"chatType": "oneOnOne", "members": [
                member(&format!("https://graph.microsoft.com/v1.0/users('{ADELE}')")),
                member("https://graph.microsoft.com/v1.0/users('nobody@contoso.com')"),
            ]}),
        )
        .await;
    assert_eq!(stranger.status, 404);
    let bad_role = sim
        .post(
            &adele,
            "/v1.0/chats",
            json!({"chatType": "oneOnOne", "members": [
                member(&format!("https://graph.microsoft.com/v1.0/users('{ADELE}')")),
                {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["admin"],
                 "user@odata.bind": format!("https://graph.microsoft.com/v1.0/users('{BEN}')")},
            ]}),
        )
        .await;
    assert_eq!(bad_role.status, 400);
    let garbage = sim
        .send(Method::POST, Some(&adele), "/v1.0/chats", None)
        .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.body["error"]["code"], "BadRequest");

    let message = sim
        .post(
            &adele,
            &format!("/v1.0/chats/{}/messages", enc(&chat_id)),
            json!({"body": {"contentType": "html", "content": "<p>Hi Ben</p>"}}),
        )
        .await;
    assert_eq!(message.status, 201, "{:#}", message.body);
    assert_eq!(message.body["chatId"], chat_id.as_str());
    assert_eq!(message.body["channelIdentity"], Value::Null);
    assert_eq!(message.body["body"]["content"], "<p>Hi Ben</p>");
    let cara = sim.token(CARA_UPN, "ChatMessage.Send").await;
    sim.post(
        &cara,
        &format!("/v1.0/chats/{}/messages", enc(&chat_id)),
        json!({"body": {"content": "let me in"}}),
    )
    .await
    .assert_graph_error(403, "Forbidden", "Forbidden");
    let too_big = sim
        .post(
            &adele,
            &format!("/v1.0/chats/{}/messages", enc(&chat_id)),
            json!({"body": {"content": "y".repeat(28 * 1024 + 1)}}),
        )
        .await;
    assert_eq!(too_big.status, 413);
    let no_create = sim.token(ADELE_UPN, "ChatMessage.Send").await;
    sim.post(
        &no_create,
        "/v1.0/chats",
        json!({"chatType": "group", "members": []}),
    )
    .await
    .assert_graph_error(
        403,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    );

    let chats = sim.control(Method::GET, "/_sim/chats", None).await;
    let chats = chats.body.as_array().unwrap();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0]["id"], chat_id.as_str());
    let mut upns: Vec<&str> = chats[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userPrincipalName"].as_str().unwrap())
        .collect();
    upns.sort_unstable();
    assert_eq!(upns, [ADELE_UPN, BEN_UPN]);
    assert_eq!(chats[0]["members"][0]["roles"], json!(["owner"]));
    let posted = sim.control(Method::GET, "/_sim/teams/messages", None).await;
    assert_eq!(posted.body[0]["chatId"], chat_id.as_str());
    assert_eq!(posted.body[0]["teamId"], Value::Null);
}

/// Microsoft's Graph SDK for Python sends `/v1.0//me/...` (a doubled slash after the base URL); Graph
/// serves it like the single-slash path, and so must the sim.
#[tokio::test]
async fn doubled_slashes_in_the_path_are_served_like_single_ones() {
    let sim = sim().await;
    let adele = sim.token(ADELE_UPN, "Team.ReadBasic.All").await;
    let single = sim.get(&adele, "/v1.0/me/joinedTeams", &[]).await;
    let doubled = sim.get(&adele, "/v1.0//me//joinedTeams", &[]).await;
    assert_eq!(single.status, 200);
    assert_eq!(doubled.status, 200);
    assert_eq!(doubled.body["value"], single.body["value"]);
}

#[tokio::test]
async fn a_post_can_land_and_lose_its_answer_and_be_read_back() {
    let sim = sim().await;
    let adele = sim.token(ADELE_UPN, "ChannelMessage.Send").await;
    let reader = sim
        .token(ADELE_UPN, "ChannelMessage.Send ChannelMessage.Read.All")
        .await;
    let path = format!("/v1.0/teams/{SALES}/channels/{}/messages", enc(GENERAL));
    let body = |text: &str| json!({"body": {"contentType": "html", "content": text}});

    // after: fail: stored, then answered 503.
    let fault = sim
        .control(
            Method::POST,
            "/_sim/faults",
            Some(
                json!({"method": "POST", "pathPrefix": format!("/v1.0/teams/{SALES}/"),
                        "status": 503, "after": "fail"}),
            ),
        )
        .await;
    assert_eq!(fault.status, 204, "{:#}", fault.body);
    let failed = sim.post(&adele, &path, body("<p>first</p>")).await;
    assert_eq!(failed.status, 503);
    // after: drop: the status line goes out, the body is cut.
    sim.control(
        Method::POST,
        "/_sim/faults",
        Some(json!({"method": "POST", "pathPrefix": format!("/v1.0/teams/{SALES}/"), "after": "drop"})),
    )
    .await;
    let dropped = sim
        .http
        .post(sim.url(&path))
        .bearer_auth(&adele)
        .json(&body("<p>second</p>"))
        .send()
        .await;
    let read = match dropped {
        Ok(response) => response.bytes().await.map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(read.is_err(), "the answer is cut");
    // Both landed.
    let posted = sim.control(Method::GET, "/_sim/teams/messages", None).await;
    assert_eq!(
        posted.body.as_array().unwrap().len(),
        2,
        "{:#}",
        posted.body
    );

    // Reading back needs ChannelMessage.Read.All.
    let refused = sim.get(&adele, &path, &[]).await;
    assert_eq!(refused.status, 403, "{:#}", refused.body);
    let listed = sim.get(&reader, &format!("{path}?$top=1"), &[]).await;
    assert_eq!(listed.status, 200, "{:#}", listed.body);
    let page = listed.body["value"].as_array().unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["body"]["content"], "<p>second</p>", "newest first");
    assert_eq!(page[0]["from"]["user"]["id"], ADELE);
    let next = listed.body["@odata.nextLink"]
        .as_str()
        .expect("a second page");
    let rest = sim.get(&reader, next, &[]).await;
    assert_eq!(rest.status, 200, "{:#}", rest.body);
    assert_eq!(rest.body["value"][0]["body"]["content"], "<p>first</p>");
    assert!(rest.body.get("@odata.nextLink").is_none());
}

//! The Microsoft Graph calls of teams-post, as the user (delegated token from the shared
//! [`TokenProvider`]), through the shared [`GraphClient`] (gzip, `Retry-After`, one
//! refresh on a 401, typed errors): post a chatMessage to a channel or a chat, create a
//! chat, list joined teams and a team's channels (graph-contract §7).
//!
//! Posts use a client without in-process retries: a 429 or 5xx comes straight back to the
//! handler, which retries the SQS message after the delay (visibility change), keeping the
//! invocation short and the batch's other posts going. Reads (share-target refresh) use
//! the shared client's normal retries.

use std::sync::Arc;

use async_trait::async_trait;
use connector_core::domain::UserKey;
use connector_core::graph::{GraphClient, GraphError, RetryPolicy};
use connector_core::oauth::{TokenProvider, UserBearer};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

/// What Graph answered to a message post (`201 Created`, a chatMessage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostedMessage {
    /// Empty when Graph's answer could not be read (the message exists nonetheless).
    pub id: String,
    pub web_url: Option<String>,
}

/// One entry of `GET /me/joinedTeams` (only these three properties are guaranteed).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinedTeam {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// One channel of `GET /teams/{id}/channels`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub membership_type: Option<String>,
}

/// A message read back from a channel or chat (only what finding our own post needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenMessage {
    pub id: String,
    pub web_url: Option<String>,
    /// `from.user.id`; `None` for application or system messages.
    pub from_user_id: Option<String>,
    pub created: Option<time::OffsetDateTime>,
    /// `body.content` as Teams stored it.
    pub content: String,
}

/// Where to read recent messages from.
#[derive(Clone, Copy, Debug)]
pub enum ReadBack<'a> {
    Channel {
        team_id: &'a str,
        channel_id: &'a str,
    },
    Chat {
        chat_id: &'a str,
    },
}

/// Pages read back at most (50 messages each): a busy channel gets far fewer top-level
/// messages than this within one post's retry window.
pub const READ_BACK_PAGES: usize = 10;

/// The Teams part of Graph, as the handler needs it.
#[async_trait]
pub trait TeamsGraph: Send + Sync {
    async fn post_to_channel(
        &self,
        user: &UserKey,
        team_id: &str,
        channel_id: &str,
        html: &str,
        deadline: Instant,
    ) -> Result<PostedMessage, GraphError>;

    async fn post_to_chat(
        &self,
        user: &UserKey,
        chat_id: &str,
        html: &str,
        deadline: Instant,
    ) -> Result<PostedMessage, GraphError>;

    /// Creates a chat of the user with `members` (UPNs or object ids): one other member
    /// makes a one-on-one chat (Graph returns the existing one if there is one), more make
    /// a group chat with `topic`. Returns the chat id.
    async fn create_chat(
        &self,
        user: &UserKey,
        members: &[String],
        topic: Option<&str>,
        deadline: Instant,
    ) -> Result<String, GraphError>;

    async fn joined_teams(
        &self,
        user: &UserKey,
        deadline: Instant,
    ) -> Result<Vec<JoinedTeam>, GraphError>;

    async fn channels(
        &self,
        user: &UserKey,
        team_id: &str,
        deadline: Instant,
    ) -> Result<Vec<Channel>, GraphError>;

    /// The target's messages created at or after `since`, as far as they can be read
    /// ([`READ_BACK_PAGES`] pages, newest first where Graph orders them so). `Ok(None)`:
    /// the listing went on past the page cap without reaching `since`, so the answer is
    /// incomplete.
    async fn messages_since(
        &self,
        user: &UserKey,
        target: ReadBack<'_>,
        since: time::OffsetDateTime,
        deadline: Instant,
    ) -> Result<Option<Vec<SeenMessage>>, GraphError>;

    /// Drops what the container remembers of the user's tokens (after a status change).
    fn forget(&self, user: &UserKey);
}

/// No in-process retries: the handler retries through SQS.
pub fn post_retry_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 1,
        throttle_retries: 0,
        ..RetryPolicy::default()
    }
}

/// [`TeamsGraph`] over the shared Graph client and token provider.
pub struct GraphTeams {
    posts: Arc<GraphClient>,
    reads: Arc<GraphClient>,
    tokens: Arc<TokenProvider>,
}

#[derive(Deserialize)]
struct Listing<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

impl GraphTeams {
    /// `posts` should be built with [`post_retry_policy`]; `reads` with the default one.
    pub fn new(
        posts: Arc<GraphClient>,
        reads: Arc<GraphClient>,
        tokens: Arc<TokenProvider>,
    ) -> Self {
        Self {
            posts,
            reads,
            tokens,
        }
    }

    /// `{GRAPH_BASE_URL}/v1.0/{segments...}`, each segment percent-encoded as a path segment
    /// (channel ids carry `:` and `@`, which stay; anything that would end the segment is
    /// escaped).
    fn url(client: &GraphClient, segments: &[&str]) -> Result<String, GraphError> {
        let mut url = url::Url::parse(client.base())
            .map_err(|error| GraphError::Malformed(format!("Graph base URL: {error}")))?;
        url.path_segments_mut()
            .map_err(|()| GraphError::Malformed("Graph base URL cannot take a path".into()))?
            .extend(segments);
        Ok(url.into())
    }

    /// `user@odata.bind` of a member: `{base}/users('{id or UPN}')`, quotes doubled as OData
    /// string literals want.
    fn user_bind(&self, member: &str) -> String {
        format!(
            "{}/users('{}')",
            self.posts.base(),
            member.replace('\'', "''")
        )
    }

    async fn post(
        &self,
        user: &UserKey,
        url: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Vec<u8>, GraphError> {
        let bearer = UserBearer {
            provider: &self.tokens,
            key: user.clone(),
        };
        let session = self
            .posts
            .session(&user.to_string(), &bearer, Some(deadline));
        session.post_json(url, body).await
    }

    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        user: &UserKey,
        first: String,
        deadline: Instant,
    ) -> Result<Vec<T>, GraphError> {
        let bearer = UserBearer {
            provider: &self.tokens,
            key: user.clone(),
        };
        let session = self
            .reads
            .session(&user.to_string(), &bearer, Some(deadline));
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            let page: Listing<T> = session.get_json(&url, &[]).await?;
            out.extend(page.value);
            next = page.next_link;
        }
        Ok(out)
    }
}

/// One chatMessage of a listing, as documented in
/// https://learn.microsoft.com/en-us/graph/api/resources/chatmessage (Properties: `id`,
/// `createdDateTime`, `from` (chatMessageFromIdentitySet, `user.id`), `body`
/// (itemBody: `content`), `webUrl`; read 2026-12-05). Every field is read leniently.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedMessage {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    web_url: Option<String>,
    #[serde(default)]
    created_date_time: Option<String>,
    #[serde(default)]
    from: Option<Value>,
    #[serde(default)]
    body: Option<Value>,
}

impl ListedMessage {
    fn seen(self) -> SeenMessage {
        let id = match &self.id {
            Value::String(id) => id.clone(),
            Value::Number(id) => id.to_string(),
            _ => String::new(),
        };
        SeenMessage {
            id,
            web_url: self.web_url,
            from_user_id: self
                .from
                .as_ref()
                .and_then(|from| from["user"]["id"].as_str())
                .map(str::to_owned),
            created: self.created_date_time.as_deref().and_then(|text| {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .ok()
            }),
            content: self
                .body
                .as_ref()
                .and_then(|body| body["content"].as_str())
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// Reads a chatMessage answer; the post happened whatever the body holds.
fn posted(body: &[u8]) -> PostedMessage {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let id = match &value["id"] {
        Value::String(id) => id.clone(),
        Value::Number(id) => id.to_string(),
        _ => String::new(),
    };
    PostedMessage {
        id,
        web_url: value["webUrl"].as_str().map(str::to_owned),
    }
}

/// Reads a chat answer (`201 Created`, a chat): its id.
fn created_chat(answer: &[u8]) -> Result<String, GraphError> {
    let chat: Value = serde_json::from_slice(answer)
        .map_err(|error| GraphError::Malformed(format!("chat answer: {:?}", error.classify())))?;
    chat["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| GraphError::Malformed("chat answer without an id".into()))
}

fn message_body(html: &str) -> Value {
    json!({"body": {"contentType": "html", "content": html}})
}

#[async_trait]
impl TeamsGraph for GraphTeams {
    async fn post_to_channel(
        &self,
        user: &UserKey,
        team_id: &str,
        channel_id: &str,
        html: &str,
        deadline: Instant,
    ) -> Result<PostedMessage, GraphError> {
        let url = Self::url(
            &self.posts,
            &["teams", team_id, "channels", channel_id, "messages"],
        )?;
        let body = self.post(user, &url, &message_body(html), deadline).await?;
        Ok(posted(&body))
    }

    async fn post_to_chat(
        &self,
        user: &UserKey,
        chat_id: &str,
        html: &str,
        deadline: Instant,
    ) -> Result<PostedMessage, GraphError> {
        let url = Self::url(&self.posts, &["chats", chat_id, "messages"])?;
        let body = self.post(user, &url, &message_body(html), deadline).await?;
        Ok(posted(&body))
    }

    async fn create_chat(
        &self,
        user: &UserKey,
        members: &[String],
        topic: Option<&str>,
        deadline: Instant,
    ) -> Result<String, GraphError> {
        let member = |id: &str| {
            json!({
                "@odata.type": "#microsoft.graph.aadUserConversationMember",
                "roles": ["owner"],
                "user@odata.bind": self.user_bind(id),
            })
        };
        let mut all = vec![member(user.user_id.as_str())];
        all.extend(members.iter().map(|m| member(m)));
        let body = if members.len() == 1 {
            json!({"chatType": "oneOnOne", "members": all})
        } else {
            let mut body = json!({"chatType": "group", "members": all});
            if let Some(topic) = topic.filter(|topic| !topic.trim().is_empty()) {
                body["topic"] = json!(topic);
            }
            body
        };
        let url = Self::url(&self.posts, &["chats"])?;
        let answer = self.post(user, &url, &body, deadline).await?;
        created_chat(&answer)
    }

    async fn joined_teams(
        &self,
        user: &UserKey,
        deadline: Instant,
    ) -> Result<Vec<JoinedTeam>, GraphError> {
        let url = Self::url(&self.reads, &["me", "joinedTeams"])?;
        self.list(user, url, deadline).await
    }

    async fn channels(
        &self,
        user: &UserKey,
        team_id: &str,
        deadline: Instant,
    ) -> Result<Vec<Channel>, GraphError> {
        let mut url = url::Url::parse(&Self::url(&self.reads, &["teams", team_id, "channels"])?)
            .map_err(|error| GraphError::Malformed(error.to_string()))?;
        url.query_pairs_mut()
            .append_pair("$select", "id,displayName,membershipType");
        self.list(user, url.into(), deadline).await
    }

    async fn messages_since(
        &self,
        user: &UserKey,
        target: ReadBack<'_>,
        since: time::OffsetDateTime,
        deadline: Instant,
    ) -> Result<Option<Vec<SeenMessage>>, GraphError> {
        // Channel: GET /teams/{id}/channels/{id}/messages, `$top` at most 50, no order
        // documented (https://learn.microsoft.com/en-us/graph/api/channel-list-messages;
        // read 2026-12-05). Chat: GET /chats/{id}/messages with `$orderby=createdDateTime
        // desc` and `$top` at most 50 (https://learn.microsoft.com/en-us/graph/api/chat-list-messages;
        // read 2026-12-05). Either way every page is searched, and the reading stops at the
        // first page holding nothing as new as `since` (newest first) or at the page cap.
        let mut url = url::Url::parse(&match target {
            ReadBack::Channel {
                team_id,
                channel_id,
            } => Self::url(
                &self.reads,
                &["teams", team_id, "channels", channel_id, "messages"],
            )?,
            ReadBack::Chat { chat_id } => Self::url(&self.reads, &["chats", chat_id, "messages"])?,
        })
        .map_err(|error| GraphError::Malformed(error.to_string()))?;
        url.query_pairs_mut().append_pair("$top", "50");
        if matches!(target, ReadBack::Chat { .. }) {
            url.query_pairs_mut()
                .append_pair("$orderby", "createdDateTime desc");
        }
        let bearer = UserBearer {
            provider: &self.tokens,
            key: user.clone(),
        };
        let session = self
            .reads
            .session(&user.to_string(), &bearer, Some(deadline));
        let ordered = matches!(target, ReadBack::Chat { .. });
        let mut found = Vec::new();
        let mut next = Some(String::from(url));
        for _ in 0..READ_BACK_PAGES {
            let Some(page_url) = next.take() else {
                return Ok(Some(found));
            };
            let page: Listing<ListedMessage> = session.get_json(&page_url, &[]).await?;
            let listed = page.value.len();
            let mut older = 0;
            for message in page.value.into_iter().map(ListedMessage::seen) {
                match message.created {
                    Some(created) if created < since => older += 1,
                    _ => found.push(message),
                }
            }
            next = page.next_link;
            // Ordered newest first (chats, documented): past the first older message all is
            // older. Unordered (channels): only a page wholly older ends the search early.
            if (ordered && older > 0) || (listed > 0 && older == listed) {
                return Ok(Some(found));
            }
        }
        Ok(next.is_none().then_some(found))
    }

    fn forget(&self, user: &UserKey) {
        self.tokens.forget(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_leniently() {
        assert_eq!(
            posted(br#"{"id":"1616990032035","webUrl":"https://teams.microsoft.com/l/message/x"}"#),
            PostedMessage {
                id: "1616990032035".into(),
                web_url: Some("https://teams.microsoft.com/l/message/x".into())
            }
        );
        assert_eq!(posted(br#"{"id":1616990032035}"#).id, "1616990032035");
        assert_eq!(
            posted(b"not json"),
            PostedMessage {
                id: String::new(),
                web_url: None
            }
        );
    }

    #[test]
    fn urls_escape_what_would_end_a_segment() {
        let client = GraphClient::new(
            reqwest::Client::new(),
            &connector_core::config::BaseUrl::parse("http://127.0.0.1:9").expect("url"),
        );
        assert_eq!(
            GraphTeams::url(
                &client,
                &["teams", "t1", "channels", "19:abc@thread.tacv2", "messages"]
            )
            .expect("url"),
            "http://127.0.0.1:9/v1.0/teams/t1/channels/19:abc@thread.tacv2/messages"
        );
        assert_eq!(
            GraphTeams::url(&client, &["chats", "19:a/b?c#d", "messages"]).expect("url"),
            "http://127.0.0.1:9/v1.0/chats/19:a%2Fb%3Fc%23d/messages"
        );
    }
}

#[cfg(test)]
#[path = "graph_conformance.rs"]
mod conformance;

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

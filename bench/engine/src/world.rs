//! The benchmark's Microsoft side: one app, one tenant (admin-granted mail), users with
//! generated mailboxes of a chosen size in their Inbox (20 % CRM matches), served by
//! microsoft-sim in this process; users signed in through the sim's real authorize and token
//! endpoints.

use anyhow::{Context, Result};
use microsoft_sim::identity::testing::{SignIn, Tokens, sign_in};
use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "6c1f0b2e-5a47-4d39-8e21-b0d7c4a9f352";
pub const CLIENT_SECRET: &str = "bench-client-secret~value";
pub const REDIRECT_URI: &str = "http://localhost:8400/auth/callback";
pub const TENANT_DOMAIN: &str = "contoso.example";
pub const MAIL_SCOPES: &str =
    "openid profile email offline_access https://graph.microsoft.com/Mail.Read";
/// The share of generated messages with a CRM participant.
pub const MATCH_RATIO: f64 = 0.2;

/// A user with a generated Inbox.
#[derive(Clone, Debug)]
pub struct MailboxUser {
    pub id: String,
    pub upn: String,
    pub messages: u64,
}

impl MailboxUser {
    pub fn new(name: &str, messages: u64) -> Self {
        MailboxUser {
            id: uuid::Uuid::new_v4().to_string(),
            upn: format!("{name}@{TENANT_DOMAIN}"),
            messages,
        }
    }
}

/// The world file: every user's Inbox generated from `seed`.
pub fn world_json(tenant: &str, users: &[MailboxUser], seed: u64) -> Value {
    let world_users: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({"id": u.id, "userPrincipalName": u.upn, "mail": u.upn, "displayName": u.upn,
                   "mailbox": "exchangeOnline", "mailFolders": []})
        })
        .collect();
    let generate: Vec<Value> = users
        .iter()
        .filter(|u| u.messages > 0)
        .map(|u| {
            json!({"user": u.upn, "folder": "inbox", "messages": u.messages, "seed": seed,
                   "crmMatchRatio": MATCH_RATIO})
        })
        .collect();
    json!({
        "apps": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "redirectUris": [REDIRECT_URI],
                  "displayName": "Office 365 connector", "permissions": ["User.Read", "Mail.Read"]}],
        "tenants": [{
            "id": tenant, "displayName": "Contoso", "verifiedDomains": [TENANT_DOMAIN],
            "userConsent": "allowed",
            "grants": [{"clientId": CLIENT_ID, "principal": "allUsers",
                        "scopes": ["openid", "profile", "email", "offline_access", "User.Read", "Mail.Read"]}],
            "users": world_users,
            "generate": generate
        }]
    })
}

/// Starts microsoft-sim on 127.0.0.1 (free port) with `world`, auto-approving sign-ins.
pub async fn start_sim(world: &Value) -> Result<SimServer> {
    let world = World::from_json(&world.to_string()).context("the benchmark world")?;
    let mut options = SimOptions::new(world);
    options.auto_approve = true;
    SimServer::start(options)
        .await
        .context("starting microsoft-sim")
}

/// Signs `upn` in through the sim's authorize page and token endpoint.
pub async fn sign_in_user(base_url: &str, tenant: &str, upn: &str) -> Result<Tokens> {
    sign_in(&SignIn {
        base_url,
        tenant,
        client_id: CLIENT_ID,
        client_secret: Some(CLIENT_SECRET),
        redirect_uri: REDIRECT_URI,
        login: upn,
        scopes: MAIL_SCOPES,
        consent_for_org: false,
        ca_pem: None,
    })
    .await
    .with_context(|| format!("signing {upn} in"))
}

/// A `/_sim/` control call; the answer as JSON (`null` when empty).
pub async fn control(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut request = http.request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "{path}: {status} {text}");
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn users_with_and_without_generated_mail_sign_in() -> Result<()> {
        let tenant = uuid::Uuid::new_v4().to_string();
        let users = [
            MailboxUser::new("avery", 20),
            MailboxUser::new("blake", 30),
            MailboxUser::new("casey", 0),
        ];
        let sim = start_sim(&world_json(&tenant, &users, 7)).await?;
        for user in &users {
            let tokens = sign_in_user(&sim.base_url(), &tenant, &user.upn).await?;
            assert!(tokens.refresh_token.is_some());
        }
        Ok(())
    }
}

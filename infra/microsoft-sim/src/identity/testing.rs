//! A client that signs a user in through the sim's public endpoints only (authorize → sign-in and consent pages,
//! or auto-approve → token), for Graph tests and tools that need real tokens. It clicks through the HTML the way
//! a user would; it never reaches into the sim's state.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

/// What to sign in with.
#[derive(Clone)]
pub struct SignIn<'a> {
    pub base_url: &'a str,
    /// Authority segment: `organizations`, `common`, a tenant GUID or domain.
    pub tenant: &'a str,
    pub client_id: &'a str,
    pub client_secret: Option<&'a str>,
    pub redirect_uri: &'a str,
    /// UPN of the account to sign in (sent as `login_hint` and typed into the sign-in page).
    pub login: &'a str,
    /// Space-separated scopes, e.g. `openid profile offline_access Mail.Read`.
    pub scopes: &'a str,
    /// Tick "Consent on behalf of your organization" when the consent page offers it.
    pub consent_for_org: bool,
    /// PEM of the CA to trust (https sims started with a TLS directory).
    pub ca_pem: Option<&'a [u8]>,
}

impl std::fmt::Debug for SignIn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("tenant", &self.tenant)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// The token response (secrets redacted in Debug).
#[derive(Clone, serde::Deserialize)]
pub struct Tokens {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    /// Empty when the response left `scope` out (it is optional).
    #[serde(default)]
    pub scope: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("scope", &self.scope)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

pub fn http_client(ca_pem: Option<&[u8]>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_pem {
        builder = builder.tls_certs_only([reqwest::Certificate::from_pem(pem)?]);
    }
    Ok(builder.build()?)
}

/// Signs `login` in and redeems the code; fails with the STS error if the flow ends in an error redirect.
pub async fn sign_in(req: &SignIn<'_>) -> anyhow::Result<Tokens> {
    let client = http_client(req.ca_pem)?;
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = uuid::Uuid::new_v4().to_string();
    let authorize = format!("{}/{}/oauth2/v2.0/authorize", req.base_url, req.tenant);
    let mut response = client
        .get(&authorize)
        .query(&[
            ("client_id", req.client_id),
            ("response_type", "code"),
            ("redirect_uri", req.redirect_uri),
            ("scope", req.scopes),
            ("state", &state),
            ("login_hint", req.login),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await?;
    let mut cookie: Option<String> = None;
    for _ in 0..8 {
        if let Some(c) = response
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
        {
            cookie = c.split(';').next().map(str::to_owned);
        }
        match response.status() {
            StatusCode::FOUND => {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .context("redirect without Location")?
                    .to_owned();
                let url = url::Url::parse(&location)?;
                let params: std::collections::HashMap<String, String> =
                    url.query_pairs().into_owned().collect();
                if params.get("state") != Some(&state) {
                    bail!("state not echoed in the redirect");
                }
                if let Some(error) = params.get("error") {
                    bail!(
                        "{error}: {}",
                        params
                            .get("error_description")
                            .map(String::as_str)
                            .unwrap_or_default()
                    );
                }
                let code = params.get("code").context("redirect without code")?;
                return redeem(&client, req, code, &verifier).await;
            }
            StatusCode::OK => {
                let html = response.text().await?;
                let (action, mut fields) = first_form(&html).context("a page without a form")?;
                if html.contains("name=\"login\"") {
                    fields.retain(|(k, _)| k != "login");
                    fields.push(("login".into(), req.login.into()));
                } else if html.contains("name=\"decision\"") {
                    fields.push(("decision".into(), "accept".into()));
                    if req.consent_for_org && html.contains("name=\"org_consent\"") {
                        fields.push(("org_consent".into(), "on".into()));
                    }
                } else {
                    bail!(
                        "the sign-in stopped at a page that needs an admin: {}",
                        page_heading(&html)
                    );
                }
                let mut post = client
                    .post(format!("{}{}", req.base_url, action))
                    .form(&fields);
                if let Some(c) = &cookie {
                    post = post.header(reqwest::header::COOKIE, c);
                }
                response = post.send().await?;
            }
            status => bail!(
                "authorize answered {status}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    bail!("the sign-in did not finish")
}

async fn redeem(
    client: &reqwest::Client,
    req: &SignIn<'_>,
    code: &str,
    verifier: &str,
) -> anyhow::Result<Tokens> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", req.client_id),
        ("code", code),
        ("redirect_uri", req.redirect_uri),
        ("code_verifier", verifier),
    ];
    if let Some(secret) = req.client_secret {
        form.push(("client_secret", secret));
    }
    token_request(client, req.base_url, req.tenant, &form).await
}

/// Redeems a refresh token.
pub async fn refresh(
    base_url: &str,
    tenant: &str,
    client_id: &str,
    client_secret: Option<&str>,
    refresh_token: &str,
    ca_pem: Option<&[u8]>,
) -> anyhow::Result<Tokens> {
    let client = http_client(ca_pem)?;
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", client_id),
        ("refresh_token", refresh_token),
    ];
    if let Some(secret) = client_secret {
        form.push(("client_secret", secret));
    }
    token_request(&client, base_url, tenant, &form).await
}

async fn token_request(
    client: &reqwest::Client,
    base_url: &str,
    tenant: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<Tokens> {
    let response = client
        .post(format!("{base_url}/{tenant}/oauth2/v2.0/token"))
        .form(form)
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        let error: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        bail!(
            "token endpoint {status}: {} {}",
            error["error"],
            error["error_description"]
        );
    }
    Ok(serde_json::from_str(&body)?)
}

/// The first form of a page: its action and its hidden fields.
pub fn first_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let form_start = html.find("<form")?;
    let form_end = html[form_start..].find("</form>")? + form_start;
    let form = &html[form_start..form_end];
    let action = attribute(form, "action")?;
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let end = rest[i..].find('>')? + i;
        let tag = &rest[i..end];
        if attribute(tag, "type").as_deref() == Some("hidden")
            && let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value"))
        {
            fields.push((name, value));
        }
        rest = &rest[end..];
    }
    Some((action, fields))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn page_heading(html: &str) -> String {
    html.find("<h1>")
        .and_then(|i| {
            html[i + 4..]
                .find("</h1>")
                .map(|j| html[i + 4..i + 4 + j].to_owned())
        })
        .unwrap_or_default()
}

//! `/{tenant}/oauth2/v2.0/token`: client authentication (client_secret_post, client_secret_basic, private_key_jwt
//! client assertions: [`assertion`]; expired secrets answer AADSTS7000222), the
//! `authorization_code` grant (single use, 10-minute life, PKCE, redirect_uri match) and the `refresh_token`
//! grant (rotation, 90-day inactivity on the sim clock, revocation, consent and service-principal checks), with
//! Microsoft's success and error bodies and headers.

use std::collections::{BTreeSet, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::Authority;
use super::access::opaque;
use super::assertion;
use super::authorize::{CODE_LIFETIME, client_info};
use super::errors::{self, StsError, ordered_json, sts_json_headers};
use super::flows::{PkceMethod, RefreshRecord, random_token};
use super::jwt;
use super::scopes::{self, RequestedScopes};
use crate::state::SharedSim;
use crate::state::Sim;

/// Refresh tokens die after 90 days without use (each RT's own clock: a new RT is issued on every use).
pub const REFRESH_INACTIVITY: time::Duration = time::Duration::days(90);
/// id_token lifetime (Microsoft: one hour).
const ID_TOKEN_LIFETIME: time::Duration = time::Duration::hours(1);

type Form = HashMap<String, String>;

fn parse_form(body: &[u8]) -> Form {
    let mut form = Form::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        form.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    form
}

/// Client credentials from `Authorization: Basic` (RFC 6749 §2.3.1: form-urlencoded id and secret).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

pub async fn token(
    State(sim): State<SharedSim>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match exchange(&sim, &tenant, &headers, &body) {
        Ok(response) => response,
        Err(e) => e.token_response(sim.base_url(), sim.now()),
    }
}

fn required<'a>(form: &'a Form, name: &str) -> Result<&'a str, StsError> {
    form.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| errors::invalid_request_missing(name))
}

fn exchange(
    sim: &Sim,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, StsError> {
    let authority = Authority::resolve(sim, tenant)?;
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let form = if form_encoded {
        parse_form(body)
    } else {
        Form::new()
    };
    let grant_type = required(&form, "grant_type")?.to_owned();
    let basic = basic_credentials(headers);
    let client_id = match (&basic, form.get("client_id").filter(|c| !c.is_empty())) {
        (Some((id, _)), Some(form_id)) if !id.eq_ignore_ascii_case(form_id) => {
            return Err(StsError::new(
                "invalid_request",
                900144,
                "The client_id in the body does not match the one in the Authorization header.",
            ));
        }
        (Some((id, _)), _) => id.clone(),
        (None, Some(id)) => id.clone(),
        (None, None) => return Err(errors::invalid_request_missing("client_id")),
    };
    if grant_type != "authorization_code" && grant_type != "refresh_token" {
        return Err(errors::unsupported_grant_type(&grant_type));
    }
    let secret = basic
        .map(|(_, s)| s)
        .or_else(|| form.get("client_secret").cloned())
        .filter(|s| !s.is_empty());
    let (app_secret, expired_secrets, key_credentials) = {
        let dir = sim.directory();
        let Some(app) = dir.app(&client_id) else {
            let name = match &authority {
                Authority::Tenant { id, .. } => dir
                    .tenant(id)
                    .map(|t| t.display_name.clone())
                    .unwrap_or_default(),
                _ => tenant.to_owned(),
            };
            return Err(errors::app_not_found(&client_id, &name));
        };
        (
            app.client_secret.clone(),
            app.expired_secrets.clone(),
            app.key_credentials.clone(),
        )
    };
    let confidential = app_secret.is_some() || !key_credentials.is_empty();
    let assertion = form.get("client_assertion").filter(|a| !a.is_empty());
    match (assertion, &secret) {
        (Some(_), Some(_)) => {
            return Err(errors::assertion_malformed(
                "Only one of 'client_assertion' and 'client_secret' may be presented.",
            ));
        }
        (Some(_), None) if !confidential => return Err(errors::public_client_with_secret()),
        (Some(assertion), None) => {
            // `aud` is the token endpoint the client called (Microsoft: "https://login.microsoftonline.com/
            // {tenantId}/oauth2/v2.0/token").
            let token_url = format!(
                "{}/{tenant}/oauth2/v2.0/token",
                sim.base_url().trim_end_matches('/')
            );
            assertion::verify(
                sim,
                &client_id,
                &key_credentials,
                &token_url,
                form.get("client_assertion_type").map(String::as_str),
                assertion,
            )?;
        }
        (None, None) if confidential => return Err(errors::secret_missing()),
        (None, None) => {}
        (None, Some(_)) if !confidential => return Err(errors::public_client_with_secret()),
        (None, Some(given)) => {
            let current = app_secret
                .as_deref()
                .is_some_and(|expected| constant_time_eq(expected.as_bytes(), given.as_bytes()));
            if !current {
                let expired = expired_secrets
                    .iter()
                    .any(|old| constant_time_eq(old.as_bytes(), given.as_bytes()));
                return Err(if expired {
                    errors::expired_secret(&client_id)
                } else {
                    errors::bad_secret(&client_id)
                });
            }
        }
    }
    let want_client_info = form.get("client_info").is_some_and(|v| v == "1");
    match grant_type.as_str() {
        "authorization_code" => redeem_code(sim, &authority, &client_id, &form, want_client_info),
        _ => redeem_refresh_token(sim, &authority, &client_id, &form, want_client_info),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn redeem_code(
    sim: &Sim,
    authority: &Authority,
    client_id: &str,
    form: &Form,
    want_client_info: bool,
) -> Result<Response, StsError> {
    let code = required(form, "code")?;
    let redirect_uri = required(form, "redirect_uri")?;
    let now = sim.now();
    let issued = {
        let mut flows = sim.identity.flows();
        let Some(record) = flows.codes.get_mut(code) else {
            return Err(errors::malformed_grant("code"));
        };
        if !record.client_id.eq_ignore_ascii_case(client_id) || !authority.admits(&record.tenant_id)
        {
            return Err(errors::malformed_grant("code"));
        }
        if record.redeemed {
            return Err(errors::code_redeemed());
        }
        if now - record.issued > CODE_LIFETIME {
            return Err(errors::code_expired());
        }
        if record.redirect_uri != redirect_uri {
            return Err(errors::redirect_uri_changed(
                redirect_uri,
                &record.redirect_uri,
            ));
        }
        if let Some((challenge, method)) = &record.code_challenge {
            let verifier = form
                .get("code_verifier")
                .map(String::as_str)
                .unwrap_or_default();
            let computed = match method {
                PkceMethod::S256 => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
                PkceMethod::Plain => verifier.to_owned(),
            };
            if verifier.is_empty() || !constant_time_eq(computed.as_bytes(), challenge.as_bytes()) {
                return Err(errors::pkce_mismatch());
            }
        }
        record.redeemed = true;
        Grant {
            tenant_id: record.tenant_id.clone(),
            user_id: record.user_id.clone(),
            graph_scopes: record.graph_scopes.clone(),
            oidc: record.oidc.clone(),
            nonce: record.nonce.clone(),
            sid: record.sid.clone(),
        }
    };
    let scopes = live_scopes(sim, client_id, &issued, &issued.graph_scopes)?;
    issue(sim, client_id, &issued, scopes, want_client_info)
}

fn redeem_refresh_token(
    sim: &Sim,
    authority: &Authority,
    client_id: &str,
    form: &Form,
    want_client_info: bool,
) -> Result<Response, StsError> {
    let token = required(form, "refresh_token")?;
    let now = sim.now();
    let (grant, issued_at) = {
        let flows = sim.identity.flows();
        let Some(record) = flows.refresh_tokens.get(token) else {
            return Err(errors::malformed_grant("refresh_token"));
        };
        if !record.client_id.eq_ignore_ascii_case(client_id) || !authority.admits(&record.tenant_id)
        {
            return Err(errors::malformed_grant("refresh_token"));
        }
        (
            Grant {
                tenant_id: record.tenant_id.clone(),
                user_id: record.user_id.clone(),
                graph_scopes: record.graph_scopes.clone(),
                oidc: record.oidc.clone(),
                nonce: None,
                sid: record.sid.clone(),
            },
            record.issued,
        )
    };
    {
        let dir = sim.directory();
        let tenant = dir
            .tenant(&grant.tenant_id)
            .ok_or_else(|| errors::malformed_grant("refresh_token"))?;
        if !tenant.has_service_principal(client_id) {
            return Err(errors::app_not_found(client_id, &tenant.display_name));
        }
        let user = tenant
            .user(&grant.user_id)
            .ok_or_else(|| errors::malformed_grant("refresh_token"))?;
        if let Some(revoked) = user.sessions_revoked_at
            && issued_at <= revoked
        {
            return Err(errors::sessions_revoked(issued_at, revoked));
        }
    }
    if now - issued_at > REFRESH_INACTIVITY {
        return Err(errors::expired_inactivity(issued_at));
    }
    // `scope` on refresh: a subset of what is consented (".default": all of it); absent: what the RT carried.
    let wanted = match form.get("scope").filter(|s| !s.trim().is_empty()) {
        Some(raw) => {
            let requested = RequestedScopes::parse(raw).map_err(|e| match e {
                scopes::ScopeError::UnknownScope(s) | scopes::ScopeError::UnknownResource(s) => {
                    errors::invalid_scope(&s)
                }
            })?;
            let granted = granted_now(sim, client_id, &grant);
            if requested.default {
                granted
            } else {
                requested.graph
            }
        }
        None => grant.graph_scopes.clone(),
    };
    let scopes = live_scopes(sim, client_id, &grant, &wanted)?;
    issue(sim, client_id, &grant, scopes, want_client_info)
}

/// What an authorization code or refresh token stands for.
struct Grant {
    tenant_id: String,
    user_id: String,
    graph_scopes: BTreeSet<String>,
    oidc: BTreeSet<String>,
    nonce: Option<String>,
    sid: String,
}

fn granted_now(sim: &Sim, client_id: &str, grant: &Grant) -> BTreeSet<String> {
    let dir = sim.directory();
    dir.tenant(&grant.tenant_id)
        .map(|t| t.granted_scopes(client_id, &grant.user_id))
        .unwrap_or_default()
}

/// `wanted` checked against the directory now: the app must still be in the tenant, and every scope consented.
fn live_scopes(
    sim: &Sim,
    client_id: &str,
    grant: &Grant,
    wanted: &BTreeSet<String>,
) -> Result<BTreeSet<String>, StsError> {
    let dir = sim.directory();
    let tenant = dir
        .tenant(&grant.tenant_id)
        .ok_or_else(|| errors::malformed_grant("code"))?;
    if !tenant.has_service_principal(client_id) {
        return Err(errors::app_not_found(client_id, &tenant.display_name));
    }
    let granted = tenant.granted_scopes(client_id, &grant.user_id);
    if !wanted.is_subset(&granted) {
        let app_name = dir
            .app(client_id)
            .map(|a| a.display_name.clone())
            .unwrap_or_default();
        return Err(errors::consent_required(client_id, &app_name));
    }
    Ok(wanted.clone())
}

fn issue(
    sim: &Sim,
    client_id: &str,
    grant: &Grant,
    scopes: BTreeSet<String>,
    want_client_info: bool,
) -> Result<Response, StsError> {
    let now = sim.now();
    let server_error =
        |_| StsError::new("server_error", 500, "The simulator failed to sign a token.");
    let (access_token, _exp) = sim
        .issue_access_token(&grant.tenant_id, &grant.user_id, client_id, &scopes)
        .map_err(server_error)?;
    let lifetime = sim.config().access_token_lifetime.as_secs();
    let mut fields: Vec<(&str, serde_json::Value)> = vec![("token_type", "Bearer".into())];
    // `scope` is optional (v2-oauth2-auth-code-flow, read 2026-12-05); the sim can leave it out.
    if !sim.identity.omit_token_scope() {
        fields.push(("scope", scopes::qualified(&scopes, &grant.oidc).into()));
    }
    fields.extend([
        ("expires_in", lifetime.into()),
        ("ext_expires_in", lifetime.into()),
        ("access_token", access_token.into()),
    ]);
    if grant.oidc.contains("offline_access") {
        let rt = random_token("1.A", 160);
        sim.identity.flows().refresh_tokens.insert(
            rt.clone(),
            RefreshRecord {
                client_id: client_id.to_owned(),
                tenant_id: grant.tenant_id.clone(),
                user_id: grant.user_id.clone(),
                graph_scopes: scopes.clone(),
                oidc: grant.oidc.clone(),
                issued: now,
                sid: grant.sid.clone(),
            },
        );
        fields.push(("refresh_token", rt.into()));
    }
    if grant.oidc.contains("openid") {
        let id_token = id_token(sim, client_id, grant, now).map_err(server_error)?;
        fields.push(("id_token", id_token.into()));
    }
    if want_client_info {
        fields.push((
            "client_info",
            client_info(&grant.user_id, &grant.tenant_id).into(),
        ));
    }
    let mut response = ordered_json(&fields).into_response();
    sts_json_headers(&mut response);
    Ok(response)
}

/// The v2 id_token: `iss` per tenant, pairwise `sub`, profile claims with `profile`, `email` with `email` (and
/// only when the user has a mail address), `nonce` when the authorize request had one.
fn id_token(
    sim: &Sim,
    client_id: &str,
    grant: &Grant,
    now: OffsetDateTime,
) -> anyhow::Result<String> {
    let user = sim
        .user(&grant.tenant_id, &grant.user_id)
        .ok_or_else(|| anyhow::anyhow!("unknown user"))?;
    let mut claims = serde_json::json!({
        "aud": client_id,
        "iss": format!("{}/{}/v2.0", sim.base_url(), grant.tenant_id),
        "iat": now.unix_timestamp(),
        "nbf": now.unix_timestamp(),
        "exp": (now + ID_TOKEN_LIFETIME).unix_timestamp(),
        "aio": opaque(),
        "rh": opaque(),
        "sid": grant.sid,
        "sub": pairwise_subject(client_id, &grant.user_id),
        "tid": grant.tenant_id,
        "uti": opaque(),
        "ver": "2.0",
    });
    if grant.oidc.contains("profile") {
        claims["name"] = user.display_name.clone().into();
        claims["oid"] = user.id.clone().into();
        claims["preferred_username"] = user.user_principal_name.clone().into();
    }
    if grant.oidc.contains("email")
        && let Some(mail) = &user.mail
    {
        claims["email"] = mail.clone().into();
    }
    if let Some(nonce) = &grant.nonce {
        claims["nonce"] = nonce.clone().into();
    }
    if let Some(wids) = wids(sim, client_id, grant) {
        claims["wids"] = wids.into();
    }
    let keys = sim.identity.keys();
    jwt::sign(keys.signing_key(), &claims, false)
}

/// `wids`: the user's directory role template ids (the member role included), when the app registration's
/// `groupMembershipClaims` asks for directory roles; otherwise no claim, as Entra does. Source:
/// https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference (`wids`), read 2026-12-05.
fn wids(sim: &Sim, client_id: &str, grant: &Grant) -> Option<Vec<String>> {
    let dir = sim.directory();
    if !dir
        .app(client_id)
        .is_some_and(crate::world::App::emits_wids)
    {
        return None;
    }
    let user = dir.tenant(&grant.tenant_id)?.user(&grant.user_id)?;
    let mut wids: Vec<String> = user
        .roles
        .iter()
        .filter_map(|role| role.template_id())
        .map(str::to_owned)
        .collect();
    wids.push(crate::world::MEMBER_ROLE_TEMPLATE_ID.to_owned());
    wids.dedup();
    Some(wids)
}

/// `sub` is pairwise: the same user has a different subject in every app.
pub fn pairwise_subject(client_id: &str, user_id: &str) -> String {
    let digest = Sha256::digest(
        format!(
            "microsoft-sim|{}|{}",
            client_id.to_ascii_lowercase(),
            user_id
        )
        .as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(digest)
}

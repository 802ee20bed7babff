//! OIDC discovery (`/{tenant}/v2.0/.well-known/openid-configuration`) and the JWKS
//! (`/{tenant}/discovery/v2.0/keys`), shaped like the captured Microsoft documents with the sim's base URL.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::Authority;
use super::errors::ordered_json;
use crate::state::SharedSim;

fn cacheable(body: String) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=86400, private"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

pub async fn openid_configuration(
    State(sim): State<SharedSim>,
    Path(tenant): Path<String>,
) -> Response {
    let authority = match Authority::resolve(&sim, &tenant) {
        Ok(a) => a,
        Err(e) => return e.token_response(sim.base_url(), sim.now()),
    };
    let base = sim.base_url();
    // Tenant documents use the GUID everywhere; common/organizations keep their name in the endpoints and publish
    // the `{tenantid}` issuer template.
    let (segment, issuer_tenant, region) = match &authority {
        Authority::Tenant { id, region } => (
            id.clone(),
            id.clone(),
            serde_json::Value::String(region.clone()),
        ),
        Authority::Common => (
            "common".to_owned(),
            "{tenantid}".to_owned(),
            serde_json::Value::Null,
        ),
        Authority::Organizations => (
            "organizations".to_owned(),
            "{tenantid}".to_owned(),
            serde_json::Value::Null,
        ),
    };
    let fields: Vec<(&str, serde_json::Value)> = vec![
        (
            "token_endpoint",
            format!("{base}/{segment}/oauth2/v2.0/token").into(),
        ),
        (
            "token_endpoint_auth_methods_supported",
            serde_json::json!([
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic"
            ]),
        ),
        (
            "jwks_uri",
            format!("{base}/{segment}/discovery/v2.0/keys").into(),
        ),
        (
            "response_modes_supported",
            serde_json::json!(["query", "fragment", "form_post"]),
        ),
        ("subject_types_supported", serde_json::json!(["pairwise"])),
        (
            "id_token_signing_alg_values_supported",
            serde_json::json!(["RS256"]),
        ),
        (
            "response_types_supported",
            serde_json::json!(["code", "id_token", "code id_token", "id_token token"]),
        ),
        (
            "scopes_supported",
            serde_json::json!(["openid", "profile", "email", "offline_access"]),
        ),
        ("issuer", format!("{base}/{issuer_tenant}/v2.0").into()),
        ("request_uri_parameter_supported", false.into()),
        (
            "userinfo_endpoint",
            "https://graph.microsoft.com/oidc/userinfo".into(),
        ),
        (
            "authorization_endpoint",
            format!("{base}/{segment}/oauth2/v2.0/authorize").into(),
        ),
        (
            "device_authorization_endpoint",
            format!("{base}/{segment}/oauth2/v2.0/devicecode").into(),
        ),
        ("http_logout_supported", true.into()),
        ("frontchannel_logout_supported", true.into()),
        (
            "end_session_endpoint",
            format!("{base}/{segment}/oauth2/v2.0/logout").into(),
        ),
        (
            "claims_supported",
            serde_json::json!([
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email"
            ]),
        ),
        (
            "kerberos_endpoint",
            format!("{base}/{segment}/kerberos").into(),
        ),
        ("tenant_region_scope", region),
        ("cloud_instance_name", "microsoftonline.com".into()),
        ("cloud_graph_host_name", "graph.windows.net".into()),
        ("msgraph_host", "graph.microsoft.com".into()),
        ("rbac_url", "https://pas.windows.net".into()),
    ];
    cacheable(ordered_json(&fields))
}

pub async fn keys(State(sim): State<SharedSim>, Path(tenant): Path<String>) -> Response {
    if let Err(e) = Authority::resolve(&sim, &tenant) {
        return e.token_response(sim.base_url(), sim.now());
    }
    let issuer = format!("{}/{{tenantid}}/v2.0", sim.base_url());
    let mut keys = sim.identity.keys_mut();
    if keys.outage > 0 {
        keys.outage -= 1;
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "The service is temporarily unavailable.",
        )
            .into_response();
    }
    keys.fetches += 1;
    cacheable(keys.jwks(&issuer).to_string())
}

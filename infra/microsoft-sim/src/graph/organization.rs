//! `GET /organization` (list organization; the signed-in user's tenant) and `GET /organization/{id}`: the
//! tenant's `id`, `displayName` and `verifiedDomains`, the properties a `User.Read` token may read (every other
//! property comes back `null`). Sources, read 2026-12-05:
//! https://learn.microsoft.com/graph/api/organization-list and …/organization-get (permissions: `User.Read` least
//! privileged; "Applications granted the User.Read permission are able to read only the id, displayName, and
//! verifiedDomains properties"), https://learn.microsoft.com/graph/api/resources/verifieddomain (name, type,
//! isDefault, isInitial, capabilities).
//!
//! The world lists a tenant's verified domains by name; the first is the default. Every tenant also has its initial
//! `*.onmicrosoft.com` domain (`t{first 8 hex of the id}.onmicrosoft.com` here), as every Entra tenant does.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{Principal, graph_error};
use crate::state::SharedSim;

const SCOPES: [&str; 6] = [
    "User.Read",
    "User.ReadWrite",
    "Organization.Read.All",
    "Directory.Read.All",
    "Organization.ReadWrite.All",
    "Directory.ReadWrite.All",
];

pub fn router() -> Router<SharedSim> {
    Router::new()
        .route("/organization", get(list))
        .route("/organization/{id}", get(one))
}

/// The initial domain the sim gives a tenant.
pub fn initial_domain(tenant_id: &str) -> String {
    format!(
        "t{}.onmicrosoft.com",
        tenant_id.chars().take(8).collect::<String>()
    )
}

fn organization(sim: &SharedSim, principal: &Principal) -> Option<Value> {
    let dir = sim.directory();
    let tenant = dir.tenant(&principal.tenant_id)?;
    let mut domains: Vec<Value> = tenant
        .verified_domains
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": i == 0,
                   "isInitial": false, "name": name, "type": "Managed"})
        })
        .collect();
    domains.push(json!({"capabilities": "Email, OfficeCommunicationsOnline",
                        "isDefault": tenant.verified_domains.is_empty(), "isInitial": true,
                        "name": initial_domain(&tenant.id), "type": "Managed"}));
    let full = principal.has("Organization.Read.All") || principal.has("Directory.Read.All");
    let hidden = |value: Value| if full { value } else { Value::Null };
    Some(json!({
        "id": tenant.id,
        "deletedDateTime": null,
        "businessPhones": hidden(json!([])),
        "city": null,
        "country": null,
        "countryLetterCode": null,
        "displayName": tenant.display_name,
        "tenantType": hidden(json!("AAD")),
        "verifiedDomains": domains,
    }))
}

async fn list(State(sim): State<SharedSim>, principal: Principal) -> Response {
    if let Err(r) = principal.require_any(&SCOPES) {
        return r;
    }
    let value: Vec<Value> = organization(&sim, &principal).into_iter().collect();
    axum::Json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#organization",
        "value": value,
    }))
    .into_response()
}

async fn one(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = principal.require_any(&SCOPES) {
        return r;
    }
    match organization(&sim, &principal) {
        Some(mut org) if id.eq_ignore_ascii_case(&principal.tenant_id) => {
            org["@odata.context"] =
                json!("https://graph.microsoft.com/v1.0/$metadata#organization/$entity");
            axum::Json(org).into_response()
        }
        _ => graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        ),
    }
}

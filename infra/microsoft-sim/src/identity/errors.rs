//! The STS error shapes: token-endpoint JSON bodies (`error`, `error_description` with the AADSTS code and the
//! Trace/Correlation/Timestamp lines, `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`,
//! `suberror`) and the parameters of error redirects.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

/// One AADSTS error, as the token endpoint or an error redirect reports it.
#[derive(Debug, Clone)]
pub struct StsError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub message: String,
    pub suberror: Option<&'static str>,
    /// `error_subcode` on redirects (`cancel`).
    pub subcode: Option<&'static str>,
}

impl StsError {
    pub fn new(error: &'static str, code: u32, message: impl Into<String>) -> StsError {
        let status = if error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        StsError {
            status,
            error,
            code,
            message: message.into(),
            suberror: None,
            subcode: None,
        }
    }

    pub fn suberror(mut self, suberror: &'static str) -> StsError {
        self.suberror = Some(suberror);
        self
    }

    pub fn subcode(mut self, subcode: &'static str) -> StsError {
        self.subcode = Some(subcode);
        self
    }

    /// The serialized pieces every rendering shares: description with its trailer lines, timestamp, ids.
    pub fn rendered(&self, now: OffsetDateTime) -> RenderedError {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let timestamp = sts_timestamp(now);
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
            self.code, self.message
        );
        RenderedError {
            description,
            timestamp,
            trace_id,
            correlation_id,
        }
    }

    pub fn error_uri(&self, base_url: &str) -> String {
        format!("{base_url}/error?code={}", self.code)
    }

    /// The token endpoint's JSON response.
    pub fn token_response(&self, base_url: &str, now: OffsetDateTime) -> Response {
        let r = self.rendered(now);
        let mut fields: Vec<(&str, serde_json::Value)> = vec![
            ("error", self.error.into()),
            ("error_description", r.description.into()),
            ("error_codes", serde_json::json!([self.code])),
            ("timestamp", r.timestamp.into()),
            ("trace_id", r.trace_id.into()),
            ("correlation_id", r.correlation_id.into()),
            ("error_uri", self.error_uri(base_url).into()),
        ];
        if let Some(s) = self.suberror {
            fields.push(("suberror", s.into()));
        }
        let mut response = (self.status, ordered_json(&fields)).into_response();
        sts_json_headers(&mut response);
        response
    }
}

pub struct RenderedError {
    pub description: String,
    pub timestamp: String,
    pub trace_id: String,
    pub correlation_id: String,
}

/// `YYYY-MM-DD hh:mm:ssZ`, the STS's own timestamp format.
pub fn sts_timestamp(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// A JSON object with its fields in the given order (serde_json's map would sort them).
pub fn ordered_json(fields: &[(&str, serde_json::Value)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", serde_json::Value::String((*k).to_owned()), v))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Headers the STS puts on every token-endpoint answer.
pub fn sts_json_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("-1"));
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("x-ms-request-id", v);
    }
    h.insert(
        "x-ms-ests-server",
        HeaderValue::from_static("2.1.0 - microsoft-sim"),
    );
}

// The AADSTS catalogue the sim emits. Messages follow Microsoft's texts (reference-error-codes and captures).

pub fn invalid_request_missing(param: &str) -> StsError {
    StsError::new(
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

pub fn tenant_not_found(tenant: &str) -> StsError {
    StsError::new(
        "invalid_tenant",
        90002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the \
             correct cloud. Check with your subscription administrator, this may happen if there are no active \
             subscriptions for the tenant."
        ),
    )
}

pub fn consumers_not_supported() -> StsError {
    StsError::new(
        "invalid_request",
        9002331,
        "Application is configured for use by Azure Active Directory users only. Please do not use the /consumers \
         endpoint to serve this request.",
    )
}

pub fn app_not_found(client_id: &str, tenant: &str) -> StsError {
    StsError::new(
        "unauthorized_client",
        700016,
        format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if \
             the application has not been installed by the administrator of the tenant or consented to by any user \
             in the tenant. You may have sent your authentication request to the wrong tenant."
        ),
    )
}

pub fn redirect_uri_mismatch(redirect_uri: &str, client_id: &str) -> StsError {
    StsError::new(
        "invalid_request",
        50011,
        format!(
            "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured \
             for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to \
             your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more \
             about how to fix this."
        ),
    )
}

pub fn invalid_scope(scope: &str) -> StsError {
    StsError::new(
        "invalid_scope",
        70011,
        format!(
            "The provided value for the input parameter 'scope' isn't valid. The scope {scope} isn't valid."
        ),
    )
}

pub fn user_declined() -> StsError {
    StsError::new(
        "access_denied",
        65004,
        "User declined to consent to access the app.",
    )
}

/// Microsoft hides the user in this message and prints the literal `{EUII Hidden}`.
pub fn not_assigned(client_id: &str, app_name: &str) -> StsError {
    StsError::new(
        "access_denied",
        50105,
        format!(
            "Your administrator has configured the application {app_name} ('{client_id}') to block users unless they \
             are specifically granted ('assigned') access to the application. The signed in user '{{EUII Hidden}}' \
             is blocked because they are not a direct member of a group with access, nor had access directly \
             assigned by an administrator. Please contact your administrator to assign access to this application."
        ),
    )
}

pub fn wrong_tenant(
    upn: &str,
    home_tenant: &str,
    tenant_name: &str,
    client_id: &str,
    app_name: &str,
) -> StsError {
    StsError::new(
        "access_denied",
        50020,
        format!(
            "User account '{upn}' from identity provider 'https://sts.windows.net/{home_tenant}/' does not exist in \
             tenant '{tenant_name}' and cannot access the application '{client_id}'({app_name}) in that tenant. The \
             account needs to be added as an external user in the tenant first. Sign out and sign in again with a \
             different Azure Active Directory user account."
        ),
    )
}

pub fn admin_approval_required(app_name: &str) -> StsError {
    StsError::new(
        "access_denied",
        90094,
        format!(
            "Admin consent is required for the permissions requested by this application. An admin consent request \
             may be sent to the admin. ({app_name})"
        ),
    )
}

pub fn admin_approval_pending() -> StsError {
    StsError::new(
        "access_denied",
        90095,
        "Admin consent is required for the permissions requested by this application. An admin consent request has \
         already been sent to the admin and is pending review.",
    )
}

pub fn consent_required(client_id: &str, app_name: &str) -> StsError {
    StsError::new(
        "invalid_grant",
        65001,
        format!(
            "The user or administrator has not consented to use the application with ID '{client_id}' named \
             '{app_name}'. Send an interactive authorization request for this user and resource."
        ),
    )
    .suberror("consent_required")
}

pub fn login_required() -> StsError {
    StsError::new(
        "login_required",
        50058,
        "A silent sign-in request was sent but no user is signed in. The cookies used to represent the user's \
         session were not sent in the request to Azure AD. This can happen if the user is using Internet Explorer or \
         Edge, and the web app sending the silent sign-in request is in different IE security zone than the Azure \
         AD endpoint (login.microsoftonline.com).",
    )
}

pub fn interaction_required() -> StsError {
    StsError::new(
        "interaction_required",
        50076,
        "Due to a configuration change made by your administrator, or because you moved to a new location, you must \
         use multi-factor authentication to access the application.",
    )
}

pub fn code_redeemed() -> StsError {
    StsError::new(
        "invalid_grant",
        54005,
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing \
         refresh token.",
    )
}

/// A refresh token unused for 90 days: AADSTS700082 as captured (Azure/azure-cli#14244,
/// read 2026-12-05; conformance/identity/token-error-invalid-grant-inactive.json), not the
/// authorization code's 70008.
pub fn expired_inactivity(issued: OffsetDateTime) -> StsError {
    let issued = issued
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    StsError::new(
        "invalid_grant",
        700082,
        format!(
            "The refresh token has expired due to inactivity. The token was issued on {issued} and was inactive \
             for 90.00:00:00."
        ),
    )
}

pub fn code_expired() -> StsError {
    StsError::new(
        "invalid_grant",
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive \
         authorization request for this user and resource.",
    )
}

pub fn sessions_revoked(issued: OffsetDateTime, valid_from: OffsetDateTime) -> StsError {
    let fmt = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    StsError::new(
        "invalid_grant",
        50173,
        format!(
            "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might \
             have changed or reset their password. The grant was issued on '{}' and the TokensValidFrom date \
             (before which tokens are not valid) for this user is '{}'.",
            fmt(issued),
            fmt(valid_from)
        ),
    )
}

pub fn malformed_grant(what: &str) -> StsError {
    StsError::new(
        "invalid_grant",
        70000,
        format!(
            "Provided grant is invalid or malformed. The provided value for the '{what}' parameter is not valid."
        ),
    )
}

pub fn pkce_mismatch() -> StsError {
    StsError::new(
        "invalid_grant",
        50148,
        "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
    )
}

pub fn redirect_uri_changed(given: &str, original: &str) -> StsError {
    StsError::new(
        "invalid_grant",
        500112,
        format!(
            "The reply address '{given}' does not match the reply address '{original}' provided when requesting \
             Authorization code."
        ),
    )
}

pub fn bad_secret(client_id: &str) -> StsError {
    StsError::new(
        "invalid_client",
        7000215,
        format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, \
             not the client secret ID, for a secret added to app '{client_id}'."
        ),
    )
}

pub fn secret_missing() -> StsError {
    StsError::new(
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
}

pub fn public_client_with_secret() -> StsError {
    StsError::new(
        "invalid_client",
        700025,
        "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
    )
    .with_status(StatusCode::BAD_REQUEST)
}

pub fn unsupported_grant_type(grant_type: &str) -> StsError {
    StsError::new(
        "unsupported_grant_type",
        70003,
        format!("The app requested an unsupported grant type '{grant_type}'."),
    )
}

pub fn unsupported_response_type(response_type: &str) -> StsError {
    StsError::new(
        "unsupported_response_type",
        700054,
        format!("response_type '{response_type}' is not enabled for the application."),
    )
}

pub fn invalid_code_challenge_method() -> StsError {
    StsError::new(
        "invalid_request",
        501491,
        "Invalid code_challenge_method parameter: only 'S256' and 'plain' are supported.",
    )
}

impl StsError {
    pub fn with_status(mut self, status: StatusCode) -> StsError {
        self.status = status;
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> StsError {
        self.message = message.into();
        self
    }
}

/// An expired client secret. Code and wording: Microsoft's troubleshooting table
/// (https://learn.microsoft.com/azure/developer/java/sdk/troubleshooting-authentication-service-principal,
/// AADSTS7000222 "An expired client secret was provided") and the message as reported with
/// the app id (https://aztokenwatch.com/blog/fix-aadsts7000222-client-secret-expired), read 2026-12-05.
pub fn expired_secret(client_id: &str) -> StsError {
    StsError::new(
        "invalid_client",
        7000222,
        format!(
            "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new \
             keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added \
             security: https://aka.ms/certCreds."
        ),
    )
}

/// Client assertions. Codes from Microsoft's troubleshooting table
/// (https://learn.microsoft.com/azure/developer/java/sdk/troubleshooting-authentication-service-principal, read
/// 2026-12-05): 700027 invalid signature, 700021 application identifier mismatch, 700023 audience mismatch; 700024
/// time range as reported in https://github.com/Azure/aks-set-context/issues/101 (read 2026-12-05). The 700027
/// texts as Entra words them in https://github.com/AzureAD/microsoft-authentication-library-for-js/issues/8339
/// (key not found) and https://github.com/microsoftgraph/msgraph-sdk-php/issues/1585 (key found, signature wrong),
/// read 2026-12-05.
pub fn assertion_key_not_found(client_id: &str, thumbprint: &str) -> StsError {
    StsError::new(
        "invalid_client",
        700027,
        format!(
            "The certificate with identifier used to sign the client assertion is not registered on application. \
             [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the \
             Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
        ),
    )
}

pub fn assertion_bad_signature(client_id: &str, thumbprint: &str) -> StsError {
    StsError::new(
        "invalid_client",
        700027,
        format!(
            "Client assertion contains an invalid signature. [Reason - Key was found, but use of the key to verify \
             the signature failed., Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, \
             Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
        ),
    )
}

pub fn assertion_client_mismatch() -> StsError {
    StsError::new(
        "invalid_client",
        700021,
        "Client assertion application identifier doesn't match 'client_id' parameter.",
    )
}

pub fn assertion_audience(audience: &str) -> StsError {
    StsError::new(
        "invalid_client",
        700023,
        format!(
            "Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials. Audience: '{audience}'."
        ),
    )
}

pub fn assertion_time_range(now: OffsetDateTime, nbf: i64, exp: i64) -> StsError {
    StsError::new(
        "invalid_client",
        700024,
        format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry \
             time of assertion {}. Review the documentation at \
             https://learn.microsoft.com/entra/identity-platform/certificate-credentials.",
            sts_timestamp(now),
            OffsetDateTime::from_unix_timestamp(nbf)
                .map(sts_timestamp)
                .unwrap_or_default(),
            OffsetDateTime::from_unix_timestamp(exp)
                .map(sts_timestamp)
                .unwrap_or_default()
        ),
    )
}

/// A client assertion that is not a JWT Entra can read, or has no thumbprint in its header (AADSTS50027 as in
/// https://github.com/AzureAD/microsoft-authentication-library-for-dotnet/issues/124, read 2026-12-05).
pub fn assertion_malformed(detail: &str) -> StsError {
    StsError::new(
        "invalid_client",
        50027,
        format!("Invalid JWT token. {detail}"),
    )
}

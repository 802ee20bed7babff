//! The HTML the identity platform shows: sign-in, consent, "Need admin approval", "Request sent", error pages and
//! the `form_post` response. Styled plainly after Microsoft's pages; every form posts back to the sim and carries
//! the pending request's `ctx`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::scopes;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{margin:0;background:#f2f2f2;font-family:'Segoe UI','Helvetica Neue',Arial,sans-serif;color:#1b1b1b}\
.card{width:440px;margin:80px auto;background:#fff;padding:44px;box-shadow:0 2px 6px rgba(0,0,0,.2)}\
.logo{display:grid;grid-template-columns:10px 10px;gap:2px;margin-bottom:16px}.logo span{width:10px;height:10px}\
h1{font-size:24px;font-weight:600;margin:16px 0 12px}p{font-size:15px;line-height:20px}\
input[type=text],input[type=email],textarea{width:100%;box-sizing:border-box;border:none;border-bottom:1px solid #666;padding:6px 0;font-size:15px}\
.buttons{display:flex;justify-content:flex-end;gap:8px;margin-top:24px}\
button{min-width:108px;padding:6px 12px;font-size:15px;border:none;cursor:pointer;background:#ccc}\
button.primary{background:#0067b8;color:#fff}ul.perms{padding-left:20px}ul.perms li{margin:6px 0}\
.error{color:#e81123}.account{display:block;width:100%;text-align:left;background:#fff;border:1px solid #ddd;margin:4px 0}\
.small{font-size:13px;color:#666}.app{font-weight:600}";

const LOGO: &str = "<div class=\"logo\" aria-label=\"Microsoft\"><span style=\"background:#f25022\"></span>\
<span style=\"background:#7fba00\"></span><span style=\"background:#00a4ef\"></span>\
<span style=\"background:#ffb900\"></span></div>";

fn layout(title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head>\
         <body><div class=\"card\">{LOGO}{body}</div></body></html>",
        escape(title)
    );
    let mut response = Html(html).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    response
        .headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        escape(name),
        escape(value)
    )
}

/// "Sign in": an account field (prefilled from `login_hint`) and the tenant's accounts to pick from.
pub fn sign_in(
    action: &str,
    ctx: &str,
    login_hint: Option<&str>,
    accounts: &[(String, String)],
    error: Option<&str>,
) -> Response {
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(e) = error {
        body.push_str(&format!(
            "<p class=\"error\" id=\"error\">{}</p>",
            escape(e)
        ));
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"{}\">{}<input type=\"email\" name=\"login\" placeholder=\"Email, phone, or Skype\" \
         value=\"{}\" autofocus><div class=\"buttons\"><button class=\"primary\" type=\"submit\">Next</button></div></form>",
        escape(action),
        hidden("ctx", ctx),
        escape(login_hint.unwrap_or_default())
    ));
    if !accounts.is_empty() {
        body.push_str("<p class=\"small\">Pick an account</p>");
        for (upn, name) in accounts {
            body.push_str(&format!(
                "<form method=\"post\" action=\"{}\">{}{}<button class=\"account\" type=\"submit\">{}<br><span class=\"small\">{}</span></button></form>",
                escape(action),
                hidden("ctx", ctx),
                hidden("login", upn),
                escape(name),
                escape(upn)
            ));
        }
    }
    layout("Sign in to your account", &body)
}

/// "Permissions requested": the scopes in plain words, Accept/Cancel, and for admins the org-wide checkbox.
pub struct ConsentPage<'a> {
    pub action: &'a str,
    pub ctx: &'a str,
    pub app_name: &'a str,
    pub user_upn: &'a str,
    pub scopes: Vec<String>,
    /// Show "Consent on behalf of your organization".
    pub org_checkbox: bool,
    /// Admin-consent endpoint: the consent is for the whole organization, no checkbox.
    pub for_org: bool,
}

pub fn consent(page: ConsentPage<'_>) -> Response {
    let mut items = String::new();
    for s in &page.scopes {
        items.push_str(&format!(
            "<li data-scope=\"{}\">{}</li>",
            escape(s),
            escape(scopes::describe(s))
        ));
    }
    let heading = if page.for_org {
        "Permissions requested<br><span class=\"small\">Accept for your organization</span>"
    } else {
        "Permissions requested"
    };
    let checkbox = if page.org_checkbox {
        "<p><label><input type=\"checkbox\" name=\"org_consent\" value=\"on\"> Consent on behalf of your organization</label></p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>{heading}</h1><p class=\"small\">{}</p><p><span class=\"app\">{}</span><br>unverified</p>\
         <p>This app would like to:</p><ul class=\"perms\">{items}</ul>{}\
         <p class=\"small\">Accepting these permissions means that you allow this app to use your data as specified in \
         their terms of service and privacy statement.</p>\
         <form method=\"post\" action=\"{}\">{}{checkbox}<div class=\"buttons\">\
         <button type=\"submit\" name=\"decision\" value=\"cancel\">Cancel</button>\
         <button class=\"primary\" type=\"submit\" name=\"decision\" value=\"accept\">Accept</button></div></form>",
        escape(page.user_upn),
        escape(page.app_name),
        if page.for_org {
            "<p class=\"small\">If you accept, this app will get access to the specified resources for all users in your organization. No one else will be prompted to review these permissions.</p>"
        } else {
            ""
        },
        escape(page.action),
        hidden("ctx", page.ctx),
    );
    layout("Permissions requested", &body)
}

/// "Need admin approval" (AADSTS90094), or "Approval required / request pending" (AADSTS90095).
pub struct AdminApprovalPage<'a> {
    pub ctx: &'a str,
    pub app_name: &'a str,
    pub user_upn: &'a str,
    pub back_action: &'a str,
    /// The admin consent workflow is on: offer "Request approval" with a justification.
    pub request_action: Option<&'a str>,
    pub pending: bool,
}

pub fn admin_approval(page: AdminApprovalPage<'_>) -> Response {
    let (title, text, code) = if page.pending {
        (
            "Approval required",
            "This app requires your admin's approval. Your request has been sent and is pending review.",
            "AADSTS90095",
        )
    } else {
        (
            "Need admin approval",
            "needs permission to access resources in your organization that only an admin can grant. Please ask an \
             admin to grant permission to this app before you can use it.",
            "AADSTS90094",
        )
    };
    let mut body = format!(
        "<h1>{title}</h1><p class=\"small\">{}</p><p><span class=\"app\">{}</span> {}</p><p class=\"small\" id=\"code\">{code}</p>",
        escape(page.user_upn),
        escape(page.app_name),
        escape(text)
    );
    if let (Some(action), false) = (page.request_action, page.pending) {
        body.push_str(&format!(
            "<form method=\"post\" action=\"{}\">{}<p>Enter justification for requesting this app</p>\
             <textarea name=\"justification\" rows=\"3\"></textarea><div class=\"buttons\">\
             <button class=\"primary\" type=\"submit\">Request approval</button></div></form>",
            escape(action),
            hidden("ctx", page.ctx)
        ));
    } else {
        body.push_str("<p class=\"small\">Have an admin account? Sign in with that account.</p>");
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"{}\">{}<div class=\"buttons\"><button type=\"submit\">Return to the application without granting consent</button></div></form>",
        escape(page.back_action),
        hidden("ctx", page.ctx)
    ));
    layout(title, &body)
}

/// After "Request approval": the request was sent; the only way on is back to the app.
pub fn request_sent(ctx: &str, app_name: &str, back_action: &str) -> Response {
    let body = format!(
        "<h1>Request sent</h1><p>Your request for <span class=\"app\">{}</span> has been sent to your admin. You will \
         receive an email once your request has been reviewed.</p><form method=\"post\" action=\"{}\">{}\
         <div class=\"buttons\"><button class=\"primary\" type=\"submit\">Back to app</button></div></form>",
        escape(app_name),
        escape(back_action),
        hidden("ctx", ctx)
    );
    layout("Request sent", &body)
}

/// An error the STS shows instead of redirecting (unknown app, unregistered redirect URI, unknown tenant...).
pub fn error_page(status: StatusCode, code: u32, message: &str, trailer: &str) -> Response {
    let body = format!(
        "<h1>Sorry, but we're having trouble signing you in.</h1><p id=\"message\">AADSTS{code}: {}</p>\
         <p class=\"small\">{}</p>",
        escape(message),
        escape(trailer).replace("\r\n", "<br>")
    );
    (status, layout("Sign in to your account", &body)).into_response()
}

/// `response_mode=form_post`: an auto-submitting form posting the response parameters to the redirect URI.
pub fn form_post(redirect_uri: &str, params: &[(String, String)]) -> Response {
    let fields: String = params.iter().map(|(k, v)| hidden(k, v)).collect();
    let html = format!(
        "<html><head><title>Working...</title></head><body onload=\"document.forms[0].submit()\">\
         <form method=\"POST\" name=\"hiddenform\" action=\"{}\">{fields}<noscript><p>Script is disabled. Click \
         Submit to continue.</p><input type=\"submit\" value=\"Submit\" /></noscript></form></body></html>",
        escape(redirect_uri)
    );
    Html(html).into_response()
}

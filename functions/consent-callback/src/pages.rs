//! The pages people see: the administrators' consent page, the consent result, the
//! troubleshooting pages for each Microsoft error, and our own refusals (bad or expired
//! links, unknown routes, internal errors). All text is ours; every value is escaped.

use connector_core::domain::{FeatureBundle, Scope, ScopeSet, TenantId};
use http::StatusCode;

use crate::errors::{MicrosoftError, Problem};
use crate::html::{Html, page};

/// What every page needs to know about the deployment.
pub struct Site<'a> {
    pub product: &'a str,
    pub client_id: &'a str,
    pub public_base_url: &'a str,
}

impl Site<'_> {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.public_base_url, path_and_query)
    }

    /// `/consent/admin?bundle=..[&tenant=..]`.
    pub fn admin_consent_link(&self, bundle: FeatureBundle, tenant: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("bundle", bundle.as_str());
        if let Some(tenant) = tenant {
            query.append_pair("tenant", tenant);
        }
        self.url(&format!("/consent/admin?{}", query.finish()))
    }

    /// `/auth/login[?domain_hint=..]`.
    pub fn sign_in_link(&self, domain_hint: Option<&str>) -> String {
        match domain_hint {
            Some(hint) => {
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("domain_hint", hint)
                    .finish();
                self.url(&format!("/auth/login?{query}"))
            }
            None => self.url("/auth/login"),
        }
    }
}

/// What a scope lets us do, as an administrator reads it.
pub fn scope_meaning(scope: Scope) -> &'static str {
    match scope {
        Scope::OpenId => "Sign the user in with their work account.",
        Scope::Email => "See the user's email address, to recognise their account.",
        Scope::Profile => "See the user's name and basic profile.",
        Scope::OfflineAccess => {
            "Keep the connection working between sign-ins (a refresh token), so imports run in the background without asking the user to sign in again."
        }
        Scope::CalendarsReadWrite => {
            "Read the events of the user's calendars, to import meetings with your CRM contacts. Events are changed only when your administrator turns on Explicit Consent Mode, and then only in one way: in a meeting the user hosts with the add-in, the add-in's placeholder link is replaced by the meeting's recording-consent link. Nothing else of an event is changed, and no event is ever deleted."
        }
        Scope::OnlineMeetingsReadWrite => {
            "Create the Teams meeting behind a meeting the user hosts with the add-in, only when your administrator turns on Explicit Consent Mode (one Teams meeting per meeting, moved when the meeting is rescheduled). Without Explicit Consent Mode, the connector creates and changes no meeting."
        }
        Scope::MailRead => {
            "Read the user's mail, read-only. Only messages with a participant who matches your CRM are kept; every other message is discarded without being stored. It cannot send, change or delete mail, and attachments are never downloaded."
        }
        Scope::TeamReadBasicAll => {
            "See the names of the teams the user is a member of, so they can choose where to share."
        }
        Scope::ChannelReadBasicAll => "See the names of the channels in those teams.",
        Scope::ChannelMessageSend => {
            "Post a message to a channel as the user, when they share something."
        }
        Scope::ChatCreate => {
            "Start a one-to-one or group chat as the user, when they share with colleagues."
        }
        Scope::ChatMessageSend => "Send a chat message as the user, when they share something.",
        Scope::ChatRead => {
            "Read the user's chat messages, only to check whether a share whose answer was lost already arrived."
        }
        Scope::ChannelMessageReadAll => {
            "Read channel messages as the user, only to check whether a share whose answer was lost already arrived."
        }
    }
}

fn bundle_title(bundle: FeatureBundle) -> &'static str {
    match bundle {
        FeatureBundle::Auth => "Sign-in only",
        FeatureBundle::Calendar => "Sign-in and calendar import",
        FeatureBundle::Mail => "Sign-in and email import",
        FeatureBundle::Teams => "Sign-in and sharing to Teams",
        FeatureBundle::All => "All features (recommended)",
    }
}

fn bundle_purpose(bundle: FeatureBundle) -> &'static str {
    match bundle {
        FeatureBundle::Auth => "Users can sign in with Microsoft. Nothing is imported.",
        FeatureBundle::Calendar => {
            "Meetings with CRM contacts are imported from each user's primary calendar (checked every hour, up to 12 months ahead), and the recorder can join online meetings."
        }
        FeatureBundle::Mail => {
            "Emails with CRM contacts are imported (checked every 15 minutes); the first import reaches back to your oldest open opportunity, and at least 7 days."
        }
        FeatureBundle::Teams => "Users can share to Teams channels and chats they belong to.",
        FeatureBundle::All => {
            "Sign-in, calendar import, email import and sharing to Teams: one consent covers everything the connector does today."
        }
    }
}

fn scope_table(html: &mut Html, scopes: impl Iterator<Item = Scope>) {
    html.raw("<table>\n<tr><th>Permission</th><th>Kind</th><th>What it allows</th></tr>\n");
    for scope in scopes {
        let kind = if scope.is_oidc() {
            "Sign-in (OpenID Connect), delegated"
        } else {
            "Microsoft Graph, delegated"
        };
        html.raw("<tr><td><code>")
            .text(scope.name())
            .raw("</code></td><td>")
            .text(kind)
            .raw("</td><td>")
            .text(scope_meaning(scope))
            .raw("</td></tr>\n");
    }
    html.raw("</table>\n");
}

/// `GET /consent`.
pub fn consent_page(site: &Site<'_>) -> String {
    let product = site.product;
    let mut html = Html::new();
    html.raw("<p>")
        .text(&format!(
            "{product} connects your organisation's Microsoft 365 to the platform. An administrator grants consent once for the whole organisation; after that, users sign in with Microsoft and are never asked for these permissions again."
        ))
        .raw("</p>\n");

    html.element("h2", "Who can grant consent");
    html.raw("<p>")
        .text("Sign in with an account that holds one of these Microsoft Entra roles: Global Administrator, Privileged Role Administrator, Cloud Application Administrator or Application Administrator. Any of them is enough, because every permission below is a delegated permission: the connector only ever acts for a user who has signed in, never on its own with application permissions.")
        .raw("</p>\n");
    html.raw("<p>")
        .text("Application (client) ID: ")
        .raw("<code>")
        .text(site.client_id)
        .raw("</code></p>\n");

    html.element("h2", "Choose what to grant");
    html.raw("<form method=\"get\" action=\"")
        .text(&site.url("/consent/admin"))
        .raw("\" class=\"box\">\n<p><label for=\"tenant\">")
        .text("Your organisation's domain or tenant ID (optional; without it Microsoft asks which organisation you sign in to):")
        .raw("</label><br>\n<input id=\"tenant\" name=\"tenant\" type=\"text\" maxlength=\"253\" placeholder=\"contoso.com\" autocomplete=\"off\" spellcheck=\"false\"></p>\n<p>");
    for bundle in FeatureBundle::ALL {
        html.raw("<button type=\"submit\" name=\"bundle\" value=\"")
            .text(bundle.as_str())
            .raw("\">")
            .text(&format!("Grant: {}", bundle_title(bundle)))
            .raw("</button> ");
    }
    html.raw("</p>\n</form>\n");

    for bundle in FeatureBundle::ALL.into_iter().rev() {
        let class = if bundle == FeatureBundle::All {
            "box recommended"
        } else {
            "box"
        };
        html.raw("<section class=\"")
            .raw(class)
            .raw("\" id=\"bundle-")
            .text(bundle.as_str())
            .raw("\">\n")
            .element("h3", bundle_title(bundle))
            .element("p", bundle_purpose(bundle));
        scope_table(&mut html, bundle.scopes().iter().copied());
        html.raw("<p>")
            .raw("<a class=\"button\" href=\"")
            .text(&site.admin_consent_link(bundle, None))
            .raw("\">")
            .text(&format!("Grant consent: {}", bundle_title(bundle)))
            .raw("</a></p>\n</section>\n");
    }

    html.element("h2", "After granting: allow only some users");
    html.raw("<p>")
        .text("By default everyone in your organisation can sign in. To limit it to chosen people: in the Microsoft Entra admin center open Enterprise applications, select ")
        .text(product)
        .text(", then Properties, set \"Assignment required?\" to Yes and save; then under Users and groups choose Add user/group and assign the users or groups who should have access. The app appears under Enterprise applications only after the first consent.")
        .raw("</p>\n");

    html.element("h2", "Taking consent back");
    html.raw("<p>")
        .text("Under Enterprise applications, select ")
        .text(product)
        .text(": Permissions lists what was granted and lets you review or revoke it; Properties, then Delete, removes the app from your organisation with all its grants and assignments. Users whose access is revoked stop being synchronised at their next import.")
        .raw("</p>\n");

    html.element("h2", "What the connector never accesses");
    html.raw("<ul>\n");
    for item in [
        "No application permissions: nothing is read without a signed-in user's delegated access.",
        "No OneDrive or SharePoint files, and no contacts or distribution lists.",
        "No email attachments; it never sends, changes, moves or deletes mail.",
        "No message, event or meeting that does not involve your CRM contacts is stored; event notes and invitation responses are never stored.",
        "No Teams message history is imported; messages are only posted when a user shares.",
        "No data of people who have not signed in themselves.",
    ] {
        html.element("li", item);
    }
    html.raw("</ul>\n");
    page(product, "Connect Microsoft 365", &html)
}

/// An admin consent, verified by the administrator's sign-in, was recorded.
pub fn consent_granted(
    site: &Site<'_>,
    tenant: &TenantId,
    bundle: FeatureBundle,
    granted: &ScopeSet,
    verified_by: &str,
) -> String {
    let mut html = Html::new();
    html.raw("<div class=\"ok\">")
        .element(
            "p",
            &format!(
                "Consent for {} is recorded for your organisation (tenant {}), verified by the sign-in of {}.",
                bundle_title(bundle),
                tenant,
                verified_by
            ),
        )
        .raw("</div>\n");
    html.element("h2", "Granted permissions");
    let known: Vec<Scope> = granted.known().collect();
    if known.is_empty() {
        scope_table(&mut html, bundle.scopes().iter().copied());
    } else {
        scope_table(&mut html, known.into_iter());
    }
    html.raw("<p>")
        .text("Your users can now sign in without being asked for permissions: ")
        .link(&site.sign_in_link(Some(tenant.as_str())), "Sign in")
        .text(".")
        .raw("</p>\n");
    html.raw("<p class=\"muted\">")
        .text("To allow only some users, see \"After granting\" on the ")
        .link(&site.url("/consent"), "consent page")
        .text(".")
        .raw("</p>\n");
    page(site.product, "Consent granted", &html)
}

/// A refusal of ours (not Microsoft's): status, title and one explanation.
pub fn notice(site: &Site<'_>, title: &str, message: &str, next: Option<(&str, &str)>) -> String {
    let mut html = Html::new();
    html.raw("<div class=\"error\">")
        .element("p", message)
        .raw("</div>\n");
    if let Some((url, text)) = next {
        html.raw("<p>").link(url, text).raw("</p>\n");
    }
    page(site.product, title, &html)
}

pub fn link_expired(site: &Site<'_>) -> String {
    notice(
        site,
        "This link has expired or was already used",
        "Each sign-in or consent link works once, within 10 minutes, and only in the browser that opened it. Nothing was recorded. Please start again.",
        Some((&site.url("/consent"), "Back to the consent page")),
    )
}

/// Microsoft's error at a callback or the token endpoint: status and page.
pub fn troubleshooting(
    site: &Site<'_>,
    error: &MicrosoftError,
    bundle: FeatureBundle,
    tenant: Option<&str>,
) -> (StatusCode, String) {
    let product = site.product;
    let admin_link = site.admin_consent_link(bundle, tenant);
    let sign_in = site.sign_in_link(tenant);
    let consent_page = site.url("/consent");
    let mut html = Html::new();
    let (status, title) = match error.problem() {
        Problem::NotAssigned => {
            html.element("p", &format!("Your organisation only lets assigned users use {product}, and this account is not assigned to it."));
            html.element("h2", "What an administrator does");
            html.raw("<ol>\n")
                .element("li", "Open the Microsoft Entra admin center and go to Enterprise applications.")
                .element("li", &format!("Select {product}, then Users and groups."))
                .element("li", "Choose Add user/group, pick this user (or a group they belong to) and select Assign.")
                .raw("</ol>\n<p>");
            html.link(&sign_in, "Then sign in again").raw("</p>\n");
            (
                StatusCode::FORBIDDEN,
                "Your account is not assigned to this app",
            )
        }
        Problem::AdminApprovalNeeded => {
            html.element("p", &format!("Your organisation does not let users grant permissions to apps like {product} themselves, so an administrator has to approve it first."));
            html.element("h2", "What an administrator does (either)");
            html.raw("<ul>\n<li>")
                .text("Grant consent for the whole organisation with ")
                .link(&admin_link, "the admin consent link")
                .text(" (Global Administrator, Privileged Role Administrator, Cloud Application Administrator or Application Administrator).")
                .raw("</li>\n")
                .element("li", &format!("Or, if you requested approval, approve the request in the Microsoft Entra admin center under Enterprise applications, Admin consent requests ({product})."))
                .raw("</ul>\n<p>");
            html.link(&sign_in, "Sign in again once approved")
                .raw("</p>\n");
            (StatusCode::FORBIDDEN, "Need admin approval")
        }
        Problem::ConsentDeclined => {
            html.element("p", "The permissions were not accepted (Cancel was chosen, or the request was declined), so nothing was granted and nothing was stored.");
            html.raw("<p>")
                .text("To try again, ")
                .link(&sign_in, "sign in")
                .text(" and accept the permissions; administrators can grant them for everyone from the ")
                .link(&consent_page, "consent page")
                .text(".")
                .raw("</p>\n");
            (StatusCode::FORBIDDEN, "Consent was not given")
        }
        Problem::Cancelled => {
            html.element(
                "p",
                "The sign-in was cancelled before it finished. Nothing was stored.",
            );
            html.raw("<p>")
                .text("If Microsoft showed \"Need admin approval\", an administrator has to approve the app first: ")
                .link(&admin_link, "admin consent link")
                .text(", or approve your request under Enterprise applications, Admin consent requests. Otherwise, ")
                .link(&sign_in, "sign in again")
                .text(".")
                .raw("</p>\n");
            (StatusCode::FORBIDDEN, "Sign-in cancelled")
        }
        Problem::OtherDirectory => {
            html.element("p", "The account used belongs to a different organisation (directory) than the one being connected.");
            html.raw("<ul>\n<li>")
                .text("Sign in with a work account of the organisation you are connecting: ")
                .link(&site.url("/auth/login"), "sign in again")
                .text(".")
                .raw("</li>\n<li>")
                .text("Or have an administrator of that other organisation grant consent for it from the ")
                .link(&consent_page, "consent page")
                .text(".")
                .raw("</li>\n</ul>\n");
            (
                StatusCode::FORBIDDEN,
                "This account is from another organisation",
            )
        }
        Problem::AppNotInTenant => {
            html.element("p", &format!("{product} has not been added to this organisation yet: Microsoft does not know the app there."));
            html.raw("<p>")
                .text("An administrator grants consent first, which adds the app: ")
                .link(&admin_link, "admin consent link")
                .text(". Then ")
                .link(&sign_in, "sign in again")
                .text(".")
                .raw("</p>\n");
            (
                StatusCode::FORBIDDEN,
                "The app is not set up in this organisation",
            )
        }
        Problem::BadClientSecret => {
            html.element("p", "Microsoft rejected this service's own credentials, so no one can sign in until it is fixed. There is nothing wrong with your account.");
            html.element("h2", "For the operator");
            html.element("p", "With the client secret credential: the secret stored in Secrets Manager (the secret named by CLIENT_SECRET_ID) does not match a current secret of the app registration. Store the secret's Value from Certificates & secrets, not its Secret ID, and check that it has not expired; the function reads it again when Microsoft refuses it, so no redeploy is needed. With the certificate credential: the certificate registered on the app must hold the public key of the KMS key CERTIFICATE_KMS_KEY_ID, and CERTIFICATE_THUMBPRINT must be its thumbprint.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in is misconfigured on our side",
            )
        }
        Problem::CodeAlreadyUsed => {
            html.element(
                "p",
                "This sign-in response was already used or has expired. Nothing was stored.",
            );
            html.raw("<p>")
                .link(&sign_in, "Start the sign-in again")
                .raw("</p>\n");
            (
                StatusCode::BAD_REQUEST,
                "This sign-in was already completed",
            )
        }
        Problem::Other => {
            html.element("p", "Microsoft could not complete the request. The details below help your administrator or our support team find out why.");
            html.raw("<p>")
                .link(&sign_in, "Try signing in again")
                .raw("</p>\n");
            (StatusCode::BAD_REQUEST, "Microsoft reported an error")
        }
    };
    details(&mut html, error);
    (status, page(product, title, &html))
}

fn details(html: &mut Html, error: &MicrosoftError) {
    html.raw("<h2>Details</h2>\n<table>\n");
    let mut row = |name: &str, value: &str| {
        html.raw("<tr><th>")
            .text(name)
            .raw("</th><td><code>")
            .text(value)
            .raw("</code></td></tr>\n");
    };
    row("Error code", &error.label());
    if let Some(subcode) = error.subcode.as_deref().or(error.suberror.as_deref()) {
        row("Sub-code", subcode);
    }
    if let Some(trace) = &error.trace_id {
        row("Trace ID", trace);
    }
    if let Some(correlation) = &error.correlation_id {
        row("Correlation ID", correlation);
    }
    if let Some(timestamp) = &error.timestamp {
        row("Timestamp", timestamp);
    }
    html.raw("</table>\n");
    if let Some(description) = &error.description {
        html.raw("<p class=\"muted\">")
            .text("Microsoft's message: ")
            .text(description)
            .raw("</p>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site<'static> {
        Site {
            product: "Office 365 connector",
            client_id: "11111111-2222-3333-4444-555555555555",
            public_base_url: "https://connector.example.com",
        }
    }

    #[test]
    fn consent_page_lists_every_bundle_and_scope() {
        let html = consent_page(&site());
        for bundle in FeatureBundle::ALL {
            assert!(
                html.contains(&format!("bundle&#x3D;{}", bundle.as_str())),
                "{bundle}"
            );
        }
        for scope in Scope::ALL {
            assert!(
                html.contains(&format!("<code>{}</code>", scope.name())),
                "{scope}"
            );
        }
        for role in [
            "Global Administrator",
            "Cloud Application Administrator",
            "Application Administrator",
        ] {
            assert!(html.contains(role));
        }
        assert!(html.contains("11111111-2222-3333-4444-555555555555"));
        assert!(html.contains("Assignment required?"));
        assert!(html.contains("All features (recommended)"));
        assert!(!html.to_lowercase().contains("jiminny"));
    }

    #[test]
    fn troubleshooting_statuses_and_inert_descriptions() {
        let cases = [
            ("AADSTS50105: x", StatusCode::FORBIDDEN, "Users and groups"),
            (
                "AADSTS65001: x",
                StatusCode::FORBIDDEN,
                "Admin consent requests",
            ),
            (
                "AADSTS90094: x",
                StatusCode::FORBIDDEN,
                "Need admin approval",
            ),
            (
                "AADSTS65004: x",
                StatusCode::FORBIDDEN,
                "Consent was not given",
            ),
            (
                "AADSTS50020: x",
                StatusCode::FORBIDDEN,
                "another organisation",
            ),
            ("AADSTS700016: x", StatusCode::FORBIDDEN, "not set up"),
            (
                "AADSTS7000215: x",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Secret ID",
            ),
            (
                "AADSTS12345: <script>alert(1)</script>",
                StatusCode::BAD_REQUEST,
                "AADSTS12345",
            ),
        ];
        for (description, status, needle) in cases {
            let error = MicrosoftError::from_callback("access_denied", Some(description), None);
            let (got, html) =
                troubleshooting(&site(), &error, FeatureBundle::All, Some("contoso.com"));
            assert_eq!(got, status, "{description}");
            assert!(html.contains(needle), "{description}: {needle}");
            assert!(!html.contains("<script>"), "{html}");
        }
    }
}

//! The recording-consent page of Explicit Consent Mode: `/m/{token}` (connector-core
//! `domain::meeting_consent` says what the mode is).
//!
//! - `GET /m/{token}` shows the host's organization name and the meeting's start time,
//!   never the attendees, and asks whether the guest agrees to be recorded. A guest's own
//!   link (the platform's emails) answers for that guest; the invite's link first asks
//!   which invited address the guest is.
//! - `POST /m/{token}` records the answer and forwards to the Teams join URL (303), whatever
//!   the answer. An address that is not invited records nothing (the page says so and
//!   still offers the meeting).
//!
//! Security: tokens are 256-bit random values; only their SHA-256 is a lookup key. An
//! unknown token, a token of the wrong shape and a dropped guest's token get the same page,
//! so a page never tells one from another, and nothing of any other meeting is ever read.
//! An answer changes only by POST carrying a CSRF value equal to this page's cookie
//! (`__Host-o365m`, HttpOnly, SameSite=Strict; without `Secure` on plain-http loopback),
//! compared in constant time, from our own origin (`Origin`, else `Sec-Fetch-Site`). A
//! week after the meeting's end its links say they expired. The page's CSP allows the
//! form to lead to our origin and the join URL's only.

use connector_core::consent_meetings;
use connector_core::domain::meeting_consent::{
    Answer, ConsentMeeting, ConsentStatus, LinkHolder, LinkToken, PAGE_PATH,
};
use http::{HeaderValue, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

use crate::html::{CONTENT_SECURITY_POLICY, Html, html_response, page};
use crate::params::Query;
use crate::security::{constant_time_eq, cookie_header, random_token, read_cookie};
use crate::{App, Flowing, Stop};

/// Form bodies larger than this are refused.
const MAX_FORM_BYTES: usize = 2048;
/// The CSRF cookie's lifetime: the page's (a guest who leaves the page open an hour
/// reloads it).
const CSRF_COOKIE_SECONDS: i64 = 3600;

/// Whether a path is the consent page's (`/m/{anything}`).
pub fn is_meeting_path(path: &str) -> bool {
    path.starts_with(PAGE_PATH)
}

fn when(at: OffsetDateTime) -> String {
    let day = at
        .format(time::macros::format_description!(
            "[weekday], [day padding:none] [month repr:long] [year], [hour]:[minute]"
        ))
        .unwrap_or_default();
    format!("{day} UTC")
}

/// The origin of an absolute URL (`https://teams.microsoft.com`), for the CSP.
fn origin(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .map(|url| url.origin().ascii_serialization())
        .filter(|origin| origin != "null")
}

impl App {
    fn meeting_cookie_name(&self) -> &'static str {
        if self.config.secure_cookies() {
            "__Host-o365m"
        } else {
            "o365m"
        }
    }

    /// A page of this module; `join` widens the CSP's form-action to the join URL's origin
    /// (the 303 after an answer leads there).
    fn meeting_page(
        &self,
        status: StatusCode,
        title: &str,
        body: &Html,
        cookies: &[String],
        join: Option<&str>,
    ) -> Response<Body> {
        let mut response = html_response(
            status,
            page(&self.config.app_display_name, title, body),
            cookies,
        );
        if let Some(join) = join.and_then(origin) {
            let policy = CONTENT_SECURITY_POLICY
                .replace("form-action 'self'", &format!("form-action 'self' {join}"));
            if let Ok(value) = HeaderValue::from_str(&policy) {
                response
                    .headers_mut()
                    .insert("content-security-policy", value);
            }
        }
        response
    }

    fn meeting_notice(&self, status: StatusCode, title: &str, message: &str) -> Response<Body> {
        let mut body = Html::new();
        body.element("p", message);
        self.meeting_page(status, title, &body, &[], None)
    }

    /// The one page for every link that opens nothing (unknown, malformed, dropped).
    fn unknown_link(&self) -> Stop {
        Stop(self.meeting_notice(
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "This meeting link is not valid or no longer in use. Please use the link in your most recent invitation.",
        ))
    }

    pub(crate) async fn meeting(&self, path: &str, request: &Request) -> Response<Body> {
        let outcome = match *request.method() {
            Method::GET | Method::HEAD => self.meeting_view(path, request).await,
            Method::POST => self.meeting_answer(path, request).await,
            _ => {
                let mut response = self.meeting_notice(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed",
                    "This address does not answer this kind of request.",
                );
                response
                    .headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static("GET, POST"));
                Ok(response)
            }
        };
        outcome.unwrap_or_else(|Stop(response)| response)
    }

    /// The meeting of the path's token, if the token opens one, and the token.
    async fn meeting_of(&self, path: &str) -> Flowing<(LinkToken, ConsentMeeting)> {
        let Some(store) = &self.ports.consent_meetings else {
            return Err(self.unknown_link());
        };
        let Some(token) = path.strip_prefix(PAGE_PATH).and_then(LinkToken::parse) else {
            return Err(self.unknown_link());
        };
        match store.find_consent_meeting(&token).await {
            Ok(Some(meeting)) => Ok((token, meeting)),
            Ok(None) => Err(self.unknown_link()),
            Err(error) => Err(self.internal("reading a consent meeting", &error)),
        }
    }

    /// Pages for a meeting that takes no answer; `None` when it takes one.
    fn closed(&self, meeting: &ConsentMeeting, now: OffsetDateTime) -> Option<Stop> {
        if !meeting.links_open(now) {
            return Some(Stop(self.meeting_notice(
                StatusCode::GONE,
                "This link has expired",
                "This meeting has ended, so its link no longer opens anything.",
            )));
        }
        match meeting.status {
            ConsentStatus::Active => None,
            ConsentStatus::Cancelled => Some(Stop(self.meeting_notice(
                StatusCode::GONE,
                "This meeting was cancelled",
                "The organizer cancelled this meeting. Nothing more is needed from you.",
            ))),
            ConsentStatus::Linking => Some(Stop(self.meeting_notice(
                StatusCode::SERVICE_UNAVAILABLE,
                "This meeting is not ready yet",
                "The meeting is still being set up. Please try again in a few minutes.",
            ))),
            ConsentStatus::Stopped => {
                let mut body = Html::new();
                body.element(
                    "p",
                    "The organizer no longer collects recording consent for this meeting.",
                );
                if let Some(join) = &meeting.join_url {
                    body.raw("<p>").link(join, "Join the meeting").raw("</p>\n");
                }
                Some(Stop(self.meeting_page(
                    StatusCode::OK,
                    "Recording consent is not collected",
                    &body,
                    &[],
                    None,
                )))
            }
        }
    }

    async fn organization_name(&self, meeting: &ConsentMeeting) -> String {
        match self.ports.tenants.get_tenant(&meeting.tenant_id).await {
            Ok(Some(tenant)) => tenant
                .display_name
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| "The organizer's organization".into()),
            Ok(None) | Err(_) => "The organizer's organization".into(),
        }
    }

    async fn meeting_view(&self, path: &str, request: &Request) -> Flowing<Response<Body>> {
        let (token, meeting) = self.meeting_of(path).await?;
        if let Some(stop) = self.closed(&meeting, self.ports.clock.now()) {
            return Err(stop);
        }
        let holder = meeting.holder(&token).ok_or_else(|| self.unknown_link())?;
        let organization = self.organization_name(&meeting).await;
        let csrf = read_cookie(request.headers(), self.meeting_cookie_name())
            .map(|value| value.secret().to_owned())
            .filter(|value| value.len() == 43)
            .unwrap_or_else(random_token);
        let cookie = cookie_header(
            self.meeting_cookie_name(),
            &csrf,
            CSRF_COOKIE_SECONDS,
            "Strict",
            self.config.secure_cookies(),
        );
        let start = meeting.start.format(&Rfc3339).unwrap_or_default();
        let mut body = Html::new();
        body.raw("<p>")
            .text(&organization)
            .raw(" invites you to a meeting on <time datetime=\"")
            .text(&start)
            .raw("\">")
            .text(&when(meeting.start))
            .raw("</time>.</p>\n")
            .element(
                "p",
                "The meeting may be recorded and transcribed with your agreement. Whatever you choose, you will be taken to the meeting.",
            );
        if let LinkHolder::Guest(index) = holder
            && let Some(answer) = meeting.guests.get(index).and_then(|guest| guest.answer)
        {
            body.raw("<p class=\"ok\">").text(match answer {
                Answer::Record => "You agreed to be recorded. You can change your answer below.",
                Answer::DoNotRecord => {
                    "You asked not to be recorded. You can change your answer below."
                }
            });
            body.raw("</p>\n");
        }
        body.raw("<form method=\"post\" action=\"")
            .text(path)
            .raw("\">\n<input type=\"hidden\" name=\"csrf\" value=\"")
            .text(&csrf)
            .raw("\">\n");
        if holder == LinkHolder::Invite {
            body.raw("<p><label for=\"address\">Your email address, as in the invitation</label><br>")
                .raw("<input id=\"address\" name=\"address\" type=\"email\" required autocomplete=\"email\" size=\"40\"></p>\n");
        }
        body.raw("<p><button type=\"submit\" name=\"answer\" value=\"record\" class=\"button\">Yes, record me</button> ")
            .raw("<button type=\"submit\" name=\"answer\" value=\"do_not_record\" class=\"button\">No, do not record me</button></p>\n")
            .raw("</form>\n");
        Ok(self.meeting_page(
            StatusCode::OK,
            "May we record this meeting?",
            &body,
            &[cookie],
            meeting.join_url.as_deref(),
        ))
    }

    async fn meeting_answer(&self, path: &str, request: &Request) -> Flowing<Response<Body>> {
        let headers = request.headers();
        let bytes: &[u8] = request.body().as_ref();
        let form = (bytes.len() <= MAX_FORM_BYTES)
            .then(|| std::str::from_utf8(bytes).ok())
            .flatten()
            .and_then(|text| Query::parse(Some(text)).ok());
        let cookie = read_cookie(headers, self.meeting_cookie_name());
        let csrf_ok = match (&form, &cookie) {
            (Some(form), Some(cookie)) => form
                .get("csrf")
                .is_some_and(|value| constant_time_eq(value, cookie.secret())),
            _ => false,
        };
        if !csrf_ok || !self.same_origin(headers) {
            warn!("a consent answer refused: origin or CSRF value");
            return Err(Stop(self.meeting_notice(
                StatusCode::FORBIDDEN,
                "Your answer was not recorded",
                "The form did not come from this site's current page, or it is too old. Open the meeting link again and retry.",
            )));
        }
        let form = form.unwrap_or_default();
        let (token, meeting) = self.meeting_of(path).await?;
        let now = self.ports.clock.now();
        if let Some(stop) = self.closed(&meeting, now) {
            return Err(stop);
        }
        let Some(answer) = form.get("answer").and_then(Answer::parse) else {
            return Err(Stop(self.meeting_notice(
                StatusCode::BAD_REQUEST,
                "Your answer was not recorded",
                "Please choose one of the two answers.",
            )));
        };
        let address = match meeting.holder(&token) {
            Some(LinkHolder::Guest(index)) => meeting.guests[index].address.clone(),
            Some(LinkHolder::Invite) => {
                let typed = form
                    .get("address")
                    .unwrap_or_default()
                    .trim()
                    .to_lowercase();
                if meeting.guest_index(&typed).is_none() {
                    let mut body = Html::new();
                    body.element(
                        "p",
                        "That address is not one this meeting's invitation was sent to, so no answer was recorded. Check the address and try again, or join the meeting.",
                    )
                    .raw("<p>")
                    .link(path, "Try again")
                    .raw("</p>\n");
                    if let Some(join) = &meeting.join_url {
                        body.raw("<p>").link(join, "Join the meeting").raw("</p>\n");
                    }
                    return Ok(self.meeting_page(
                        StatusCode::OK,
                        "Your answer was not recorded",
                        &body,
                        &[],
                        None,
                    ));
                }
                typed
            }
            None => return Err(self.unknown_link()),
        };
        let Some(store) = &self.ports.consent_meetings else {
            return Err(self.unknown_link());
        };
        let owner = meeting.owner();
        let saved = consent_meetings::update(store.as_ref(), &owner, &meeting.event_id, |stored| {
            // The guest as the stored meeting has them now (the calendar may have moved on).
            match stored.guest_index(&address) {
                Some(index) if stored.status == ConsentStatus::Active => {
                    stored.answer(index, answer, now)
                }
                _ => false,
            }
        })
        .await
        .map_err(|error| self.internal("recording a consent answer", &error))?;
        let Some(join) = saved.as_ref().and_then(|saved| saved.join_url.clone()) else {
            return Err(self.unknown_link());
        };
        info!(
            answer = answer.as_str(),
            "a recording consent answer recorded"
        );
        let mut response = crate::html::redirect(&join, &[]);
        *response.status_mut() = StatusCode::SEE_OTHER;
        Ok(response)
    }
}

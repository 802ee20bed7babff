//! Microsoft permission scopes, the feature bundles an administrator consents to, and
//! which product features a set of granted scopes makes usable.
//!
//! The bundles and their exact scopes are a user-visible contract (DESIGN.md §1). Scope
//! names are compared case-insensitively, as the identity platform does, and accepted
//! both bare (`Mail.Read`) and fully qualified (`https://graph.microsoft.com/Mail.Read`),
//! because token responses return the qualified form while consent callbacks and
//! configuration use the bare one.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// Prefix of a fully qualified Microsoft Graph delegated scope.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com/";
/// Graph's application id, the other spelling of the resource in a scope string.
const GRAPH_APP_ID_PREFIX: &str = "00000003-0000-0000-c000-000000000000/";

/// Every scope one of our bundles asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    OpenId,
    Email,
    Profile,
    OfflineAccess,
    CalendarsReadWrite,
    OnlineMeetingsReadWrite,
    MailRead,
    TeamReadBasicAll,
    ChannelReadBasicAll,
    ChannelMessageSend,
    ChatCreate,
    ChatMessageSend,
    ChatRead,
    ChannelMessageReadAll,
}

impl Scope {
    pub const ALL: [Scope; 14] = [
        Scope::OpenId,
        Scope::Email,
        Scope::Profile,
        Scope::OfflineAccess,
        Scope::CalendarsReadWrite,
        Scope::OnlineMeetingsReadWrite,
        Scope::MailRead,
        Scope::TeamReadBasicAll,
        Scope::ChannelReadBasicAll,
        Scope::ChannelMessageSend,
        Scope::ChatCreate,
        Scope::ChatMessageSend,
        Scope::ChatRead,
        Scope::ChannelMessageReadAll,
    ];

    /// The name as Microsoft documents it (`Mail.Read`, `offline_access`).
    pub fn name(self) -> &'static str {
        match self {
            Scope::OpenId => "openid",
            Scope::Email => "email",
            Scope::Profile => "profile",
            Scope::OfflineAccess => "offline_access",
            Scope::CalendarsReadWrite => "Calendars.ReadWrite",
            Scope::OnlineMeetingsReadWrite => "OnlineMeetings.ReadWrite",
            Scope::MailRead => "Mail.Read",
            Scope::TeamReadBasicAll => "Team.ReadBasic.All",
            Scope::ChannelReadBasicAll => "Channel.ReadBasic.All",
            Scope::ChannelMessageSend => "ChannelMessage.Send",
            Scope::ChatCreate => "Chat.Create",
            Scope::ChatMessageSend => "ChatMessage.Send",
            Scope::ChatRead => "Chat.Read",
            Scope::ChannelMessageReadAll => "ChannelMessage.Read.All",
        }
    }

    /// OpenID Connect scopes belong to no resource and are never qualified.
    pub fn is_oidc(self) -> bool {
        matches!(
            self,
            Scope::OpenId | Scope::Email | Scope::Profile | Scope::OfflineAccess
        )
    }

    /// The form to put in an `/authorize` or `/adminconsent` request:
    /// `https://graph.microsoft.com/Mail.Read`, or the bare name for OIDC scopes.
    pub fn qualified(self) -> String {
        if self.is_oidc() {
            self.name().to_owned()
        } else {
            format!("{GRAPH_RESOURCE}{}", self.name())
        }
    }

    /// Recognises a scope in any case, bare or qualified with the Graph resource.
    pub fn parse(value: &str) -> Option<Scope> {
        let bare = strip_graph_resource(value.trim());
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name().eq_ignore_ascii_case(bare))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(high)), Some(Some(low))) = (
                bytes.get(i + 1).map(|b| hex(*b)),
                bytes.get(i + 2).map(|b| hex(*b)),
            )
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn strip_graph_resource(value: &str) -> &str {
    for prefix in [GRAPH_RESOURCE, GRAPH_APP_ID_PREFIX] {
        if value.len() >= prefix.len()
            && value.is_char_boundary(prefix.len())
            && value[..prefix.len()].eq_ignore_ascii_case(prefix)
        {
            return &value[prefix.len()..];
        }
    }
    value
}

/// A set of granted scopes. Scopes we do not ask for (e.g. `User.Read`, or `.default`)
/// are kept, by their bare name, so nothing a token reported is lost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct ScopeSet {
    known: BTreeSet<Scope>,
    other: BTreeSet<String>,
}

impl ScopeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a space-separated scope string as found in token responses and callbacks.
    pub fn parse(value: &str) -> Self {
        value.split_whitespace().collect()
    }

    pub fn insert_str(&mut self, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        // The auth-code doc's sample shows `scope` URL-encoded
        // (`https%3A%2F%2Fgraph.microsoft.com%2Fmail.read`); captures show it plain. Read both.
        let decoded;
        let value = if value.contains('%') {
            decoded = percent_decoded(value);
            decoded.as_str()
        } else {
            value
        };
        match Scope::parse(value) {
            Some(scope) => {
                self.known.insert(scope);
            }
            None => {
                self.other.insert(strip_graph_resource(value).to_owned());
            }
        }
    }

    pub fn insert(&mut self, scope: Scope) {
        self.known.insert(scope);
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.known.contains(&scope)
    }

    /// Whether a scope outside our bundles (compared case-insensitively, bare or qualified) is present.
    pub fn contains_other(&self, name: &str) -> bool {
        let bare = strip_graph_resource(name.trim());
        self.other
            .iter()
            .any(|granted| granted.eq_ignore_ascii_case(bare))
    }

    pub fn contains_all(&self, scopes: &[Scope]) -> bool {
        scopes.iter().all(|scope| self.contains(*scope))
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty() && self.other.is_empty()
    }

    pub fn known(&self) -> impl Iterator<Item = Scope> + '_ {
        self.known.iter().copied()
    }

    /// Bare names, ours first in bundle order, then the others sorted.
    pub fn names(&self) -> Vec<String> {
        self.known
            .iter()
            .map(|scope| scope.name().to_owned())
            .chain(self.other.iter().cloned())
            .collect()
    }

    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet {
            known: self.known.union(&other.known).copied().collect(),
            other: self.other.union(&other.other).cloned().collect(),
        }
    }

    /// What a token response from Entra's token endpoint grants: the one reading of its
    /// `scope` and `refresh_token` fields, for code redemption and refresh alike.
    /// - `scope` lists what the access token is for. It is optional, and "if omitted, the
    ///   token is for the scopes requested on the initial leg of the flow"
    ///   (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow,
    ///   read 2026-12-05): absent or blank, the requested scopes stand.
    /// - `offline_access` is never echoed in `scope`, even when granted (Microsoft Q&A
    ///   806413, Microsoft moderator: "never returned as a scope"; conformance corpus
    ///   `identity/token-*.json`). A refresh token in hand is the proof of offline access,
    ///   so it decides, whatever `scope` says; without one there is no offline access.
    pub fn granted_by_token_response(
        scope: Option<&str>,
        requested: &ScopeSet,
        refresh_token: bool,
    ) -> ScopeSet {
        let mut granted = match scope {
            Some(scope) if !scope.trim().is_empty() => ScopeSet::parse(scope),
            _ => requested.clone(),
        };
        if refresh_token {
            granted.known.insert(Scope::OfflineAccess);
        } else {
            granted.known.remove(&Scope::OfflineAccess);
        }
        granted
    }

    /// The request form: our scopes as [`Scope::qualified`] (OIDC bare), others (`User.Read`,
    /// `Calendars.Read`) as Graph scopes, qualified too.
    pub fn request_names(&self) -> Vec<String> {
        self.known
            .iter()
            .map(|scope| scope.qualified())
            .chain(
                self.other
                    .iter()
                    .map(|name| format!("{GRAPH_RESOURCE}{name}")),
            )
            .collect()
    }

    /// The features these scopes make usable (see [`Feature::is_usable_with`]).
    pub fn usable_features(&self) -> BTreeSet<Feature> {
        Feature::ALL
            .into_iter()
            .filter(|feature| feature.is_usable_with(self))
            .collect()
    }
}

impl<S: AsRef<str>> FromIterator<S> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut set = ScopeSet::new();
        for value in iter {
            set.insert_str(value.as_ref());
        }
        set
    }
}

impl From<Vec<String>> for ScopeSet {
    fn from(value: Vec<String>) -> Self {
        value.into_iter().collect()
    }
}

impl From<ScopeSet> for Vec<String> {
    fn from(value: ScopeSet) -> Self {
        value.names()
    }
}

impl From<&[Scope]> for ScopeSet {
    fn from(value: &[Scope]) -> Self {
        ScopeSet {
            known: value.iter().copied().collect(),
            other: BTreeSet::new(),
        }
    }
}

/// What an administrator or user consents to: one consent link per bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureBundle {
    Auth,
    Calendar,
    Mail,
    Teams,
    All,
}

const AUTH_SCOPES: [Scope; 4] = [
    Scope::OpenId,
    Scope::Email,
    Scope::Profile,
    Scope::OfflineAccess,
];
const CALENDAR_SCOPES: [Scope; 6] = [
    Scope::OpenId,
    Scope::Email,
    Scope::Profile,
    Scope::OfflineAccess,
    Scope::CalendarsReadWrite,
    Scope::OnlineMeetingsReadWrite,
];
const MAIL_SCOPES: [Scope; 5] = [
    Scope::OpenId,
    Scope::Email,
    Scope::Profile,
    Scope::OfflineAccess,
    Scope::MailRead,
];
/// The two read scopes let teams-post read a channel or chat back after a post whose
/// answer was lost (5xx, timeout, reset), so it never posts twice: Chat.Read
/// (https://learn.microsoft.com/en-us/graph/api/chat-list-messages) and
/// ChannelMessage.Read.All (https://learn.microsoft.com/en-us/graph/api/channel-list-messages),
/// the least privileged delegated permissions of those reads (read 2026-12-05). They are
/// not needed to post: a grant without them still makes [`Feature::Teams`] usable.
const TEAMS_SCOPES: [Scope; 11] = [
    Scope::OpenId,
    Scope::Email,
    Scope::Profile,
    Scope::OfflineAccess,
    Scope::TeamReadBasicAll,
    Scope::ChannelReadBasicAll,
    Scope::ChannelMessageSend,
    Scope::ChatCreate,
    Scope::ChatMessageSend,
    Scope::ChatRead,
    Scope::ChannelMessageReadAll,
];

impl FeatureBundle {
    pub const ALL: [FeatureBundle; 5] = [
        FeatureBundle::Auth,
        FeatureBundle::Calendar,
        FeatureBundle::Mail,
        FeatureBundle::Teams,
        FeatureBundle::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeatureBundle::Auth => "auth",
            FeatureBundle::Calendar => "calendar",
            FeatureBundle::Mail => "mail",
            FeatureBundle::Teams => "teams",
            FeatureBundle::All => "all",
        }
    }

    pub fn parse(value: &str) -> Result<Self, DomainError> {
        FeatureBundle::ALL
            .into_iter()
            .find(|bundle| bundle.as_str().eq_ignore_ascii_case(value.trim()))
            .ok_or_else(|| DomainError::UnknownBundle {
                value: value.chars().take(32).collect(),
            })
    }

    /// The exact scopes the bundle's consent link requests, in a stable order.
    pub fn scopes(self) -> &'static [Scope] {
        match self {
            FeatureBundle::Auth => &AUTH_SCOPES,
            FeatureBundle::Calendar => &CALENDAR_SCOPES,
            FeatureBundle::Mail => &MAIL_SCOPES,
            FeatureBundle::Teams => &TEAMS_SCOPES,
            FeatureBundle::All => &Scope::ALL,
        }
    }

    pub fn scope_set(self) -> ScopeSet {
        ScopeSet::from(self.scopes())
    }

    /// The space-separated request form: OIDC scopes bare, Graph scopes fully qualified.
    pub fn request_scope_string(self) -> String {
        self.scopes()
            .iter()
            .map(|scope| scope.qualified())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The features a grant of this bundle alone makes usable.
    pub fn features(self) -> BTreeSet<Feature> {
        self.scope_set().usable_features()
    }
}

impl fmt::Display for FeatureBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FeatureBundle {
    type Err = DomainError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        FeatureBundle::parse(value)
    }
}

/// Something the product does for a user, usable when the granted scopes allow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Sign in with Microsoft: identify the user (`oid` needs `profile`).
    SignIn,
    /// Background mail import.
    Mail,
    /// Background calendar import.
    Calendar,
    /// Posting to Teams channels and chats.
    Teams,
}

impl Feature {
    pub const ALL: [Feature; 4] = [
        Feature::SignIn,
        Feature::Mail,
        Feature::Calendar,
        Feature::Teams,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::SignIn => "sign_in",
            Feature::Mail => "mail",
            Feature::Calendar => "calendar",
            Feature::Teams => "teams",
        }
    }

    /// The rule, in one place (both "is this feature usable" and "what does a refresh for
    /// this feature ask for" read it, so the two can never disagree):
    /// - sign-in needs `openid` and `profile`;
    /// - every background feature acts while the user is away, so it needs `offline_access`
    ///   (proven by a refresh token, see [`ScopeSet::granted_by_token_response`]) on top of
    ///   its Graph scopes;
    /// - mail needs `Mail.Read` (or `Mail.ReadWrite`, which includes it);
    /// - calendar sync only reads, so `Calendars.ReadWrite` or `Calendars.Read` will do
    ///   (ReadWrite preferred when both were granted: Explicit Consent Mode writes events,
    ///   and creates online meetings with `OnlineMeetings.ReadWrite`, asked for too when granted);
    /// - teams needs all five scopes of the teams bundle (list, post to channels, create
    ///   chats, post to chats).
    ///
    /// Returns the feature's own Graph scopes as granted (bare names), or `None` when the
    /// feature is not usable with `scopes`.
    pub fn scopes_in(self, scopes: &ScopeSet) -> Option<ScopeSet> {
        let either = |known: Scope, other: &str| -> Option<ScopeSet> {
            if scopes.contains(known) {
                Some(ScopeSet::from(&[known][..]))
            } else if scopes.contains_other(other) {
                Some(ScopeSet::parse(other))
            } else {
                None
            }
        };
        let offline = scopes.contains(Scope::OfflineAccess);
        match self {
            Feature::SignIn => scopes
                .contains_all(&[Scope::OpenId, Scope::Profile])
                .then(ScopeSet::new),
            Feature::Mail if offline => either(Scope::MailRead, "Mail.ReadWrite"),
            // Explicit Consent Mode writes the host's events and creates their online
            // meetings: with both granted, the calendar's tokens carry both.
            Feature::Calendar if offline => {
                const CONSENT_MODE: [Scope; 2] =
                    [Scope::CalendarsReadWrite, Scope::OnlineMeetingsReadWrite];
                if scopes.contains_all(&CONSENT_MODE) {
                    Some(ScopeSet::from(&CONSENT_MODE[..]))
                } else {
                    either(Scope::CalendarsReadWrite, "Calendars.Read")
                }
            }
            Feature::Teams if offline => {
                const TEAMS: [Scope; 5] = [
                    Scope::TeamReadBasicAll,
                    Scope::ChannelReadBasicAll,
                    Scope::ChannelMessageSend,
                    Scope::ChatCreate,
                    Scope::ChatMessageSend,
                ];
                scopes
                    .contains_all(&TEAMS)
                    .then(|| ScopeSet::from(&TEAMS[..]))
            }
            Feature::Mail | Feature::Calendar | Feature::Teams => None,
        }
    }

    /// Whether `scopes` make this feature usable (see [`Feature::scopes_in`]).
    pub fn is_usable_with(self, scopes: &ScopeSet) -> bool {
        self.scopes_in(scopes).is_some()
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(bundle: FeatureBundle) -> Vec<&'static str> {
        bundle.scopes().iter().map(|scope| scope.name()).collect()
    }

    #[test]
    fn bundles_carry_the_exact_documented_scopes() {
        let auth = ["openid", "email", "profile", "offline_access"];
        assert_eq!(names(FeatureBundle::Auth), auth);
        let mut calendar = auth.to_vec();
        calendar.extend(["Calendars.ReadWrite", "OnlineMeetings.ReadWrite"]);
        assert_eq!(names(FeatureBundle::Calendar), calendar);
        let mut mail = auth.to_vec();
        mail.push("Mail.Read");
        assert_eq!(names(FeatureBundle::Mail), mail);
        let mut teams = auth.to_vec();
        teams.extend([
            "Team.ReadBasic.All",
            "Channel.ReadBasic.All",
            "ChannelMessage.Send",
            "Chat.Create",
            "ChatMessage.Send",
            "Chat.Read",
            "ChannelMessage.Read.All",
        ]);
        assert_eq!(names(FeatureBundle::Teams), teams);

        let all: BTreeSet<&str> = names(FeatureBundle::All).into_iter().collect();
        let union: BTreeSet<&str> = [
            FeatureBundle::Auth,
            FeatureBundle::Calendar,
            FeatureBundle::Mail,
            FeatureBundle::Teams,
        ]
        .into_iter()
        .flat_map(names)
        .collect();
        assert_eq!(all, union);
        assert_eq!(all.len(), 14);
    }

    #[test]
    fn request_form_qualifies_graph_scopes_only() {
        assert_eq!(
            FeatureBundle::Mail.request_scope_string(),
            "openid email profile offline_access https://graph.microsoft.com/Mail.Read"
        );
        assert_eq!(
            Scope::MailRead.qualified(),
            "https://graph.microsoft.com/Mail.Read"
        );
    }

    #[test]
    fn scopes_parse_in_any_case_and_form() {
        assert_eq!(
            Scope::parse("https://graph.microsoft.com/mail.read"),
            Some(Scope::MailRead)
        );
        assert_eq!(
            Scope::parse("HTTPS://GRAPH.MICROSOFT.COM/Chat.Create"),
            Some(Scope::ChatCreate)
        );
        assert_eq!(
            Scope::parse("00000003-0000-0000-c000-000000000000/Mail.Read"),
            Some(Scope::MailRead)
        );
        assert_eq!(Scope::parse("OFFLINE_ACCESS"), Some(Scope::OfflineAccess));
        let encoded = ScopeSet::parse("https%3A%2F%2Fgraph.microsoft.com%2Fmail.read openid");
        assert!(encoded.contains(Scope::MailRead) && encoded.contains(Scope::OpenId));
        assert_eq!(Scope::parse("User.Read"), None);
        assert_eq!(Scope::parse("https://graph.microsoft.com/"), None);
    }

    #[test]
    fn features_follow_granted_scopes() {
        let token = ScopeSet::parse(
            "profile openid email https://graph.microsoft.com/User.Read https://graph.microsoft.com/Mail.Read offline_access",
        );
        assert_eq!(
            token.usable_features(),
            BTreeSet::from([Feature::SignIn, Feature::Mail])
        );
        assert!(token.contains_other("https://graph.microsoft.com/user.read"));

        let no_refresh = ScopeSet::parse("openid profile Mail.Read Calendars.ReadWrite");
        assert_eq!(
            no_refresh.usable_features(),
            BTreeSet::from([Feature::SignIn])
        );

        let read_only_calendar = ScopeSet::parse("offline_access Calendars.Read");
        assert_eq!(
            read_only_calendar.usable_features(),
            BTreeSet::from([Feature::Calendar])
        );

        let partial_teams = ScopeSet::parse("offline_access Team.ReadBasic.All ChatMessage.Send");
        assert!(!Feature::Teams.is_usable_with(&partial_teams));

        assert_eq!(FeatureBundle::All.features(), BTreeSet::from(Feature::ALL));
        assert_eq!(
            FeatureBundle::Auth.features(),
            BTreeSet::from([Feature::SignIn])
        );
        assert_eq!(
            FeatureBundle::Teams.features(),
            BTreeSet::from([Feature::SignIn, Feature::Teams])
        );
    }

    #[test]
    fn a_token_response_proves_offline_access_by_its_refresh_token_only() {
        let requested = ScopeSet::parse(
            "openid profile email offline_access https://graph.microsoft.com/Mail.Read",
        );
        // As Entra answers: the Graph scopes and OIDC ones, never offline_access.
        let echoed = Some("profile openid email https://graph.microsoft.com/Mail.Read");
        let granted = ScopeSet::granted_by_token_response(echoed, &requested, true);
        assert!(granted.contains(Scope::OfflineAccess));
        assert!(Feature::Mail.is_usable_with(&granted));
        // `scope` is optional: absent or blank, what was requested stands.
        for absent in [None, Some(""), Some("  ")] {
            let granted = ScopeSet::granted_by_token_response(absent, &requested, true);
            assert_eq!(granted, requested, "{absent:?}");
        }
        // No refresh token, no offline access, whatever `scope` claims.
        let claimed = Some("openid profile offline_access https://graph.microsoft.com/Mail.Read");
        let granted = ScopeSet::granted_by_token_response(claimed, &requested, false);
        assert!(!granted.contains(Scope::OfflineAccess));
        assert!(!Feature::Mail.is_usable_with(&granted));
        assert!(Feature::SignIn.is_usable_with(&granted));
    }

    #[test]
    fn one_rule_decides_usability_and_what_a_refresh_asks_for() {
        let read_only =
            ScopeSet::parse("offline_access https://graph.microsoft.com/Calendars.Read");
        let asked = Feature::Calendar.scopes_in(&read_only).expect("usable");
        assert_eq!(
            asked.request_names(),
            vec!["https://graph.microsoft.com/Calendars.Read".to_owned()]
        );
        let both = ScopeSet::parse("offline_access Calendars.Read Calendars.ReadWrite");
        assert_eq!(
            Feature::Calendar
                .scopes_in(&both)
                .expect("usable")
                .request_names(),
            vec!["https://graph.microsoft.com/Calendars.ReadWrite".to_owned()]
        );
        let read_write_mail = ScopeSet::parse("offline_access Mail.ReadWrite");
        assert_eq!(
            Feature::Mail
                .scopes_in(&read_write_mail)
                .expect("usable")
                .names(),
            vec!["Mail.ReadWrite".to_owned()]
        );
        assert_eq!(Feature::Calendar.scopes_in(&read_write_mail), None);
        for feature in Feature::ALL {
            for scopes in [&read_only, &both, &read_write_mail] {
                assert_eq!(
                    feature.is_usable_with(scopes),
                    feature.scopes_in(scopes).is_some()
                );
            }
        }
    }

    #[test]
    fn scope_sets_serialise_as_bare_names() {
        let set = ScopeSet::parse("https://graph.microsoft.com/Mail.Read openid User.Read");
        let json = serde_json::to_string(&set).expect("serialises");
        assert_eq!(json, r#"["openid","Mail.Read","User.Read"]"#);
        let back: ScopeSet = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, set);
    }

    #[test]
    fn bundles_parse() {
        assert_eq!(
            FeatureBundle::parse("ALL").expect("parses"),
            FeatureBundle::All
        );
        assert!(FeatureBundle::parse("everything").is_err());
        let json = serde_json::to_string(&FeatureBundle::Calendar).expect("serialises");
        assert_eq!(json, "\"calendar\"");
    }
}

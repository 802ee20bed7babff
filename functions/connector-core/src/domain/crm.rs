//! The CRM snapshot a customer's CRM exports (the `connectorctl crm import` file), its
//! validation, and the index derived from it: which addresses and account domains are
//! CRM records, and the oldest open opportunity (the reach of the first mail import).
//!
//! File format (camelCase JSON; unknown fields are refused so a typo cannot silently
//! drop data):
//! ```json
//! {"tenantId": "<tenant GUID>",
//!  "accounts": [{"id": "001A", "name": "Acme", "domains": ["acme.com"]}],
//!  "contacts": [{"id": "003B", "email": "jane@acme.com", "accountId": "001A"}],
//!  "leads": [{"id": "00Q1", "email": "bob@initech.com", "company": "Initech"}],
//!  "opportunities": [{"id": "006X", "accountId": "001A", "isClosed": false, "createdDate": "2026-06-01"}]}
//! ```
//! `email`, `accountId`, `company` may be absent or null; `createdDate` is a date
//! (`2026-06-01`) or an RFC 3339 / Salesforce timestamp, reduced to its UTC date.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::ids::TenantId;

// Dates travel as `YYYY-MM-DD` (time's own serde form is a tuple).
time::serde::format_description!(iso_date, Date, "[year]-[month]-[day]");

/// Why a CRM file was refused. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The JSON itself is malformed or has the wrong shape.
    #[error("line {line}, column {column}, at `{path}`: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
        #[source]
        source: serde_json::Error,
    },
    /// Well-formed JSON whose content is not a valid snapshot.
    #[error("{} problem(s): {}", issues.len(), issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid { issues: Vec<SnapshotIssue> },
}

/// One semantic problem, with the JSON path of the offending element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for SnapshotIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at `{}`: {}", self.path, self.message)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SnapshotFile {
    tenant_id: String,
    #[serde(default)]
    accounts: Vec<AccountFile>,
    #[serde(default)]
    contacts: Vec<ContactFile>,
    #[serde(default)]
    leads: Vec<LeadFile>,
    #[serde(default)]
    opportunities: Vec<OpportunityFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccountFile {
    id: String,
    name: String,
    #[serde(default)]
    domains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ContactFile {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    account_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LeadFile {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    company: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpportunityFile {
    id: String,
    #[serde(default)]
    account_id: Option<String>,
    is_closed: bool,
    created_date: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmAccount {
    pub id: String,
    pub name: String,
    /// Lower-case, validated DNS names.
    pub domains: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmContact {
    pub id: String,
    /// Trimmed, lower-case.
    pub email: Option<String>,
    pub account_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmLead {
    pub id: String,
    pub email: Option<String>,
    pub company: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmOpportunity {
    pub id: String,
    pub account_id: Option<String>,
    pub is_closed: bool,
    #[serde(with = "iso_date")]
    pub created_date: Date,
}

/// A validated, normalised snapshot: records sorted by id, addresses and domains lower-case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmSnapshot {
    pub tenant_id: TenantId,
    pub accounts: Vec<CrmAccount>,
    pub contacts: Vec<CrmContact>,
    pub leads: Vec<CrmLead>,
    pub opportunities: Vec<CrmOpportunity>,
}

/// Which kind of CRM record matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrmRecordKind {
    Contact,
    Lead,
    Account,
}

/// A contact or lead with a given address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressRecord {
    pub kind: CrmRecordKind,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
}

/// An account owning a domain.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRecord {
    pub id: String,
    pub name: String,
}

/// Counts an operator sees after an import.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CrmIndexStats {
    pub accounts: u64,
    pub contacts: u64,
    pub leads: u64,
    pub opportunities: u64,
    pub open_opportunities: u64,
    /// Distinct contact/lead addresses.
    pub addresses: u64,
    /// Distinct account domains.
    pub domains: u64,
}

/// What the index of one tenant holds, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrmIndexContent {
    pub addresses: BTreeMap<String, Vec<AddressRecord>>,
    pub domains: BTreeMap<String, Vec<AccountRecord>>,
    pub oldest_open_opportunity: Option<Date>,
    pub stats: CrmIndexStats,
    pub content_hash: String,
}

/// The result of looking up many addresses and domains at once. Keys are the
/// normalised (trimmed, lower-case) forms of what was asked; misses are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrmLookup {
    pub addresses: BTreeMap<String, Vec<AddressRecord>>,
    pub domains: BTreeMap<String, Vec<AccountRecord>>,
}

/// Summary of the tenant's current index (its `current` pointer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmIndexSummary {
    pub version: String,
    pub content_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub imported_at: OffsetDateTime,
    #[serde(
        default,
        with = "iso_date::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_open_opportunity: Option<Date>,
    pub stats: CrmIndexStats,
    /// The latest import that left out an address or domain its predecessor held (`None`:
    /// none since stamps exist). A sync caught up with an import at or after it has
    /// nothing stored that a removal could concern.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub removed_at: Option<OffsetDateTime>,
}

impl CrmIndexSummary {
    /// The `removed_at` of the import that follows `previous`: `now` when it left out an
    /// entry `previous` held, `previous`'s otherwise.
    pub fn removed_at_after(
        previous: Option<&CrmIndexSummary>,
        removed_any: bool,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        if removed_any {
            Some(now)
        } else {
            previous.and_then(|summary| summary.removed_at)
        }
    }
}

/// What a tenant's CRM gained since an earlier import ([`crate::ports::CrmIndex::additions_since`]):
/// the added contact/lead addresses and account domains, with their records, in matching's
/// form (so the rules that drop free-mail and public-suffix domains apply to them too).
#[derive(Debug)]
pub struct CrmAdditions {
    /// The current index the additions belong to.
    pub summary: CrmIndexSummary,
    pub index: crate::matching::CrmMatchIndex,
}

/// What replacing a snapshot did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplaceOutcome {
    /// The same content is already current: nothing was written.
    Unchanged { summary: CrmIndexSummary },
    /// The new snapshot is current; `removed_entries` old entries were deleted.
    Replaced {
        summary: CrmIndexSummary,
        previous_version: Option<String>,
        written_entries: u64,
        removed_entries: u64,
    },
}

impl CrmSnapshot {
    /// Parses and validates a CRM file. Syntax and shape errors carry the JSON path,
    /// line and column; semantic errors carry the path of every offending element.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let file: SnapshotFile =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
                let path = error.path().to_string();
                let inner = error.into_inner();
                syntax_error(path, inner)
            })?;
        deserializer
            .end()
            .map_err(|error| syntax_error(".".to_owned(), error))?;
        validate(file)
    }

    /// SHA-256 over the normalised content: the same records in another order or case
    /// hash the same, so re-importing them is a no-op.
    pub fn content_hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&canonical))
    }

    /// The index entries this snapshot produces.
    pub fn index(&self) -> CrmIndexContent {
        let mut addresses: BTreeMap<String, Vec<AddressRecord>> = BTreeMap::new();
        for contact in &self.contacts {
            if let Some(email) = &contact.email {
                addresses
                    .entry(email.clone())
                    .or_default()
                    .push(AddressRecord {
                        kind: CrmRecordKind::Contact,
                        id: contact.id.clone(),
                        account_id: contact.account_id.clone(),
                        company: None,
                    });
            }
        }
        for lead in &self.leads {
            if let Some(email) = &lead.email {
                addresses
                    .entry(email.clone())
                    .or_default()
                    .push(AddressRecord {
                        kind: CrmRecordKind::Lead,
                        id: lead.id.clone(),
                        account_id: None,
                        company: lead.company.clone(),
                    });
            }
        }
        let mut domains: BTreeMap<String, Vec<AccountRecord>> = BTreeMap::new();
        for account in &self.accounts {
            for domain in &account.domains {
                let owners = domains.entry(domain.clone()).or_default();
                if !owners.iter().any(|owner| owner.id == account.id) {
                    owners.push(AccountRecord {
                        id: account.id.clone(),
                        name: account.name.clone(),
                    });
                }
            }
        }
        let open: Vec<&CrmOpportunity> = self
            .opportunities
            .iter()
            .filter(|opportunity| !opportunity.is_closed)
            .collect();
        let stats = CrmIndexStats {
            accounts: self.accounts.len() as u64,
            contacts: self.contacts.len() as u64,
            leads: self.leads.len() as u64,
            opportunities: self.opportunities.len() as u64,
            open_opportunities: open.len() as u64,
            addresses: addresses.len() as u64,
            domains: domains.len() as u64,
        };
        CrmIndexContent {
            oldest_open_opportunity: open.iter().map(|o| o.created_date).min(),
            addresses,
            domains,
            stats,
            content_hash: self.content_hash(),
        }
    }
}

fn syntax_error(path: String, source: serde_json::Error) -> SnapshotError {
    // serde_json appends " at line L column C" to its message; the variant carries both.
    let message = source.to_string();
    let message = match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message,
    };
    SnapshotError::Syntax {
        path,
        line: source.line(),
        column: source.column(),
        message,
        source,
    }
}

fn validate(file: SnapshotFile) -> Result<CrmSnapshot, SnapshotError> {
    let mut issues = Vec::new();
    let mut issue = |path: String, message: String| issues.push(SnapshotIssue { path, message });

    let tenant_id = TenantId::parse(&file.tenant_id);
    if tenant_id.is_err() {
        issue(
            "tenantId".into(),
            "must be the tenant's GUID (Entra ID tenant id)".into(),
        );
    }

    let mut accounts = Vec::with_capacity(file.accounts.len());
    let mut account_ids = HashSet::new();
    for (i, account) in file.accounts.into_iter().enumerate() {
        let path = format!("accounts[{i}]");
        check_id(&mut issue, &path, &account.id, &mut account_ids);
        if account.name.trim().is_empty() {
            issue(format!("{path}.name"), "must not be empty".into());
        }
        let mut domains = BTreeSet::new();
        for (j, domain) in account.domains.iter().enumerate() {
            match normalize_domain(domain) {
                Some(domain) => {
                    domains.insert(domain);
                }
                None => issue(
                    format!("{path}.domains[{j}]"),
                    format!("`{}` is not a domain name", shorten(domain)),
                ),
            }
        }
        accounts.push(CrmAccount {
            id: account.id.trim().to_owned(),
            name: account.name.trim().to_owned(),
            domains: domains.into_iter().collect(),
        });
    }

    let mut contacts = Vec::with_capacity(file.contacts.len());
    let mut contact_ids = HashSet::new();
    for (i, contact) in file.contacts.into_iter().enumerate() {
        let path = format!("contacts[{i}]");
        check_id(&mut issue, &path, &contact.id, &mut contact_ids);
        let email = check_email(&mut issue, &path, contact.email.as_deref());
        let account_id = contact.account_id.map(|id| id.trim().to_owned());
        if let Some(account_id) = &account_id
            && !account_ids.contains(account_id.as_str())
        {
            issue(
                format!("{path}.accountId"),
                format!("no account has id `{}`", shorten(account_id)),
            );
        }
        contacts.push(CrmContact {
            id: contact.id.trim().to_owned(),
            email,
            account_id,
        });
    }

    let mut leads = Vec::with_capacity(file.leads.len());
    let mut lead_ids = HashSet::new();
    for (i, lead) in file.leads.into_iter().enumerate() {
        let path = format!("leads[{i}]");
        check_id(&mut issue, &path, &lead.id, &mut lead_ids);
        let email = check_email(&mut issue, &path, lead.email.as_deref());
        leads.push(CrmLead {
            id: lead.id.trim().to_owned(),
            email,
            company: lead
                .company
                .map(|company| company.trim().to_owned())
                .filter(|company| !company.is_empty()),
        });
    }

    let mut opportunities = Vec::with_capacity(file.opportunities.len());
    let mut opportunity_ids = HashSet::new();
    for (i, opportunity) in file.opportunities.into_iter().enumerate() {
        let path = format!("opportunities[{i}]");
        check_id(&mut issue, &path, &opportunity.id, &mut opportunity_ids);
        let account_id = opportunity.account_id.map(|id| id.trim().to_owned());
        if let Some(account_id) = &account_id
            && !account_ids.contains(account_id.as_str())
        {
            issue(
                format!("{path}.accountId"),
                format!("no account has id `{}`", shorten(account_id)),
            );
        }
        let created_date = parse_crm_date(&opportunity.created_date);
        if created_date.is_none() {
            issue(
                format!("{path}.createdDate"),
                format!(
                    "`{}` is not a date (expected YYYY-MM-DD or an RFC 3339 timestamp)",
                    shorten(&opportunity.created_date)
                ),
            );
        }
        opportunities.push(CrmOpportunity {
            id: opportunity.id.trim().to_owned(),
            account_id,
            is_closed: opportunity.is_closed,
            created_date: created_date.unwrap_or(Date::MIN),
        });
    }

    match tenant_id {
        Ok(tenant_id) if issues.is_empty() => {
            accounts.sort_by(|a, b| a.id.cmp(&b.id));
            contacts.sort_by(|a, b| a.id.cmp(&b.id));
            leads.sort_by(|a, b| a.id.cmp(&b.id));
            opportunities.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(CrmSnapshot {
                tenant_id,
                accounts,
                contacts,
                leads,
                opportunities,
            })
        }
        _ => Err(SnapshotError::Invalid { issues }),
    }
}

fn check_id(
    issue: &mut impl FnMut(String, String),
    path: &str,
    id: &str,
    seen: &mut HashSet<String>,
) {
    let id = id.trim();
    if id.is_empty() {
        issue(format!("{path}.id"), "must not be empty".into());
    } else if id.contains('#') || id.chars().any(char::is_control) {
        issue(
            format!("{path}.id"),
            "must not contain `#` or control characters".into(),
        );
    } else if !seen.insert(id.to_owned()) {
        issue(
            format!("{path}.id"),
            format!("duplicate id `{}`", shorten(id)),
        );
    }
}

fn check_email(
    issue: &mut impl FnMut(String, String),
    path: &str,
    email: Option<&str>,
) -> Option<String> {
    let raw = email?;
    if raw.trim().is_empty() {
        return None;
    }
    let normalized = normalize_email(raw);
    if normalized.is_none() {
        issue(
            format!("{path}.email"),
            format!("`{}` is not an email address", shorten(raw)),
        );
    }
    normalized
}

fn shorten(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() > MAX {
        let mut short: String = value.chars().take(MAX).collect();
        short.push('…');
        short
    } else {
        value.to_owned()
    }
}

/// Trims and lower-cases a DNS name; `None` unless it has at least two labels of
/// letters, digits and inner hyphens (a trailing dot is accepted and removed).
pub fn normalize_domain(value: &str) -> Option<String> {
    let domain = value.trim().trim_end_matches('.').to_lowercase();
    if domain.is_empty() || domain.len() > 253 {
        return None;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return None;
    }
    let labels_ok = labels.iter().all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    });
    let tld_ok = labels
        .last()
        .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()));
    (labels_ok && tld_ok).then_some(domain)
}

/// Trims and lower-cases an address; `None` unless it is `local@domain` with a
/// non-empty local part free of spaces and separators and a valid domain.
pub fn normalize_email(value: &str) -> Option<String> {
    let address = value.trim();
    if address.len() > 254 {
        return None;
    }
    let (local, domain) = address.rsplit_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '@' | '<' | '>' | ',' | ';' | '"')
        });
    let domain = normalize_domain(domain)?;
    local_ok.then(|| format!("{}@{domain}", local.to_lowercase()))
}

/// The domain part of an address, normalised.
pub fn email_domain(address: &str) -> Option<String> {
    normalize_email(address).and_then(|email| email.rsplit_once('@').map(|(_, d)| d.to_owned()))
}

/// The domain itself and every parent with at least two labels, most specific first:
/// `mail.eu.acme.com` → `mail.eu.acme.com`, `eu.acme.com`, `acme.com`. Looking these up
/// finds an account domain that equals, or is a parent of, a participant's domain.
pub fn domain_and_parents(domain: &str) -> Vec<String> {
    let Some(domain) = normalize_domain(domain) else {
        return Vec::new();
    };
    let mut candidates = vec![domain.clone()];
    let mut rest = domain.as_str();
    while let Some((_, parent)) = rest.split_once('.') {
        if !parent.contains('.') {
            break;
        }
        candidates.push(parent.to_owned());
        rest = parent;
    }
    candidates
}

const DATE: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");
const SALESFORCE: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond][offset_hour sign:mandatory][offset_minute]"
);
const NAIVE: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

/// A CRM date: `YYYY-MM-DD`, RFC 3339, Salesforce's `2026-06-01T12:00:00.000+0000`, or a
/// naive timestamp taken as UTC; reduced to the UTC calendar date.
pub fn parse_crm_date(value: &str) -> Option<Date> {
    let value = value.trim();
    if let Ok(date) = Date::parse(value, DATE) {
        return Some(date);
    }
    if let Ok(at) = OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339) {
        return Some(at.to_offset(UtcOffset::UTC).date());
    }
    if let Ok(at) = OffsetDateTime::parse(value, SALESFORCE) {
        return Some(at.to_offset(UtcOffset::UTC).date());
    }
    PrimitiveDateTime::parse(value, NAIVE)
        .ok()
        .map(|at| at.date())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const GOOD: &str = r#"{"tenantId": "72F988BF-86F1-41AF-91AB-2D7CD011DB47",
 "accounts": [{"id": "001A", "name": "Acme", "domains": ["Acme.com", "acme.co.uk."]},
              {"id": "001B", "name": "Globex", "domains": ["globex.com"]}],
 "contacts": [{"id": "003B", "email": " Jane@Acme.com ", "accountId": "001A"},
              {"id": "003C", "email": null}],
 "leads": [{"id": "00Q1", "email": "bob@initech.com", "company": "Initech"},
           {"id": "00Q2", "email": "jane@acme.com"}],
 "opportunities": [{"id": "006X", "accountId": "001A", "isClosed": false, "createdDate": "2026-06-01"},
                   {"id": "006Y", "accountId": "001B", "isClosed": false, "createdDate": "2026-02-03T23:30:00.000-0200"},
                   {"id": "006Z", "isClosed": true, "createdDate": "2020-01-01"}]}"#;

    #[test]
    fn good_file_is_normalised_and_indexed() {
        let snapshot = CrmSnapshot::from_json_slice(GOOD.as_bytes()).expect("valid");
        assert_eq!(
            snapshot.tenant_id.as_str(),
            "72f988bf-86f1-41af-91ab-2d7cd011db47"
        );
        assert_eq!(
            snapshot.accounts[0].domains,
            vec!["acme.co.uk".to_owned(), "acme.com".to_owned()]
        );
        let index = snapshot.index();
        let jane = &index.addresses["jane@acme.com"];
        assert_eq!(jane.len(), 2);
        assert_eq!(jane[0].kind, CrmRecordKind::Contact);
        assert_eq!(jane[0].account_id.as_deref(), Some("001A"));
        assert_eq!(jane[1].kind, CrmRecordKind::Lead);
        assert_eq!(index.domains["globex.com"][0].name, "Globex");
        // 2026-02-03T23:30-02:00 is 2026-02-04 in UTC, older than 2026-06-01; the closed one does not count.
        assert_eq!(index.oldest_open_opportunity, Some(date!(2026 - 02 - 04)));
        assert_eq!(
            index.stats,
            CrmIndexStats {
                accounts: 2,
                contacts: 2,
                leads: 2,
                opportunities: 3,
                open_opportunities: 2,
                addresses: 2,
                domains: 3,
            }
        );
    }

    #[test]
    fn hash_ignores_order_and_case_but_not_content() {
        let a = CrmSnapshot::from_json_slice(GOOD.as_bytes()).expect("valid");
        let reordered = GOOD.replace(
            "\"003B\", \"email\": \" Jane@Acme.com \"",
            "\"003B\", \"email\": \"jane@ACME.com\"",
        );
        let b = CrmSnapshot::from_json_slice(reordered.as_bytes()).expect("valid");
        assert_eq!(a.content_hash(), b.content_hash());
        let changed = GOOD.replace("Initech\"", "Initech Corp\"");
        let c = CrmSnapshot::from_json_slice(changed.as_bytes()).expect("valid");
        assert_ne!(a.content_hash(), c.content_hash());
    }

    #[test]
    fn syntax_errors_name_path_line_and_column() {
        let text = "{\"tenantId\": \"72f988bf-86f1-41af-91ab-2d7cd011db47\",\n \"accounts\": [\n  {\"id\": \"001A\", \"name\": \"Acme\", \"domains\": [\"acme.com\", 42]}\n ]}";
        let Err(SnapshotError::Syntax {
            path, line, column, ..
        }) = CrmSnapshot::from_json_slice(text.as_bytes())
        else {
            panic!("expected a syntax error");
        };
        assert_eq!(path, "accounts[0].domains[1]");
        assert_eq!(line, 3);
        assert!(column > 50, "column {column}");

        let truncated = "{\"tenantId\": \"x\",\n \"contacts\": [{\"id\": \"1\",";
        let Err(SnapshotError::Syntax { line, .. }) =
            CrmSnapshot::from_json_slice(truncated.as_bytes())
        else {
            panic!("expected a syntax error");
        };
        assert_eq!(line, 2);

        let unknown = "{\"tenantId\": \"x\", \"leads\": [{\"id\": \"1\", \"mail\": \"a@b.com\"}]}";
        let Err(SnapshotError::Syntax { path, message, .. }) =
            CrmSnapshot::from_json_slice(unknown.as_bytes())
        else {
            panic!("expected a syntax error");
        };
        assert_eq!(path, "leads[0].mail");
        assert!(message.contains("unknown field"), "{message}");
    }

    #[test]
    fn semantic_errors_name_every_offending_element() {
        let text = r#"{"tenantId": "not-a-guid",
          "accounts": [{"id": "A", "name": "Acme", "domains": ["acme", "ok.com"]},
                       {"id": "A", "name": "Again"}],
          "contacts": [{"id": "C1", "email": "jane at acme.com", "accountId": "A"},
                       {"id": "C2", "email": "x@acme.com", "accountId": "nope"}],
          "leads": [{"id": "", "email": "l@initech.com"}],
          "opportunities": [{"id": "O", "accountId": "A", "isClosed": false, "createdDate": "2026-13-01"}]}"#;
        let Err(SnapshotError::Invalid { issues }) = CrmSnapshot::from_json_slice(text.as_bytes())
        else {
            panic!("expected semantic errors");
        };
        let paths: Vec<&str> = issues.iter().map(|issue| issue.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "tenantId",
                "accounts[0].domains[0]",
                "accounts[1].id",
                "contacts[0].email",
                "contacts[1].accountId",
                "leads[0].id",
                "opportunities[0].createdDate",
            ]
        );
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let text = "{\"tenantId\": \"72f988bf-86f1-41af-91ab-2d7cd011db47\"}\n}";
        assert!(matches!(
            CrmSnapshot::from_json_slice(text.as_bytes()),
            Err(SnapshotError::Syntax { line: 2, .. })
        ));
    }

    #[test]
    fn addresses_and_domains() {
        assert_eq!(
            normalize_email("  Jane.Doe+x@Mail.Acme.COM "),
            Some("jane.doe+x@mail.acme.com".into())
        );
        for bad in [
            "jane",
            "@acme.com",
            "jane@",
            "ja ne@acme.com",
            "jane@acme",
            "a@b@c",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
        assert_eq!(normalize_email("a@b@c.com"), None);
        assert_eq!(email_domain("x@Sub.Acme.com"), Some("sub.acme.com".into()));
        for bad in ["-acme.com", "acme..com", "acme", "1.2.3.4", "acme_corp.com"] {
            assert_eq!(normalize_domain(bad), None, "{bad}");
        }
        assert_eq!(
            domain_and_parents("Mail.EU.acme.com"),
            vec!["mail.eu.acme.com", "eu.acme.com", "acme.com"]
        );
        assert_eq!(domain_and_parents("acme.com"), vec!["acme.com"]);
        assert!(domain_and_parents("localhost").is_empty());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_crm_date("2026-06-01"), Some(date!(2026 - 06 - 01)));
        assert_eq!(
            parse_crm_date("2026-06-01T01:00:00+02:00"),
            Some(date!(2026 - 05 - 31))
        );
        assert_eq!(
            parse_crm_date("2026-06-01T12:00:00.000+0000"),
            Some(date!(2026 - 06 - 01))
        );
        assert_eq!(parse_crm_date("2026-02-30"), None);
        assert_eq!(parse_crm_date("yesterday"), None);
    }
}

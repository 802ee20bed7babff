//! Shared library of the Office 365 connector's Lambda functions and tools.
//!
//! - [`domain`]: tenants, connections, bundles and scopes, sync state, activities, CRM
//!   snapshot. No AWS SDK, no HTTP, no Lambda.
//! - [`ports`]: the narrow async traits handlers depend on.
//! - [`adapters`]: DynamoDB / Secrets Manager / SQS implementations and in-memory twins.
//! - [`messages`]: JSON bodies of queue messages.
//! - [`config`]: typed configuration from the environment.
//! - [`secret`]: redacting secret types.
//! - [`clock`]: the time source the sync machinery asks.
//! - [`matching`]: the CRM matching rules.
//! - [`crm_catchup`]: catching a sync's stored set up with a CRM that changed.
//! - [`budget`]: Outlook's 4 concurrent requests per mailbox, shared across processes.
//! - [`graph`]: the Microsoft Graph client (throttling, retries, per-mailbox limit, `$batch`).
//! - [`credential`]: the app's client secret (re-read on rotation) or KMS-signed certificate.
//! - [`oauth`]: the refresh-token grant, Microsoft's error classification, the token provider.
//! - [`sync`]: fan-out and the worker skeleton the sync functions share.
//! - [`notifications`]: change-notification subscriptions (manager, webhook, their store).
//! - [`teams`]: Teams posting state (idempotency records, share targets, dead-letter reasons).

pub mod adapters;
pub mod budget;
pub mod calendar;
pub mod clock;
pub mod config;
#[cfg(test)]
mod conformance;
pub mod consent_meetings;
pub mod credential;
pub mod crm_catchup;
pub mod domain;
pub mod graph;
#[cfg(feature = "http-lambda")]
pub mod http_lambda;
pub mod matching;
pub mod messages;
pub mod notifications;
pub mod oauth;
pub mod offboard;
pub mod ports;
pub mod secret;
pub mod sync;
pub mod teams;

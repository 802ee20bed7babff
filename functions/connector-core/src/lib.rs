//! Shared library of the Office 365 connector's Lambda functions and tools.
//!
//! - [`domain`]: tenants, connections, bundles and scopes, sync state, activities, CRM
//!   snapshot. No AWS SDK, no HTTP, no Lambda.
//! - [`ports`]: the narrow async traits handlers depend on.
//! - [`adapters`]: DynamoDB / Secrets Manager / SQS implementations and in-memory twins.
//! - [`messages`]: JSON bodies of queue messages.
//! - [`config`]: typed configuration from the environment.
//! - [`secret`]: redacting secret types.

pub mod adapters;
pub mod config;
pub mod domain;
pub mod messages;
pub mod ports;
pub mod secret;

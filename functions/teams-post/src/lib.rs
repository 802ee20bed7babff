//! teams-post: the TeamsPostFunction. Takes messages from TeamsPostQueue and posts HTML to
//! a Teams channel or chat as the user, exactly once in effect, or refreshes the teams and
//! channels the user can post to (the README's "Teams post" section has the message
//! formats, the failure codes and the remaining double-post window).
//!
//! - [`handler`]: one SQS batch: parse, check, post or refresh, settle (ack, dead-letter
//!   with a reason, or retry after a delay), answer with the batch item failures;
//! - [`graph`]: the Graph calls, as the user, over the shared Graph client;
//! - [`sanitize`]: the HTML Teams renders, and the 28 KB limit measured after cleaning;
//! - [`limiter`]: Teams' per-channel and per-tenant posting rates inside a container;
//! - [`failure`]: the reasons a message is given up on, as the operator reads them;
//! - [`config`]: the function's configuration from the environment;
//! - [`wiring`]: the real ports, built once per cold start.

pub mod config;
pub mod failure;
pub mod graph;
pub mod handler;
pub mod limiter;
pub mod sanitize;
pub mod wiring;

pub use handler::{BatchReport, Outcome, Ports, Settings, TeamsPoster};

//! teams-post: the TeamsPostFunction. Takes messages from TeamsPostQueue and posts HTML to
//! a Teams channel or chat as the user, exactly once in effect, or refreshes the teams and
//! channels the user can post to.
//!
//! - [`sanitize`]: the HTML Teams renders, and the 28 KB limit measured after cleaning;
//! - [`limiter`]: Teams' per-channel and per-tenant posting rates inside a container;
//! - [`failure`]: the reasons a message is given up on, as the operator reads them.

pub mod failure;
pub mod limiter;
pub mod sanitize;

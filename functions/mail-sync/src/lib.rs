//! mail-sync: the MailSyncFunction handler (schedule fan-out and SQS worker).

// The shared sync machinery lives in connector-core as new modules; until connector-core is
// opened for wiring them into its lib.rs, they compile here, with connector-core's modules
// re-exported under the same `crate::` paths they use.
pub use connector_core::{adapters, config, domain, messages, ports, secret};
#[path = "../../connector-core/src/clock.rs"]
pub mod clock;
#[path = "../../connector-core/src/graph.rs"]
pub mod graph;
#[path = "../../connector-core/src/matching.rs"]
pub mod matching;
#[path = "../../connector-core/src/oauth.rs"]
pub mod oauth;
#[path = "../../connector-core/src/sync.rs"]
pub mod sync;

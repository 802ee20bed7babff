//! `make bench` (issue 9): measured speed, memory and cost of the connector, side by side
//! with what teams would otherwise use.
//!
//! - The engine itself is mail-sync's `page::scan_page` (parse, classify, match, keep ids),
//!   timed by the divan benchmark (`benches/engine.rs`) and used by the Rust listing client.
//! - [`run`]: the orchestrator of every other measurement, against microsoft-sim and moto,
//!   through the real release binaries ([`lambda`]: a local Lambda Runtime API) with AWS
//!   calls counted by a proxy ([`awsproxy`]) and process figures from `/proc`
//!   ([`procstat`]).
//! - [`listing`]: the worker's listing path as a process of its own, the Rust side of the
//!   comparison with the Python scripts in `bench/compare/`.
//! - [`notifications`]: change notifications (issue 15): arrival → stored activity, the
//!   webhook's answers per second, the per-run figures of the cost per user-month.
//! - [`crm_changes`]: what catching up with a changed CRM costs on the large mailbox.
//! - [`crm`], [`world`], [`store`]: the benchmark's CRM, Microsoft world and AWS state.

pub mod awsproxy;
pub mod crm;
pub mod crm_changes;
pub mod lambda;
pub mod listing;
pub mod notifications;
pub mod procstat;
pub mod run;
pub mod store;
pub mod world;

//! mail-sync against microsoft-sim (in-process) and moto: one test binary, one module per
//! concern. Every test provisions its own stack and its own sim.

mod bodies;
mod cap;
mod crash;
mod crm_changes;
mod faults;
mod fence;
mod handler;
mod lease;
mod live;
mod matching;
mod memory;
mod privacy;
mod scale;
mod shared_mailbox;
mod support;

//! calendar-sync against microsoft-sim (in-process) and moto: one test binary (one moto),
//! one module per concern; every test provisions its own stack and its own sim.

mod consent;
mod crm_changes;
mod faults;
mod live;
mod scale;
mod support;
mod world;

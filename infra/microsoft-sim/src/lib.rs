//! microsoft-sim: a local Microsoft identity platform (login.microsoftonline.com) and Microsoft Graph v1.0
//! (graph.microsoft.com) on one loopback port, loaded from a world file, with a control API for tests.
//! It shares no code with the connector on purpose: a misreading of Microsoft must not sit on both sides of a test.

pub mod control;
pub mod generate;
pub mod graph;
pub mod identity;
pub mod server;
pub mod state;
pub mod tls;
pub mod world;

pub use server::{SimOptions, SimServer};
pub use state::{SharedSim, Sim, SimConfig, UserInfo};
pub use world::World;

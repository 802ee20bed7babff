//! Graph mail: the `MailStore` and its routes (owned by S2 (Graph mail); this is the skeleton's starting point).

use axum::Router;
use time::OffsetDateTime;

use crate::state::SharedSim;
use crate::world::World;

#[derive(Debug, Default)]
pub struct MailStore {}

impl MailStore {
    pub fn from_world(_world: &World, _sim_clock_now: OffsetDateTime) -> anyhow::Result<Self> {
        Ok(MailStore {})
    }
}

/// Routes relative to `/v1.0` (the Graph router nests them there).
pub fn router() -> Router<SharedSim> {
    Router::new()
}

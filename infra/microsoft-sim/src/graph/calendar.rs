//! Graph calendar: the `CalendarStore` and its routes (owned by S3 (Graph calendar, Teams, subscriptions); this is the skeleton's starting point).

use axum::Router;
use time::OffsetDateTime;

use crate::state::SharedSim;
use crate::world::World;

#[derive(Debug, Default)]
pub struct CalendarStore {}

impl CalendarStore {
    pub fn from_world(_world: &World, _sim_clock_now: OffsetDateTime) -> anyhow::Result<Self> {
        Ok(CalendarStore {})
    }
}

/// Routes relative to `/v1.0` (the Graph router nests them there).
pub fn router() -> Router<SharedSim> {
    Router::new()
}

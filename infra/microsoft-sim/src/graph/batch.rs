//! Graph JSON batching (`POST /v1.0/$batch`) (owned by S2; this is the skeleton's starting point).

use axum::Router;

use crate::state::SharedSim;

/// Routes relative to `/v1.0`.
pub fn router() -> Router<SharedSim> {
    Router::new()
}

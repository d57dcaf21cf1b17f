//! Cluster mode: commands go through the engine's replicated log.

use super::*;

pub struct Link {}

impl Link {
    pub async fn submit(&self, _env: Envelope) -> Result<Outcome> {
        Err(StoreError::Unavailable("cluster mode is not built yet".into()))
    }
}

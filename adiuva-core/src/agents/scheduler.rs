//! The scheduler tick (see the module docs of `agents`).

use std::time::Duration;

use super::{AgentService, TickReport};
use crate::error::Error;

pub(super) async fn start(_s: &AgentService) -> Result<Vec<tokio::task::JoinHandle<()>>, Error> {
    todo!("CONTRACT h-run")
}

pub(super) async fn tick(_s: &AgentService) -> Result<TickReport, Error> {
    todo!("CONTRACT h-run")
}

pub(super) async fn idle(_s: &AgentService, _max: Duration) -> bool {
    todo!("CONTRACT h-run")
}

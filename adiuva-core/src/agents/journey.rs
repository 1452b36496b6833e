//! The model-led setup conversation.

use uuid::Uuid;

use super::{AgentService, JourneyReply};
use crate::auth::Principal;
use crate::error::Error;

pub(super) async fn start(
    _s: &AgentService,
    _p: &Principal,
    _agent_type: &str,
    _data_types: Vec<String>,
) -> Result<JourneyReply, Error> {
    todo!("CONTRACT h-cfg")
}

pub(super) async fn message(
    _s: &AgentService,
    _p: &Principal,
    _session_id: Uuid,
    _message: &str,
) -> Result<JourneyReply, Error> {
    todo!("CONTRACT h-cfg")
}

//! One run of an agent (see the module docs of `agents`).

use uuid::Uuid;

use super::AgentService;
use crate::auth::Principal;
use crate::error::Error;
use crate::ports::db::AgentRun;

/// Makes the device hub hand this service the `data_response`s that answer
/// `agent_trigger`s (their id is the run's id).
pub(super) fn register_trigger_answers(_s: &AgentService) {
    // CONTRACT h-run: DeviceHub::set_trigger_answers(Weak<dyn TriggerAnswers>)
}

pub(super) async fn run_now(
    _s: &AgentService,
    _p: &Principal,
    _agent_id: Uuid,
) -> Result<Uuid, Error> {
    todo!("CONTRACT h-run")
}

pub(super) async fn runs(
    _s: &AgentService,
    _p: &Principal,
    _agent_id: Option<Uuid>,
    _page: u64,
    _limit: u64,
) -> Result<Vec<AgentRun>, Error> {
    todo!("CONTRACT h-run")
}

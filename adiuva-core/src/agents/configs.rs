//! Config CRUD (see the module docs of `agents`).

use uuid::Uuid;

use super::{AgentInput, AgentPatch, AgentService, AgentView};
use crate::auth::Principal;
use crate::error::Error;
use crate::ports::db::AgentKind;

pub(super) async fn list(
    _s: &AgentService,
    _p: &Principal,
    _kind: AgentKind,
) -> Result<Vec<AgentView>, Error> {
    todo!("CONTRACT h-cfg")
}

pub(super) async fn create(
    _s: &AgentService,
    _p: &Principal,
    _kind: AgentKind,
    _input: AgentInput,
) -> Result<AgentView, Error> {
    todo!("CONTRACT h-cfg")
}

pub(super) async fn update(
    _s: &AgentService,
    _p: &Principal,
    _kind: AgentKind,
    _id: Uuid,
    _patch: AgentPatch,
) -> Result<AgentView, Error> {
    todo!("CONTRACT h-cfg")
}

pub(super) async fn delete(
    _s: &AgentService,
    _p: &Principal,
    _kind: AgentKind,
    _id: Uuid,
) -> Result<(), Error> {
    todo!("CONTRACT h-cfg")
}

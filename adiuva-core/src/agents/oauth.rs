//! OAuth: authorize, callback, refresh (see the module docs of `agents`).

use super::AgentService;
use crate::auth::Principal;
use crate::error::Error;

pub(super) async fn authorize(
    _s: &AgentService,
    _p: &Principal,
    _provider: &str,
) -> Result<String, Error> {
    todo!("CONTRACT h-cfg")
}

pub(super) async fn callback(
    _s: &AgentService,
    _provider: &str,
    _code: &str,
    _state: &str,
) -> Result<String, Error> {
    todo!("CONTRACT h-cfg")
}

pub(super) async fn refresh(
    _s: &AgentService,
    _p: &Principal,
    _provider: &str,
    _encrypted_token: &str,
) -> Result<String, Error> {
    todo!("CONTRACT h-cfg")
}

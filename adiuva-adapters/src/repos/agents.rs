//! Agent configs, runs (a slot claimed once, leases) and journey sessions, written once
//! for every SQL dialect (see `repos`).

/// Implements `AgentRepo` for `$db`.
macro_rules! impl_agent_repos {
    ($db:ty, $d:ident) => {
        const _: () = {
            use adiuva_core::domain::{Millis, UserId};
            use adiuva_core::ports::db::{
                AgentConfigRow, AgentKind, AgentLimits, AgentRepo, AgentRun, JourneyRow,
                RepoResult, RunOutcome, SlotClaim,
            };
            use async_trait::async_trait;
            use uuid::Uuid;

            #[async_trait]
            #[allow(unused_variables)]
            impl AgentRepo for $db {
                async fn insert_agent(
                    &self,
                    row: &AgentConfigRow,
                    limits: AgentLimits,
                ) -> RepoResult<()> {
                    todo!("CONTRACT h-db")
                }

                async fn update_agent(
                    &self,
                    row: &AgentConfigRow,
                    limits: AgentLimits,
                ) -> RepoResult<()> {
                    todo!("CONTRACT h-db")
                }

                async fn agent(
                    &self,
                    user_id: UserId,
                    id: Uuid,
                ) -> RepoResult<Option<AgentConfigRow>> {
                    todo!("CONTRACT h-db")
                }

                async fn agent_by_id(&self, id: Uuid) -> RepoResult<Option<AgentConfigRow>> {
                    todo!("CONTRACT h-db")
                }

                async fn list_agents(
                    &self,
                    user_id: UserId,
                    kind: AgentKind,
                ) -> RepoResult<Vec<AgentConfigRow>> {
                    todo!("CONTRACT h-db")
                }

                async fn delete_agent(
                    &self,
                    user_id: UserId,
                    kind: AgentKind,
                    id: Uuid,
                ) -> RepoResult<()> {
                    todo!("CONTRACT h-db")
                }

                async fn set_agent_token(
                    &self,
                    id: Uuid,
                    sealed: &str,
                    now: Millis,
                ) -> RepoResult<()> {
                    todo!("CONTRACT h-db")
                }

                async fn replace_agent_tokens(
                    &self,
                    user_id: UserId,
                    old: &str,
                    new: &str,
                    now: Millis,
                ) -> RepoResult<u64> {
                    todo!("CONTRACT h-db")
                }

                async fn set_agent_cursor(
                    &self,
                    id: Uuid,
                    cursor: Option<&str>,
                    now: Millis,
                ) -> RepoResult<()> {
                    todo!("CONTRACT h-db")
                }

                async fn pause_agent_for_reauth(&self, id: Uuid, now: Millis) -> RepoResult<()> {
                    todo!("CONTRACT h-db")
                }

                async fn due_agents(
                    &self,
                    now: Millis,
                    limit: u32,
                ) -> RepoResult<Vec<AgentConfigRow>> {
                    todo!("CONTRACT h-db")
                }

                async fn claim_slot(&self, claim: &SlotClaim) -> RepoResult<Option<AgentRun>> {
                    todo!("CONTRACT h-db")
                }

                async fn insert_run(&self, run: &AgentRun) -> RepoResult<()> {
                    todo!("CONTRACT h-db")
                }

                async fn active_runs(
                    &self,
                    agent_id: Uuid,
                    now: Millis,
                ) -> RepoResult<Vec<AgentRun>> {
                    todo!("CONTRACT h-db")
                }

                async fn start_run(
                    &self,
                    run_id: Uuid,
                    instance_id: Option<Uuid>,
                    lease_until: Millis,
                    device_id: Option<&str>,
                    now: Millis,
                ) -> RepoResult<bool> {
                    todo!("CONTRACT h-db")
                }

                async fn renew_leases(
                    &self,
                    instance_id: Uuid,
                    lease_until: Millis,
                ) -> RepoResult<u64> {
                    todo!("CONTRACT h-db")
                }

                async fn take_over_runs(
                    &self,
                    now: Millis,
                    instance_id: Uuid,
                    lease_until: Millis,
                    limit: u32,
                ) -> RepoResult<Vec<AgentRun>> {
                    todo!("CONTRACT h-db")
                }

                async fn finish_run(&self, run_id: Uuid, outcome: &RunOutcome) -> RepoResult<bool> {
                    todo!("CONTRACT h-db")
                }

                async fn run(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<AgentRun>> {
                    todo!("CONTRACT h-db")
                }

                async fn list_runs(
                    &self,
                    user_id: UserId,
                    agent_id: Option<Uuid>,
                    offset: u64,
                    limit: u64,
                ) -> RepoResult<Vec<AgentRun>> {
                    todo!("CONTRACT h-db")
                }

                async fn runs_for_slot(
                    &self,
                    agent_id: Uuid,
                    scheduled_for: Millis,
                ) -> RepoResult<Vec<AgentRun>> {
                    todo!("CONTRACT h-db")
                }

                async fn insert_journey(&self, row: &JourneyRow) -> RepoResult<()> {
                    todo!("CONTRACT h-db")
                }

                async fn journey(
                    &self,
                    user_id: UserId,
                    id: Uuid,
                    now: Millis,
                ) -> RepoResult<Option<JourneyRow>> {
                    todo!("CONTRACT h-db")
                }

                async fn update_journey(
                    &self,
                    user_id: UserId,
                    id: Uuid,
                    state_sealed: &str,
                    done: bool,
                    expires_at: Millis,
                ) -> RepoResult<()> {
                    todo!("CONTRACT h-db")
                }

                async fn delete_expired_journeys(&self, now: Millis) -> RepoResult<u64> {
                    todo!("CONTRACT h-db")
                }
            }
        };
    };
}

pub(crate) use impl_agent_repos;

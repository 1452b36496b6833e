//! Agent configs, runs (a slot claimed once, leases) and journey sessions, written once
//! for every SQL dialect (see `repos`).
//!
//! - Config writes that carry tier limits run under the user's lock (`quota_tx`) and count
//!   the user's configs before and after the write, in the same transaction; core's
//!   [`AgentLimits::broken_by`] decides, and a broken limit rolls the write back.
//! - A slot is claimed in one transaction of two statements: the compare-and-swap of the
//!   agent's `next_run_at` (on PostgreSQL concurrent claims queue on that row's lock and
//!   re-read it, so only the first matches), then the run's insert under the unique
//!   `(agent_id, scheduled_for)`; either failing rolls both back and answers `None`.
//! - Stale runs are taken with one `UPDATE … RETURNING` per call (the dialect's
//!   `TAKE_OVER_RUNS`): PostgreSQL skips rows another caller has locked, SQLite has one
//!   writer.
//!
//! `filters` and `output` are stored as JSON text on both dialects, so both return them
//! the same.

/// Implements `AgentRepo` for `$db`.
macro_rules! impl_agent_repos {
    ($db:ty, $d:ident) => {
        const _: () = {
            use adiuva_core::domain::{Millis, UserId};
            use adiuva_core::ports::db::{
                AgentConfigRow, AgentCounts, AgentKind, AgentLimits, AgentRepo, AgentRun,
                JourneyRow, RepoError, RepoResult, RunOutcome, SlotClaim,
            };
            use async_trait::async_trait;
            use uuid::Uuid;

            use $crate::repos::{agent_columns, journey_columns, run_columns};
            use $crate::rows::{
                agent_from_row, agent_run_from_row, expect_one, journey_from_row, repo_err,
            };

            /// The counts `AgentLimits` bound, of the user `$1`.
            const AGENT_COUNTS: &str = "SELECT CAST(COUNT(*) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN enabled THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COUNT(DISTINCT CASE WHEN kind = 'cloud' THEN provider END) AS BIGINT) \
                 FROM agents WHERE user_id = $1";

            const INSERT_AGENT: &str = concat!(
                "INSERT INTO agents (",
                agent_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $17, $18)"
            );

            const UPDATE_AGENT: &str = "UPDATE agents SET name = $1, agent_type = $2, \
                 schedule = $3, timezone = $4, enabled = $5, filters = $6, output = $7, \
                 prompt_template = $8, provider = $9, oauth_token_sealed = $10, status = $11, \
                 sync_cursor = $12, next_run_at = $13, updated_at = $14 \
                 WHERE id = $15 AND user_id = $16 AND kind = $17";

            const INSERT_RUN: &str = concat!(
                "INSERT INTO agent_runs (",
                run_columns!(),
                ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 \
                 FROM agents WHERE id = $3 AND user_id = $2"
            );

            /// `u64` → a `BIGINT` parameter (offsets and limits past `i64` mean "all").
            fn big(n: u64) -> i64 {
                i64::try_from(n).unwrap_or(i64::MAX)
            }

            /// A JSON value as the text column stores it.
            fn json_text(value: &serde_json::Value) -> RepoResult<String> {
                serde_json::to_string(value).map_err(|e| RepoError::Other(Box::new(e)))
            }

            impl $db {
                /// The user's agent counts, read inside `tx`.
                async fn agent_counts(
                    tx: &mut sqlx::Transaction<'static, $d::Db>,
                    user: UserId,
                ) -> RepoResult<AgentCounts> {
                    let (configured, enabled, providers): (i64, i64, i64) =
                        sqlx::query_as(AGENT_COUNTS)
                            .bind($d::id(user.0))
                            .fetch_one(&mut **tx)
                            .await
                            .map_err(repo_err)?;
                    let n = |v: i64| u64::try_from(v).unwrap_or(0);
                    Ok(AgentCounts {
                        configured: n(configured),
                        enabled: n(enabled),
                        providers: n(providers),
                    })
                }

                /// Writes `row` (`update`: replaces the user's config of that id and kind;
                /// else inserts it) under the user's lock, committed only if `limits` hold.
                async fn write_agent(
                    &self,
                    row: &AgentConfigRow,
                    limits: AgentLimits,
                    update: bool,
                ) -> RepoResult<()> {
                    let filters = json_text(&row.filters)?;
                    let output = json_text(&row.output)?;
                    let mut tx = self.quota_tx(row.user_id).await?;
                    let before = Self::agent_counts(&mut tx, row.user_id).await?;
                    if update {
                        let changed = sqlx::query(UPDATE_AGENT)
                            .bind(&row.name)
                            .bind(&row.agent_type)
                            .bind(&row.schedule)
                            .bind(&row.timezone)
                            .bind(row.enabled)
                            .bind(&filters)
                            .bind(&output)
                            .bind(&row.prompt_template)
                            .bind(&row.provider)
                            .bind(&row.oauth_token_sealed)
                            .bind(row.status.as_str())
                            .bind(&row.sync_cursor)
                            .bind(row.next_run_at)
                            .bind(row.updated_at)
                            .bind($d::id(row.id))
                            .bind($d::id(row.user_id.0))
                            .bind(row.kind.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(repo_err)?
                            .rows_affected();
                        expect_one(changed)?;
                    } else {
                        sqlx::query(INSERT_AGENT)
                            .bind($d::id(row.id))
                            .bind($d::id(row.user_id.0))
                            .bind(row.kind.as_str())
                            .bind(&row.name)
                            .bind(&row.agent_type)
                            .bind(&row.schedule)
                            .bind(&row.timezone)
                            .bind(row.enabled)
                            .bind(&filters)
                            .bind(&output)
                            .bind(&row.prompt_template)
                            .bind(&row.provider)
                            .bind(&row.oauth_token_sealed)
                            .bind(row.status.as_str())
                            .bind(&row.sync_cursor)
                            .bind(row.next_run_at)
                            .bind(row.created_at)
                            .bind(row.updated_at)
                            .execute(&mut *tx)
                            .await
                            .map_err(repo_err)?;
                    }
                    let after = Self::agent_counts(&mut tx, row.user_id).await?;
                    if let Some(name) = limits.broken_by(before, after) {
                        // Dropping `tx` rolls the write back.
                        return Err(RepoError::Conflict(name.into()));
                    }
                    tx.commit().await.map_err(repo_err)
                }
            }

            /// Binds a run's columns in `run_columns!` order.
            macro_rules! bind_run {
                ($q:expr, $run:expr) => {
                    $q.bind($d::id($run.id))
                        .bind($d::id($run.user_id.0))
                        .bind($d::id($run.agent_id))
                        .bind($run.status.as_str())
                        .bind($run.trigger.as_str())
                        .bind($run.scheduled_for)
                        .bind($run.created_at)
                        .bind($run.started_at)
                        .bind($run.finished_at)
                        .bind($run.items_read)
                        .bind($run.items_produced)
                        .bind(&$run.error)
                        .bind($run.instance_id.map($d::id))
                        .bind($run.lease_until)
                        .bind($run.attempts)
                        .bind(&$run.device_id)
                };
            }

            #[async_trait]
            impl AgentRepo for $db {
                async fn insert_agent(
                    &self,
                    row: &AgentConfigRow,
                    limits: AgentLimits,
                ) -> RepoResult<()> {
                    self.write_agent(row, limits, false).await
                }

                async fn update_agent(
                    &self,
                    row: &AgentConfigRow,
                    limits: AgentLimits,
                ) -> RepoResult<()> {
                    self.write_agent(row, limits, true).await
                }

                async fn agent(
                    &self,
                    user_id: UserId,
                    id: Uuid,
                ) -> RepoResult<Option<AgentConfigRow>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        agent_columns!(),
                        " FROM agents WHERE id = $1 AND user_id = $2"
                    ))
                    .bind($d::id(id))
                    .bind($d::id(user_id.0))
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(agent_from_row)
                    .transpose()
                }

                async fn agent_by_id(&self, id: Uuid) -> RepoResult<Option<AgentConfigRow>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        agent_columns!(),
                        " FROM agents WHERE id = $1"
                    ))
                    .bind($d::id(id))
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(agent_from_row)
                    .transpose()
                }

                async fn list_agents(
                    &self,
                    user_id: UserId,
                    kind: AgentKind,
                ) -> RepoResult<Vec<AgentConfigRow>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        agent_columns!(),
                        " FROM agents WHERE user_id = $1 AND kind = $2 \
                         ORDER BY created_at, id"
                    ))
                    .bind($d::id(user_id.0))
                    .bind(kind.as_str())
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)?
                    .iter()
                    .map(agent_from_row)
                    .collect()
                }

                async fn delete_agent(
                    &self,
                    user_id: UserId,
                    kind: AgentKind,
                    id: Uuid,
                ) -> RepoResult<()> {
                    // The runs go by the foreign key's cascade.
                    let gone = sqlx::query(
                        "DELETE FROM agents WHERE id = $1 AND user_id = $2 AND kind = $3",
                    )
                    .bind($d::id(id))
                    .bind($d::id(user_id.0))
                    .bind(kind.as_str())
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    expect_one(gone)
                }

                async fn set_agent_token(
                    &self,
                    id: Uuid,
                    sealed: &str,
                    now: Millis,
                ) -> RepoResult<()> {
                    let changed = sqlx::query(
                        "UPDATE agents SET oauth_token_sealed = $1, updated_at = $2 \
                         WHERE id = $3",
                    )
                    .bind(sealed)
                    .bind(now)
                    .bind($d::id(id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    expect_one(changed)
                }

                async fn replace_agent_tokens(
                    &self,
                    user_id: UserId,
                    old: &str,
                    new: &str,
                    now: Millis,
                ) -> RepoResult<u64> {
                    Ok(sqlx::query(
                        "UPDATE agents SET oauth_token_sealed = $1, updated_at = $2 \
                         WHERE user_id = $3 AND oauth_token_sealed = $4",
                    )
                    .bind(new)
                    .bind(now)
                    .bind($d::id(user_id.0))
                    .bind(old)
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?
                    .rows_affected())
                }

                async fn set_agent_cursor(
                    &self,
                    id: Uuid,
                    cursor: Option<&str>,
                    now: Millis,
                ) -> RepoResult<()> {
                    let changed = sqlx::query(
                        "UPDATE agents SET sync_cursor = $1, updated_at = $2 WHERE id = $3",
                    )
                    .bind(cursor)
                    .bind(now)
                    .bind($d::id(id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    expect_one(changed)
                }

                async fn pause_agent_for_reauth(&self, id: Uuid, now: Millis) -> RepoResult<()> {
                    let changed = sqlx::query(
                        "UPDATE agents SET status = 'needs_reauth', next_run_at = NULL, \
                         updated_at = $1 WHERE id = $2",
                    )
                    .bind(now)
                    .bind($d::id(id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    expect_one(changed)
                }

                async fn due_agents(
                    &self,
                    now: Millis,
                    limit: u32,
                ) -> RepoResult<Vec<AgentConfigRow>> {
                    // The WHERE repeats the partial index `agents_due`'s.
                    sqlx::query(concat!(
                        "SELECT ",
                        agent_columns!(),
                        " FROM agents WHERE enabled AND status = 'active' \
                         AND next_run_at <= $1 ORDER BY next_run_at, id LIMIT $2"
                    ))
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)?
                    .iter()
                    .map(agent_from_row)
                    .collect()
                }

                async fn claim_slot(&self, claim: &SlotClaim) -> RepoResult<Option<AgentRun>> {
                    let run = &claim.run;
                    // SQLite takes its write lock up front (BEGIN IMMEDIATE: the busy
                    // timeout applies, no read-then-upgrade failure); PostgreSQL's swap
                    // locks the agent's row.
                    let mut tx = self
                        .pool()
                        .begin_with($d::BEGIN_QUOTA)
                        .await
                        .map_err(repo_err)?;
                    let swapped = sqlx::query($d::CLAIM_SWAP)
                    .bind(claim.next_run_at)
                    .bind(run.created_at)
                    .bind($d::id(claim.agent_id))
                    .bind(claim.expected_next_run_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    if swapped == 0 {
                        return Ok(None);
                    }
                    let inserted = bind_run!(sqlx::query(INSERT_RUN), run)
                        .execute(&mut *tx)
                        .await
                        .map_err(repo_err);
                    match inserted {
                        // The slot's run exists (or the run names another agent): dropping
                        // `tx` rolls the swap back.
                        Err(RepoError::Conflict(_)) => Ok(None),
                        Err(e) => Err(e),
                        Ok(done) if done.rows_affected() == 0 => Ok(None),
                        Ok(_) => {
                            tx.commit().await.map_err(repo_err)?;
                            Ok(Some(run.clone()))
                        }
                    }
                }

                async fn insert_run(&self, run: &AgentRun) -> RepoResult<()> {
                    let inserted = bind_run!(sqlx::query(INSERT_RUN), run)
                        .execute(self.pool())
                        .await
                        .map_err(repo_err)?
                        .rows_affected();
                    expect_one(inserted)
                }

                async fn active_runs(
                    &self,
                    agent_id: Uuid,
                    now: Millis,
                ) -> RepoResult<Vec<AgentRun>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        run_columns!(),
                        " FROM agent_runs WHERE agent_id = $1 \
                         AND status IN ('queued', 'running') \
                         AND (lease_until IS NULL OR lease_until >= $2) \
                         ORDER BY created_at, id"
                    ))
                    .bind($d::id(agent_id))
                    .bind(now)
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)?
                    .iter()
                    .map(agent_run_from_row)
                    .collect()
                }

                async fn start_run(
                    &self,
                    run_id: Uuid,
                    instance_id: Option<Uuid>,
                    lease_until: Millis,
                    device_id: Option<&str>,
                    now: Millis,
                ) -> RepoResult<bool> {
                    let changed = sqlx::query(
                        "UPDATE agent_runs SET status = 'running', instance_id = $1, \
                         lease_until = $2, started_at = COALESCE(started_at, $3), \
                         device_id = COALESCE($4, device_id) \
                         WHERE id = $5 AND status IN ('queued', 'running')",
                    )
                    .bind(instance_id.map($d::id))
                    .bind(lease_until)
                    .bind(now)
                    .bind(device_id)
                    .bind($d::id(run_id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    Ok(changed > 0)
                }

                async fn renew_leases(
                    &self,
                    instance_id: Uuid,
                    lease_until: Millis,
                ) -> RepoResult<u64> {
                    Ok(sqlx::query(
                        "UPDATE agent_runs SET lease_until = $1 \
                         WHERE instance_id = $2 AND status IN ('queued', 'running')",
                    )
                    .bind(lease_until)
                    .bind($d::id(instance_id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?
                    .rows_affected())
                }

                async fn take_over_runs(
                    &self,
                    now: Millis,
                    instance_id: Uuid,
                    lease_until: Millis,
                    limit: u32,
                ) -> RepoResult<Vec<AgentRun>> {
                    sqlx::query($d::TAKE_OVER_RUNS)
                        .bind(now)
                        .bind($d::id(instance_id))
                        .bind(lease_until)
                        .bind(i64::from(limit))
                        .fetch_all(self.pool())
                        .await
                        .map_err(repo_err)?
                        .iter()
                        .map(agent_run_from_row)
                        .collect()
                }

                async fn finish_run(&self, run_id: Uuid, outcome: &RunOutcome) -> RepoResult<bool> {
                    let changed = sqlx::query(
                        "UPDATE agent_runs SET status = $1, items_read = $2, \
                         items_produced = $3, error = $4, finished_at = $5, \
                         instance_id = NULL, lease_until = NULL \
                         WHERE id = $6 AND status IN ('queued', 'running')",
                    )
                    .bind(outcome.status.as_str())
                    .bind(outcome.items_read)
                    .bind(outcome.items_produced)
                    .bind(&outcome.error)
                    .bind(outcome.finished_at)
                    .bind($d::id(run_id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    Ok(changed > 0)
                }

                async fn run(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<AgentRun>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        run_columns!(),
                        " FROM agent_runs WHERE id = $1 AND user_id = $2"
                    ))
                    .bind($d::id(id))
                    .bind($d::id(user_id.0))
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(agent_run_from_row)
                    .transpose()
                }

                async fn list_runs(
                    &self,
                    user_id: UserId,
                    agent_id: Option<Uuid>,
                    offset: u64,
                    limit: u64,
                ) -> RepoResult<Vec<AgentRun>> {
                    let query = match agent_id {
                        Some(agent) => sqlx::query(concat!(
                            "SELECT ",
                            run_columns!(),
                            " FROM agent_runs WHERE user_id = $1 AND agent_id = $2 \
                             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
                        ))
                        .bind($d::id(user_id.0))
                        .bind($d::id(agent)),
                        None => sqlx::query(concat!(
                            "SELECT ",
                            run_columns!(),
                            " FROM agent_runs WHERE user_id = $1 \
                             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
                        ))
                        .bind($d::id(user_id.0)),
                    };
                    query
                        .bind(big(limit))
                        .bind(big(offset))
                        .fetch_all(self.pool())
                        .await
                        .map_err(repo_err)?
                        .iter()
                        .map(agent_run_from_row)
                        .collect()
                }

                async fn runs_for_slot(
                    &self,
                    agent_id: Uuid,
                    scheduled_for: Millis,
                ) -> RepoResult<Vec<AgentRun>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        run_columns!(),
                        " FROM agent_runs WHERE agent_id = $1 AND scheduled_for = $2"
                    ))
                    .bind($d::id(agent_id))
                    .bind(scheduled_for)
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)?
                    .iter()
                    .map(agent_run_from_row)
                    .collect()
                }

                async fn insert_journey(&self, row: &JourneyRow) -> RepoResult<()> {
                    // Selected from `users`, so an unknown owner inserts nothing (NotFound)
                    // rather than failing the foreign key.
                    let inserted = sqlx::query(concat!(
                        "INSERT INTO agent_journeys (",
                        journey_columns!(),
                        ") SELECT $1, id, $2, $3, $4, $5, $6 FROM users WHERE id = $7"
                    ))
                    .bind($d::id(row.id))
                    .bind(&row.agent_type)
                    .bind(&row.state_sealed)
                    .bind(row.done)
                    .bind(row.created_at)
                    .bind(row.expires_at)
                    .bind($d::id(row.user_id.0))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    expect_one(inserted)
                }

                async fn journey(
                    &self,
                    user_id: UserId,
                    id: Uuid,
                    now: Millis,
                ) -> RepoResult<Option<JourneyRow>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        journey_columns!(),
                        " FROM agent_journeys WHERE id = $1 AND user_id = $2 AND expires_at > $3"
                    ))
                    .bind($d::id(id))
                    .bind($d::id(user_id.0))
                    .bind(now)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(journey_from_row)
                    .transpose()
                }

                async fn update_journey(
                    &self,
                    user_id: UserId,
                    id: Uuid,
                    state_sealed: &str,
                    done: bool,
                    expires_at: Millis,
                ) -> RepoResult<()> {
                    let changed = sqlx::query(
                        "UPDATE agent_journeys SET state_sealed = $1, done = $2, \
                         expires_at = $3 WHERE id = $4 AND user_id = $5",
                    )
                    .bind(state_sealed)
                    .bind(done)
                    .bind(expires_at)
                    .bind($d::id(id))
                    .bind($d::id(user_id.0))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    expect_one(changed)
                }

                async fn delete_expired_journeys(&self, now: Millis) -> RepoResult<u64> {
                    Ok(sqlx::query("DELETE FROM agent_journeys WHERE expires_at <= $1")
                        .bind(now)
                        .execute(self.pool())
                        .await
                        .map_err(repo_err)?
                        .rows_affected())
                }
            }
        };
    };
}

pub(crate) use impl_agent_repos;

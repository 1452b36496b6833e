//! Devices, presence and each device's durable frame queue, written once for every SQL
//! dialect (see `repos`).
//!
//! Locks are taken in one order everywhere — the user's row, then the device's row, then
//! its queue rows — so PostgreSQL never has to break a deadlock between a hello, an
//! enqueue and the expiry sweep. A device's row is locked portably by an `UPDATE` of it
//! (PostgreSQL holds the row lock until commit; SQLite's writers are serialised anyway by
//! the dialect's `BEGIN_QUOTA`, which takes the write lock up front so the busy timeout
//! applies instead of a read transaction failing at its upgrade).

/// Implements `DeviceRepo` for `$db`.
macro_rules! impl_device_repos {
    ($db:ty, $d:ident) => {
        const _: () = {
            use adiuva_core::domain::{Millis, UserId};
            use adiuva_core::ports::db::{
                Device, DeviceConnected, DeviceInfo, DeviceRepo, DeviceSession, NewQueuedFrame,
                QueuedFrame, RepoError, RepoResult,
            };
            use async_trait::async_trait;
            use sqlx::Row as _;
            use uuid::Uuid;

            use $crate::repos::{device_columns, frame_columns};
            use $crate::rows::{
                IdColumn as _, device_from_row, queued_frame_from_row, repo_err,
            };

            /// Locks one device's row inside a transaction (see the module docs); `None`
            /// when the user has no such device. Returns what a hello replaces.
            const LOCK_DEVICE: &str = "UPDATE devices SET next_seq = next_seq \
                 WHERE user_id = $1 AND device_id = $2 \
                 RETURNING session_id, instance_id, expired_count";

            impl $db {
                /// Deletes the expired frames of one device and counts them into its
                /// `expired_count`, in one transaction holding the device's row lock (so an
                /// enqueue trimming the same frames waits, and none is counted twice).
                async fn expire_device_frames(
                    &self,
                    user_id: UserId,
                    device_id: &str,
                    now: Millis,
                ) -> RepoResult<u64> {
                    let mut tx = self
                        .pool()
                        .begin_with($d::BEGIN_QUOTA)
                        .await
                        .map_err(repo_err)?;
                    let locked = sqlx::query(LOCK_DEVICE)
                        .bind($d::id(user_id.0))
                        .bind(device_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(repo_err)?;
                    if locked.is_none() {
                        // Deleted meanwhile: its queue went with it.
                        return Ok(0);
                    }
                    let gone = sqlx::query(
                        "DELETE FROM device_queue \
                         WHERE user_id = $1 AND device_id = $2 AND expires_at <= $3",
                    )
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    Self::count_expired(&mut tx, user_id, device_id, gone).await?;
                    tx.commit().await.map_err(repo_err)?;
                    Ok(gone)
                }

                /// Adds `n` dropped frames to the device's `expired_count`, inside `tx`.
                async fn count_expired(
                    tx: &mut sqlx::Transaction<'static, $d::Db>,
                    user_id: UserId,
                    device_id: &str,
                    n: u64,
                ) -> RepoResult<()> {
                    if n == 0 {
                        return Ok(());
                    }
                    sqlx::query(
                        "UPDATE devices SET expired_count = expired_count + $1 \
                         WHERE user_id = $2 AND device_id = $3",
                    )
                    .bind(i64::try_from(n).unwrap_or(i64::MAX))
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .execute(&mut **tx)
                    .await
                    .map_err(repo_err)?;
                    Ok(())
                }

                /// Keeps the newest `max_frames` of the device's queue, inside `tx`:
                /// everything at or below the seq of the (max_frames + 1)-th newest goes
                /// (none when there are fewer) and is counted into its `expired_count`.
                async fn trim_queue(
                    tx: &mut sqlx::Transaction<'static, $d::Db>,
                    user_id: UserId,
                    device_id: &str,
                    max_frames: u32,
                ) -> RepoResult<()> {
                    let dropped = sqlx::query(
                        "DELETE FROM device_queue WHERE user_id = $1 AND device_id = $2 \
                         AND seq <= (SELECT seq FROM device_queue \
                         WHERE user_id = $1 AND device_id = $2 \
                         ORDER BY seq DESC LIMIT 1 OFFSET $3)",
                    )
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .bind(i64::from(max_frames))
                    .execute(&mut **tx)
                    .await
                    .map_err(repo_err)?
                    .rows_affected();
                    Self::count_expired(tx, user_id, device_id, dropped).await
                }
            }

            #[async_trait]
            impl DeviceRepo for $db {
                async fn connect_device(
                    &self,
                    user_id: UserId,
                    device_id: &str,
                    info: &DeviceInfo,
                    session: DeviceSession,
                    max_devices: u32,
                    now: Millis,
                ) -> RepoResult<DeviceConnected> {
                    // The user's lock serialises this user's hellos, so the device count
                    // read below is the one the insert is checked against.
                    let mut tx = self.quota_tx(user_id).await?;
                    let capabilities = serde_json::to_string(&info.capabilities)
                        .map_err(|e| RepoError::Other(Box::new(e)))?;
                    let old = sqlx::query(LOCK_DEVICE)
                        .bind($d::id(user_id.0))
                        .bind(device_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(repo_err)?;
                    let connected = if let Some(old) = old {
                        let replaced =
                            match (old.opt_uuid("session_id")?, old.opt_uuid("instance_id")?) {
                                (Some(session_id), Some(instance_id)) => Some(DeviceSession {
                                    session_id,
                                    instance_id,
                                }),
                                _ => None,
                            };
                        let expired: i64 = old.try_get("expired_count").map_err(repo_err)?;
                        sqlx::query(
                            "UPDATE devices SET name = $1, platform = $2, app_version = $3, \
                             capabilities = $4, session_id = $5, instance_id = $6, \
                             last_seen = $7, expired_count = 0 \
                             WHERE user_id = $8 AND device_id = $9",
                        )
                        .bind(&info.name)
                        .bind(&info.platform)
                        .bind(&info.app_version)
                        .bind(&capabilities)
                        .bind($d::id(session.session_id))
                        .bind($d::id(session.instance_id))
                        .bind(now)
                        .bind($d::id(user_id.0))
                        .bind(device_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(repo_err)?;
                        DeviceConnected { replaced, expired }
                    } else {
                        let owned: i64 =
                            sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = $1")
                                .bind($d::id(user_id.0))
                                .fetch_one(&mut *tx)
                                .await
                                .map_err(repo_err)?;
                        if owned >= i64::from(max_devices) {
                            return Err(RepoError::Conflict("devices.limit".into()));
                        }
                        sqlx::query(
                            "INSERT INTO devices (user_id, device_id, name, platform, \
                             app_version, capabilities, session_id, instance_id, last_seen, \
                             created_at, expired_count, next_seq) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 0, 1)",
                        )
                        .bind($d::id(user_id.0))
                        .bind(device_id)
                        .bind(&info.name)
                        .bind(&info.platform)
                        .bind(&info.app_version)
                        .bind(&capabilities)
                        .bind($d::id(session.session_id))
                        .bind($d::id(session.instance_id))
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(repo_err)?;
                        DeviceConnected {
                            replaced: None,
                            expired: 0,
                        }
                    };
                    tx.commit().await.map_err(repo_err)?;
                    Ok(connected)
                }

                async fn disconnect_device(
                    &self,
                    user_id: UserId,
                    device_id: &str,
                    session_id: Uuid,
                    now: Millis,
                ) -> RepoResult<bool> {
                    // Conditioned on the session: a hello that replaced it meanwhile wins.
                    let done = sqlx::query(
                        "UPDATE devices SET session_id = NULL, instance_id = NULL, \
                         last_seen = $1 WHERE user_id = $2 AND device_id = $3 AND session_id = $4",
                    )
                    .bind(now)
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .bind($d::id(session_id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn touch_instance_devices(
                    &self,
                    instance_id: Uuid,
                    now: Millis,
                ) -> RepoResult<u64> {
                    let done =
                        sqlx::query("UPDATE devices SET last_seen = $1 WHERE instance_id = $2")
                            .bind(now)
                            .bind($d::id(instance_id))
                            .execute(self.pool())
                            .await
                            .map_err(repo_err)?;
                    Ok(done.rows_affected())
                }

                async fn devices_with_queued_frames(
                    &self,
                    instance_id: Uuid,
                    now: Millis,
                ) -> RepoResult<Vec<(UserId, String)>> {
                    let rows = sqlx::query(
                        "SELECT d.user_id, d.device_id FROM devices d \
                         WHERE d.instance_id = $1 AND EXISTS (SELECT 1 FROM device_queue q \
                         WHERE q.user_id = d.user_id AND q.device_id = d.device_id \
                         AND q.expires_at > $2)",
                    )
                    .bind($d::id(instance_id))
                    .bind(now)
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)?;
                    rows.iter()
                        .map(|row| {
                            Ok((
                                UserId(row.uuid("user_id")?),
                                row.try_get::<String, _>("device_id").map_err(repo_err)?,
                            ))
                        })
                        .collect()
                }

                async fn release_instance_devices(
                    &self,
                    instance_id: Uuid,
                    now: Millis,
                ) -> RepoResult<u64> {
                    let done = sqlx::query(
                        "UPDATE devices SET session_id = NULL, instance_id = NULL, \
                         last_seen = $1 WHERE instance_id = $2",
                    )
                    .bind(now)
                    .bind($d::id(instance_id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                    Ok(done.rows_affected())
                }

                async fn device(
                    &self,
                    user_id: UserId,
                    device_id: &str,
                ) -> RepoResult<Option<Device>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        device_columns!(),
                        " FROM devices WHERE user_id = $1 AND device_id = $2"
                    ))
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(device_from_row)
                    .transpose()
                }

                async fn list_devices(&self, user_id: UserId) -> RepoResult<Vec<Device>> {
                    // Bounded by the device limit of the user's tier.
                    sqlx::query(concat!(
                        "SELECT ",
                        device_columns!(),
                        " FROM devices WHERE user_id = $1 ORDER BY created_at, device_id"
                    ))
                    .bind($d::id(user_id.0))
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)?
                    .iter()
                    .map(device_from_row)
                    .collect()
                }

                async fn delete_device(
                    &self,
                    user_id: UserId,
                    device_id: &str,
                ) -> RepoResult<Device> {
                    // The queue goes by ON DELETE CASCADE.
                    sqlx::query(concat!(
                        "DELETE FROM devices WHERE user_id = $1 AND device_id = $2 RETURNING ",
                        device_columns!()
                    ))
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(device_from_row)
                    .transpose()?
                    .ok_or(RepoError::NotFound)
                }

                async fn enqueue_frame(
                    &self,
                    user_id: UserId,
                    device_id: &str,
                    frame: &NewQueuedFrame,
                    max_frames: u32,
                    now: Millis,
                ) -> RepoResult<QueuedFrame> {
                    let mut tx = self
                        .pool()
                        .begin_with($d::BEGIN_QUOTA)
                        .await
                        .map_err(repo_err)?;
                    // Taking the seq locks the device's row until commit: the next enqueue
                    // of this device waits here, so seq order is commit order and a reader
                    // that saw seq N never later finds a new frame below N.
                    let seq: i64 = sqlx::query_scalar(
                        "UPDATE devices SET next_seq = next_seq + 1 \
                         WHERE user_id = $1 AND device_id = $2 RETURNING next_seq - 1",
                    )
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(repo_err)?
                    .ok_or(RepoError::NotFound)?;
                    // A duplicate frame_id fails here (Conflict) and the dropped
                    // transaction gives the seq back.
                    sqlx::query(concat!(
                        "INSERT INTO device_queue (user_id, device_id, ",
                        frame_columns!(),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ))
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .bind(seq)
                    .bind($d::id(frame.frame_id))
                    .bind(&frame.kind)
                    .bind(frame.payload.as_slice())
                    .bind(now)
                    .bind(frame.expires_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(repo_err)?;
                    // Seqs are distinct, so the queue holds at most `seq - oldest + 1`
                    // frames: within the bound nothing is over it, and the enqueue costs one
                    // index lookup instead of a walk over the whole queue. (`ORDER BY …
                    // LIMIT 1`, not `MIN`: PostgreSQL may plan `MIN` as a full scan.)
                    let oldest: Option<i64> = sqlx::query_scalar(
                        "SELECT seq FROM device_queue WHERE user_id = $1 AND device_id = $2 \
                         ORDER BY seq LIMIT 1",
                    )
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(repo_err)?;
                    if oldest.is_some_and(|oldest| seq - oldest >= i64::from(max_frames)) {
                        Self::trim_queue(&mut tx, user_id, device_id, max_frames).await?;
                    }
                    tx.commit().await.map_err(repo_err)?;
                    Ok(QueuedFrame {
                        seq,
                        frame_id: frame.frame_id,
                        kind: frame.kind.clone(),
                        payload: frame.payload.clone(),
                        created_at: now,
                        expires_at: frame.expires_at,
                    })
                }

                async fn queued_frames(
                    &self,
                    user_id: UserId,
                    device_id: &str,
                    after_seq: i64,
                    now: Millis,
                    limit: u32,
                ) -> RepoResult<Vec<QueuedFrame>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        frame_columns!(),
                        " FROM device_queue WHERE user_id = $1 AND device_id = $2 \
                         AND seq > $3 AND expires_at > $4 ORDER BY seq LIMIT $5"
                    ))
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .bind(after_seq)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)?
                    .iter()
                    .map(queued_frame_from_row)
                    .collect()
                }

                async fn queued_count(
                    &self,
                    user_id: UserId,
                    device_id: &str,
                    now: Millis,
                ) -> RepoResult<u64> {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM device_queue \
                         WHERE user_id = $1 AND device_id = $2 AND expires_at > $3",
                    )
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .bind(now)
                    .fetch_one(self.pool())
                    .await
                    .map_err(repo_err)?;
                    Ok(u64::try_from(n).unwrap_or(0))
                }

                async fn ack_frame(
                    &self,
                    user_id: UserId,
                    device_id: &str,
                    frame_id: Uuid,
                ) -> RepoResult<bool> {
                    let done = sqlx::query(
                        "DELETE FROM device_queue \
                         WHERE user_id = $1 AND device_id = $2 AND frame_id = $3",
                    )
                    .bind($d::id(user_id.0))
                    .bind(device_id)
                    .bind($d::id(frame_id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn expire_frames(&self, now: Millis) -> RepoResult<u64> {
                    // One short transaction per device that has expired frames, each
                    // taking the device's row lock before its queue rows (the module's lock
                    // order); a device emptied or deleted meanwhile counts nothing.
                    let due = sqlx::query(
                        "SELECT DISTINCT user_id, device_id FROM device_queue \
                         WHERE expires_at <= $1",
                    )
                    .bind(now)
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)?;
                    let mut expired = 0;
                    for row in &due {
                        let user_id = UserId(row.uuid("user_id")?);
                        let device_id: String = row.try_get("device_id").map_err(repo_err)?;
                        expired += self.expire_device_frames(user_id, &device_id, now).await?;
                    }
                    Ok(expired)
                }
            }
        };
    };
}

pub(crate) use impl_device_repos;

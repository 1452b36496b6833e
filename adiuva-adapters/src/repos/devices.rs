//! Devices, presence and each device's durable frame queue, written once for every SQL
//! dialect (see `repos`).
//!
//! CONTRACT: h-sql implements every method (the bodies below are placeholders).

/// Implements `DeviceRepo` for `$db`.
macro_rules! impl_device_repos {
    ($db:ty, $d:ident) => {
        const _: () = {
            use adiuva_core::domain::{Millis, UserId};
            use adiuva_core::ports::db::{
                Device, DeviceConnected, DeviceInfo, DeviceRepo, DeviceSession, NewQueuedFrame,
                QueuedFrame, RepoResult,
            };
            use async_trait::async_trait;
            use uuid::Uuid;

            #[async_trait]
            impl DeviceRepo for $db {
                async fn connect_device(
                    &self,
                    _user_id: UserId,
                    _device_id: &str,
                    _info: &DeviceInfo,
                    _session: DeviceSession,
                    _max_devices: u32,
                    _now: Millis,
                ) -> RepoResult<DeviceConnected> {
                    todo!("CONTRACT: h-sql")
                }

                async fn disconnect_device(
                    &self,
                    _user_id: UserId,
                    _device_id: &str,
                    _session_id: Uuid,
                    _now: Millis,
                ) -> RepoResult<bool> {
                    todo!("CONTRACT: h-sql")
                }

                async fn touch_instance_devices(
                    &self,
                    _instance_id: Uuid,
                    _now: Millis,
                ) -> RepoResult<u64> {
                    todo!("CONTRACT: h-sql")
                }

                async fn release_instance_devices(
                    &self,
                    _instance_id: Uuid,
                    _now: Millis,
                ) -> RepoResult<u64> {
                    todo!("CONTRACT: h-sql")
                }

                async fn device(
                    &self,
                    _user_id: UserId,
                    _device_id: &str,
                ) -> RepoResult<Option<Device>> {
                    todo!("CONTRACT: h-sql")
                }

                async fn list_devices(&self, _user_id: UserId) -> RepoResult<Vec<Device>> {
                    todo!("CONTRACT: h-sql")
                }

                async fn delete_device(
                    &self,
                    _user_id: UserId,
                    _device_id: &str,
                ) -> RepoResult<Device> {
                    todo!("CONTRACT: h-sql")
                }

                async fn enqueue_frame(
                    &self,
                    _user_id: UserId,
                    _device_id: &str,
                    _frame: &NewQueuedFrame,
                    _max_frames: u32,
                    _now: Millis,
                ) -> RepoResult<QueuedFrame> {
                    todo!("CONTRACT: h-sql")
                }

                async fn queued_frames(
                    &self,
                    _user_id: UserId,
                    _device_id: &str,
                    _after_seq: i64,
                    _now: Millis,
                    _limit: u32,
                ) -> RepoResult<Vec<QueuedFrame>> {
                    todo!("CONTRACT: h-sql")
                }

                async fn queued_count(
                    &self,
                    _user_id: UserId,
                    _device_id: &str,
                    _now: Millis,
                ) -> RepoResult<u64> {
                    todo!("CONTRACT: h-sql")
                }

                async fn ack_frame(
                    &self,
                    _user_id: UserId,
                    _device_id: &str,
                    _frame_id: Uuid,
                ) -> RepoResult<bool> {
                    todo!("CONTRACT: h-sql")
                }

                async fn expire_frames(&self, _now: Millis) -> RepoResult<u64> {
                    todo!("CONTRACT: h-sql")
                }
            }
        };
    };
}

pub(crate) use impl_device_repos;

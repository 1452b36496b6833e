//! `GET /devices` and `DELETE /devices/{device_id}` (issue 11, item 2): the user's
//! desktop devices and their presence. The device socket itself is
//! `WS /api/v1/ws/device` (`crate::ws::device`; frames in the AsyncAPI document).

use adiuva_core::Adiuva;
use adiuva_core::devices::DeviceStatus;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::{ApiTags, BearerAuth, Ok};
use crate::api_errors;

/// A device of yours with its presence.
#[derive(Debug, Object)]
pub struct DeviceOut {
    /// Chosen by the device (its `device_hello`).
    pub device_id: String,
    /// Display name.
    pub name: String,
    /// `macos`, `windows`, `linux`, …
    pub platform: String,
    /// The app's version at its last hello.
    pub app_version: String,
    /// What it can do (`tools`, `files`, …).
    pub capabilities: Vec<String>,
    /// Its socket is open on some instance (and that instance is alive).
    pub online: bool,
    /// Last hello, heartbeat or disconnect, ms since the Unix epoch.
    pub last_seen: i64,
    /// First hello, ms since the Unix epoch.
    pub created_at: i64,
}

impl From<DeviceStatus> for DeviceOut {
    fn from(d: DeviceStatus) -> Self {
        Self {
            device_id: d.device_id,
            name: d.name,
            platform: d.platform,
            app_version: d.app_version,
            capabilities: d.capabilities,
            online: d.online,
            last_seen: d.last_seen,
            created_at: d.created_at,
        }
    }
}

api_errors!(
    /// Errors of listing devices.
    DeviceListError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
    }
);

api_errors!(
    /// Errors of forgetting a device.
    DeviceDeleteError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        404 => NotFound [device_not_found]: "`device_not_found`: no such device of yours.",
    }
);

/// Devices and presence.
pub struct DevicesApi;

#[OpenApi(tag = "ApiTags::Devices")]
impl DevicesApi {
    /// Your devices, online or not, oldest first.
    ///
    /// A device appears at its first `device_hello` on `WS /api/v1/ws/device`; `online`
    /// is true while its socket is open on any instance.
    #[oai(path = "/devices", method = "get", operation_id = "list_devices")]
    async fn list(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
    ) -> Result<Json<Vec<DeviceOut>>, DeviceListError> {
        let devices = app.devices().list(auth.id()).await?;
        Ok(Json(devices.into_iter().map(Into::into).collect()))
    }

    /// Forget a device: its record and its queued frames; its socket, wherever it is
    /// open, is closed. It reappears if it says `device_hello` again.
    #[oai(
        path = "/devices/:device_id",
        method = "delete",
        operation_id = "delete_device"
    )]
    async fn delete(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        device_id: Path<String>,
    ) -> Result<Json<Ok>, DeviceDeleteError> {
        app.devices().forget(auth.id(), &device_id.0).await?;
        Ok(Json(Ok::yes()))
    }
}

//! Trusted devices: `User.trustedDevices` and `revokeTrustedDevice`, over `app::devices`.
//! Trusting a device is `completeLogin(rememberDevice: true)`; using one is `login(deviceToken)`.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use crate::{
    app::{self, devices::DeviceView},
    graphql::ContextExt,
};

/// A device the user asked to be remembered on: a login with the right password and this
/// device's token skips the second factor until `expiresAt`.
#[derive(SimpleObject, Clone, Debug)]
pub struct TrustedDevice {
    /// Id (for `revokeTrustedDevice`).
    pub id: ID,
    /// From the user agent that asked.
    pub label: Option<String>,
    /// When it was trusted.
    pub created_at: DateTime<Utc>,
    /// When it last stood in for the second factor.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the trust ends.
    pub expires_at: DateTime<Utc>,
}

impl From<DeviceView> for TrustedDevice {
    fn from(d: DeviceView) -> Self {
        Self {
            id: ID(d.id),
            label: d.label,
            created_at: d.created_at,
            last_used_at: d.last_used_at,
            expires_at: d.expires_at,
        }
    }
}

/// Input of `revokeTrustedDevice`.
#[derive(InputObject)]
pub struct RevokeTrustedDeviceInput {
    /// The device (`TrustedDevice.id`).
    #[graphql(validator(max_length = 128))]
    pub id: ID,
}

/// What `revokeTrustedDevice` answers.
#[derive(SimpleObject)]
pub struct RevokeTrustedDevicePayload {
    /// The device, as it was trusted until now.
    pub trusted_device: TrustedDevice,
}

#[derive(Default)]
pub struct DevicesMutation;

#[Object]
impl DevicesMutation {
    /// Ends the trust of one device (the user's own token, or an admin): its token asks for
    /// the second factor again. A password change, a removed factor, a recovery-code use and a
    /// hard lock revoke all of a user's devices.
    async fn revoke_trusted_device(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The device to stop trusting.")] input: RevokeTrustedDeviceInput,
    ) -> async_graphql::Result<RevokeTrustedDevicePayload> {
        let state = ctx.state()?;
        let device = app::devices::revoke(state, &ctx.call(), &input.id).await?;
        Ok(RevokeTrustedDevicePayload {
            trusted_device: device.into(),
        })
    }
}

//! Trusted devices ("remember this device", see the README): after a login completed with a second
//! factor, `rememberDevice` hands out a device token; a later `login` with the right password
//! and that token skips the second factor. The token is `<device id>.<256 random bits>`; only
//! a keyed hash of the random part is stored (in the user's `DeviceTrusted` event), so a
//! database dump holds no usable token. It never replaces the password and is worthless for
//! another user (the device is looked up in the user's own stream).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use tessera_domain::{
    ids::UserId,
    policy::MfaPolicy,
    user::{DeviceRevocationReason, TrustDevice, TrustedDevice, User, UserCommand},
};
use uuid::Uuid;

use crate::{
    app::{AppError, AppResult, Call},
    state::AppState,
};

/// Hash domain of device tokens.
const TOKEN_DOMAIN: &str = "trusted-device";

/// Longest label kept from a user agent.
const LABEL_CHARS: usize = 100;

/// A user's trusted device as shown (`User.trustedDevices`).
#[derive(Debug, Clone)]
pub struct DeviceView {
    /// The public id: the user and the device, so `revokeTrustedDevice` needs nothing else.
    pub id: String,
    /// From the user agent.
    pub label: Option<String>,
    /// When it was trusted.
    pub created_at: DateTime<Utc>,
    /// When it last stood in for a second factor.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the trust ends.
    pub expires_at: DateTime<Utc>,
}

impl DeviceView {
    fn new(user: UserId, d: &TrustedDevice) -> Self {
        Self {
            id: format!("{user}:{}", d.id),
            label: d.label.clone(),
            created_at: d.created_at,
            last_used_at: d.last_used_at,
            expires_at: d.expires_at,
        }
    }
}

/// How long a new trust lasts: the MFA policy's `trustedDeviceDays`, else
/// `TESSERA_TRUSTED_DEVICE_DAYS`; `None`: devices are not trusted at all.
fn trust_period(state: &AppState, policy: &MfaPolicy) -> Option<TimeDelta> {
    policy.trust_period(state.config.trusted_device_days)
}

/// Trusts the caller's device for `user` (just logged in with a second factor) and returns
/// the token, shown once; `None` when the policy (or the server) trusts no device.
///
/// # Errors
/// Store errors.
pub async fn trust(
    state: &AppState,
    call: &Call,
    user: UserId,
    policy: &MfaPolicy,
) -> AppResult<Option<String>> {
    let Some(period) = trust_period(state, policy) else {
        return Ok(None);
    };
    let device_id = Uuid::now_v7();
    let mut secret = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let secret = B64.encode(secret);
    let label = call
        .meta
        .user_agent
        .as_deref()
        .map(|ua| ua.chars().take(LABEL_CHARS).collect::<String>());
    let command = UserCommand::TrustDevice(TrustDevice {
        device_id,
        token_hash: state.keyed_hasher.hash(TOKEN_DOMAIN, &secret),
        label,
        expires_at: state.clock.now() + period,
    });
    state
        .users
        .execute(&user.to_string(), command, &call.metadata())
        .await?;
    state.nudge();
    Ok(Some(format!("{}.{secret}", device_id.simple())))
}

/// The device `token` names, if it is one of `user`'s, still trusted at `now`, and the token's
/// secret matches (in constant time), and the policy trusts devices now: turning trust off
/// ends every trust already given, without an event per device.
pub fn recognise(state: &AppState, policy: &MfaPolicy, user: &User, token: &str) -> Option<Uuid> {
    trust_period(state, policy)?;
    let (id, secret) = token.split_once('.')?;
    let id = Uuid::try_parse(id).ok()?;
    let device = user.trusted_device(id, state.clock.now())?;
    state
        .keyed_hasher
        .verify(TOKEN_DOMAIN, secret, &device.token_hash)
        .then_some(id)
}

/// The user's trusted devices whose trust has not ended, oldest first.
pub fn of_user(state: &AppState, id: UserId, user: &User) -> Vec<DeviceView> {
    let now = state.clock.now();
    user.trusted_devices
        .iter()
        .filter(|d| d.expires_at > now)
        .map(|d| DeviceView::new(id, d))
        .collect()
}

/// `revokeTrustedDevice`: ends the trust of one device of a user the caller may act on.
///
/// # Errors
/// `DEVICE_NOT_FOUND` (also for a malformed id); not the caller's; store errors.
pub async fn revoke(state: &AppState, call: &Call, id: &str) -> AppResult<DeviceView> {
    let not_found = || AppError::not_found("DEVICE_NOT_FOUND", "no such trusted device");
    let (user, device) = id.split_once(':').ok_or_else(not_found)?;
    let user = UserId::parse(user).ok_or_else(not_found)?;
    let device = Uuid::try_parse(device).map_err(|_| not_found())?;
    if !call.caller()?.may_act_on(user) {
        return Err(AppError::Forbidden);
    }
    let key = user.to_string();
    let (loaded, seq) = state.users.load(&key).await?;
    let shown = loaded
        .trusted_devices
        .iter()
        .find(|d| d.id == device)
        .map(|d| DeviceView::new(user, d))
        .ok_or_else(not_found)?;
    let command = UserCommand::RevokeDevice { device_id: device };
    state
        .users
        .execute_from(&key, Some((loaded, seq)), command, &call.metadata())
        .await?;
    state.nudge();
    Ok(shown)
}

/// Ends the trust of every device of `user` (after a factor was removed).
///
/// # Errors
/// Store errors.
pub async fn revoke_all(
    state: &AppState,
    call: &Call,
    user: UserId,
    reason: DeviceRevocationReason,
) -> AppResult<()> {
    let command = UserCommand::RevokeAllDevices { reason };
    state
        .users
        .execute(&user.to_string(), command, &call.metadata())
        .await?;
    Ok(())
}

//! The QR-code link of a TOTP enrolment (Okta's `_embedded.activation._links.qrcode`): a URL a
//! browser tab opens without the API key, so it is a capability. The token in it is the
//! factor's secret sealed (AES-256-GCM under a key derived from the master key) together with
//! its expiry, bound to the factor id: unguessable, the same on every node (nothing is
//! stored), useless for another factor, dead after [`QR_LINK_TTL`] and dead as soon as the
//! factor is no longer pending activation. What it renders is the PNG `enrollFactor` returns.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use chrono::{DateTime, TimeDelta, Utc};
use tessera_domain::{
    crypto::EncryptedSecret,
    factor::{FactorStatus, FactorType, totp},
    ids::{FactorId, UserId},
    secret::SecretBytes,
};

use crate::{
    app::{AppError, AppResult},
    state::AppState,
};

/// How long a QR-code link works, at most (activation ends it sooner).
pub const QR_LINK_TTL: TimeDelta = TimeDelta::minutes(10);

fn aad(factor_id: FactorId, expires: i64) -> String {
    format!("qr-link:{factor_id}:{expires}")
}

fn dead() -> AppError {
    AppError::not_found(
        "QR_LINK_NOT_FOUND",
        "this QR-code link is unknown or expired",
    )
}

/// The token for a QR-code link to the factor just enrolled, whose secret `enrollFactor`
/// showed as `secret_base32`.
///
/// # Errors
/// A secret that is not base32 (internal).
pub fn issue(
    state: &AppState,
    factor_id: FactorId,
    secret_base32: &str,
    now: DateTime<Utc>,
) -> AppResult<String> {
    let secret = totp::decode_base32(secret_base32)
        .ok_or_else(|| AppError::internal("enrolment secret is not base32"))?;
    let expires = (now + QR_LINK_TTL).timestamp();
    let sealed = state
        .qr_links
        .seal(&SecretBytes::new(secret), &aad(factor_id, expires));
    let bytes = |b64: &str| STANDARD.decode(b64).map_err(AppError::internal);
    Ok(format!(
        "{expires}.{}.{}",
        URL_SAFE_NO_PAD.encode(bytes(&sealed.nonce)?),
        URL_SAFE_NO_PAD.encode(bytes(&sealed.ciphertext)?)
    ))
}

/// The QR code (PNG bytes) a link's `token` stands for, if the link is alive: not expired,
/// sealed for this factor of this user, and the factor still a TOTP factor pending activation.
///
/// # Errors
/// `QR_LINK_NOT_FOUND` for any dead or forged link (they are not told apart); store errors.
pub async fn open(
    state: &AppState,
    user_id: UserId,
    factor_id: FactorId,
    token: &str,
) -> AppResult<Vec<u8>> {
    let now = state.clock.now();
    let mut parts = token.splitn(3, '.');
    let (Some(expires), Some(nonce), Some(ciphertext)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(dead());
    };
    let expires: i64 = expires.parse().map_err(|_| dead())?;
    if expires <= now.timestamp() {
        return Err(dead());
    }
    let b64 = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| dead());
    let sealed = EncryptedSecret {
        key_id: state.qr_links.key_id().to_string(),
        nonce: STANDARD.encode(b64(nonce)?),
        ciphertext: STANDARD.encode(b64(ciphertext)?),
    };
    let secret = state
        .qr_links
        .open(&sealed, &aad(factor_id, expires))
        .map_err(|_| dead())?;
    let (factor, _) = state.factors.load(&factor_id.to_string()).await?;
    let alive = factor.exists()
        && factor.user_id == Some(user_id)
        && factor.factor_type == Some(FactorType::Totp)
        && factor.status_at(now) == FactorStatus::PendingActivation;
    let params = match (&factor.totp, alive) {
        (Some(enrolment), true) => enrolment.params,
        _ => return Err(dead()),
    };
    let (user, _) = state.users.load(&user_id.to_string()).await?;
    let provisioning = totp::provisioning(
        params,
        secret.expose(),
        &state.config.totp_issuer,
        &user.login,
    )
    .map_err(AppError::internal)?;
    STANDARD
        .decode(provisioning.qr_png_base64)
        .map_err(AppError::internal)
}

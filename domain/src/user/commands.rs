use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    crypto::HashedPassword,
    ids::FactorId,
    secret::Secret,
    user::{
        DeviceRevocationReason, UserError,
        login::enforce_login,
        recovery::{CodeCheck, HashedCodeSet},
    },
};

/// Commands on a user.
#[derive(Clone, Debug)]
pub enum UserCommand {
    /// Create the user.
    Register(Register),
    /// End every access token issued so far (a new token generation).
    RevokeSessions,
    /// End every access token issued so far because an enrolment-only token activated the
    /// factor it was for (the enrolment-only token itself included).
    EndEnrollment,
    /// Replace the recovery codes with a new set (drawn by the caller from a CSPRNG and
    /// hashed on its hashing pool). With `only_if_none`, does nothing if the user already has
    /// a set (first factor activation).
    GenerateRecoveryCodes {
        /// The new codes' hashes.
        hashes: HashedCodeSet,
        /// Generate only if the user never had codes.
        only_if_none: bool,
    },
    /// Spend a recovery code as a proof of possession: the caller checked it against the
    /// user's set ([`crate::user::recovery::check`], on its hashing pool); the aggregate
    /// decides what that means on the state it commits against.
    UseRecoveryCode {
        /// What the check found.
        check: CodeCheck,
    },
    /// Count a failed factor check towards the user's hard-lock budget.
    RecordFactorFailure {
        /// The factor that failed.
        factor_id: FactorId,
    },
    /// Record an attempt on a factor refused because the user's second factor is locked.
    RefuseWhileLocked {
        /// The factor that was tried.
        factor_id: FactorId,
    },
    /// A proof succeeded: the consecutive-failure count starts again.
    ResetFailures,
    /// Lift the hard lock (administrators).
    Unlock,
    /// Set or replace the password.
    SetPassword(SetPassword),
    /// Change the profile (administrators): each `Some` replaces that field.
    UpdateProfile(UpdateProfile),
    /// Deactivate the user (administrators).
    Deactivate,
    /// Reactivate a deactivated user (administrators).
    Reactivate,
    /// Delete the user (administrators), after its factors were removed.
    Delete,
    /// Record a login refused for a wrong password (the API checks the password off the
    /// async runtime; argon2 takes tens of milliseconds).
    RecordLoginFailure {
        /// Why.
        reason: LoginFailureReason,
    },
    /// A correct password: the password throttle's count starts again (writes nothing when
    /// nothing was counted).
    ResetLoginFailures,
    /// Remember a device after a login with a second factor (the token drawn and hashed by
    /// the caller, as randomness stays outside the domain).
    TrustDevice(TrustDevice),
    /// Record that a trusted device stood in for the second factor of a login.
    UseTrustedDevice {
        /// The device.
        device_id: Uuid,
    },
    /// Revoke one trusted device.
    RevokeDevice {
        /// The device.
        device_id: Uuid,
    },
    /// Revoke every trusted device (a factor was removed elsewhere).
    RevokeAllDevices {
        /// Why.
        reason: DeviceRevocationReason,
    },
    /// Record a one-time code the SMS pumping limits refused (nothing was sent).
    RecordCodeRefusal(CodeRefusal),
    /// Record that this user's text message crossed 80% of the hourly SMS budget.
    RecordSmsBudgetWarning {
        /// Sent in the window, this one included.
        sent: i64,
        /// The budget.
        budget: i64,
        /// When the window ends.
        window_ends_at: DateTime<Utc>,
    },
}

/// A refused code, as the limits saw it.
#[derive(Clone, Debug)]
pub struct CodeRefusal {
    /// Which way it would have gone.
    pub channel: crate::challenge::Channel,
    /// Which limit refused it.
    pub reason: crate::user::code_limits::CodeRefusalReason,
    /// The destination, already masked.
    pub destination: String,
    /// For SMS: the country calling code.
    pub country_code: Option<u16>,
    /// The factor that asked, if it exists yet.
    pub factor_id: Option<FactorId>,
    /// When to try again.
    pub retry_after_seconds: i64,
}

/// Trusts a device until `expires_at`.
#[derive(Clone, Debug)]
pub struct TrustDevice {
    /// Its id (the first part of its token).
    pub device_id: Uuid,
    /// Keyed hash of the token's secret part.
    pub token_hash: String,
    /// From the user agent.
    pub label: Option<String>,
    /// When the trust ends.
    pub expires_at: DateTime<Utc>,
}

/// Sets a password (its length checked with [`validate_password`] before it was hashed).
/// Self-service gives the current password, a password guess like a login's: the caller
/// checks it on its hashing pool, records a mismatch as `RecordLoginFailure`, and sends this
/// command only for a match, naming the stored hash it matched. The aggregate refuses it while
/// the login is throttled, and asks for a new check if the password changed meanwhile.
#[derive(Clone, Debug)]
pub struct SetPassword {
    /// The new password's argon2id hash.
    pub password_hash: HashedPassword,
    /// Self-service: the stored hash the current password matched.
    pub current_matched: Option<String>,
}

/// Why a login was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoginFailureReason {
    /// The password did not match.
    WrongPassword,
    /// The user has no password (checked against a dummy hash all the same).
    NoPassword,
    /// The password matched but the user is deactivated (answered as a wrong one).
    Deactivated,
}

impl crate::versioning::CommandName for UserCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Register(_) => "Register",
            Self::SetPassword(_) => "SetPassword",
            Self::RecordLoginFailure { .. } => "RecordLoginFailure",
            Self::ResetLoginFailures => "ResetLoginFailures",
            Self::TrustDevice(_) => "TrustDevice",
            Self::UseTrustedDevice { .. } => "UseTrustedDevice",
            Self::RevokeDevice { .. } => "RevokeDevice",
            Self::RevokeAllDevices { .. } => "RevokeAllDevices",
            Self::RecordCodeRefusal(_) => "RecordCodeRefusal",
            Self::RecordSmsBudgetWarning { .. } => "RecordSmsBudgetWarning",
            Self::GenerateRecoveryCodes { .. } => "GenerateRecoveryCodes",
            Self::UseRecoveryCode { .. } => "UseRecoveryCode",
            Self::RecordFactorFailure { .. } => "RecordFactorFailure",
            Self::RefuseWhileLocked { .. } => "RefuseWhileLocked",
            Self::ResetFailures => "ResetFailures",
            Self::Unlock => "Unlock",
            Self::UpdateProfile(_) => "UpdateProfile",
            Self::Deactivate => "Deactivate",
            Self::Reactivate => "Reactivate",
            Self::Delete => "Delete",
            Self::RevokeSessions => "RevokeSessions",
            Self::EndEnrollment => "EndEnrollment",
        }
    }
}

/// Changes a user's profile; `None` keeps a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UpdateProfile {
    /// New e-mail address.
    pub email: Option<String>,
    /// New phone number in E.164 form.
    pub phone_number: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New given name.
    pub first_name: Option<String>,
    /// New family name.
    pub last_name: Option<String>,
}

impl UpdateProfile {
    /// Checks the fields given.
    ///
    /// # Errors
    /// The `Invalid*` variant of [`UserError`] naming the bad field.
    pub fn validate(&self) -> Result<(), UserError> {
        if let Some(email) = &self.email {
            validate_email(email)?;
        }
        if let Some(phone) = &self.phone_number {
            validate_phone_number(phone)?;
        }
        for name in [&self.display_name, &self.first_name, &self.last_name]
            .into_iter()
            .flatten()
        {
            validate_display_name(name)?;
        }
        Ok(())
    }
}

fn validate_display_name(name: &str) -> Result<(), UserError> {
    if name.chars().count() > MAX_DISPLAY_NAME || name.chars().any(char::is_control) {
        return Err(UserError::InvalidDisplayName);
    }
    Ok(())
}

/// Registers a user under a login that no other user has.
#[derive(Clone, Debug)]
pub struct Register {
    /// Login name, unique in its enforced form ([`enforce_login`]).
    pub login: String,
    /// Optional e-mail address.
    pub email: Option<String>,
    /// Optional phone number in E.164 form.
    pub phone_number: Option<String>,
    /// Optional display name.
    pub display_name: Option<String>,
    /// Optional given name.
    pub first_name: Option<String>,
    /// Optional family name.
    pub last_name: Option<String>,
    /// Optional first-factor password's argon2id hash (the password checked with
    /// [`validate_password`] before it was hashed).
    pub password_hash: Option<HashedPassword>,
}

const MAX_DISPLAY_NAME: usize = 256;
const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 256;

impl Register {
    /// Checks every field; the first problem wins.
    ///
    /// # Errors
    /// The `Invalid*` variant of [`UserError`] naming the bad field.
    pub fn validate(&self) -> Result<(), UserError> {
        enforce_login(&self.login)?;
        if let Some(email) = &self.email {
            validate_email(email)?;
        }
        if let Some(phone) = &self.phone_number {
            validate_phone_number(phone)?;
        }
        for name in [&self.display_name, &self.first_name, &self.last_name]
            .into_iter()
            .flatten()
        {
            validate_display_name(name)?;
        }
        Ok(())
    }
}

/// A password's length: 8 to 256 characters. Checked before it is hashed.
///
/// # Errors
/// [`UserError::InvalidPassword`].
pub fn validate_password(password: &Secret<String>) -> Result<(), UserError> {
    let n = password.expose().chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        Ok(())
    } else {
        Err(UserError::InvalidPassword)
    }
}

/// An e-mail address as it will be delivered: parsed by the `email_address` crate (RFC 5322
/// `addr-spec`: no display name, no `mailto:`, no domain literal, at most 64 characters
/// before the `@` and 254 in all), with a dotted domain, and without a quoted local part (the
/// SMTP layer delivers `"evil"@x` to `evil@x`). What passes is delivered exactly as written,
/// so what is stored is what is delivered.
///
/// # Errors
/// [`UserError::InvalidEmail`].
pub fn validate_email(email: &str) -> Result<(), UserError> {
    let options = email_address::Options {
        minimum_sub_domains: 2,
        allow_domain_literal: false,
        allow_display_text: false,
    };
    let parsed = email_address::EmailAddress::parse_with_options(email, options).ok();
    let ok = parsed.is_some_and(|a| {
        a.as_str() == email
            && !a.local_part().starts_with('"')
            && a.domain().split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    });
    if ok {
        Ok(())
    } else {
        Err(UserError::InvalidEmail)
    }
}

/// E.164: `+`, a non-zero country digit, 7 to 15 digits in all.
///
/// # Errors
/// [`UserError::InvalidPhoneNumber`].
pub fn validate_phone_number(phone: &str) -> Result<(), UserError> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    let ok = (7..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(UserError::InvalidPhoneNumber)
    }
}

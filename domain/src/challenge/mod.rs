//! The `Challenge` aggregate: one request for a proof of possession with a lifetime, answered
//! at most once. Step-up challenges carry the caller's `state`; login challenges stand for a
//! login whose password was right; factor challenges exist for one sent code.
//!
//! The code of an SMS or e-mail factor is judged by the `Factor` (it holds the code's hash,
//! the lockout and the resend limits, so one command decides each guess); the challenge
//! records what was sent for it and what came of each attempt, limits the failed attempts it
//! accepts, and completes once.

mod aggregate;
mod commands;
mod error;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{Challenge, ChallengeServices, ChallengeStatus, MAX_DISPLAY_CHARS, state_fits};
pub use commands::{
    ChallengeCommand, DeliveryOutcome, Issue, MAX_STATE_BYTES, MAX_TTL_SECONDS, MIN_TTL_SECONDS,
    PasskeyLoginIssue, SentCode,
};
pub use error::ChallengeError;
pub use events::{
    ChallengeEvent, CodeSent, Completed, Delivered, DeliveryFailed, Expired, ExpiryReason,
    FailedAttempt, Issued, PasskeyLoginIssued,
};

use serde::{Deserialize, Serialize};

/// What a challenge is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChallengePurpose {
    /// A sensitive action wants a fresh proof (`startStepUp`/`completeStepUp`).
    StepUp,
    /// The second step of a login whose password was right (`login`/`completeLogin`).
    Login,
    /// One code sent to one SMS or e-mail factor (`challengeFactor`, enrolment), answered by
    /// `verifyFactor`/`activateFactor`.
    Factor,
    /// A passwordless login (`startPasskeyLogin`/`completePasskeyLogin`): its user is known
    /// only from the credential that answers it.
    PasskeyLogin,
}

impl ChallengePurpose {
    /// The contract name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StepUp => "STEP_UP",
            Self::Login => "LOGIN",
            Self::Factor => "FACTOR",
            Self::PasskeyLogin => "PASSKEY_LOGIN",
        }
    }
}

/// How a challenge was answered: the `amr` method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Method {
    /// The password alone (a login with no second factor to ask for).
    Password,
    /// A TOTP code.
    Totp,
    /// An SMS code.
    Sms,
    /// An e-mail code.
    Email,
    /// One of the user's recovery codes.
    RecoveryCode,
    /// The password, on a device the user trusted after an earlier login with a second
    /// factor: why no factor was asked.
    TrustedDevice,
    /// A WebAuthn credential (passkey or security key).
    Webauthn,
}

impl Method {
    /// The `amr` value (RFC 8176 where it has one).
    pub fn amr(self) -> &'static str {
        match self {
            Self::Password => "pwd",
            Self::Totp => "otp",
            Self::Sms => "sms",
            Self::Email => "email",
            // RFC 8176 has no value for recovery codes; "kba" (knowledge) would mislead.
            Self::RecoveryCode => "rc",
            // No RFC 8176 value either: a remembered device, not a factor proven now.
            Self::TrustedDevice => "device",
            // RFC 8176: proof of possession of a hardware-secured key.
            Self::Webauthn => "hwk",
        }
    }

    /// The method a factor of this type proves.
    pub fn of_factor(t: crate::factor::FactorType) -> Option<Self> {
        match t {
            crate::factor::FactorType::Totp => Some(Self::Totp),
            crate::factor::FactorType::Sms => Some(Self::Sms),
            crate::factor::FactorType::Email => Some(Self::Email),
            crate::factor::FactorType::Webauthn => Some(Self::Webauthn),
        }
    }
}

/// Which way a code went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Channel {
    /// Text message through the SMS gateway.
    Sms,
    /// E-mail through SMTP.
    Email,
}

impl Channel {
    /// The contract name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "SMS",
            Self::Email => "EMAIL",
        }
    }
}

/// Shows only the ends of a phone number or an address (`+1•••••0100`, `a•••@example.com`),
/// for events and read models: enough to recognise, not to harvest.
pub fn mask_destination(destination: &str) -> String {
    if let Some((local, domain)) = destination.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}•••@{domain}");
    }
    let chars: Vec<char> = destination.chars().collect();
    if chars.len() <= 6 {
        return "•••".into();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}•••{tail}")
}

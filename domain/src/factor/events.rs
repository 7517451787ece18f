use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    crypto::EncryptedSecret,
    factor::{FactorType, totp::TotpParams},
    ids::{ChallengeId, FactorId, UserId},
    versioning::Versioned,
};

/// Events of a factor. The variant name is the stored `event_type` (frozen by the contract, docs/architecture.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FactorEvent {
    /// Enrolled, pending activation.
    Enrolled(Enrolled),
    /// Activated with a correct code.
    Activated(Activated),
    /// A correct code was presented.
    Verified(Verified),
    /// A proof of possession failed.
    FailedAttempt(FailedAttempt),
    /// Too many consecutive failures.
    LockedOut(LockedOut),
    /// The lockout ended (its time ran out, or an administrator lifted it).
    Unlocked(Unlocked),
    /// Removed for good.
    Removed(Removed),
    /// The pending enrolment was not activated in time.
    EnrollmentExpired(EnrollmentExpired),
    /// A one-time code was drawn for an SMS or e-mail factor (only its keyed hash is kept).
    CodeIssued(CodeIssued),
    /// A WebAuthn factor's registration ceremony was started (its state, kept on the server).
    RegistrationRequested(RegistrationRequested),
    /// A WebAuthn factor's credential was registered (written with `Activated`).
    CredentialRegistered(CredentialRegistered),
    /// A WebAuthn assertion was asked for (the ceremony state, kept on the server).
    AssertionRequested(AssertionRequested),
    /// A WebAuthn credential answered: its new counter and backup flags (with `Verified`).
    CredentialUsed(CredentialUsed),
    /// A TOTP secret sealed under an older master key, sealed again under the active one
    /// (after a key rotation, with the next `Verified` or `Activated`, or by `tessera key
    /// reseal`). The secret itself is unchanged.
    SecretResealed(SecretResealed),
}

/// Payload of [`FactorEvent::SecretResealed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecretResealed {
    /// The same secret under the active key (its `key_id` names it).
    pub secret: EncryptedSecret,
    /// The key id it was sealed under before.
    pub previous_key_id: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`FactorEvent::Enrolled`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The factor (the secret's AEAD associated data).
    pub factor_id: FactorId,
    /// The owner.
    pub user_id: UserId,
    /// The kind of factor.
    pub factor_type: FactorType,
    /// The user's label.
    pub label: Option<String>,
    /// For TOTP: the sealed secret and parameters.
    pub totp: Option<TotpEnrollment>,
    /// For SMS and e-mail: where codes go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oob: Option<OobEnrollment>,
    /// The activation deadline.
    pub expires_at: DateTime<Utc>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The TOTP part of an enrolment: the secret only ever sealed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TotpEnrollment {
    /// AES-256-GCM sealed secret, bound to the factor id.
    pub secret: EncryptedSecret,
    /// Algorithm, digits, period.
    pub params: TotpParams,
}

/// The out-of-band part of an enrolment: where codes are sent. Contact data, not a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OobEnrollment {
    /// An E.164 phone number (SMS) or an e-mail address (EMAIL).
    pub destination: String,
}

/// Payload of [`FactorEvent::Activated`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Activated {
    /// The TOTP step the code matched; never accepted again.
    pub step: Option<u64>,
    /// For SMS and e-mail: the challenge whose code was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_id: Option<ChallengeId>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`FactorEvent::Verified`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verified {
    /// The TOTP step the code matched; never accepted again.
    pub step: Option<u64>,
    /// The challenge the proof answered: the code's challenge (SMS, e-mail) or the step-up
    /// or login challenge a TOTP code was given for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_id: Option<ChallengeId>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Why a proof of possession failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureReason {
    /// The code matched no step in the window.
    WrongCode,
    /// The code matched a step already used.
    Replayed,
    /// The factor was locked; the code was not checked.
    Locked,
    /// The SMS or e-mail code had expired; it was not checked.
    CodeExpired,
    /// No live SMS or e-mail code for this factor (and challenge): none was sent, or it was
    /// used or replaced.
    NoActiveCode,
    /// The SMS or e-mail code already took its maximum of wrong tries; it was not checked.
    AttemptsExhausted,
    /// WebAuthn: the signature (or the attestation) does not verify.
    BadSignature,
    /// WebAuthn: the client data names an origin the relying party does not accept.
    ForeignOrigin,
    /// WebAuthn: the authenticator signed for another relying party id.
    WrongRpId,
    /// WebAuthn: the authenticator did not verify the user (no UV flag).
    UserNotVerified,
    /// WebAuthn: the answer names a credential that is not this factor's.
    UnknownCredential,
    /// WebAuthn: the answer was signed over another challenge.
    WrongChallenge,
    /// WebAuthn: the signature counter did not grow; the authenticator may be cloned.
    CounterRegressed,
    /// WebAuthn: the factor's registration was already answered.
    RegistrationUsed,
}

impl FailureReason {
    /// Whether a failure with this reason is a checked wrong answer (a guess, or a forged or
    /// foreign assertion): it counts towards lockout, the hard lock and a challenge's tries.
    pub fn is_guess(self) -> bool {
        matches!(
            self,
            Self::WrongCode
                | Self::BadSignature
                | Self::ForeignOrigin
                | Self::WrongRpId
                | Self::UserNotVerified
                | Self::UnknownCredential
                | Self::WrongChallenge
                | Self::CounterRegressed
        )
    }
}

/// Payload of [`FactorEvent::FailedAttempt`] (version 2.0; 1.0 lacked `counted`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// Why.
    pub reason: FailureReason,
    /// Whether this failure counted towards lockout. The event records the decision, not only
    /// its inputs, so a later change of policy does not change what old events mean.
    pub counted: bool,
    /// Consecutive failures counted towards lockout after this one (only wrong codes are
    /// guesses and count; replays, attempts while locked and attempts against an expired,
    /// used or exhausted code do not).
    pub consecutive_failures: u32,
    /// The challenge the attempt was bound to, if any (the code's challenge for SMS and
    /// e-mail, the step-up or login challenge for TOTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_id: Option<ChallengeId>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`FactorEvent::LockedOut`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockedOut {
    /// Verification answers `LOCKED_OUT` until then.
    pub until: DateTime<Utc>,
    /// The failures that caused it.
    pub consecutive_failures: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`FactorEvent::Unlocked`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unlocked {
    /// `true` when the lockout ran out, `false` when an administrator lifted it.
    pub automatic: bool,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`FactorEvent::Removed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`FactorEvent::EnrollmentExpired`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentExpired {
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`FactorEvent::CodeIssued`]. The code itself is never stored: only its keyed
/// hash (HMAC-SHA256), bound to the factor and the challenge.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeIssued {
    /// The challenge the code belongs to; it answers only that challenge.
    pub challenge_id: ChallengeId,
    /// `true` when the code may be given to `verifyFactor`/`activateFactor` by factor id
    /// alone (the challenge exists only for this code); `false` when it answers a step-up or
    /// login challenge and only there.
    pub standalone: bool,
    /// Keyed hash of `factor_id/challenge_id/code`.
    pub code_hash: String,
    /// The code is refused (`EXPIRED`) from then on.
    pub expires_at: DateTime<Utc>,
    /// When.
    pub at: DateTime<Utc>,
}

impl std::fmt::Debug for CodeIssued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeIssued")
            .field("challenge_id", &self.challenge_id)
            .field("standalone", &self.standalone)
            .field("expires_at", &self.expires_at)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// Payload of [`FactorEvent::RegistrationRequested`]. The ceremony state holds the challenge
/// handed to the browser; it is kept on the server and never returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistrationRequested {
    /// webauthn-rs's `PasskeyRegistration`, serialised (redacted in audit reads).
    pub ceremony: Value,
    /// The registration is refused (`EXPIRED`) from then on.
    pub expires_at: DateTime<Utc>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`FactorEvent::CredentialRegistered`]: the public credential, no secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CredentialRegistered {
    /// The credential id, base64url.
    pub credential_id: String,
    /// webauthn-rs's `Passkey` (public key, counter, flags), serialised.
    pub passkey: Value,
    /// The authenticator model, when its attestation named one.
    pub aaguid: Option<uuid::Uuid>,
    /// Whether the key may be synced.
    pub backup_eligible: bool,
    /// Whether it is synced now.
    pub backup_state: bool,
    /// Transports the client reported.
    pub transports: Vec<String>,
    /// The signature counter at registration (0: the authenticator keeps none).
    #[serde(default)]
    pub counter: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`FactorEvent::AssertionRequested`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssertionRequested {
    /// The challenge the assertion answers; it answers only that challenge, once.
    pub challenge_id: ChallengeId,
    /// `true` when `verifyFactor` may use it by factor id alone.
    pub standalone: bool,
    /// webauthn-rs's `PasskeyAuthentication`, serialised (kept on the server, redacted in
    /// audit reads).
    pub ceremony: Value,
    /// A passkey login's ceremony (`DiscoverableAuthentication`), which named no credential.
    #[serde(default)]
    pub discoverable: bool,
    /// Refused (`EXPIRED`) from then on.
    pub expires_at: DateTime<Utc>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`FactorEvent::CredentialUsed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CredentialUsed {
    /// The signature counter the authenticator reported (0: it keeps none).
    pub counter: u32,
    /// Whether the key is synced now.
    pub backup_state: bool,
    /// Whether it may be synced.
    pub backup_eligible: bool,
    /// The passkey updated with them, serialised.
    pub passkey: Value,
    /// When.
    pub at: DateTime<Utc>,
}

impl FactorEvent {
    /// The challenge an attempt or success was bound to, if any.
    pub fn challenge_id(&self) -> Option<ChallengeId> {
        match self {
            Self::Activated(e) => e.challenge_id,
            Self::Verified(e) => e.challenge_id,
            Self::FailedAttempt(e) => e.challenge_id,
            Self::CodeIssued(e) => Some(e.challenge_id),
            Self::AssertionRequested(e) => Some(e.challenge_id),
            _ => None,
        }
    }
}

impl DomainEvent for FactorEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Enrolled(_) => "Enrolled",
            Self::Activated(_) => "Activated",
            Self::Verified(_) => "Verified",
            Self::FailedAttempt(_) => "FailedAttempt",
            Self::LockedOut(_) => "LockedOut",
            Self::Unlocked(_) => "Unlocked",
            Self::Removed(_) => "Removed",
            Self::EnrollmentExpired(_) => "EnrollmentExpired",
            Self::CodeIssued(_) => "CodeIssued",
            Self::RegistrationRequested(_) => "RegistrationRequested",
            Self::CredentialRegistered(_) => "CredentialRegistered",
            Self::AssertionRequested(_) => "AssertionRequested",
            Self::CredentialUsed(_) => "CredentialUsed",
            Self::SecretResealed(_) => "SecretResealed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        <Self as Versioned>::current_version(&self.event_type())
            .unwrap_or("1.0")
            .to_string()
    }
}

impl Versioned for FactorEvent {
    fn current_version(event_type: &str) -> Option<&'static str> {
        Some(match event_type {
            "FailedAttempt" => "2.0",
            "Enrolled"
            | "Activated"
            | "Verified"
            | "LockedOut"
            | "Unlocked"
            | "Removed"
            | "EnrollmentExpired"
            | "CodeIssued"
            | "RegistrationRequested"
            | "CredentialRegistered"
            | "AssertionRequested"
            | "CredentialUsed"
            | "SecretResealed" => "1.0",
            _ => return None,
        })
    }

    fn upcast(event_type: &str, event_version: &str, mut payload: Value) -> Value {
        if let ("FailedAttempt", "1.0") = (event_type, event_version)
            && let Some(Value::Object(body)) = payload.get_mut("FailedAttempt")
        {
            // 1.0 had no `counted`; under the policy of its time only wrong codes counted.
            let counted = body.get("reason").and_then(Value::as_str) == Some("WRONG_CODE");
            body.insert("counted".into(), Value::Bool(counted));
        }
        payload
    }
}

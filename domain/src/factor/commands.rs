use serde_json::Value;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use crate::{
    factor::{FactorType, totp::TotpParams},
    ids::{ChallengeId, FactorId, UserId},
    secret::{PassCode, SecretBytes},
};

/// Commands on a factor.
#[derive(Clone, Debug)]
pub enum FactorCommand {
    /// Enrol a new factor (pending activation).
    Enroll(Enroll),
    /// Activate a pending factor with a code (TOTP: from the app; SMS/e-mail: the code sent
    /// at enrolment or by a later standalone challenge).
    Activate {
        /// The code.
        pass_code: PassCode,
    },
    /// Prove possession of an active factor.
    Verify {
        /// The code.
        pass_code: PassCode,
        /// The step-up or login challenge this proof answers. SMS and e-mail codes are bound
        /// to their challenge: with `None` only a standalone code is accepted, with `Some` only
        /// the code sent for that challenge. TOTP codes are recorded against it.
        challenge_id: Option<ChallengeId>,
    },
    /// Send a fresh one-time code (SMS and e-mail factors), replacing any earlier one.
    SendCode(NewCode),
    /// Activate a pending WebAuthn factor with the registration response.
    ActivateWebAuthn {
        /// `credential.toJSON()` of `navigator.credentials.create`, parsed.
        response: Box<RegisterPublicKeyCredential>,
    },
    /// Keep the state of an assertion ceremony started for this (WebAuthn) factor.
    RequestAssertion(AssertionRequest),
    /// Prove possession of an active WebAuthn factor with an assertion.
    VerifyWebAuthn {
        /// `credential.toJSON()` of `navigator.credentials.get`, parsed.
        response: Box<PublicKeyCredential>,
        /// The step-up or login challenge it answers; `None`: the standalone request.
        challenge_id: Option<ChallengeId>,
    },
    /// Remove the factor for good.
    Remove,
    /// Lift a lockout before its time (administrators).
    Unlock,
    /// Seal a TOTP secret sealed under an older master key again under the active one
    /// (`tessera key reseal`); nothing happens if it is sealed under the active key already.
    ResealSecret,
}

/// Enrols a factor. The caller draws the random secret or code, so the aggregate stays
/// deterministic.
#[derive(Clone, Debug)]
pub struct Enroll {
    /// This factor's id (the stream id); the secret is bound to it.
    pub factor_id: FactorId,
    /// The owner, who must exist (checked by the caller).
    pub user_id: UserId,
    /// The kind of factor.
    pub factor_type: FactorType,
    /// A label the user chose ("Work phone").
    pub label: Option<String>,
    /// For TOTP: the secret and parameters.
    pub totp: Option<TotpSpec>,
    /// For SMS and e-mail: the destination and the activation code.
    pub oob: Option<OobSpec>,
    /// For WebAuthn: the registration ceremony the caller started.
    pub webauthn: Option<WebAuthnSpec>,
}

/// A WebAuthn registration ceremony, started by the caller (it draws the challenge).
#[derive(Clone, Debug)]
pub struct WebAuthnSpec {
    /// webauthn-rs's `PasskeyRegistration`, serialised.
    pub registration: Value,
}

/// An assertion ceremony started by the caller for one challenge.
#[derive(Clone, Debug)]
pub struct AssertionRequest {
    /// The challenge the assertion will answer.
    pub challenge_id: ChallengeId,
    /// Whether `verifyFactor` may use it by factor id alone.
    pub standalone: bool,
    /// webauthn-rs's `PasskeyAuthentication` (or, when `discoverable`, its
    /// `DiscoverableAuthentication`), serialised.
    pub state: Value,
    /// A passkey login's ceremony, which named no credential.
    pub discoverable: bool,
}

/// Largest WebAuthn response accepted, as JSON (real ones are well under 2 KiB).
pub const MAX_WEBAUTHN_RESPONSE: usize = 8 * 1024;

/// A new TOTP secret and its parameters.
#[derive(Clone, Debug)]
pub struct TotpSpec {
    /// Raw key bytes, at least 160 bits.
    pub secret: SecretBytes,
    /// Algorithm, digits, period.
    pub params: TotpParams,
}

/// Where an SMS or e-mail factor sends codes, and its first (activation) code.
#[derive(Clone, Debug)]
pub struct OobSpec {
    /// E.164 phone number (SMS) or e-mail address (EMAIL).
    pub destination: String,
    /// The activation code, sent after the enrolment is committed.
    pub first_code: NewCode,
}

/// A one-time code drawn by the caller from a CSPRNG, for one challenge.
#[derive(Clone, Debug)]
pub struct NewCode {
    /// The challenge the code answers.
    pub challenge_id: ChallengeId,
    /// Whether `verifyFactor`/`activateFactor` may use it by factor id alone.
    pub standalone: bool,
    /// Six digits; only its keyed hash is stored.
    pub code: PassCode,
}

/// Longest accepted label.
pub const MAX_LABEL: usize = 128;

/// Digits of an SMS or e-mail code.
pub const OOB_CODE_DIGITS: usize = 6;

impl crate::versioning::CommandName for FactorCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Enroll(_) => "Enroll",
            Self::Activate { .. } => "Activate",
            Self::Verify { .. } => "Verify",
            Self::SendCode(_) => "SendCode",
            Self::ActivateWebAuthn { .. } => "ActivateWebAuthn",
            Self::RequestAssertion(_) => "RequestAssertion",
            Self::VerifyWebAuthn { .. } => "VerifyWebAuthn",
            Self::Remove => "Remove",
            Self::Unlock => "Unlock",
            Self::ResealSecret => "ResealSecret",
        }
    }
}

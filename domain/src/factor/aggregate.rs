use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, event_sink::EventSink};
use serde::{Deserialize, Serialize};

use serde_json::Value;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use crate::{
    crypto::{KeyedHasher, SecretCipher},
    factor::{
        Activated, AssertionRequest, AssertionRequested, CodeIssued, CredentialRegistered,
        CredentialUsed, Enroll, Enrolled, EnrollmentExpired, FactorCommand, FactorError,
        FactorEvent, FactorStatus, FactorType, FailedAttempt, FailureReason, LockedOut, NewCode,
        OOB_CODE_DIGITS, OobEnrollment, RegistrationRequested, Removed, SecretResealed,
        TotpEnrollment, Unlocked, Verified,
        commands::MAX_LABEL,
        effective_status, lockout, totp,
        webauthn::{self, RelyingParty, Unreadable},
    },
    ids::{ChallengeId, FactorId, UserId},
    secret::PassCode,
    services::{Clock, FactorPolicy, MAX_CODES_PER_HOUR},
    user::{validate_email, validate_phone_number},
};

/// Domain of the keyed hash of SMS and e-mail codes.
const CODE_HASH_DOMAIN: &str = "oob-code";

/// Where a factor is in its lifecycle, as stored. Lockout is a deadline beside it, so that a
/// lock whose time is up needs no event to end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FactorState {
    /// Nothing enrolled under this id.
    #[default]
    Unenrolled,
    /// Waiting for activation.
    PendingActivation,
    /// Usable.
    Active,
    /// Not activated in time.
    Expired,
    /// Removed.
    Removed,
}

/// A factor, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    /// Lifecycle state.
    pub state: FactorState,
    /// Its id.
    pub id: Option<FactorId>,
    /// Its owner.
    pub user_id: Option<UserId>,
    /// Its kind.
    pub factor_type: Option<FactorType>,
    /// The user's label.
    pub label: Option<String>,
    /// For TOTP: sealed secret and parameters.
    pub totp: Option<TotpEnrollment>,
    /// Enrolment time.
    pub created_at: Option<DateTime<Utc>>,
    /// Activation deadline.
    pub expires_at: Option<DateTime<Utc>>,
    /// The last TOTP step accepted; no step at or before it is accepted again.
    pub last_used_step: Option<u64>,
    /// Time of the last successful verification.
    pub last_verified_at: Option<DateTime<Utc>>,
    /// Consecutive failed guesses since the last success or unlock.
    pub consecutive_failures: u32,
    /// Locked until then, if a lockout is in force (or ran out without an event yet).
    pub locked_until: Option<DateTime<Utc>>,
    /// For SMS and e-mail: where codes go.
    pub oob: Option<OobEnrollment>,
    /// For SMS and e-mail: the latest code sent (only its hash).
    pub code: Option<PendingCode>,
    /// When the latest codes were sent, oldest first (at most [`MAX_CODES_PER_HOUR`]).
    pub code_sends: Vec<DateTime<Utc>>,
    /// For WebAuthn: the registered credential.
    #[serde(default)]
    pub webauthn: Option<WebAuthnCredential>,
    /// For WebAuthn: the registration ceremony and whether it was answered.
    #[serde(default)]
    pub registration: Option<PendingRegistration>,
    /// For WebAuthn: the latest assertion ceremonies, oldest first (at most
    /// [`MAX_PENDING_ASSERTIONS`]).
    #[serde(default)]
    pub assertions: Vec<PendingAssertion>,
}

/// Assertion ceremonies a WebAuthn factor keeps at once (one standalone, the others bound to
/// step-up or login challenges); a newer one pushes out the oldest.
pub const MAX_PENDING_ASSERTIONS: usize = 8;

/// A WebAuthn factor's credential, as registered and last used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebAuthnCredential {
    /// The credential id, base64url.
    pub credential_id: String,
    /// webauthn-rs's `Passkey`, serialised.
    pub passkey: Value,
    /// The authenticator model, when known.
    pub aaguid: Option<uuid::Uuid>,
    /// Whether the key may be synced.
    pub backup_eligible: bool,
    /// Whether it is synced now.
    pub backup_state: bool,
    /// Transports the client reported.
    pub transports: Vec<String>,
    /// The highest signature counter seen; a later answer must exceed it (unless both are 0).
    pub counter: u32,
}

/// A registration ceremony waiting for its answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingRegistration {
    /// webauthn-rs's `PasskeyRegistration`, serialised.
    pub state: Value,
    /// Refused from then on.
    pub expires_at: DateTime<Utc>,
}

/// An assertion ceremony waiting for its answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingAssertion {
    /// The challenge it answers.
    pub challenge_id: ChallengeId,
    /// Whether it may be used by factor id alone.
    pub standalone: bool,
    /// webauthn-rs's `PasskeyAuthentication` (`DiscoverableAuthentication` when
    /// `discoverable`), serialised.
    pub state: Value,
    /// A passkey login's ceremony, which named no credential.
    #[serde(default)]
    pub discoverable: bool,
    /// Refused from then on.
    pub expires_at: DateTime<Utc>,
    /// Whether it was answered (an answered ceremony is never accepted again).
    pub used: bool,
}

/// The latest SMS or e-mail code of a factor. A new code replaces it; a success uses it up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingCode {
    /// The challenge it answers.
    pub challenge_id: ChallengeId,
    /// Whether it may be used by factor id alone.
    pub standalone: bool,
    /// Keyed hash of `factor_id/challenge_id/code`.
    pub code_hash: String,
    /// Refused from then on.
    pub expires_at: DateTime<Utc>,
    /// Wrong tries against this code.
    pub wrong_attempts: u32,
    /// Whether it was used (a used code is never accepted again).
    pub used: bool,
}

/// What a factor's commands need from outside.
#[derive(Clone, Debug)]
pub struct FactorServices {
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Seals and opens TOTP secrets.
    pub cipher: SecretCipher,
    /// Hashes SMS and e-mail codes.
    pub hasher: KeyedHasher,
    /// Skew, lockout, enrolment and code numbers.
    pub policy: FactorPolicy,
    /// Checks WebAuthn answers.
    pub relying_party: RelyingParty,
}

/// What checking one code found, before it is written down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Judgement {
    /// Right; for TOTP, the step it matched.
    Accepted(Option<u64>),
    /// Right for a step (TOTP) or a code (SMS, e-mail) already used.
    Replayed,
    /// Checked and wrong: a guess.
    Wrong,
    /// Refused without looking at the code.
    Refused(FailureReason),
}

impl Factor {
    /// Whether anything was ever enrolled under this id.
    pub fn exists(&self) -> bool {
        self.state != FactorState::Unenrolled
    }

    /// The status a client sees at `now`.
    pub fn status_at(&self, now: DateTime<Utc>) -> FactorStatus {
        let stored = match self.state {
            FactorState::Unenrolled | FactorState::PendingActivation => {
                FactorStatus::PendingActivation
            }
            FactorState::Active => FactorStatus::Active,
            FactorState::Expired => FactorStatus::Expired,
            FactorState::Removed => FactorStatus::Removed,
        };
        effective_status(stored, self.locked_until, self.expires_at, now)
    }

    /// Whether a lock is in force at `now`.
    pub fn is_locked_at(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// Whether this factor takes sent codes (SMS, e-mail).
    pub fn is_out_of_band(&self) -> bool {
        self.factor_type.is_some_and(FactorType::is_out_of_band)
    }
}

impl Aggregate for Factor {
    const TYPE: &'static str = "Factor";
    type Command = FactorCommand;
    type Event = FactorEvent;
    type Error = FactorError;
    type Services = FactorServices;

    async fn handle(
        &mut self,
        command: FactorCommand,
        services: &FactorServices,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        let now = services.clock.now();
        // Codes are judged as the user meant them ("123 456" is 123456) whichever transport
        // built the command.
        match command {
            FactorCommand::Enroll(cmd) => self.enroll(cmd, services, now, sink).await,
            FactorCommand::Activate { pass_code } => {
                self.activate(&pass_code.without_separators(), services, now, sink)
                    .await
            }
            FactorCommand::Verify {
                pass_code,
                challenge_id,
            } => {
                let pass_code = pass_code.without_separators();
                self.verify(&pass_code, challenge_id, services, now, sink)
                    .await
            }
            FactorCommand::SendCode(code) => self.send_code(code, services, now, sink).await,
            FactorCommand::ActivateWebAuthn { response } => {
                self.activate_webauthn(&response, services, now, sink).await
            }
            FactorCommand::RequestAssertion(request) => {
                self.request_assertion(request, services, now, sink).await
            }
            FactorCommand::VerifyWebAuthn {
                response,
                challenge_id,
            } => {
                self.verify_webauthn(&response, challenge_id, services, now, sink)
                    .await
            }
            FactorCommand::Remove => self.remove(now, sink).await,
            FactorCommand::Unlock => self.unlock(now, sink).await,
            FactorCommand::ResealSecret => {
                if self.state == FactorState::Unenrolled {
                    return Err(FactorError::NotFound);
                }
                self.reseal_if_stale(services, now, sink).await
            }
        }
    }

    fn apply(&mut self, event: FactorEvent) {
        match event {
            FactorEvent::Enrolled(e) => {
                self.state = FactorState::PendingActivation;
                self.id = Some(e.factor_id);
                self.user_id = Some(e.user_id);
                self.factor_type = Some(e.factor_type);
                self.label = e.label;
                self.totp = e.totp;
                self.oob = e.oob;
                self.created_at = Some(e.at);
                self.expires_at = Some(e.expires_at);
            }
            FactorEvent::Activated(e) => {
                self.state = FactorState::Active;
                self.last_used_step = e.step.or(self.last_used_step);
                self.last_verified_at = Some(e.at);
                self.consecutive_failures = 0;
                self.use_code(e.challenge_id);
                self.registration = None;
            }
            FactorEvent::Verified(e) => {
                self.last_used_step = e.step.or(self.last_used_step);
                self.last_verified_at = Some(e.at);
                self.consecutive_failures = 0;
                self.use_code(e.challenge_id);
            }
            FactorEvent::RegistrationRequested(e) => {
                self.registration = Some(PendingRegistration {
                    state: e.ceremony,
                    expires_at: e.expires_at,
                });
            }
            FactorEvent::CredentialRegistered(e) => {
                self.webauthn = Some(WebAuthnCredential {
                    credential_id: e.credential_id,
                    passkey: e.passkey,
                    aaguid: e.aaguid,
                    backup_eligible: e.backup_eligible,
                    backup_state: e.backup_state,
                    transports: e.transports,
                    counter: e.counter,
                });
            }
            FactorEvent::AssertionRequested(e) => {
                self.assertions.retain(|a| {
                    a.challenge_id != e.challenge_id && !(e.standalone && a.standalone)
                });
                self.assertions.push(PendingAssertion {
                    challenge_id: e.challenge_id,
                    standalone: e.standalone,
                    state: e.ceremony,
                    discoverable: e.discoverable,
                    expires_at: e.expires_at,
                    used: false,
                });
                let excess = self.assertions.len().saturating_sub(MAX_PENDING_ASSERTIONS);
                self.assertions.drain(..excess);
            }
            FactorEvent::CredentialUsed(e) => {
                if let Some(cred) = &mut self.webauthn {
                    cred.counter = cred.counter.max(e.counter);
                    cred.backup_state = e.backup_state;
                    cred.backup_eligible = e.backup_eligible;
                    cred.passkey = e.passkey;
                }
            }
            FactorEvent::FailedAttempt(e) => {
                self.consecutive_failures = e.consecutive_failures;
                if e.reason == FailureReason::WrongCode
                    && let Some(code) = &mut self.code
                    && e.challenge_id == Some(code.challenge_id)
                {
                    code.wrong_attempts += 1;
                }
            }
            FactorEvent::CodeIssued(e) => {
                self.code = Some(PendingCode {
                    challenge_id: e.challenge_id,
                    standalone: e.standalone,
                    code_hash: e.code_hash,
                    expires_at: e.expires_at,
                    wrong_attempts: 0,
                    used: false,
                });
                self.code_sends.push(e.at);
                let excess = self
                    .code_sends
                    .len()
                    .saturating_sub(MAX_CODES_PER_HOUR as usize);
                self.code_sends.drain(..excess);
            }
            FactorEvent::LockedOut(e) => self.locked_until = Some(e.until),
            FactorEvent::Unlocked(_) => {
                self.locked_until = None;
                self.consecutive_failures = 0;
            }
            FactorEvent::SecretResealed(e) => {
                if let Some(totp) = &mut self.totp {
                    totp.secret = e.secret;
                }
            }
            FactorEvent::Removed(_) => self.state = FactorState::Removed,
            FactorEvent::EnrollmentExpired(_) => self.state = FactorState::Expired,
        }
    }
}

impl Factor {
    async fn enroll(
        &mut self,
        cmd: Enroll,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        if self.exists() {
            return Err(FactorError::AlreadyEnrolled);
        }
        if let Some(label) = &cmd.label
            && (label.chars().count() > MAX_LABEL || label.chars().any(char::is_control))
        {
            return Err(FactorError::InvalidLabel);
        }
        let mut first_code = None;
        let mut oob = None;
        let totp = match (cmd.factor_type, cmd.totp) {
            (FactorType::Sms | FactorType::Email, _) => {
                let spec = match (cmd.factor_type, cmd.oob) {
                    (_, Some(spec)) => spec,
                    (FactorType::Sms, None) => return Err(FactorError::InvalidPhoneNumber),
                    _ => return Err(FactorError::InvalidEmail),
                };
                let destination = spec.destination.trim().to_string();
                if cmd.factor_type == FactorType::Sms {
                    validate_phone_number(&destination)
                        .map_err(|_| FactorError::InvalidPhoneNumber)?;
                } else {
                    validate_email(&destination).map_err(|_| FactorError::InvalidEmail)?;
                }
                check_code_shape(&spec.first_code.code)?;
                oob = Some(OobEnrollment { destination });
                first_code = Some(spec.first_code);
                None
            }
            (FactorType::Totp, Some(spec)) => {
                let p = spec.params;
                if spec.secret.expose().len() < totp::MIN_SECRET_BYTES
                    || !(6..=8).contains(&p.digits)
                    || !(15..=120).contains(&p.period)
                {
                    return Err(FactorError::InvalidTotpSpec);
                }
                Some(TotpEnrollment {
                    secret: services
                        .cipher
                        .seal(&spec.secret, &cmd.factor_id.to_string()),
                    params: p,
                })
            }
            (FactorType::Totp, None) => return Err(FactorError::InvalidTotpSpec),
            (FactorType::Webauthn, _) => None,
        };
        let registration = match (cmd.factor_type, cmd.webauthn) {
            (FactorType::Webauthn, Some(spec)) => Some(RegistrationRequested {
                ceremony: spec.registration,
                expires_at: now + services.policy.webauthn_timeout,
                at: now,
            }),
            (FactorType::Webauthn, None) => return Err(FactorError::UnsupportedType),
            _ => None,
        };
        let enrolled = Enrolled {
            factor_id: cmd.factor_id,
            user_id: cmd.user_id,
            factor_type: cmd.factor_type,
            label: cmd.label,
            totp,
            oob,
            expires_at: now + services.policy.enrollment_ttl,
            at: now,
        };
        sink.write(FactorEvent::Enrolled(enrolled), self).await;
        if let Some(requested) = registration {
            sink.write(FactorEvent::RegistrationRequested(requested), self)
                .await;
        }
        if let Some(code) = first_code {
            self.issue_code(code, services, now, sink).await;
        }
        Ok(())
    }

    async fn send_code(
        &mut self,
        code: NewCode,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        self.check_send(&services.policy, now)?;
        check_code_shape(&code.code)?;
        self.issue_code(code, services, now, sink).await;
        Ok(())
    }

    async fn issue_code(
        &mut self,
        code: NewCode,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let issued = CodeIssued {
            challenge_id: code.challenge_id,
            standalone: code.standalone,
            code_hash: services.hasher.hash(
                CODE_HASH_DOMAIN,
                &self.code_binding(code.challenge_id, code.code.expose()),
            ),
            expires_at: now + services.policy.code_ttl,
            at: now,
        };
        sink.write(FactorEvent::CodeIssued(issued), self).await;
    }

    /// What is hashed for a code: the code bound to its factor and challenge, so a hash copied
    /// to another factor or challenge never matches.
    fn code_binding(&self, challenge_id: ChallengeId, code: &str) -> String {
        let factor = self.id.map(|id| id.to_string()).unwrap_or_default();
        format!("{factor}/{challenge_id}/{code}")
    }

    /// Marks the latest code (or the WebAuthn ceremony) used when a success names its
    /// challenge.
    fn use_code(&mut self, challenge_id: Option<ChallengeId>) {
        if let Some(code) = &mut self.code
            && challenge_id == Some(code.challenge_id)
        {
            code.used = true;
        }
        for assertion in &mut self.assertions {
            if challenge_id == Some(assertion.challenge_id) {
                assertion.used = true;
            }
        }
    }

    async fn activate(
        &mut self,
        pass_code: &PassCode,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        match self.state {
            FactorState::Unenrolled => return Err(FactorError::NotFound),
            FactorState::Active => return Err(FactorError::AlreadyActive),
            FactorState::Expired => return Err(FactorError::EnrollmentExpired),
            FactorState::Removed => return Err(FactorError::Removed),
            FactorState::PendingActivation => {}
        }
        self.refuse_webauthn()?;
        self.check_shape(pass_code)?;
        if self.expires_at.is_some_and(|t| now >= t) {
            sink.write(
                FactorEvent::EnrollmentExpired(EnrollmentExpired { at: now }),
                self,
            )
            .await;
            return Ok(());
        }
        let activated = |step, challenge_id, at| {
            FactorEvent::Activated(Activated {
                step,
                challenge_id,
                at,
            })
        };
        self.check_code(pass_code, None, activated, services, now, sink)
            .await
    }

    /// After a key rotation: a TOTP secret sealed under an older key is sealed again under
    /// the active one (`SecretResealed`), so the old key can be retired. The services' cipher
    /// seals; a removed factor's secret is left as it is (nothing will open it again).
    async fn reseal_if_stale(
        &mut self,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        let (Some(enrollment), Some(id)) = (&self.totp, self.id) else {
            return Ok(());
        };
        if self.state == FactorState::Removed || !services.cipher.is_stale(&enrollment.secret) {
            return Ok(());
        }
        let aad = id.to_string();
        let secret = services
            .cipher
            .open(&enrollment.secret, &aad)
            .map_err(|_| FactorError::SecretUnavailable)?;
        let resealed = SecretResealed {
            secret: services.cipher.seal(&secret, &aad),
            previous_key_id: enrollment.secret.key_id.clone(),
            at: now,
        };
        sink.write(FactorEvent::SecretResealed(resealed), self)
            .await;
        Ok(())
    }

    /// Only an active factor proves: an unknown one is `NotFound`, a removed one `Removed`, a
    /// pending or expired one `NotActive`.
    fn ensure_active(&self) -> Result<(), FactorError> {
        match self.state {
            FactorState::Unenrolled => Err(FactorError::NotFound),
            FactorState::Removed => Err(FactorError::Removed),
            FactorState::PendingActivation | FactorState::Expired => Err(FactorError::NotActive),
            FactorState::Active => Ok(()),
        }
    }

    async fn verify(
        &mut self,
        pass_code: &PassCode,
        for_challenge: Option<ChallengeId>,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        self.ensure_active()?;
        self.refuse_webauthn()?;
        self.check_shape(pass_code)?;
        let verified = |step, challenge_id, at| {
            FactorEvent::Verified(Verified {
                step,
                challenge_id,
                at,
            })
        };
        self.check_code(pass_code, for_challenge, verified, services, now, sink)
            .await
    }

    /// What activation and verification share once the factor's state allows a proof: a
    /// locked factor refuses without looking at the code; otherwise the code is judged, and an
    /// accepted one is recorded as `accepted` makes it (`Activated`, `Verified`), anything else
    /// as a failure (`FailedAttempt`, and `LockedOut` at the threshold).
    async fn check_code(
        &mut self,
        pass_code: &PassCode,
        for_challenge: Option<ChallengeId>,
        accepted: impl FnOnce(Option<u64>, Option<ChallengeId>, DateTime<Utc>) -> FactorEvent,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        if self.refuse_while_locked(for_challenge, now, sink).await {
            return Ok(());
        }
        let (judgement, challenge_id) = self.judge(pass_code, for_challenge, services, now)?;
        if let Judgement::Accepted(step) = judgement {
            sink.write(accepted(step, challenge_id, now), self).await;
            // Re-seal on the next write: the secret was just opened, under an older key.
            self.reseal_if_stale(services, now, sink).await?;
        } else {
            self.record_failure(judgement, challenge_id, services, now, sink)
                .await;
        }
        Ok(())
    }

    /// A pass code given to a WebAuthn factor is the wrong kind of answer.
    fn refuse_webauthn(&self) -> Result<(), FactorError> {
        if self.factor_type == Some(FactorType::Webauthn) {
            Err(FactorError::WrongAnswerKind)
        } else {
            Ok(())
        }
    }

    fn require_webauthn(&self) -> Result<(), FactorError> {
        if self.factor_type == Some(FactorType::Webauthn) {
            Ok(())
        } else {
            Err(FactorError::WrongAnswerKind)
        }
    }

    /// Writes a failure that guessed nothing and does not count towards lockout.
    async fn record_unchecked(
        &mut self,
        reason: FailureReason,
        challenge_id: Option<ChallengeId>,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let failed = FailedAttempt {
            reason,
            counted: false,
            consecutive_failures: self.consecutive_failures,
            challenge_id,
            at: now,
        };
        sink.write(FactorEvent::FailedAttempt(failed), self).await;
    }

    /// Activates a WebAuthn factor with the answer to its registration ceremony. A second
    /// answer finds the factor active and is `REJECTED`; a ceremony past its time `EXPIRED`.
    /// A failed registration guessed nothing and does not count towards lockout.
    async fn activate_webauthn(
        &mut self,
        response: &RegisterPublicKeyCredential,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        match self.state {
            FactorState::Unenrolled => return Err(FactorError::NotFound),
            FactorState::Expired => return Err(FactorError::EnrollmentExpired),
            FactorState::Removed => return Err(FactorError::Removed),
            FactorState::Active | FactorState::PendingActivation => {}
        }
        self.require_webauthn()?;
        if self.state == FactorState::Active {
            self.record_unchecked(FailureReason::RegistrationUsed, None, now, sink)
                .await;
            return Ok(());
        }
        if self.expires_at.is_some_and(|t| now >= t) {
            sink.write(
                FactorEvent::EnrollmentExpired(EnrollmentExpired { at: now }),
                self,
            )
            .await;
            return Ok(());
        }
        let Some(pending) = self.registration.clone() else {
            self.record_unchecked(FailureReason::NoActiveCode, None, now, sink)
                .await;
            return Ok(());
        };
        if now >= pending.expires_at {
            self.record_unchecked(FailureReason::CodeExpired, None, now, sink)
                .await;
            return Ok(());
        }
        let passkey =
            match webauthn::check_registration(&services.relying_party, &pending.state, response) {
                Ok(passkey) => passkey,
                Err(Ok(reason)) => {
                    self.record_unchecked(reason, None, now, sink).await;
                    return Ok(());
                }
                Err(Err(Unreadable)) => return Err(FactorError::MalformedWebAuthnResponse),
            };
        let facts = webauthn::facts_of(&passkey);
        let passkey =
            serde_json::to_value(&passkey).map_err(|_| FactorError::MalformedWebAuthnResponse)?;
        let activated = Activated {
            step: None,
            challenge_id: None,
            at: now,
        };
        sink.write(FactorEvent::Activated(activated), self).await;
        let registered = CredentialRegistered {
            credential_id: facts.credential_id,
            passkey,
            aaguid: facts.aaguid,
            backup_eligible: facts.backup_eligible,
            backup_state: facts.backup_state,
            transports: facts.transports,
            counter: facts.counter,
            at: now,
        };
        sink.write(FactorEvent::CredentialRegistered(registered), self)
            .await;
        Ok(())
    }

    /// Keeps an assertion ceremony the caller started for this factor.
    async fn request_assertion(
        &mut self,
        request: AssertionRequest,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        self.ensure_active()?;
        self.require_webauthn()?;
        if self.is_locked_at(now) {
            return Err(FactorError::LockedOut);
        }
        // A new ceremony may replace an unanswered one for the same challenge (the browser
        // prompt was dismissed), never an answered one: that would make its answer new again.
        if self
            .assertions
            .iter()
            .any(|a| a.challenge_id == request.challenge_id && a.used)
        {
            return Err(FactorError::CeremonyAnswered);
        }
        let requested = AssertionRequested {
            challenge_id: request.challenge_id,
            standalone: request.standalone,
            discoverable: request.discoverable,
            ceremony: request.state,
            expires_at: now + services.policy.webauthn_timeout,
            at: now,
        };
        sink.write(FactorEvent::AssertionRequested(requested), self)
            .await;
        Ok(())
    }

    /// Checks an assertion against the ceremony it answers: the one started for
    /// `for_challenge`, or the standalone one. An answered ceremony is `PASSCODE_REPLAYED`
    /// without a look at the answer, one past its time `EXPIRED`; a bad signature, a foreign
    /// origin, a wrong RP id, a missing UV flag, another credential or a counter that did not
    /// grow are checked wrong answers (lockout counts them).
    async fn verify_webauthn(
        &mut self,
        response: &PublicKeyCredential,
        for_challenge: Option<ChallengeId>,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        self.ensure_active()?;
        self.require_webauthn()?;
        if self.refuse_while_locked(for_challenge, now, sink).await {
            return Ok(());
        }
        let pending = self
            .assertions
            .iter()
            .rev()
            .find(|a| match for_challenge {
                None => a.standalone,
                Some(id) => a.challenge_id == id,
            })
            .cloned();
        let Some(pending) = pending else {
            self.record_unchecked(FailureReason::NoActiveCode, for_challenge, now, sink)
                .await;
            return Ok(());
        };
        let challenge_id = Some(pending.challenge_id);
        if pending.used {
            self.record_unchecked(FailureReason::Replayed, challenge_id, now, sink)
                .await;
            return Ok(());
        }
        if now >= pending.expires_at {
            self.record_unchecked(FailureReason::CodeExpired, challenge_id, now, sink)
                .await;
            return Ok(());
        }
        let Some(credential) = self.webauthn.clone() else {
            return Err(FactorError::NotActive);
        };
        if webauthn::credential_id_text(&response.raw_id) != credential.credential_id {
            self.record_guess(
                FailureReason::UnknownCredential,
                challenge_id,
                services,
                now,
                sink,
            )
            .await;
            return Ok(());
        }
        let mut passkey: webauthn_rs::prelude::Passkey =
            serde_json::from_value(credential.passkey).map_err(|_| FactorError::NotActive)?;
        let ceremony = (&pending.state, pending.discoverable);
        let result = match webauthn::check_assertion(
            &services.relying_party,
            ceremony,
            response,
            &passkey,
        ) {
            Ok(result) => result,
            Err(Ok(reason)) => {
                self.record_guess(reason, challenge_id, services, now, sink)
                    .await;
                return Ok(());
            }
            Err(Err(Unreadable)) => return Err(FactorError::MalformedWebAuthnResponse),
        };
        // The ceremony's state holds the counter as it was when the ceremony started; another
        // answer may have raised it since. A counter that does not grow past the highest one
        // seen means two authenticators hold the key (W3C WebAuthn §6.1.1).
        let counter = result.counter();
        if (counter > 0 || credential.counter > 0) && counter <= credential.counter {
            self.record_guess(
                FailureReason::CounterRegressed,
                challenge_id,
                services,
                now,
                sink,
            )
            .await;
            return Ok(());
        }
        passkey.update_credential(&result);
        let passkey = serde_json::to_value(&passkey).map_err(|_| FactorError::NotActive)?;
        let verified = Verified {
            step: None,
            challenge_id,
            at: now,
        };
        sink.write(FactorEvent::Verified(verified), self).await;
        let used = CredentialUsed {
            counter,
            backup_state: result.backup_state(),
            backup_eligible: result.backup_eligible(),
            passkey,
            at: now,
        };
        sink.write(FactorEvent::CredentialUsed(used), self).await;
        Ok(())
    }

    async fn remove(
        &mut self,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        match self.state {
            FactorState::Unenrolled => Err(FactorError::NotFound),
            FactorState::Removed => Err(FactorError::Removed),
            _ => {
                sink.write(FactorEvent::Removed(Removed { at: now }), self)
                    .await;
                Ok(())
            }
        }
    }

    async fn unlock(
        &mut self,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        match self.state {
            FactorState::Unenrolled => Err(FactorError::NotFound),
            FactorState::Removed => Err(FactorError::Removed),
            _ if self.locked_until.is_none() => Err(FactorError::NotLocked),
            _ => {
                let unlocked = Unlocked {
                    automatic: false,
                    at: now,
                };
                sink.write(FactorEvent::Unlocked(unlocked), self).await;
                Ok(())
            }
        }
    }

    fn check_shape(&self, pass_code: &PassCode) -> Result<(), FactorError> {
        if self.is_out_of_band() {
            return check_code_shape(pass_code);
        }
        let params = self.totp.as_ref().map(|t| t.params).unwrap_or_default();
        if totp::well_formed(params, pass_code.expose()) {
            Ok(())
        } else {
            Err(FactorError::MalformedPassCode)
        }
    }

    /// While a lock is in force, records the attempt without looking at the code and returns
    /// `true`. A lock whose time is up is ended with an `Unlocked` event first.
    async fn refuse_while_locked(
        &mut self,
        challenge_id: Option<ChallengeId>,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> bool {
        match self.locked_until {
            Some(until) if now < until => {
                let failed = FailedAttempt {
                    reason: FailureReason::Locked,
                    counted: false,
                    consecutive_failures: self.consecutive_failures,
                    challenge_id,
                    at: now,
                };
                sink.write(FactorEvent::FailedAttempt(failed), self).await;
                true
            }
            Some(_) => {
                let unlocked = Unlocked {
                    automatic: true,
                    at: now,
                };
                sink.write(FactorEvent::Unlocked(unlocked), self).await;
                false
            }
            None => false,
        }
    }

    /// Checks a code; returns what was found and the challenge the attempt is bound to.
    fn judge(
        &self,
        pass_code: &PassCode,
        for_challenge: Option<ChallengeId>,
        services: &FactorServices,
        now: DateTime<Utc>,
    ) -> Result<(Judgement, Option<ChallengeId>), FactorError> {
        if self.is_out_of_band() {
            return Ok(self.judge_sent_code(pass_code, for_challenge, services, now));
        }
        let enrollment = self.totp.as_ref().ok_or(FactorError::UnsupportedType)?;
        let id = self.id.ok_or(FactorError::NotFound)?;
        let secret = services
            .cipher
            .open(&enrollment.secret, &id.to_string())
            .map_err(|_| FactorError::SecretUnavailable)?;
        let unix = u64::try_from(now.timestamp()).unwrap_or(0);
        let judgement = match totp::check(
            enrollment.params,
            secret.expose(),
            pass_code.expose(),
            unix,
            services.policy.totp_skew_steps,
            self.last_used_step,
        ) {
            totp::Check::Accepted(step) => Judgement::Accepted(Some(step)),
            totp::Check::Replayed => Judgement::Replayed,
            totp::Check::Wrong => Judgement::Wrong,
        };
        Ok((judgement, for_challenge))
    }

    /// SMS and e-mail: the latest code, if it is bound to `for_challenge` (or standalone when
    /// `None`), unused, unexpired and has tries left, is compared in constant time.
    fn judge_sent_code(
        &self,
        pass_code: &PassCode,
        for_challenge: Option<ChallengeId>,
        services: &FactorServices,
        now: DateTime<Utc>,
    ) -> (Judgement, Option<ChallengeId>) {
        let bound = self.code.as_ref().filter(|c| match for_challenge {
            None => c.standalone,
            Some(id) => c.challenge_id == id,
        });
        let Some(code) = bound else {
            return (
                Judgement::Refused(FailureReason::NoActiveCode),
                for_challenge,
            );
        };
        let matches = || {
            services.hasher.verify(
                CODE_HASH_DOMAIN,
                &self.code_binding(code.challenge_id, pass_code.expose()),
                &code.code_hash,
            )
        };
        let judgement = if code.used {
            // A used code is never checked again as a guess; the right one is a replay.
            if matches() {
                Judgement::Replayed
            } else {
                Judgement::Refused(FailureReason::NoActiveCode)
            }
        } else if now >= code.expires_at {
            Judgement::Refused(FailureReason::CodeExpired)
        } else if code.wrong_attempts >= services.policy.code_max_attempts {
            Judgement::Refused(FailureReason::AttemptsExhausted)
        } else if matches() {
            Judgement::Accepted(None)
        } else {
            Judgement::Wrong
        };
        (judgement, Some(code.challenge_id))
    }

    /// Writes a failed attempt. Only a wrong code is a guess and counts towards lockout; a
    /// replay (so sixteen racing submissions of one code cannot lock the owner out) or a
    /// refusal without checking is on record but not counted.
    async fn record_failure(
        &mut self,
        judgement: Judgement,
        challenge_id: Option<ChallengeId>,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let reason = match judgement {
            Judgement::Wrong => {
                self.record_wrong_code(challenge_id, services, now, sink)
                    .await;
                return;
            }
            Judgement::Replayed => FailureReason::Replayed,
            Judgement::Refused(reason) => reason,
            Judgement::Accepted(_) => return,
        };
        let failed = FailedAttempt {
            reason,
            counted: false,
            consecutive_failures: self.consecutive_failures,
            challenge_id,
            at: now,
        };
        sink.write(FactorEvent::FailedAttempt(failed), self).await;
    }

    async fn record_wrong_code(
        &mut self,
        challenge_id: Option<ChallengeId>,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        self.record_guess(FailureReason::WrongCode, challenge_id, services, now, sink)
            .await;
    }

    /// Writes a checked wrong answer: it counts towards lockout, and locks at the threshold.
    async fn record_guess(
        &mut self,
        reason: FailureReason,
        challenge_id: Option<ChallengeId>,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let policy = &services.policy;
        let after = lockout::after_failure(
            self.consecutive_failures,
            policy.lockout_threshold,
            policy.lockout_duration,
            now,
        );
        let failed = FailedAttempt {
            reason,
            counted: true,
            consecutive_failures: after.consecutive_failures,
            challenge_id,
            at: now,
        };
        sink.write(FactorEvent::FailedAttempt(failed), self).await;
        if let Some(until) = after.lock_until {
            let locked = LockedOut {
                until,
                consecutive_failures: after.consecutive_failures,
                at: now,
            };
            sink.write(FactorEvent::LockedOut(locked), self).await;
        }
    }
}

/// An SMS or e-mail code is exactly six ASCII digits.
fn check_code_shape(code: &PassCode) -> Result<(), FactorError> {
    let code = code.expose();
    if code.len() == OOB_CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(FactorError::MalformedPassCode)
    }
}

/// Whole seconds from `now` until `then`, rounded up, at least 1.
fn seconds_until(now: DateTime<Utc>, then: DateTime<Utc>) -> i64 {
    let ms = (then - now).num_milliseconds();
    ((ms + 999) / 1000).max(1)
}

impl Factor {
    /// Whether a code may be sent now (state, lockout, the resend interval and the hourly
    /// limit), exactly as `SendCode` decides: lets the caller apply its own limits only to
    /// a code the factor would send.
    ///
    /// # Errors
    /// The `FactorError` `SendCode` would answer.
    pub fn check_send(&self, policy: &FactorPolicy, now: DateTime<Utc>) -> Result<(), FactorError> {
        match self.state {
            FactorState::Unenrolled => return Err(FactorError::NotFound),
            FactorState::Removed => return Err(FactorError::Removed),
            FactorState::Expired => return Err(FactorError::EnrollmentExpired),
            FactorState::PendingActivation if self.expires_at.is_some_and(|t| now >= t) => {
                return Err(FactorError::EnrollmentExpired);
            }
            FactorState::PendingActivation | FactorState::Active => {}
        }
        if !self.is_out_of_band() {
            return Err(FactorError::CodesNotSupported);
        }
        if self.is_locked_at(now) {
            return Err(FactorError::LockedOut);
        }
        if let Some(last) = self.code_sends.last()
            && now < *last + policy.resend_interval
        {
            return Err(FactorError::ResendTooSoon {
                retry_after_seconds: seconds_until(now, *last + policy.resend_interval),
            });
        }
        let hour_ago = now - chrono::TimeDelta::hours(1);
        let in_hour: Vec<_> = self.code_sends.iter().filter(|t| **t > hour_ago).collect();
        let limit = policy.max_codes_per_hour.min(MAX_CODES_PER_HOUR) as usize;
        if in_hour.len() >= limit {
            // Sends are kept in order: the hour must first let go of this many of them.
            let frees_one = in_hour[in_hour.len() - limit];
            return Err(FactorError::TooManyCodes {
                retry_after_seconds: seconds_until(now, *frees_one + chrono::TimeDelta::hours(1)),
            });
        }
        Ok(())
    }
}

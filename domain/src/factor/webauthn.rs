//! WebAuthn (passkeys and security keys) for the `Factor` aggregate, with webauthn-rs as the
//! relying party.
//!
//! The split follows the one for codes: the caller starts a ceremony (`start_*` draws the
//! random challenge) and hands the ceremony state to the factor in a command; the factor keeps
//! it in its events, on the server only, and checks the answer against it here. Checking is
//! deterministic (a signature over the client data and the authenticator data), so the
//! aggregate stays testable with given/when/then.
//!
//! webauthn-rs accepts the same state and answer twice and its state carries no deadline:
//! the factor makes every ceremony single use and gives it a lifetime.

use std::{fmt, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    AuthenticationResult, Credential, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    Url, Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::factor::FailureReason;

/// The relying party: RP id, name, accepted origins and the browser timeout.
#[derive(Clone)]
pub struct RelyingParty(Arc<Webauthn>);

impl fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RelyingParty")
            .field(&self.0.get_allowed_origins())
            .finish()
    }
}

impl RelyingParty {
    /// A relying party for `rp_id` accepting client data from `origins` (at least one).
    ///
    /// # Errors
    /// No origin, or an origin whose host is not `rp_id` or below it.
    pub fn new(
        rp_id: &str,
        rp_name: &str,
        origins: &[Url],
        timeout: Duration,
    ) -> Result<Self, String> {
        let (first, rest) = origins
            .split_first()
            .ok_or_else(|| "at least one WebAuthn origin is needed".to_string())?;
        let mut builder = WebauthnBuilder::new(rp_id, first)
            .map_err(|e| format!("WebAuthn relying party {rp_id} with origin {first}: {e}"))?
            .rp_name(rp_name)
            .timeout(timeout);
        for origin in rest {
            builder = builder.append_allowed_origin(origin);
        }
        builder
            .build()
            .map(|w| Self(Arc::new(w)))
            .map_err(|e| format!("WebAuthn relying party {rp_id}: {e}"))
    }

    /// The webauthn-rs relying party, to start ceremonies with.
    pub fn webauthn(&self) -> &Webauthn {
        &self.0
    }
}

/// A WebAuthn answer from a client that cannot be looked at: it does not parse as a
/// registration or an assertion (bad input, not a failed proof).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreadable;

/// What checking an answer found: `Err(Ok(reason))` is a failed proof, `Err(Err(Unreadable))`
/// an answer that is not one.
pub type Checked<T> = Result<T, Result<FailureReason, Unreadable>>;

/// Checks a registration response against the stored registration state.
pub fn check_registration(
    rp: &RelyingParty,
    state: &Value,
    response: &RegisterPublicKeyCredential,
) -> Checked<Passkey> {
    let state: PasskeyRegistration =
        serde_json::from_value(state.clone()).map_err(|_| Err(Unreadable))?;
    let passkey = rp
        .webauthn()
        .finish_passkey_registration(response, &state)
        .map_err(reason_of)?;
    // The id the client names must be the id the authenticator signed: the credential's
    // uniqueness across users rests on the id the client sent.
    if passkey.cred_id().as_slice() != response.raw_id.as_slice() {
        return Err(Ok(FailureReason::UnknownCredential));
    }
    Ok(passkey)
}

/// Checks an assertion against the stored authentication state.
///
/// A discoverable ceremony (a passkey login that named no credential) names none in its state:
/// it is checked against `passkey`, the credential the answer's id belongs to.
pub fn check_assertion(
    rp: &RelyingParty,
    (state, discoverable): (&Value, bool),
    response: &PublicKeyCredential,
    passkey: &Passkey,
) -> Checked<AuthenticationResult> {
    if discoverable {
        let state: DiscoverableAuthentication =
            serde_json::from_value(state.clone()).map_err(|_| Err(Unreadable))?;
        let key = DiscoverableKey::from(passkey);
        return rp
            .webauthn()
            .finish_discoverable_authentication_v2(response, state, &key)
            .map_err(reason_of);
    }
    let state: PasskeyAuthentication =
        serde_json::from_value(state.clone()).map_err(|_| Err(Unreadable))?;
    rp.webauthn()
        .finish_passkey_authentication(response, &state)
        .map_err(reason_of)
}

/// Which failure a webauthn-rs error is; the answers that do not even parse are
/// [`Unreadable`].
fn reason_of(e: WebauthnError) -> Result<FailureReason, Unreadable> {
    use WebauthnError as E;
    Ok(match e {
        E::InvalidRPOrigin | E::CredentialCrossOrigin => FailureReason::ForeignOrigin,
        E::InvalidRPIDHash => FailureReason::WrongRpId,
        E::UserNotVerified | E::UserNotPresent | E::InconsistentUserVerificationPolicy => {
            FailureReason::UserNotVerified
        }
        E::CredentialNotFound | E::CredentialExcludedFromRequest => {
            FailureReason::UnknownCredential
        }
        E::CredentialPossibleCompromise => FailureReason::CounterRegressed,
        E::MismatchedChallenge | E::ChallengeNotFound | E::InvalidClientDataType => {
            FailureReason::WrongChallenge
        }
        E::ParseBase64Failure(_)
        | E::ParseCBORFailure(_)
        | E::ParseJSONFailure(_)
        | E::ParseNOMFailure
        | E::ParseInsufficientBytesAvailable => return Err(Unreadable),
        _ => FailureReason::BadSignature,
    })
}

/// The key of a credential id's stream: its SHA-256 in hex (ids are up to 1,023 bytes).
pub fn credential_key(credential_id: &[u8]) -> String {
    Sha256::digest(credential_id)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A credential id in the base64url form clients use.
pub fn credential_id_text(credential_id: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(credential_id)
}

/// What a settings page shows of a credential, read from the passkey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialFacts {
    /// The credential id, base64url.
    pub credential_id: String,
    /// The authenticator model's AAGUID, when the attestation named one.
    pub aaguid: Option<uuid::Uuid>,
    /// Whether the key may be synced or backed up.
    pub backup_eligible: bool,
    /// Whether it is backed up (synced) now.
    pub backup_state: bool,
    /// Transports the client reported (`usb`, `internal`, `hybrid`, …).
    pub transports: Vec<String>,
    /// The signature counter (0 for authenticators that keep none).
    pub counter: u32,
}

/// Reads the facts a passkey carries.
pub fn facts_of(passkey: &Passkey) -> CredentialFacts {
    let cred: Credential = passkey.clone().into();
    let aaguid = match &cred.attestation.metadata {
        webauthn_rs::prelude::AttestationMetadata::Packed { aaguid }
        | webauthn_rs::prelude::AttestationMetadata::Tpm { aaguid, .. } => Some(*aaguid),
        _ => None,
    };
    CredentialFacts {
        credential_id: credential_id_text(&cred.cred_id),
        aaguid,
        backup_eligible: cred.backup_eligible,
        backup_state: cred.backup_state,
        transports: cred
            .transports
            .unwrap_or_default()
            .iter()
            .filter_map(|t| serde_json::to_value(t).ok())
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        counter: cred.counter,
    }
}

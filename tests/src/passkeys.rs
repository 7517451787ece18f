//! Passkeys without hardware: webauthn-authenticator-rs's soft passkey answers the options
//! the server hands out, as a browser would, from [`ORIGIN`] (the test servers accept it).

use serde_json::{Value, json};
use webauthn_authenticator_rs::{
    AuthenticatorBackend, WebauthnAuthenticator, softpasskey::SoftPasskey,
};
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use crate::TestServer;

/// The origin the soft authenticator speaks from; every test server lists it in
/// `TESSERA_WEBAUTHN_ORIGINS`. Nothing listens there: client data only names it.
pub const ORIGIN: &str = "http://localhost:8443";

/// A soft authenticator holding the keys it registered.
pub struct Authenticator(SoftPasskey);

impl Default for Authenticator {
    fn default() -> Self {
        Self(SoftPasskey::new(true))
    }
}

impl Authenticator {
    /// `navigator.credentials.create({publicKey})` from [`ORIGIN`]: the registration response
    /// as `credential.toJSON()`.
    pub fn create(&mut self, public_key: &Value) -> Value {
        self.create_from(ORIGIN, public_key)
    }

    /// As [`Authenticator::create`], from `origin`.
    pub fn create_from(&mut self, origin: &str, public_key: &Value) -> Value {
        let options: CreationChallengeResponse =
            serde_json::from_value(json!({ "publicKey": public_key })).expect("creation options");
        let response = self
            .0
            .do_registration(Url::parse(origin).expect("origin"), options)
            .expect("the soft passkey registers");
        serde_json::to_value(response).expect("registration JSON")
    }

    /// `navigator.credentials.get({publicKey})` from [`ORIGIN`]: the assertion as
    /// `credential.toJSON()`.
    pub fn get(&mut self, public_key: &Value) -> Value {
        self.get_from(ORIGIN, public_key)
    }

    /// As [`Authenticator::get`], from `origin`.
    pub fn get_from(&mut self, origin: &str, public_key: &Value) -> Value {
        let options: RequestChallengeResponse =
            serde_json::from_value(json!({ "publicKey": public_key })).expect("request options");
        let response = self
            .0
            .do_authentication(Url::parse(origin).expect("origin"), options)
            .expect("the soft passkey signs");
        serde_json::to_value(response).expect("assertion JSON")
    }
}

impl Authenticator {
    /// An assertion from [`ORIGIN`] signed for another relying party id, as a client that
    /// skipped the RP id check would send (the authenticator itself is asked directly).
    pub fn get_for_rp_id(&mut self, rp_id: &str, public_key: &Value) -> Value {
        let mut options: RequestChallengeResponse =
            serde_json::from_value(json!({ "publicKey": public_key })).expect("request options");
        options.public_key.rp_id = rp_id.to_string();
        let response = AuthenticatorBackend::perform_auth(
            &mut self.0,
            Url::parse(ORIGIN).expect("origin"),
            options.public_key,
            60_000,
        )
        .expect("the soft passkey signs");
        serde_json::to_value(response).expect("assertion JSON")
    }
}

impl TestServer {
    /// Enrols a WebAuthn factor for `user`; returns (factor id, creation options).
    pub async fn enroll_webauthn(&self, user: &str) -> (String, Value) {
        let data = self
            .ok(
                "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: WEBAUTHN, label: \"Key\"}) \
                 { factor { id status } webauthn { publicKey } } }",
                json!({ "u": user }),
            )
            .await;
        let payload = &data["enrollFactor"];
        (
            payload["factor"]["id"].as_str().expect("factor id").into(),
            payload["webauthn"]["publicKey"].clone(),
        )
    }

    /// `activateFactor` with a registration response; the whole response.
    pub async fn activate_webauthn(&self, factor: &str, response: &Value) -> Value {
        self.gql(
            "mutation($f: ID!, $w: JSON!) { activateFactor(input: {factorId: $f, webauthn: $w}) \
             { factorResult factor { status failedAttempts } recoveryCodes } }",
            json!({ "f": factor, "w": response }),
        )
        .await
    }

    /// A user with an active passkey: (user id, factor id, the authenticator).
    pub async fn active_passkey(&self, login: &str) -> (String, String, Authenticator) {
        let user = self.create_user(login).await;
        let (factor, options) = self.enroll_webauthn(&user).await;
        let mut authenticator = Authenticator::default();
        let response = authenticator.create(&options);
        let activated = self.activate_webauthn(&factor, &response).await;
        assert_eq!(
            activated["data"]["activateFactor"]["factorResult"], "SUCCESS",
            "{activated}"
        );
        (user, factor, authenticator)
    }

    /// `challengeFactor` of a WebAuthn factor (for `challenge`, or standalone); returns
    /// (challenge id, request options).
    pub async fn webauthn_challenge(
        &self,
        factor: &str,
        challenge: Option<&str>,
    ) -> (String, Value) {
        let data = self
            .ok(
                "mutation($f: ID!, $c: ID) { challengeFactor(input: {factorId: $f, challengeId: $c}) \
                 { challenge { id } webauthn { publicKey } } }",
                json!({ "f": factor, "c": challenge }),
            )
            .await;
        let payload = &data["challengeFactor"];
        (
            payload["challenge"]["id"]
                .as_str()
                .expect("challenge id")
                .into(),
            payload["webauthn"]["publicKey"].clone(),
        )
    }

    /// `verifyFactor` with an assertion; the whole response.
    pub async fn verify_webauthn_raw(&self, factor: &str, assertion: &Value) -> Value {
        self.gql(
            "mutation($f: ID!, $w: JSON!) { verifyFactor(input: {factorId: $f, webauthn: $w}) \
             { factorResult factor { status failedAttempts } } }",
            json!({ "f": factor, "w": assertion }),
        )
        .await
    }

    /// `verifyFactor` with an assertion; its `factorResult`.
    pub async fn verify_webauthn(&self, factor: &str, assertion: &Value) -> String {
        let response = self.verify_webauthn_raw(factor, assertion).await;
        response["data"]["verifyFactor"]["factorResult"]
            .as_str()
            .unwrap_or_else(|| panic!("no factorResult: {response}"))
            .to_string()
    }
}

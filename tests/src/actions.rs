//! Named domain actions over the public API (as Kanidm's testkit has): create a user, enrol
//! and activate factors, verify, log in; and TOTP codes as an authenticator app computes them.

use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};

use crate::TestServer;

impl TestServer {
    /// `(user.secondFactorLocked, factor.status)`: the user's hard lock and the factor's own.
    pub async fn lock_state(&self, user: &str, factor: &str) -> (Value, Value) {
        let r = self
            .ok(
                "query($u: ID!, $f: ID!) { user(id: $u) { secondFactorLocked } factor(id: $f) { status } }",
                json!({ "u": user, "f": factor }),
            )
            .await;
        (
            r["user"]["secondFactorLocked"].clone(),
            r["factor"]["status"].clone(),
        )
    }

    /// Creates a user; returns its id.
    pub async fn create_user(&self, login: &str) -> String {
        let data = self
            .ok(
                "mutation($l: String!) { createUser(input: {login: $l, email: \"x@example.com\"}) { id } }",
                json!({ "l": login }),
            )
            .await;
        data["createUser"]["id"]
            .as_str()
            .expect("user id")
            .to_string()
    }

    /// Creates a user with a phone number, an e-mail address and a password; returns its id.
    pub async fn create_full_user(&self, login: &str, password: &str) -> String {
        let data = self
            .ok(
                "mutation($l: String!, $p: String!) { createUser(input: {login: $l, \
                 email: \"x@example.com\", phoneNumber: \"+14155550100\", password: $p}) { id } }",
                json!({ "l": login, "p": password }),
            )
            .await;
        data["createUser"]["id"]
            .as_str()
            .expect("user id")
            .to_string()
    }

    /// Enrols a TOTP factor for `user`; returns (factor id, base32 secret).
    pub async fn enroll_totp(&self, user: &str) -> (String, String) {
        let data = self
            .ok(
                "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: TOTP}) { factor { id } totp { secretBase32 } } }",
                json!({ "u": user }),
            )
            .await;
        (
            data["enrollFactor"]["factor"]["id"]
                .as_str()
                .expect("factor id")
                .into(),
            data["enrollFactor"]["totp"]["secretBase32"]
                .as_str()
                .expect("secret")
                .into(),
        )
    }

    /// A user with an active TOTP factor; the clock is moved one step past activation, so
    /// the current code is fresh. Returns (user id, factor id, secret).
    pub async fn active_totp(&self, login: &str) -> (String, String, String) {
        let user = self.create_user(login).await;
        let (factor, secret) = self.active_totp_of(&user).await;
        self.clock.advance(chrono::TimeDelta::seconds(30));
        (user, factor, secret)
    }

    /// Enrolls a TOTP factor for `user` and activates it with the current code (the clock is
    /// not moved); returns `(factor_id, secret_base32)`.
    pub async fn active_totp_of(&self, user: &str) -> (String, String) {
        let (factor, secret) = self.enroll_totp(user).await;
        let result = self.activate(&factor, &self.code(&secret, 0)).await;
        assert_eq!(result["factorResult"], "SUCCESS", "{result}");
        (factor, secret)
    }

    /// `activateFactor`; returns the payload.
    pub async fn activate(&self, factor: &str, code: &str) -> Value {
        self.ok(
            "mutation($f: ID!, $c: String!) { activateFactor(input: {factorId: $f, passCode: $c}) { factorResult factor { status failedAttempts } recoveryCodes } }",
            json!({ "f": factor, "c": code }),
        )
        .await["activateFactor"]
            .clone()
    }

    /// `verifyFactor`; returns the whole response (it may carry errors).
    pub async fn verify_raw(&self, factor: &str, code: &str) -> Value {
        self.gql(
            "mutation($f: ID!, $c: String!) { verifyFactor(input: {factorId: $f, passCode: $c}) { factorResult factor { status failedAttempts } } }",
            json!({ "f": factor, "c": code }),
        )
        .await
    }

    /// `verifyFactor`; returns `factorResult`.
    pub async fn verify(&self, factor: &str, code: &str) -> String {
        let response = self.verify_raw(factor, code).await;
        response["data"]["verifyFactor"]["factorResult"]
            .as_str()
            .unwrap_or_else(|| panic!("no factorResult: {response}"))
            .to_string()
    }

    /// The code an authenticator app shows `steps_from_now` steps from the server's clock.
    pub fn code(&self, secret_base32: &str, steps_from_now: i64) -> String {
        code_at(secret_base32, self.clock_unix() + steps_from_now * 30)
    }

    /// A 6-digit code that is wrong for `secret` anywhere near the server's clock.
    pub fn wrong_code(&self, secret: &str) -> String {
        let near: Vec<String> = (-3..=3).map(|d| self.code(secret, d)).collect();
        (0..1000)
            .map(|n| format!("{:06}", 999_999 - n))
            .find(|c| !near.contains(c))
            .expect("a wrong code exists")
    }

    /// The server clock, Unix seconds.
    pub fn clock_unix(&self) -> i64 {
        use tessera_domain::services::Clock;
        self.clock.now().timestamp()
    }

    /// Enrols an SMS (`type` = `SMS`) or e-mail (`EMAIL`) factor sending to `destination`;
    /// returns the `enrollFactor` payload.
    pub async fn enroll_oob(&self, user: &str, factor_type: &str, destination: &str) -> Value {
        let field = if factor_type == "SMS" {
            "phoneNumber"
        } else {
            "email"
        };
        let query = format!(
            "mutation($u: ID!, $d: String!) {{ enrollFactor(input: {{userId: $u, type: {factor_type}, {field}: $d}}) {{ \
             factor {{ id type status phoneNumber email }} totp {{ secretBase32 }} \
             challenge {{ id userId status purpose factorId expiresAt delivery }} }} }}"
        );
        self.ok(&query, json!({ "u": user, "d": destination }))
            .await["enrollFactor"]
            .clone()
    }

    /// `challengeFactor`; returns the whole response.
    pub async fn challenge_factor(&self, factor: &str, challenge: Option<&str>) -> Value {
        self.gql(
            "mutation($f: ID!, $c: ID) { challengeFactor(input: {factorId: $f, challengeId: $c}) { challenge { id userId status purpose factorId expiresAt delivery failedAttempts } } }",
            json!({ "f": factor, "c": challenge }),
        )
        .await
    }

    /// `challenge(id)` as the admin.
    pub async fn challenge(&self, id: &str) -> Value {
        self.ok(
            "query($c: ID!) { challenge(id: $c) { id status purpose delivery failedAttempts expiresAt } }",
            json!({ "c": id }),
        )
        .await["challenge"]
            .clone()
    }

    /// `login`; returns the whole response.
    pub async fn login(&self, login: &str, password: &str) -> Value {
        self.gql_as(
            None,
            "mutation($l: String!, $p: String!) { login(input: {login: $l, password: $p}) { \
             accessToken expiresAt mfaRequired enrollmentRequired challenge { id userId status purpose expiresAt } \
             factors { id type status } factorResult } }",
            json!({ "l": login, "p": password }),
        )
        .await
    }

    /// `completeLogin` without a token; returns the whole response.
    pub async fn complete_login(&self, challenge: &str, factor: &str, code: &str) -> Value {
        self.gql_as(
            None,
            "mutation($c: ID!, $f: ID!, $p: String!) { completeLogin(input: {challengeId: $c, factorId: $f, passCode: $p}) { \
             accessToken expiresAt mfaRequired challenge { id status failedAttempts } factorResult } }",
            json!({ "c": challenge, "f": factor, "p": code }),
        )
        .await
    }

    /// A user token from a login completed with the TOTP factor `factor` (`acr` = `mfa`,
    /// `auth_time` now): the fresh proof account changes with a user token need for
    /// `TESSERA_REAUTH_SECONDS`. Moves the clock one step on first, so the code is unused.
    pub async fn mfa_token(
        &self,
        login: &str,
        password: &str,
        factor: &str,
        secret: &str,
    ) -> String {
        self.clock.advance(chrono::TimeDelta::seconds(30));
        let r = self.login(login, password).await;
        let challenge = r["data"]["login"]["challenge"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no login challenge: {r}"))
            .to_string();
        let r = self
            .complete_login(&challenge, factor, &self.code(secret, 0))
            .await;
        r["data"]["completeLogin"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {r}"))
            .to_string()
    }

    /// Starts and completes, with `token`, a step-up of `user` answered by the TOTP factor
    /// `factor`; returns the completed challenge's id, which account changes with a user token
    /// name as `stepUpChallengeId` (their fresh proof). Moves the clock one step on first.
    pub async fn step_up_with(
        &self,
        token: &str,
        user: &str,
        factor: &str,
        secret: &str,
    ) -> String {
        self.clock.advance(chrono::TimeDelta::seconds(30));
        let r = self
            .gql_as(
                Some(token),
                "mutation($u: ID!) { startStepUp(input: {userId: $u}) { challenge { id } } }",
                json!({ "u": user }),
            )
            .await;
        let challenge = r["data"]["startStepUp"]["challenge"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no step-up: {r}"))
            .to_string();
        let r = self
            .gql_as(
                Some(token),
                "mutation($c: ID!, $f: ID!, $p: String!) { completeStepUp(input: {challengeId: $c, factorId: $f, passCode: $p}) { factorResult } }",
                json!({ "c": challenge, "f": factor, "p": self.code(secret, 0) }),
            )
            .await;
        assert_eq!(
            r["data"]["completeStepUp"]["factorResult"], "SUCCESS",
            "{r}"
        );
        challenge
    }

    /// A user token for `login`, whose password is `password` and who has no factor.
    pub async fn password_token(&self, login: &str, password: &str) -> String {
        let r = self.login(login, password).await;
        r["data"]["login"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {r}"))
            .to_string()
    }
}

/// The 6-digit SHA1 code for `secret_base32` at Unix time `unix`, as an authenticator app
/// computes it (totp-rs, independent of the server's code path through the domain crate).
pub fn code_at(secret_base32: &str, unix: i64) -> String {
    let secret = Secret::Encoded(secret_base32.to_string())
        .to_bytes()
        .expect("valid base32");
    TOTP::new_unchecked(Algorithm::SHA1, 6, 0, 30, secret, None, String::new())
        .generate(u64::try_from(unix).expect("time after 1970"))
}

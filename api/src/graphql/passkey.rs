//! Passkeys: the WebAuthn options type handed to browsers.

use async_graphql::{Json, SimpleObject};
use serde_json::Value;

/// WebAuthn options in the Level 3 JSON form: pass `publicKey` to
/// `PublicKeyCredential.parseCreationOptionsFromJSON` (enrolment) or
/// `parseRequestOptionsFromJSON` (an assertion), and send back `credential.toJSON()`.
#[derive(SimpleObject)]
#[graphql(name = "WebAuthnOptions")]
pub struct WebAuthnOptions {
    /// The `publicKey` options; binary members are base64url.
    pub public_key: Json<Value>,
}

impl From<Value> for WebAuthnOptions {
    fn from(public_key: Value) -> Self {
        Self {
            public_key: Json(public_key),
        }
    }
}

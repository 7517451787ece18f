//! Access tokens as an application backend sees them: EdDSA JWTs with a `kid`, verified here
//! with a stock JWT library against `GET /.well-known/jwks.json` and nothing of Tessera's;
//! key rotation keeps old tokens valid until they expire.

use chrono::TimeDelta;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code};

const PASSWORD: &str = "correct horse battery staple";
const ISSUER: &str = "https://tessera.example.test";

async fn jwks(s: &TestServer) -> JwkSet {
    let r = s
        .http
        .get(format!("{}/.well-known/jwks.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.expect("a JWK set")
}

/// What a backend does: find the token's key in the JWKS by `kid`, check signature, issuer
/// and expiry (against the system clock, as any library does).
fn backend_verify(set: &JwkSet, token: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or(format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

async fn token(s: &TestServer, login: &str) -> String {
    s.password_token(login, PASSWORD).await
}

both_stores!(
    a_stock_jwt_library_verifies_tokens_against_the_jwks,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.issuer = Some(ISSUER.into())).await;
        let user = s.create_full_user("alice", PASSWORD).await;
        let token = token(&s, "alice").await;
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        let set = jwks(&s).await;
        assert_eq!(set.keys.len(), 1);
        let raw: Value = serde_json::to_value(&set).unwrap();
        assert_eq!(raw["keys"][0]["kty"], "OKP");
        assert_eq!(raw["keys"][0]["crv"], "Ed25519");
        assert!(raw["keys"][0].get("d").is_none(), "no private part: {raw}");
        let claims = backend_verify(&set, &token).unwrap();
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["sub"], user.as_str());
        assert_eq!(claims["amr"], json!(["pwd"]));
        assert_eq!(claims["acr"], "pwd");
        assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
        assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
        // A forged payload under the same header and signature fails.
        let parts: Vec<&str> = token.split('.').collect();
        let other = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            claims
                .to_string()
                .replace(user.as_str(), "00000000-0000-4000-8000-000000000000"),
        );
        let forged = format!("{}.{other}.{}", parts[0], parts[2]);
        assert!(backend_verify(&set, &forged).is_err());
        let r = s.gql_as(Some(&forged), "{ me { id } }", json!({})).await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED");
    }
);

both_stores!(
    the_default_issuer_is_the_listen_address,
    |store| async move {
        let s = TestServer::start(store).await;
        s.create_full_user("bob", PASSWORD).await;
        let claims = tessera_tests::jwt_claims(&token(&s, "bob").await);
        assert_eq!(claims["iss"], format!("http://{}", s.config.listen));
    }
);

both_stores!(
    rotation_adds_a_key_and_old_tokens_verify_until_they_expire,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.issuer = Some(ISSUER.into())).await;
        s.create_full_user("carol", PASSWORD).await;
        let old = token(&s, "carol").await;
        let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();

        let (generation, new_kid) = tessera_api::cli::rotate_signing_key(&s.config)
            .await
            .expect("rotate");
        assert_eq!(generation, 2);
        assert_ne!(new_kid, old_kid);
        // The server picks the new key up within seconds.
        let mut published = Vec::new();
        for _ in 0..100 {
            published = jwks(&s)
                .await
                .keys
                .iter()
                .filter_map(|k| k.common.key_id.clone())
                .collect();
            if published.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            published,
            [new_kid.clone(), old_kid.clone()],
            "newest first"
        );
        let new = token(&s, "carol").await;
        assert_eq!(
            jsonwebtoken::decode_header(&new).unwrap().kid.unwrap(),
            new_kid
        );
        let set = jwks(&s).await;
        for t in [&old, &new] {
            backend_verify(&set, t).unwrap();
            let me = s.gql_as(Some(t), "{ me { login } }", json!({})).await;
            assert_eq!(me["data"]["me"]["login"], "carol", "{me}");
        }
        // Another node with the same master key signs and verifies with the same keys.
        let other = s.another_node().await;
        let from_other = token(&other, "carol").await;
        assert_eq!(
            jsonwebtoken::decode_header(&from_other)
                .unwrap()
                .kid
                .unwrap(),
            new_kid
        );
        let me = s
            .gql_as(Some(&from_other), "{ me { login } }", json!({}))
            .await;
        assert_eq!(me["data"]["me"]["login"], "carol", "{me}");

        // Once every token of the old key has expired, the old key is gone. The rotation was
        // stamped with the real time, which ran on past the server's fixed clock while this
        // test ran (seconds under load): move the clock past both.
        let lag = (chrono::Utc::now() - tessera_domain::services::Clock::now(&s.clock))
            .num_seconds()
            .max(0);
        s.clock.advance(TimeDelta::seconds(
            s.config.access_token_ttl_seconds + lag + 1,
        ));
        let after: Vec<String> = jwks(&s)
            .await
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect();
        assert_eq!(after, vec![new_kid]);
        let r = s.gql_as(Some(&old), "{ me { login } }", json!({})).await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED");
        let fresh = token(&s, "carol").await;
        let me = s.gql_as(Some(&fresh), "{ me { login } }", json!({})).await;
        assert_eq!(me["data"]["me"]["login"], "carol", "{me}");
    }
);

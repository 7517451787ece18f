//! API keys over the CLI and GraphQL: list, revoke, expiry, scopes; every change an event that
//! names who minted or revoked which key, and never the secret.

use std::{sync::Arc, time::Duration};

use chrono::TimeDelta;
use serde_json::{Value, json};
use tessera_api::cli::{self, CreateKeyArgs, ScopeArg};
use tessera_tests::{TestServer, WsClient, both_stores, error_code, error_reason};

const WHO_AM_I: &str = "{ users(first: 1) { edges { node { id } } } }";

async fn works(s: &TestServer, token: &str) -> bool {
    let r = s.gql_as(Some(token), WHO_AM_I, json!({})).await;
    match r.get("errors") {
        None => true,
        Some(_) => {
            assert_eq!(error_code(&r), "UNAUTHENTICATED", "{r}");
            false
        }
    }
}

async fn cli_key(
    s: &TestServer,
    name: &str,
    scope: ScopeArg,
    expires: Option<&str>,
) -> (String, String) {
    let created = cli::create_api_key(
        s.config.clone(),
        Arc::new(s.clock.clone()),
        &CreateKeyArgs {
            name: name.into(),
            scope,
            expires: expires.map(Into::into),
        },
    )
    .await
    .unwrap();
    (created.key.id, created.token)
}

async fn gql_key(s: &TestServer, name: &str, scope: &str) -> (String, String) {
    let r = s
        .ok(
            "mutation($n: String!, $s: ApiKeyScope!) { createApiKey(input: {name: $n, scope: $s}) { token apiKey { id name scope active createdBy expiresAt } } }",
            json!({ "n": name, "s": scope }),
        )
        .await;
    let c = &r["createApiKey"];
    assert_eq!(c["apiKey"]["name"], name);
    assert_eq!(c["apiKey"]["scope"], scope);
    assert_eq!(c["apiKey"]["active"], true);
    assert_eq!(c["apiKey"]["createdBy"], "api-key:bootstrap");
    assert!(c["apiKey"]["expiresAt"].is_null());
    (
        c["apiKey"]["id"].as_str().unwrap().to_string(),
        c["token"].as_str().unwrap().to_string(),
    )
}

both_stores!(the_cli_lists_revokes_and_expires_keys, |store| async move {
    let s = TestServer::start(store).await;
    let (ci, ci_token) = cli_key(&s, "ci", ScopeArg::Admin, None).await;
    let (temp, temp_token) = cli_key(&s, "temp", ScopeArg::Admin, Some("10m")).await;
    assert!(works(&s, &ci_token).await);
    assert!(works(&s, &temp_token).await);

    let mut out = Vec::new();
    let keys = cli::list_api_keys(s.config.clone(), &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(keys.len(), 2, "{out}");
    assert!(out.contains(&format!("{ci}\tadmin\tactive")), "{out}");
    assert!(out.contains("\tci\n") && out.contains("\ttemp\n"), "{out}");
    assert!(
        !out.contains(&ci_token[21..]),
        "no secret in the listing: {out}"
    );
    let listed = keys.iter().find(|k| k.id == temp).unwrap();
    assert_eq!(listed.created_by.as_deref(), Some("operator:cli"));
    assert!(listed.expires_at.is_some());

    // Expiry: refused at once once the clock passes it.
    s.clock.advance(TimeDelta::minutes(11));
    assert!(!works(&s, &temp_token).await);
    assert!(works(&s, &ci_token).await);

    // Revocation: refused from the next request on, on every node.
    let mut other = s.another_node().await;
    assert!(works(&other, &ci_token).await);
    let revoked = cli::revoke_api_key(s.config.clone(), &ci).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.revoked_by.as_deref(), Some("operator:cli"));
    assert!(!works(&s, &ci_token).await);
    assert!(!works(&other, &ci_token).await);
    let again = cli::revoke_api_key(s.config.clone(), &ci)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already revoked"), "{again}");
    let unknown = cli::revoke_api_key(s.config.clone(), "0000000000000000")
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("not found"), "{unknown}");
    assert!(
        cli::create_api_key(
            s.config.clone(),
            Arc::new(s.clock.clone()),
            &CreateKeyArgs {
                name: "x".into(),
                scope: ScopeArg::Admin,
                expires: Some("soon".into()),
            },
        )
        .await
        .is_err()
    );

    let mut out = Vec::new();
    cli::list_api_keys(s.config.clone(), &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(&format!("{ci}\tadmin\trevoked")), "{out}");

    // The log: who minted and who revoked which key.
    let events = s.events("ApiKey", &ci).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["ApiKeyCreated", "ApiKeyRevoked"]);
    assert_eq!(events[0].1["ApiKeyCreated"]["key_id"], ci.as_str());
    assert_eq!(events[0].1["ApiKeyCreated"]["created_by"], "operator:cli");
    assert_eq!(events[1].1["ApiKeyRevoked"]["revoked_by"], "operator:cli");
    other.stop().await;
});

both_stores!(
    admins_create_list_and_revoke_keys_over_graphql,
    |store| async move {
        let s = TestServer::start(store).await;
        let (id, token) = gql_key(&s, "deploy", "ADMIN").await;
        assert!(works(&s, &token).await);
        // The new key mints and revokes too, and is recorded as itself.
        let (second, second_token) = {
            let r = s
                .gql_as(
                    Some(&token),
                    "mutation { createApiKey(input: {name: \"second\", expiresAt: \"2999-01-01T00:00:00Z\"}) { token apiKey { id createdBy expiresAt scope } } }",
                    json!({}),
                )
                .await;
            let k = &r["data"]["createApiKey"];
            assert_eq!(k["apiKey"]["createdBy"], format!("api-key:{id}"), "{r}");
            assert_eq!(k["apiKey"]["scope"], "ADMIN");
            assert!(
                k["apiKey"]["expiresAt"]
                    .as_str()
                    .unwrap()
                    .starts_with("2999-01-01")
            );
            (
                k["apiKey"]["id"].as_str().unwrap().to_string(),
                k["token"].as_str().unwrap().to_string(),
            )
        };
        let r = s
            .ok(
                "{ apiKeys(first: 1) { edges { cursor node { id name active revokedAt } } pageInfo { hasNextPage endCursor } } }",
                json!({}),
            )
            .await;
        assert_eq!(r["apiKeys"]["edges"].as_array().unwrap().len(), 1);
        assert_eq!(r["apiKeys"]["pageInfo"]["hasNextPage"], true);
        let end = r["apiKeys"]["pageInfo"]["endCursor"].clone();
        let rest = s
            .ok(
                "query($a: String) { apiKeys(after: $a) { edges { node { id } } pageInfo { hasNextPage } } }",
                json!({ "a": end }),
            )
            .await;
        let mut ids: Vec<String> = r["apiKeys"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .chain(rest["apiKeys"]["edges"].as_array().unwrap())
            .map(|e| e["node"]["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        let mut want = vec![id.clone(), second.clone()];
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(rest["apiKeys"]["pageInfo"]["hasNextPage"], false);

        const REVOKE: &str = "mutation($i: ID!) { revokeApiKey(input: {id: $i}) { apiKey { id active revokedAt revokedBy } } }";
        let r = s.gql_as(Some(&token), REVOKE, json!({ "i": second })).await;
        assert_eq!(r["data"]["revokeApiKey"]["apiKey"]["active"], false, "{r}");
        assert_eq!(
            r["data"]["revokeApiKey"]["apiKey"]["revokedBy"],
            format!("api-key:{id}")
        );
        assert!(!works(&s, &second_token).await);
        let r = s.gql(REVOKE, json!({ "i": second })).await;
        assert_eq!(error_code(&r), "CONFLICT");
        assert_eq!(error_reason(&r), "API_KEY_ALREADY_REVOKED");
        let r = s.gql(REVOKE, json!({ "i": "ffffffffffffffff" })).await;
        assert_eq!(error_code(&r), "NOT_FOUND");
        let r = s
            .gql(
                "mutation { createApiKey(input: {name: \"old\", expiresAt: \"2000-01-01T00:00:00Z\"}) { token } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT");
        let r = s
            .gql(
                "mutation { createApiKey(input: {name: \"\"}) { token } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT");

        // Users and anonymous callers cannot touch keys.
        s.create_full_user("alice", "correct horse battery staple")
            .await;
        let user = s
            .password_token("alice", "correct horse battery staple")
            .await;
        for doc in [
            "{ apiKeys { edges { node { id } } } }",
            "mutation { createApiKey(input: {name: \"x\"}) { token } }",
        ] {
            assert_eq!(
                error_code(&s.gql_as(Some(&user), doc, json!({})).await),
                "FORBIDDEN"
            );
            assert_eq!(
                error_code(&s.gql_as(None, doc, json!({})).await),
                "UNAUTHENTICATED"
            );
        }
        let r = s.gql_as(Some(&user), REVOKE, json!({ "i": id })).await;
        assert_eq!(error_code(&r), "FORBIDDEN");
        assert!(works(&s, &token).await);

        // A key may revoke itself; its next request is refused.
        let r = s.gql_as(Some(&token), REVOKE, json!({ "i": id })).await;
        assert_eq!(
            r["data"]["revokeApiKey"]["apiKey"]["revokedBy"],
            format!("api-key:{id}"),
            "{r}"
        );
        assert!(!works(&s, &token).await);
    }
);

const EVENTS: &str =
    "{ events(first: 500) { edges { node { eventType aggregateType aggregateId } } } }";

both_stores!(
    a_read_audit_key_reads_events_and_nothing_else,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, factor, _) = s.active_totp("alice").await;
        let (siem, token) = gql_key(&s, "siem", "READ_AUDIT").await;
        // On PostgreSQL an event is readable once every transaction of the cluster that began
        // before it has ended (README, "The log"): under a parallel suite that is a moment
        // later, not at once.
        let sees_its_own_creation = s
            .eventually(|| async {
                let r = s.gql_as(Some(&token), EVENTS, json!({})).await;
                assert!(r.get("errors").is_none(), "{r}");
                r["data"]["events"]["edges"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["node"]["eventType"] == "ApiKeyCreated")
            })
            .await;
        assert!(
            sees_its_own_creation,
            "the key's own ApiKeyCreated is in the log"
        );

        // The subscription too.
        let mut ws = WsClient::connect(&s.ws_url(), Some(&token)).await.unwrap();
        ws.subscribe(
            "log",
            "subscription { events { eventType aggregateId } }",
            json!({}),
        )
        .await;
        let got = ws.take("log", "events", 1, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 1, "the history starts");

        for (doc, vars) in [
            (
                "mutation { createUser(input: {login: \"mallory\"}) { id } }",
                json!({}),
            ),
            (
                "mutation($f: ID!) { removeFactor(input: {factorId: $f}) { status } }",
                json!({ "f": factor }),
            ),
            ("{ users { edges { node { id } } } }", json!({})),
            ("{ apiKeys { edges { node { id } } } }", json!({})),
            ("{ securityAlerts { edges { node { id } } } }", json!({})),
            (
                "mutation($i: ID!) { revokeApiKey(input: {id: $i}) { apiKey { id } } }",
                json!({ "i": siem }),
            ),
            (
                "mutation { createApiKey(input: {name: \"escalate\"}) { token } }",
                json!({}),
            ),
        ] {
            let r = s.gql_as(Some(&token), doc, vars).await;
            assert_eq!(error_code(&r), "FORBIDDEN", "{doc}: {r}");
        }
        let r = s
            .ok(
                "query($u: String!) { userByLogin(login: $u) { factors { status } } }",
                json!({ "u": "alice" }),
            )
            .await;
        assert_eq!(r["userByLogin"]["factors"][0]["status"], "ACTIVE");
    }
);

both_stores!(
    the_log_names_who_minted_and_revoked_which_key_never_the_secret,
    |store| async move {
        let s = TestServer::start(store).await;
        let (id, token) = gql_key(&s, "siem", "READ_AUDIT").await;
        let (cli_id, cli_token) = cli_key(&s, "ops", ScopeArg::ReadAudit, Some("30d")).await;
        s.ok(
            "mutation($i: ID!) { revokeApiKey(input: {id: $i}) { apiKey { id } } }",
            json!({ "i": id }),
        )
        .await;
        let log = s.quiesce().await;
        let mine: Vec<&Value> = log
            .iter()
            .filter(|e| e["aggregateType"] == "ApiKey")
            .collect();
        assert_eq!(mine.len(), 3, "{mine:#?}");
        let created = s.events("ApiKey", &id).await;
        let payload = &created[0].1["ApiKeyCreated"];
        assert_eq!(payload["key_id"], id.as_str());
        assert_eq!(payload["scope"], "read:audit");
        assert_eq!(payload["created_by"], "api-key:bootstrap");
        assert_eq!(
            created[1].1["ApiKeyRevoked"]["revoked_by"],
            "api-key:bootstrap"
        );
        assert_eq!(created[1].1["ApiKeyRevoked"]["key_id"], id.as_str());
        let by_cli = s.events("ApiKey", &cli_id).await;
        assert_eq!(by_cli[0].1["ApiKeyCreated"]["created_by"], "operator:cli");
        assert!(by_cli[0].1["ApiKeyCreated"]["expires_at"].is_string());

        let dump = s.dump_database().await;
        let log_text = serde_json::to_string(&log).unwrap();
        for t in [&token, &cli_token] {
            let secret = t.rsplit('_').next().unwrap();
            assert_eq!(secret.len(), 64);
            assert!(!dump.contains(secret), "a key's secret is stored");
            assert!(!log_text.contains(secret), "a key's secret is in the log");
        }
    }
);

both_stores!(
    a_key_minted_before_key_events_is_adopted_and_revoked,
    |store| async move {
        let s = TestServer::start(store).await;
        // A key as the server minted it before migration 0011: a row with no stream and no
        // minter.
        let auth = &s.server().state.auth;
        let minted = auth.mint();
        let created = tessera_domain::api_key::ApiKeyCreated {
            key_id: minted.id.clone(),
            name: "legacy".into(),
            scope: tessera_domain::api_key::ApiKeyScope::Admin,
            expires_at: None,
            created_by: String::new(),
            at: chrono::Utc::now() - TimeDelta::days(30),
        };
        auth.insert_key(&minted, &created).await.unwrap();
        s.execute_sql(&format!(
            "UPDATE api_keys SET created_by = NULL WHERE id = '{}'",
            minted.id
        ))
        .await;
        assert!(works(&s, &minted.token).await);
        assert!(s.event_types("ApiKey", &minted.id).await.is_empty());
        // Listed like any other, with its minter unknown.
        let listed = s
            .ok(
                "{ apiKeys(first: 50) { edges { node { id name createdBy active } } } }",
                json!({}),
            )
            .await;
        let legacy: Vec<&Value> = listed["apiKeys"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["node"])
            .filter(|n| n["id"] == minted.id.as_str())
            .collect();
        assert_eq!(legacy.len(), 1, "{listed}");
        assert_eq!(legacy[0]["createdBy"], Value::Null);
        assert_eq!(legacy[0]["active"], true);
        // Revoked: adopted into the log first, then revoked, and refused from then on.
        let r = s
            .gql(
                "mutation($i: ID!) { revokeApiKey(input: {id: $i}) { apiKey { id active revokedBy } } }",
                json!({ "i": minted.id }),
            )
            .await;
        assert_eq!(r["data"]["revokeApiKey"]["apiKey"]["active"], false, "{r}");
        assert!(!works(&s, &minted.token).await);
        let events = s.events("ApiKey", &minted.id).await;
        let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types, ["ApiKeyAdopted", "ApiKeyRevoked"]);
        let adopted = &events[0].1["ApiKeyAdopted"];
        assert_eq!(adopted["name"], "legacy");
        assert_eq!(adopted["adopted_by"], "api-key:bootstrap");
        assert!(!events[0].1.to_string().contains(&minted.token));
        // Once.
        let again = s
            .gql(
                "mutation($i: ID!) { revokeApiKey(input: {id: $i}) { apiKey { id } } }",
                json!({ "i": minted.id }),
            )
            .await;
        assert_eq!(error_reason(&again), "API_KEY_ALREADY_REVOKED", "{again}");
    }
);

//! Confusable logins (issue 17, L5): a login is one user in whatever width, case or Unicode
//! composition it is typed; invisible and direction characters and mixed scripts are refused;
//! users registered before these rules keep logging in.

use reqwest::Method;
use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code, error_reason};

const PASSWORD: &str = "correct horse battery staple";
const CREATE: &str = "mutation($l: String!) { createUser(input: {login: $l}) { id login } }";
const COUNT: &str = "{ users(first: 100) { totalCount } }";
const BY_LOGIN: &str = "query($l: String!) { userByLogin(login: $l) { id login } }";
const ME: &str = "{ me { id login } }";

/// NFC `josé` (`é` is U+00E9) and NFD `josé` (`e` then U+0301 COMBINING ACUTE ACCENT).
const JOSE_NFC: &str = "jos\u{e9}";
const JOSE_NFD: &str = "jose\u{301}";

async fn user_count(s: &TestServer) -> i64 {
    s.ok(COUNT, json!({})).await["users"]["totalCount"]
        .as_i64()
        .unwrap()
}

/// The id of the user a password login with `login` signs in as.
async fn signs_in_as(s: &TestServer, login: &str) -> String {
    let token = s.password_token(login, PASSWORD).await;
    let me = s.gql_as(Some(&token), ME, json!({})).await;
    me["data"]["me"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{login:?}: {me}"))
        .to_string()
}

both_stores!(
    confusable_variants_of_a_login_are_the_same_user_or_refused,
    |store| async move {
        let s = TestServer::start(store).await;
        let alice = s.create_full_user("alice", PASSWORD).await;
        let jose = s.create_full_user(JOSE_NFC, PASSWORD).await;
        // Stored in the enforced form: full-width and upper case mapped.
        let bob = s.ok(CREATE, json!({ "l": "ＢＯＢ" })).await;
        assert_eq!(bob["createUser"]["login"], "bob", "{bob}");
        let before = user_count(&s).await;
        assert_eq!(before, 3);

        // Width, case and composition variants are the same login: taken.
        for variant in [
            "ａｌｉｃｅ",
            "ＡＬＩＣＥ",
            "ALICE",
            "Ａlice",
            JOSE_NFD,
            "JOSE\u{301}",
            "bob",
        ] {
            let r = s.gql(CREATE, json!({ "l": variant })).await;
            assert_eq!(error_reason(&r), "LOGIN_TAKEN", "{variant:?}: {r}");
            assert_eq!(r["data"], Value::Null, "{variant:?}: {r}");
        }
        // Invisible and direction characters: refused as invalid.
        for variant in [
            "alice\u{200b}",
            "al\u{200b}ice",
            "\u{202e}alice",
            "ali\u{202e}ce",
            "alice\u{200d}",
            "\u{feff}alice",
        ] {
            let r = s.gql(CREATE, json!({ "l": variant })).await;
            assert_eq!(error_code(&r), "BAD_USER_INPUT", "{variant:?}: {r}");
            assert_eq!(error_reason(&r), "INVALID_LOGIN", "{variant:?}: {r}");
        }
        // Cyrillic а (U+0430) or е (U+0435) among Latin letters: refused as mixed scripts.
        for variant in ["\u{430}lice", "alic\u{435}", "\u{430}lice@example.com"] {
            let r = s.gql(CREATE, json!({ "l": variant })).await;
            assert_eq!(error_code(&r), "BAD_USER_INPUT", "{variant:?}: {r}");
            assert_eq!(error_reason(&r), "MIXED_SCRIPT_LOGIN", "{variant:?}: {r}");
        }
        // Nothing was written by any refusal.
        assert_eq!(user_count(&s).await, before);
        for (login, id) in [("alice", &alice), (JOSE_NFC, &jose)] {
            let r = s.ok(BY_LOGIN, json!({ "l": login })).await;
            assert_eq!(r["userByLogin"]["id"], id.as_str(), "{r}");
        }
        // The same rules on the Okta-compatible API.
        let r = s
            .okta(
                Method::POST,
                "/api/v1/users",
                Some(&json!({ "profile": { "login": "ａｌｉｃｅ", "email": "a@example.com" } })),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        let r = s
            .okta(
                Method::POST,
                "/api/v1/users",
                Some(&json!({ "profile": { "login": "\u{430}lice", "email": "a@example.com" } })),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(user_count(&s).await, before);
    }
);

both_stores!(a_variant_of_a_login_finds_its_user, |store| async move {
    let s = TestServer::start(store).await;
    let alice = s.create_full_user("alice", PASSWORD).await;
    let jose = s.create_full_user(JOSE_NFD, PASSWORD).await;
    for variant in ["alice", "ALICE", "ａｌｉｃｅ", "ＡＬＩＣＥ", " Alice "] {
        assert_eq!(signs_in_as(&s, variant).await, alice, "{variant:?}");
        let r = s.ok(BY_LOGIN, json!({ "l": variant })).await;
        assert_eq!(r["userByLogin"]["id"], alice.as_str(), "{variant:?}: {r}");
    }
    for variant in [JOSE_NFC, JOSE_NFD, "JOS\u{c9}"] {
        assert_eq!(signs_in_as(&s, variant).await, jose, "{variant:?}");
        let r = s.ok(BY_LOGIN, json!({ "l": variant })).await;
        assert_eq!(r["userByLogin"]["id"], jose.as_str(), "{variant:?}: {r}");
        assert_eq!(r["userByLogin"]["login"], JOSE_NFC, "{r}");
    }
    // The Okta-compatible API finds a user by login in the path too.
    let r = s
        .okta(
            Method::GET,
            "/api/v1/users/%EF%BD%81%EF%BD%8C%EF%BD%89%EF%BD%83%EF%BD%85",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], alice.as_str(), "{}", r.body);
});

/// Appends a `Registered` event (payload version 1.0, as written before the login rules, with
/// the login exactly as given) for a new user with `id`, straight into the log.
async fn register_before_the_rules(s: &TestServer, id: &str, login: &str) {
    let payload = json!({ "Registered": { "login": login, "email": null, "phone_number": null,
                                          "display_name": null, "at": "2026-01-01T00:00:00Z" } })
    .to_string();
    let sql = match s.server().state.db.dialect {
        tessera_store::Dialect::Postgres => {
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) VALUES ('User', $1, 1, 'Registered', '1.0', \
             $2::json, '{}')"
        }
        tessera_store::Dialect::Sqlite => {
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) VALUES ('User', $1, 1, 'Registered', '1.0', $2, '{}')"
        }
    };
    sqlx::query(sql)
        .bind(id)
        .bind(&payload)
        .execute(&s.server().state.db.pool)
        .await
        .unwrap();
}

both_stores!(
    users_registered_before_the_login_rules_keep_logging_in,
    |store| async move {
        use tessera_domain::ids::UserId;
        let s = TestServer::start(store).await;
        // Written before the rules, which lower-cased only: a full-width login (its id is of
        // that form, not of `alice`), and a login with a zero-width space the rules refuse.
        let wide = UserId::legacy_for_login("ａｌｉｃｅ").to_string();
        let hidden = UserId::legacy_for_login("bob\u{200b}").to_string();
        assert_ne!(wide, UserId::for_login("alice").to_string());
        register_before_the_rules(&s, &wide, "ａｌｉｃｅ").await;
        register_before_the_rules(&s, &hidden, "bob\u{200b}").await;
        // Logins resolve through the read model; on PostgreSQL another test's open transaction
        // can hold the tailer back for a while, so wait for the two events rather than one pass.
        for id in [&wide, &hidden] {
            let applied = s
                .server()
                .state
                .read_models
                .wait_for_event("User", id, 1, std::time::Duration::from_secs(60))
                .await
                .unwrap();
            assert!(applied, "the read models applied {id}'s registration");
        }
        for id in [&wide, &hidden] {
            s.ok(
                "mutation($u: ID!, $p: String!) { setPassword(input: {userId: $u, password: $p}) { id } }",
                json!({ "u": id, "p": PASSWORD }),
            )
            .await;
        }
        // The login as registered, and every variant of it, signs in as the old user.
        for variant in ["ａｌｉｃｅ", "ＡＬＩＣＥ", "alice", "Alice"] {
            assert_eq!(signs_in_as(&s, variant).await, wide, "{variant:?}");
            let r = s.ok(BY_LOGIN, json!({ "l": variant })).await;
            assert_eq!(r["userByLogin"]["id"], wide.as_str(), "{variant:?}: {r}");
        }
        assert_eq!(signs_in_as(&s, "bob\u{200b}").await, hidden);
        // Their logins stay taken: no new `alice` beside the old one; the old `bob` + zero-width
        // space is a login the rules refuse, and input is checked before anything else is done
        // (no lookup, no argon2 work), so a second one is refused as invalid.
        for variant in ["alice", "ａｌｉｃｅ"] {
            let r = s.gql(CREATE, json!({ "l": variant })).await;
            assert_eq!(error_reason(&r), "LOGIN_TAKEN", "{variant:?}: {r}");
        }
        let r = s.gql(CREATE, json!({ "l": "bob\u{200b}" })).await;
        assert_eq!(error_reason(&r), "INVALID_LOGIN", "{r}");
        // `bob` is another login under the rules (the zero-width space is not mapped away).
        let bob = s.ok(CREATE, json!({ "l": "bob" })).await;
        assert_ne!(bob["createUser"]["id"], hidden.as_str());
        assert_eq!(user_count(&s).await, 3);
        // A rebuild of the read models (as after the migration) finds them the same way.
        s.server().state.read_models.rebuild().await.unwrap();
        assert_eq!(signs_in_as(&s, "alice").await, wide);
    }
);

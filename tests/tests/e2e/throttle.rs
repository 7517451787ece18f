//! The password throttle: consecutive wrong passwords per login, known or not,
//! exact under concurrency and across nodes; self-service `setPassword` counted with it.

use chrono::TimeDelta;
use futures::StreamExt;
use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code, error_reason};

const PASSWORD: &str = "correct horse battery staple";

fn retry_after(r: &Value) -> i64 {
    r["errors"][0]["extensions"]["retryAfter"]
        .as_i64()
        .unwrap_or_else(|| panic!("no retryAfter in {r}"))
}

/// The answer to a login, in one word: `TOKEN`, `INVALID_CREDENTIALS`, `LOGIN_THROTTLED`, …
fn outcome(r: &Value) -> String {
    if r["data"]["login"]["accessToken"].is_string() {
        "TOKEN".into()
    } else {
        error_reason(r).to_string()
    }
}

/// The kinds of the user's security alerts, once the reactor has caught up with the log.
async fn alert_kinds(s: &TestServer, user: &str) -> Vec<String> {
    s.quiesce().await;
    s.ok(
        "query($u: ID) { securityAlerts(userId: $u) { edges { node { kind } } } }",
        json!({ "u": user }),
    )
    .await["securityAlerts"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["kind"].as_str().unwrap().to_string())
        .collect()
}

fn count(types: &[String], wanted: &str) -> usize {
    types.iter().filter(|t| *t == wanted).count()
}

both_stores!(
    ten_wrong_passwords_throttle_known_and_unknown_logins_alike,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("alice", PASSWORD).await;
        for login in ["alice", "nobody-here"] {
            for i in 0..10 {
                let r = s.login(login, &format!("wrong guess {i}")).await;
                assert_eq!(error_code(&r), "UNAUTHENTICATED", "{login} #{i}: {r}");
                assert_eq!(error_reason(&r), "INVALID_CREDENTIALS");
            }
            // Throttled: even the right password is not checked.
            let r = s.login(login, PASSWORD).await;
            assert_eq!(error_code(&r), "RATE_LIMITED", "{login}: {r}");
            assert_eq!(error_reason(&r), "LOGIN_THROTTLED");
            assert_eq!(retry_after(&r), 300, "{r}");
            assert_eq!(r["data"], Value::Null);
        }
        let types = s.event_types("User", &user).await;
        assert_eq!(count(&types, "LoginFailed"), 10, "{types:?}");
        assert_eq!(count(&types, "LoginThrottled"), 1, "{types:?}");
        // The unknown login left no event and no login in the clear.
        let dump = s.dump_database().await;
        assert!(
            !dump.contains("nobody-here"),
            "the throttle table holds the login"
        );

        s.clock.advance(TimeDelta::seconds(299));
        let r = s.login("alice", PASSWORD).await;
        assert_eq!(retry_after(&r), 1, "{r}");
        s.clock.advance(TimeDelta::seconds(1));
        // The throttle is over; a second run of ten throttles twice as long, for both.
        for login in ["alice", "nobody-here"] {
            let answers: Vec<String> = futures::stream::iter(0..10)
                .then(|i| {
                    let s = &s;
                    async move { outcome(&s.login(login, &format!("again {i}")).await) }
                })
                .collect()
                .await;
            assert_eq!(answers, vec!["INVALID_CREDENTIALS"; 10], "{login}");
            let r = s.login(login, "one more").await;
            assert_eq!(error_reason(&r), "LOGIN_THROTTLED", "{login}: {r}");
            assert_eq!(retry_after(&r), 600, "{login}: {r}");
        }
        s.clock.advance(TimeDelta::seconds(600));
        // A success resets: nine wrong passwords after it are not a run.
        assert_eq!(outcome(&s.login("alice", PASSWORD).await), "TOKEN");
        assert_eq!(
            s.event_types("User", &user).await.last().unwrap(),
            "LoginFailuresReset"
        );
        for i in 0..9 {
            assert_eq!(
                outcome(&s.login("alice", &format!("later {i}")).await),
                "INVALID_CREDENTIALS"
            );
        }
        assert_eq!(outcome(&s.login("alice", PASSWORD).await), "TOKEN");
        // A login without failures writes nothing for the throttle.
        let before = s.event_types("User", &user).await.len();
        assert_eq!(outcome(&s.login("alice", PASSWORD).await), "TOKEN");
        assert_eq!(s.event_types("User", &user).await.len(), before);
    }
);

// 60 parallel guesses over 20 connections: exactly the threshold's ten are checked and
// answered as wrong passwords; the other fifty are refused unchecked.
both_stores!(
    parallel_wrong_passwords_check_at_most_the_threshold,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("mallory", PASSWORD).await;
        for login in ["mallory", "nobody-at-all"] {
            let answers: Vec<String> = futures::stream::iter(0..60)
                .map(|i| {
                    let s = &s;
                    async move { outcome(&s.login(login, &format!("guess {i}")).await) }
                })
                .buffer_unordered(20)
                .collect()
                .await;
            let wrong = answers
                .iter()
                .filter(|a| *a == "INVALID_CREDENTIALS")
                .count();
            let throttled = answers.iter().filter(|a| *a == "LOGIN_THROTTLED").count();
            assert_eq!((wrong, throttled), (10, 50), "{login}: {answers:?}");
        }
        let types = s.event_types("User", &user).await;
        assert_eq!(count(&types, "LoginFailed"), 10, "{types:?}");
        assert_eq!(count(&types, "LoginThrottled"), 1, "{types:?}");
        // The burst raised one security alert.
        assert_eq!(alert_kinds(&s, &user).await, ["LOGIN_THROTTLED"]);
    }
);

both_stores!(two_nodes_share_the_count, |store| async move {
    let a = TestServer::start(store).await;
    a.create_full_user("bob", PASSWORD).await;
    let b = a.another_node().await;
    for login in ["bob", "nobody-else"] {
        for i in 0..10 {
            let node = if i % 2 == 0 { &a } else { &b };
            let r = node.login(login, &format!("wrong {i}")).await;
            assert_eq!(error_reason(&r), "INVALID_CREDENTIALS", "{login} #{i}: {r}");
        }
        for node in [&a, &b] {
            let r = node.login(login, PASSWORD).await;
            assert_eq!(error_reason(&r), "LOGIN_THROTTLED", "{login}: {r}");
        }
    }
});

// Red-team finding M2: aliased `setPassword` fields guessed many current passwords in one
// request, unthrottled. Now one per request, and each guess counts like a login's.
both_stores!(
    set_password_with_the_current_one_is_a_counted_guess,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("carol", PASSWORD).await;
        let token = s.password_token("carol", PASSWORD).await;
        let aliased = "mutation($u: ID!) { \
             a: setPasswordV2(input: {userId: $u, password: \"new password 1\", currentPassword: \"guess one\"}) { user { id } } \
             b: setPasswordV2(input: {userId: $u, password: \"new password 2\", currentPassword: \"guess two\"}) { user { id } } }";
        let r = s.gql_as(Some(&token), aliased, json!({ "u": user })).await;
        assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
        assert_eq!(error_reason(&r), "PROOF_BUDGET_EXCEEDED");
        assert_eq!(
            count(&s.event_types("User", &user).await, "LoginFailed"),
            0,
            "a refused request checks nothing"
        );

        let change = "mutation($u: ID!, $c: String!) { setPasswordV2(input: {userId: $u, password: \"brand new secret\", currentPassword: $c}) { user { id } } }";
        for i in 0..5 {
            let r = s
                .gql_as(
                    Some(&token),
                    change,
                    json!({ "u": user, "c": format!("guess {i}") }),
                )
                .await;
            assert_eq!(error_reason(&r), "WRONG_CURRENT_PASSWORD", "{r}");
        }
        for i in 0..5 {
            let r = s.login("carol", &format!("login guess {i}")).await;
            assert_eq!(error_reason(&r), "INVALID_CREDENTIALS", "{r}");
        }
        // Ten guesses in all, by either door: both are throttled, the right password unchecked.
        let r = s
            .gql_as(Some(&token), change, json!({ "u": user, "c": PASSWORD }))
            .await;
        assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
        assert_eq!(error_reason(&r), "LOGIN_THROTTLED");
        assert_eq!(retry_after(&r), 300);
        assert_eq!(
            error_reason(&s.login("carol", PASSWORD).await),
            "LOGIN_THROTTLED"
        );
        let types = s.event_types("User", &user).await;
        assert_eq!(count(&types, "PasswordSet"), 1, "{types:?}");
        assert_eq!(count(&types, "LoginFailed"), 10, "{types:?}");
    }
);

/// `login` from the local address `from` (a loopback address of this machine: each one is
/// another client to the server), with an `X-Forwarded-For` header if given.
async fn login_from(
    s: &TestServer,
    from: &str,
    forwarded_for: Option<&str>,
    login: &str,
    password: &str,
) -> Value {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut request = client.post(format!("{}/graphql", s.base)).json(&json!({
        "query": "mutation($l: String!, $p: String!) { login(input: {login: $l, password: $p}) { accessToken } }",
        "variables": { "l": login, "p": password },
    }));
    if let Some(hops) = forwarded_for {
        request = request.header("x-forwarded-for", hops);
    }
    request.send().await.unwrap().json().await.unwrap()
}

both_stores!(
    a_client_address_over_its_password_budget_is_refused_and_no_other,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.login_max_per_ip_per_minute = 3;
            // 127.0.0.2 plays the proxy in front of Tessera; 127.0.0.1 is a client.
            c.trusted_proxies = vec![tessera_api::client_ip::parse_proxy("127.0.0.2").unwrap()];
        })
        .await;
        let user = s.create_full_user("ivy", PASSWORD).await;
        for _ in 0..3 {
            let r = login_from(&s, "127.0.0.1", None, "ivy", "wrong password").await;
            assert_eq!(outcome(&r), "INVALID_CREDENTIALS", "{r}");
        }
        // Over the budget: refused unchecked, the right password too, and a spoofed
        // X-Forwarded-For from a peer that is no trusted proxy changes nothing.
        for (login, password, spoof) in [
            ("ivy", PASSWORD, Some("198.51.100.7")),
            ("nobody-at-all", "whatever", None),
            ("ivy", PASSWORD, Some("203.0.113.1, 198.51.100.9")),
        ] {
            let r = login_from(&s, "127.0.0.1", spoof, login, password).await;
            assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
            assert_eq!(error_reason(&r), "CLIENT_IP_THROTTLED", "{r}");
            assert!((1..=60).contains(&retry_after(&r)), "{r}");
        }
        let failed = |types: Vec<String>| types.iter().filter(|t| *t == "LoginFailed").count();
        assert_eq!(
            failed(s.event_types("User", &user).await),
            3,
            "nothing counted"
        );

        // Another client is unaffected: through the trusted proxy, the client it names.
        let r = login_from(&s, "127.0.0.2", Some("198.51.100.7"), "ivy", PASSWORD).await;
        assert_eq!(outcome(&r), "TOKEN", "{r}");
        let metadata = s.event_column("User", &user, "metadata").await;
        let (last, meta) = metadata.last().unwrap();
        assert_eq!(last, "LoginFailuresReset");
        assert_eq!(meta["client_ip"], "198.51.100.7", "{meta}");
        // Each client behind the proxy has a budget of its own.
        for _ in 0..3 {
            let r = login_from(&s, "127.0.0.2", Some("198.51.100.8"), "ivy", "wrong").await;
            assert_eq!(outcome(&r), "INVALID_CREDENTIALS", "{r}");
        }
        let r = login_from(&s, "127.0.0.2", Some("198.51.100.8"), "ivy", PASSWORD).await;
        assert_eq!(error_reason(&r), "CLIENT_IP_THROTTLED", "{r}");
        let r = login_from(&s, "127.0.0.2", Some("198.51.100.7"), "ivy", PASSWORD).await;
        assert_eq!(outcome(&r), "TOKEN", "{r}");
        // The window passes: the first client may try again.
        s.clock.advance(TimeDelta::seconds(60));
        let r = login_from(&s, "127.0.0.1", None, "ivy", PASSWORD).await;
        assert_eq!(outcome(&r), "TOKEN", "{r}");
    }
);

both_stores!(
    without_a_budget_logins_are_not_counted_by_address,
    |store| async move {
        let s = TestServer::start(store).await;
        s.create_full_user("jay", PASSWORD).await;
        for _ in 0..5 {
            let r = login_from(&s, "127.0.0.1", None, "jay", "wrong").await;
            assert_eq!(outcome(&r), "INVALID_CREDENTIALS", "{r}");
        }
        let r = login_from(&s, "127.0.0.1", None, "jay", PASSWORD).await;
        assert_eq!(outcome(&r), "TOKEN", "{r}");
        let rows = s.dump_database().await.matches("login:ip:").count();
        assert_eq!(
            rows, 0,
            "the budget is off by default: no counter is written"
        );
    }
);

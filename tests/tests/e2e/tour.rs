//! `examples/tour.sh`, the README's guide as a script, run against a fresh server on the
//! real clock: if the guide's operations drift from the product, the tour fails here.

use serde_json::{Value, json};
use tessera_tests::{ADMIN_KEY, both_stores, fresh::FreshStore};

async fn admin_query(base: &str, query: &str, variables: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("HTTP")
        .json()
        .await
        .expect("JSON")
}

both_stores!(the_tour_runs_the_whole_guide, |store| async move {
    let fresh = FreshStore::new(store).await;
    // The system clock: the script computes codes from the time, as an app does.
    let server = tessera_api::start(fresh.config.clone())
        .await
        .expect("server starts");
    let base = format!("http://{}", server.addr);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tour.sh");
    let env_base = base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .env("TESSERA_URL", env_base)
            .env("TESSERA_API_KEY", ADMIN_KEY)
            .env("TOUR_LOGIN", "alice")
            .output()
            .expect("bash runs (the tour needs curl and python3)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tour failed:\n{stdout}\n{stderr}");
    for shown in [
        "user alice: ",
        // The returned qrCodePng, drawn as text: the top of the top-left finder pattern.
        "scan this with the app:\n█████",
        "\n██ ▄▄▄▄▄ █",
        "or type the secret into the app: otpauth://totp/Tessera:alice?secret=",
        "SUCCESS, factor ACTIVE",
        "recovery codes (shown this once",
        "PASSCODE_REPLAYED (not counted as a guess: failedAttempts 0)",
        "\"amr\": [\"pwd\", \"otp\"], \"acr\": \"mfa\"",
        "state handed back: {\"transfer\": 42}",
        "Done: user alice has an active authenticator app.",
    ] {
        assert!(stdout.contains(shown), "{shown:?} not in:\n{stdout}");
    }
    // The audit section lists the user's whole history, in order.
    let audit = &stdout[stdout.find("== 7.").expect("audit section")..];
    let types: Vec<&str> = audit
        .lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(
        types,
        [
            "Registered",
            "PasswordSet",
            "Enrolled",
            "Activated",
            "RecoveryCodesGenerated",
            "FailedAttempt",
            "Verified",
            "Verified"
        ],
        "{audit}"
    );

    // What the server holds afterwards: the factor active and used, the codes unspent, the
    // step-up challenge completed.
    let r = admin_query(
        &base,
        "{ userByLogin(login: \"alice\") { recoveryCodesRemaining factors { status lastVerifiedAt } } }",
        json!({}),
    )
    .await;
    let user = &r["data"]["userByLogin"];
    assert_eq!(user["recoveryCodesRemaining"], 10, "{r}");
    assert_eq!(user["factors"][0]["status"], "ACTIVE", "{r}");
    assert!(user["factors"][0]["lastVerifiedAt"].is_string(), "{r}");
    let step_up = stdout
        .lines()
        .find(|l| l.starts_with("challenge ") && l.contains(", expires "))
        .and_then(|l| l.split([' ', ',']).nth(1))
        .expect("the step-up challenge id");
    let r = admin_query(
        &base,
        "query($c: ID!) { challenge(id: $c) { status purpose } }",
        json!({ "c": step_up }),
    )
    .await;
    assert_eq!(
        r["data"]["challenge"],
        json!({ "status": "COMPLETED", "purpose": "STEP_UP" }),
        "{r}"
    );
    server.stop().await;
});

//! The security console (`/ui/console`) in a real browser, signed in with an admin API key:
//! an alert raised while the page is open appears without a reload and is acknowledged; the
//! event log filters by type and pages; an alert's trace leads to the failure that raised it,
//! that failure's command and what it caused; a hard-locked user and a locked factor are
//! unlocked; an export downloads JSON lines that match the filter; live alerts resume after
//! the server restarts (the page reconnects and subscribes again). Screenshots at desktop and
//! phone width go to `target/ui-screenshots/console-{desktop,phone}.png`.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use tessera_tests::{
    ADMIN_KEY, Store, TestServer, both_stores,
    browser::{Browser, DESKTOP, PHONE, WAIT},
};

/// A browser on the console, signed in, with the alert subscription open.
async fn console(s: &TestServer) -> Browser {
    let b = Browser::start().await;
    b.set_window_size(DESKTOP).await;
    b.goto(&format!("{}/ui/console", s.base)).await;
    b.type_into("#api-key", ADMIN_KEY).await;
    b.click_css("#key-form button[type=submit]").await;
    b.wait_for_visible("#event-table").await;
    b.wait_for_text("#live-status", "Live").await;
    b
}

/// Waits until `script` (a function body) returns something other than null or false.
async fn until(b: &Browser, script: &str) -> Value {
    b.wait_for(script, WAIT).await
}

async fn alert_of(s: &TestServer, user: &str, kind: &str) -> Value {
    // Up to the browser's own wait: the reactor runs beside other builds on a busy machine.
    for _ in 0..400 {
        let r = s
            .ok(
                "query($u: ID) { securityAlerts(userId: $u) { edges { node { id kind acknowledgedAt } } } }",
                json!({ "u": user }),
            )
            .await;
        if let Some(a) = r["securityAlerts"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .find(|a| a["kind"] == kind)
        {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {kind} alert for {user}");
}

both_stores!(
    an_alert_raised_while_the_console_is_open_appears_and_is_acknowledged,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, _) = s.active_totp("alice").await;
        let b = console(&s).await;
        // The key is kept for this tab only, never in localStorage.
        let storage = b
            .execute(
                "return [localStorage.length, sessionStorage.getItem('tessera.console.apiKey')]",
                json!([]),
            )
            .await;
        assert_eq!(storage, json!([0, ADMIN_KEY]));
        b.execute("window.stillTheSamePage = true", json!([])).await;
        // A keyboard user sits on the enrolment alert's Trace button while a new one arrives.
        let added = alert_of(&s, &user, "FACTOR_ADDED").await;
        let added_trace = format!(
            "#alert-list li[data-alert-id='{}'] button.trace",
            added["id"].as_str().unwrap()
        );
        b.wait_for_visible(&added_trace).await;
        b.execute(
            "document.querySelector(arguments[0]).focus()",
            json!([added_trace]),
        )
        .await;

        for _ in 0..3 {
            assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
        }
        let alert = alert_of(&s, &user, "REPEATED_FAILURES").await;
        let id = alert["id"].as_str().unwrap();
        let row = format!("#alert-list li[data-alert-id='{id}']");
        b.wait_for_visible(&row).await;
        let text = b.text(&row).await.unwrap();
        assert!(
            text.contains("REPEATED_FAILURES") && text.contains(&user),
            "{text}"
        );
        assert!(text.contains("Open"), "{text}");
        assert_eq!(
            b.execute("return window.stillTheSamePage === true", json!([]))
                .await,
            true,
            "the alert came without a reload"
        );
        assert_eq!(
            b.execute(
                "return document.activeElement === document.querySelector(arguments[0])",
                json!([added_trace])
            )
            .await,
            true,
            "the live update kept the focus where it was"
        );

        b.screenshot("console-desktop").await;
        b.set_window_size(PHONE).await;
        // Nothing is wider than the phone's screen.
        let overflow = b
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                json!([]),
            )
            .await;
        assert_eq!(overflow, 0, "horizontal scrolling at 360 px");
        b.screenshot("console-phone").await;
        b.set_window_size(DESKTOP).await;

        b.click_css(&format!("{row} button.ack")).await;
        b.wait_for_text(&row, "Acknowledged").await;
        assert!(alert_of(&s, &user, "REPEATED_FAILURES").await["acknowledgedAt"].is_string());
        // Keyboard users keep their place: focus moved to the row's next action.
        let focused = b
            .execute(
                "return document.activeElement.closest('li')?.dataset.alertId",
                json!([]),
            )
            .await;
        assert_eq!(focused, id);
        b.quit().await;
    }
);

/// The positions of the event rows shown, as `Type/id/sequence`.
async fn rows(b: &Browser) -> Vec<String> {
    let v = b
        .execute(
            "return [...document.querySelectorAll('#event-rows tr')].map(r => r.dataset.event)",
            json!([]),
        )
        .await;
    serde_json::from_value(v).unwrap()
}

fn key(e: &Value) -> String {
    format!(
        "{}/{}/{}",
        e["aggregateType"].as_str().unwrap(),
        e["aggregateId"].as_str().unwrap(),
        e["sequence"]
    )
}

both_stores!(
    the_event_log_filters_pages_traces_and_exports,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.lockout_threshold = 3).await;
        let (user, factor, _) = s.active_totp("alice").await;
        // Three wrong codes lock the factor; nine more are refused while it is locked.
        for _ in 0..12 {
            s.verify(&factor, "000000").await;
        }
        // Everything written and readable (on PostgreSQL the log shows an event once every
        // older transaction of the cluster has ended), alerts raised.
        let failures: Vec<String> = s
            .quiesce()
            .await
            .iter()
            .filter(|e| e["eventType"] == "FailedAttempt")
            .map(key)
            .collect();
        // The factor's twelve, and the user's record of those that counted.
        let n = failures.len();
        assert!((11..=20).contains(&n), "two pages of ten: {n}");
        let alert = alert_of(&s, &user, "REPEATED_FAILURES").await;
        let alert_id = alert["id"].as_str().unwrap().to_string();
        let b = console(&s).await;

        // Filter by type, ten per page: two pages, in log order.
        b.type_into("#f-events", "FailedAttempt").await;
        b.execute(
            "const s = document.getElementById('f-size'); s.value = '10'; s.dispatchEvent(new Event('change'))",
            json!([]),
        )
        .await;
        b.click_css("#apply-filter").await;
        b.wait_for_text("#events-status", &format!("{n} events match"))
            .await;
        assert_eq!(rows(&b).await, failures[..10]);
        assert_eq!(b.text("#page-label").await.unwrap(), "Page 1 of 2");
        b.click_css("#next-page").await;
        b.wait_for_text("#page-label", "Page 2 of 2").await;
        assert_eq!(rows(&b).await, failures[10..]);
        assert_eq!(
            b.execute(
                "return document.getElementById('next-page').disabled",
                json!([])
            )
            .await,
            true
        );
        b.click_css("#prev-page").await;
        b.wait_for_text("#page-label", "Page 1 of 2").await;
        assert_eq!(rows(&b).await, failures[..10]);

        // Export what the filter selects: a real download of JSON lines.
        let dir =
            std::env::temp_dir().join(format!("ui3_export_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        b.command(
            reqwest::Method::POST,
            "goog/cdp/execute",
            json!({ "cmd": "Browser.setDownloadBehavior", "params": {
                "behavior": "allow", "downloadPath": dir.to_str().unwrap() } }),
        )
        .await
        .expect("downloads allowed");
        b.click_css("#export").await;
        b.wait_for_text("#export-status", &format!("Exported {n} events"))
            .await;
        let lines = downloaded(&dir).await;
        let exported: Vec<Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(exported.iter().map(key).collect::<Vec<_>>(), failures);
        assert!(exported.iter().all(|e| e["eventType"] == "FailedAttempt"
            && e["payload"]["FailedAttempt"].is_object()
            && e["metadata"]["causation_id"].is_string()));
        std::fs::remove_dir_all(&dir).ok();

        // An alert's trace: the failure that tipped the rule, then that failure's command
        // (it also locked the factor) and the alert it caused.
        let alert_row = format!("#alert-list li[data-alert-id='{alert_id}']");
        b.wait_for_visible(&alert_row).await;
        b.click_css(&format!("{alert_row} button.trace")).await;
        let alert_event = format!("Alert/{alert_id}/1");
        until(
            &b,
            &format!(
                "return document.getElementById('event-detail').dataset.event === '{alert_event}'"
            ),
        )
        .await;
        b.wait_for_text("#detail-title", "SecurityAlertRaised")
            .await;
        let third = failures
            .iter()
            .filter(|k| k.starts_with(&format!("Factor/{factor}/")))
            .nth(2)
            .unwrap();
        let cause = format!("#detail-causes li[data-event='{third}']");
        b.wait_for_visible(&cause).await;
        b.click_css(&format!("{cause} button")).await;
        until(
            &b,
            &format!("return document.getElementById('event-detail').dataset.event === '{third}'"),
        )
        .await;
        let siblings = b.text("#detail-siblings").await.unwrap();
        assert!(
            siblings.contains("LockedOut") && siblings.contains(&factor),
            "{siblings}"
        );
        b.wait_for_visible(&format!("#detail-effects li[data-event='{alert_event}']"))
            .await;
        assert!(b.text("#detail-causes").await.unwrap().contains("None"));
        let facts = b.text("#detail-facts").await.unwrap();
        assert!(facts.contains("cmd-") && facts.contains(&factor), "{facts}");
        // The detail heading takes focus, for keyboard and screen-reader users.
        assert_eq!(
            b.execute("return document.activeElement.id", json!([]))
                .await,
            "detail-title"
        );
        b.quit().await;
    }
);

/// The one finished download in `dir` (Chromium writes `*.crdownload` until it is done).
async fn downloaded(dir: &Path) -> String {
    for _ in 0..200 {
        let files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        if let [file] = files.as_slice()
            && file.extension().is_some_and(|x| x == "jsonl")
        {
            return std::fs::read_to_string(file).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no download in {}", dir.display());
}

async fn hard_locking_server(store: Store) -> TestServer {
    TestServer::start_with(store, |c| {
        c.lockout_threshold = 3;
        c.hard_lock_threshold = 3;
    })
    .await
}

both_stores!(
    a_locked_user_is_looked_up_and_unlocked,
    |store| async move {
        let s = hard_locking_server(store).await;
        let (user, factor, _) = s.active_totp("alice").await;
        for _ in 0..3 {
            s.verify(&factor, "000000").await;
        }
        assert_eq!(
            s.lock_state(&user, &factor).await,
            (json!(true), json!("LOCKED_OUT"))
        );
        let b = console(&s).await;

        b.type_into("#user-query", "nobody").await;
        b.click_css("#user-lookup button[type=submit]").await;
        b.wait_for_text("#user-status", "No user nobody").await;

        b.type_into("#user-query", "Alice").await;
        b.click_css("#user-lookup button[type=submit]").await;
        b.wait_for_text("#user-lock", "hard-locked").await;
        let row = format!("#factor-table tr[data-factor-id='{factor}']");
        assert!(b.text(&row).await.unwrap().contains("LOCKED_OUT"));

        b.click_css(&format!("{row} button.unlock-factor")).await;
        b.wait_for_text("#user-status", "Factor unlocked").await;
        b.wait_for_text(&format!("{row} .factor-status"), "ACTIVE")
            .await;
        assert_eq!(s.lock_state(&user, &factor).await.1, json!("ACTIVE"));

        b.click_css("#unlock-user").await;
        b.wait_for_text("#user-lock", "Not locked").await;
        assert_eq!(
            s.lock_state(&user, &factor).await,
            (json!(false), json!("ACTIVE"))
        );
        assert_eq!(
            b.execute("return document.getElementById('unlock-user')", json!([]))
                .await,
            Value::Null,
            "nothing left to unlock"
        );
        b.quit().await;
    }
);

both_stores!(
    a_key_that_is_not_an_admin_key_is_refused,
    |store| async move {
        let s = TestServer::start(store).await;
        let b = Browser::start().await;
        b.goto(&format!("{}/ui/console", s.base)).await;
        b.type_into("#api-key", "tsk_nope_notakey").await;
        b.click_css("#key-form button[type=submit]").await;
        b.wait_for_text("#api-key-error", "not accepted").await;
        assert_eq!(
            b.execute(
                "return [document.getElementById('console').hidden, sessionStorage.length, document.getElementById('api-key').getAttribute('aria-invalid')]",
                json!([])
            )
            .await,
            json!([true, 0, "true"])
        );
        b.quit().await;
    }
);

both_stores!(
    live_alerts_resume_after_the_server_restarts,
    |store| async move {
        // A fixed port, so the restarted server is where the page's socket reconnects to.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut s = TestServer::start_with(store, move |c| {
            c.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port)).into();
        })
        .await;
        let (user, factor, _) = s.active_totp("alice").await;
        let b = console(&s).await;
        b.execute("window.stillTheSamePage = true", json!([])).await;
        s.restart().await;
        b.wait_for_text("#live-status", "Live").await;
        for _ in 0..3 {
            assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
        }
        let alert = alert_of(&s, &user, "REPEATED_FAILURES").await;
        b.wait_for_visible(&format!(
            "#alert-list li[data-alert-id='{}']",
            alert["id"].as_str().unwrap()
        ))
        .await;
        assert_eq!(
            b.execute("return window.stillTheSamePage === true", json!([]))
                .await,
            true
        );
        b.quit().await;
    }
);

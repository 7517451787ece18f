//! Relay connections: `users` in creation order with cursors that never move, and
//! `totalCount` on `users`, `events` and `securityAlerts`.

use chrono::TimeDelta;
use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code, error_reason};

const USERS_PAGE: &str = "query($a: String) { users(first: 3, after: $a) {
    totalCount edges { cursor node { id login } } pageInfo { hasNextPage endCursor } } }";

/// One page of `users`: (logins, cursors, hasNextPage, endCursor, totalCount).
async fn users_page(
    s: &TestServer,
    after: Option<&str>,
) -> (Vec<String>, Vec<String>, bool, Value, i64) {
    let page = s.ok(USERS_PAGE, json!({ "a": after })).await;
    let users = &page["users"];
    let edges = users["edges"].as_array().expect("edges");
    assert!(edges.len() <= 3, "page larger than first: {users}");
    (
        edges
            .iter()
            .map(|e| e["node"]["login"].as_str().unwrap().to_string())
            .collect(),
        edges
            .iter()
            .map(|e| e["cursor"].as_str().unwrap().to_string())
            .collect(),
        users["pageInfo"]["hasNextPage"].as_bool().unwrap(),
        users["pageInfo"]["endCursor"].clone(),
        users["totalCount"].as_i64().expect("totalCount"),
    )
}

/// Every login through `users`, page by page, with each page's cursors.
async fn all_users(s: &TestServer, expected_total: i64) -> (Vec<String>, Vec<Vec<String>>) {
    let (mut logins, mut cursors) = (Vec::new(), Vec::new());
    let mut after: Option<String> = None;
    loop {
        let (page, page_cursors, next, end, total) = users_page(s, after.as_deref()).await;
        assert_eq!(total, expected_total, "totalCount counts every page");
        logins.extend(page);
        cursors.push(page_cursors);
        if !next {
            return (logins, cursors);
        }
        after = end.as_str().map(str::to_string);
    }
}

both_stores!(
    users_come_in_creation_order_with_stable_cursors,
    |store| async move {
        let s = TestServer::start(store).await;
        // Logins whose UUIDv5 ids sort differently from their creation order.
        let mut created: Vec<String> = (0..7).map(|i| format!("user{i}")).collect();
        for login in &created {
            s.clock.advance(TimeDelta::milliseconds(1));
            s.create_user(login).await;
        }
        let ids: Vec<String> = {
            let mut ids = Vec::new();
            for login in &created {
                let r = s
                    .ok(
                        "query($l: String!) { userByLogin(login: $l) { id } }",
                        json!({ "l": login }),
                    )
                    .await;
                ids.push(r["userByLogin"]["id"].as_str().unwrap().to_string());
            }
            ids
        };
        let mut by_id = ids.clone();
        by_id.sort();
        assert_ne!(by_id, ids, "the test needs ids out of creation order");

        let (seen, cursors) = all_users(&s, 7).await;
        assert_eq!(seen, created, "oldest first, across pages");
        assert_eq!(cursors.len(), 3, "7 users in pages of 3");

        // A user created while a client pages lands on the last page; the cursors handed out
        // before still name the same places, so the next page after page 1 is unchanged.
        let (page_two, ..) = users_page(&s, Some(&cursors[0][2])).await;
        s.clock.advance(TimeDelta::milliseconds(1));
        s.create_user("latecomer").await;
        created.push("latecomer".into());
        let (again, ..) = users_page(&s, Some(&cursors[0][2])).await;
        assert_eq!(
            again, page_two,
            "a cursor does not move when users are added"
        );
        let (seen, cursors_after) = all_users(&s, 8).await;
        assert_eq!(seen, created);
        assert_eq!(
            cursors_after[0], cursors[0],
            "the first page's cursors are stable"
        );
        assert_eq!(cursors_after[1], cursors[1]);

        // A cursor of another connection (an id, as the old order handed out) is bad input.
        let r = s.gql(USERS_PAGE, json!({ "a": ids[0] })).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
        assert_eq!(error_reason(&r), "INVALID_CURSOR", "{r}");
    }
);

both_stores!(events_and_alerts_have_a_total_count, |store| async move {
    let s = TestServer::start(store).await;
    let (user, factor, _) = s.active_totp("alice").await;
    for _ in 0..3 {
        assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
    }
    let filter = json!({ "userId": user });
    // On PostgreSQL a transaction elsewhere on the cluster can hold the readable tail back for
    // a moment, so compare a full read and the counts once they agree with each other.
    let settled = s
        .eventually(|| {
            let (s, filter) = (&s, filter.clone());
            async move {
                let events = s.all_events(filter.clone(), 2).await;
                if events.len() <= 2 {
                    return false;
                }
                let mut agree = true;
                for after in [Value::Null, json!(events[0]["position"])] {
                    let r = s
                        .ok(
                            "query($f: EventFilter, $a: String) { events(filter: $f, first: 2, after: $a) { totalCount } }",
                            json!({ "f": filter, "a": after }),
                        )
                        .await;
                    // The whole filtered log, whichever page.
                    agree &= r["events"]["totalCount"].as_i64() == Some(events.len() as i64);
                }
                agree
            }
        })
        .await;
    assert!(settled, "events totalCount counts every page of the filter");
    let r = s
        .ok(
            "{ events(filter: {eventTypes: [\"NoSuchEvent\"]}) { totalCount edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["events"], json!({ "totalCount": 0, "edges": [] }));

    // The activation raised FACTOR_ADDED; three failures raise one more, asynchronously.
    let count = |u: Value| {
        let s = &s;
        async move {
            s.ok(
                "query($u: ID) { securityAlerts(userId: $u, first: 1) { totalCount } }",
                json!({ "u": u }),
            )
            .await["securityAlerts"]["totalCount"]
                .as_i64()
                .unwrap()
        }
    };
    assert!(
        s.eventually(|| async { count(json!(user)).await == 2 })
            .await,
        "two alerts for alice"
    );
    assert_eq!(count(Value::Null).await, 2, "all users' alerts");
    let bob = s.create_user("bob").await;
    assert_eq!(count(json!(bob)).await, 0, "bob has none");
});

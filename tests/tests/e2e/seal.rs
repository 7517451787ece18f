//! The log's hash chain: `tessera export-events` writes lines anyone can check link by link,
//! and `tessera verify-log` names every row an attacker with database access edited,
//! inserted or deleted (after switching the append-only triggers off, as they could).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tessera_api::cli::{self, ExportArgs};
use tessera_projections::seal::Problem;
use tessera_store::Dialect;
use tessera_tests::{TestServer, both_stores};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Some history: two users, a factor, a success, a failure.
async fn history(s: &TestServer) -> (String, String) {
    let (_, factor, secret) = s.active_totp("alice").await;
    assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
    assert_eq!(s.verify(&factor, &s.wrong_code(&secret)).await, "REJECTED");
    s.ok(
        "mutation { createUser(input: {login: \"bob\", password: \"correct horse battery\"}) { id } }",
        json!({}),
    )
    .await;
    (factor, secret)
}

/// Runs the sealer until every event is sealed; returns the verify-log output.
async fn sealed(s: &TestServer) -> (tessera_projections::seal::Report, String) {
    let want = s.log_identities().await.len() as i64;
    for _ in 0..100 {
        s.server().state.sealer.catch_up().await.unwrap();
        let (report, text) = verify(s).await;
        if report.sealed == want && report.unsealed == 0 {
            return (report, text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the sealer never caught up");
}

async fn verify(s: &TestServer) -> (tessera_projections::seal::Report, String) {
    let mut out = Vec::new();
    let report = cli::verify_log(&s.config, &mut out).await.unwrap();
    (report, String::from_utf8(out).unwrap())
}

async fn export(s: &TestServer, args: &ExportArgs) -> Vec<Value> {
    let mut out = Vec::new();
    cli::export_events(&s.config, args, &mut out).await.unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks every line's link from its own fields, with code independent of the server's:
/// serde_json's default map is sorted, which is the canonical form.
fn check_chain(lines: &[Value], mut prev: [u8; 32]) {
    for line in lines {
        assert_eq!(line["prevHash"], hex(&prev), "{line}");
        let canonical = json!({
            "position": line["position"], "aggregateType": line["aggregateType"],
            "aggregateId": line["aggregateId"], "sequence": line["sequence"],
            "eventType": line["eventType"], "eventVersion": line["eventVersion"],
            "recordedAt": line["recordedAt"], "payloadSha256": line["payloadSha256"],
            "metadataSha256": line["metadataSha256"],
        })
        .to_string();
        let mut h = Sha256::new();
        h.update(prev);
        h.update(canonical.as_bytes());
        let hash: [u8; 32] = h.finalize().into();
        assert_eq!(line["hash"], hex(&hash), "{line}");
        // Where nothing was redacted, the digest is of exactly what the line shows.
        if !line["payload"].to_string().contains("[REDACTED]") {
            let digest = hex(&Sha256::digest(line["payload"].to_string().as_bytes()));
            assert_eq!(line["payloadSha256"], digest, "{line}");
        }
        prev = hash;
    }
}

both_stores!(
    export_is_a_checkable_chain_without_secrets,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, secret) = history(&s).await;
        let (report, text) = sealed(&s).await;
        assert!(report.intact(), "{text}");
        assert!(
            text.contains("OK: the log matches its hash chain"),
            "{text}"
        );
        let events = s.settled_events().await;

        let lines = export(&s, &ExportArgs::default()).await;
        assert_eq!(lines.len(), events.len());
        for (line, event) in lines.iter().zip(&events) {
            assert_eq!(line["position"], event["position"]);
            assert_eq!(
                line["payload"], event["payload"],
                "redacted as the API redacts"
            );
        }
        check_chain(&lines, [0; 32]);
        assert_eq!(
            lines.last().unwrap()["hash"].as_str(),
            report.head.as_ref().map(|h| h.hash.as_str())
        );
        let n: Vec<i64> = lines.iter().map(|l| l["n"].as_i64().unwrap()).collect();
        assert_eq!(n, (1..=lines.len() as i64).collect::<Vec<_>>());

        // No secret in the export.
        let all_text = lines.iter().map(Value::to_string).collect::<String>();
        assert!(!all_text.contains(&secret));
        assert!(!all_text.contains("$argon2id$"));
        assert!(!all_text.contains("correct horse battery"));
        assert!(!all_text.contains("ciphertext"));

        // Resume after a position: the rest, still chained to what came before.
        let after = ExportArgs {
            after: Some(lines[3]["position"].as_str().unwrap().into()),
            ..ExportArgs::default()
        };
        let rest = export(&s, &after).await;
        assert_eq!(rest, lines[4..].to_vec());
        let mut prev = [0u8; 32];
        for (i, byte) in prev.iter_mut().enumerate() {
            let h = lines[3]["hash"].as_str().unwrap();
            *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
        }
        check_chain(&rest, prev);

        // A time window: exactly the lines recorded in it.
        let from: chrono::DateTime<chrono::Utc> =
            lines[2]["recordedAt"].as_str().unwrap().parse().unwrap();
        let to: chrono::DateTime<chrono::Utc> =
            lines[6]["recordedAt"].as_str().unwrap().parse().unwrap();
        let window = export(
            &s,
            &ExportArgs {
                from: Some(from),
                to: Some(to),
                ..ExportArgs::default()
            },
        )
        .await;
        let expected: Vec<Value> = lines
            .iter()
            .filter(|l| {
                let t: chrono::DateTime<chrono::Utc> =
                    l["recordedAt"].as_str().unwrap().parse().unwrap();
                t >= from && t < to
            })
            .cloned()
            .collect();
        assert!(!expected.is_empty() && expected.len() < lines.len());
        assert_eq!(window, expected);
    }
);

/// An event's position, from the API.
fn position(events: &[Value], i: usize) -> String {
    events[i]["position"].as_str().unwrap().to_string()
}

fn pos_of(position: &str) -> i64 {
    position.split_once('.').unwrap().1.parse().unwrap()
}

both_stores!(
    verify_log_names_edited_inserted_and_deleted_rows,
    |store| async move {
        let s = TestServer::start(store).await;
        history(&s).await;
        let (report, _) = sealed(&s).await;
        assert!(report.intact());
        let events = s.settled_events().await;
        let state = &s.server().state;

        // An attacker with database access switches off the append-only triggers.
        match state.db.dialect {
            Dialect::Postgres => {
                let pg = &s.server().state.db.pool;
                sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
                    .execute(pg)
                    .await
                    .unwrap();
            }
            Dialect::Sqlite => {
                let lite = &s.server().state.db.pool;
                for t in [
                    "events_append_only_update",
                    "events_append_only_delete",
                    "events_assign_global_seq",
                ] {
                    sqlx::query(&format!("DROP TRIGGER {t}"))
                        .execute(lite)
                        .await
                        .unwrap();
                }
            }
        }

        // 1. Edit: the failed attempt becomes a replay, as if the code had been right.
        let failed = events
            .iter()
            .position(|e| e["eventType"] == "FailedAttempt")
            .unwrap();
        let edited = position(&events, failed);
        let forged = json!({ "FailedAttempt": { "reason": "REPLAYED", "counted": false,
                                            "consecutive_failures": 0, "at": "2026-01-01T00:00:00Z" } })
        .to_string();
        match state.db.dialect {
            Dialect::Postgres => {
                let pg = &s.server().state.db.pool;
                sqlx::query("UPDATE events SET payload = $1::json WHERE global_position = $2")
                    .bind(&forged)
                    .bind(pos_of(&edited))
                    .execute(pg)
                    .await
                    .unwrap();
            }
            Dialect::Sqlite => {
                let lite = &s.server().state.db.pool;
                sqlx::query("UPDATE events SET payload = $1 WHERE global_seq = $2")
                    .bind(&forged)
                    .bind(pos_of(&edited))
                    .execute(lite)
                    .await
                    .unwrap();
            }
        }
        let (report, text) = verify(&s).await;
        assert_eq!(
            report.problems,
            vec![Problem::Edited {
                n: failed as i64 + 1,
                position: edited.clone()
            }],
            "{text}"
        );
        assert!(
            text.contains("EDITED") && text.contains("TAMPERED: 1 problem(s)"),
            "{text}"
        );
        // The export refuses to go past it.
        let mut out = Vec::new();
        let err = cli::export_events(&s.config, &ExportArgs::default(), &mut out)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&edited), "{err}");

        // 2. Delete: Alice's activation disappears.
        let activated = events
            .iter()
            .position(|e| e["eventType"] == "Activated")
            .unwrap();
        let deleted = position(&events, activated);
        match state.db.dialect {
            Dialect::Postgres => {
                let pg = &s.server().state.db.pool;
                sqlx::query("DELETE FROM events WHERE global_position = $1")
                    .bind(pos_of(&deleted))
                    .execute(pg)
                    .await
                    .unwrap();
            }
            Dialect::Sqlite => {
                let lite = &s.server().state.db.pool;
                sqlx::query("DELETE FROM events WHERE global_seq = $1")
                    .bind(pos_of(&deleted))
                    .execute(lite)
                    .await
                    .unwrap();
            }
        }

        // 3. Insert: a user that never registered, slipped inside the sealed range.
        let ghost = tessera_domain::ids::UserId::for_login("ghost").to_string();
        let payload =
            json!({ "Registered": { "login": "ghost", "email": null, "phone_number": null,
                                          "display_name": null, "at": "2026-01-01T00:00:00Z" } })
            .to_string();
        let inserted = match state.db.dialect {
            Dialect::Postgres => {
                let pg = &s.server().state.db.pool;
                // Same transaction id as the first event, a fresh position: inside the range.
                let tx = position(&events, 0).split_once('.').unwrap().0.to_string();
                sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                 payload, metadata, global_position, tx_id) OVERRIDING SYSTEM VALUE \
                 VALUES ('User', $1, 1, 'Registered', '1.0', $2::json, '{}', 900000000, $3::xid8)",
            )
            .bind(&ghost)
            .bind(&payload)
            .bind(&tx)
            .execute(pg)
            .await
            .unwrap();
                format!("{tx}.900000000")
            }
            Dialect::Sqlite => {
                let lite = &s.server().state.db.pool;
                // Below the first sealed position.
                sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                 payload, metadata, global_seq) VALUES ('User', $1, 1, 'Registered', '1.0', $2, '{}', 0)",
            )
            .bind(&ghost)
            .bind(&payload)
            .execute(lite)
            .await
            .unwrap();
                "0.0".to_string()
            }
        };

        let (report, text) = verify(&s).await;
        let mut expected = [
            Problem::Inserted { position: inserted },
            Problem::Missing {
                n: activated as i64 + 1,
                position: deleted,
            },
            Problem::Edited {
                n: failed as i64 + 1,
                position: edited,
            },
        ]
        .to_vec();
        let mut got = report.problems.clone();
        got.sort_by_key(|p| format!("{p:?}"));
        expected.sort_by_key(|p| format!("{p:?}"));
        assert_eq!(got, expected, "{text}");
        for word in ["EDITED", "DELETED", "INSERTED", "TAMPERED: 3 problem(s)"] {
            assert!(text.contains(word), "{word} missing from:\n{text}");
        }
        // The head and the count still describe the seal.
        assert_eq!(report.sealed, events.len() as i64);
    }
);

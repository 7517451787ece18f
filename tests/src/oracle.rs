//! Reading the store directly, as an operator or auditor would: the oracle tests check the API
//! against (the event table, a database dump).

use std::time::Duration;

use serde_json::Value;

use crate::{Store, TestServer};

impl TestServer {
    /// `(aggregate type, aggregate id, sequence)` of every stored event in the tailing order,
    /// read straight from the table: the oracle for the audit API.
    pub async fn log_identities(&self) -> Vec<(String, String, i64)> {
        let db = &self.server().state.db;
        let sql = format!(
            "SELECT aggregate_type, aggregate_id, sequence FROM events ORDER BY {}",
            db.dialect.log_order()
        );
        sqlx::query_as(&sql)
            .fetch_all(&db.pool)
            .await
            .expect("read events")
    }

    /// Runs one statement on the server's database, as an operator would.
    pub async fn execute_sql(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.server().state.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Event types of one aggregate, in order, read straight from the event table.
    pub async fn event_types(&self, aggregate_type: &str, aggregate_id: &str) -> Vec<String> {
        self.events(aggregate_type, aggregate_id)
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    /// `(event_type, payload)` of one aggregate, in order, straight from the event table.
    pub async fn events(&self, aggregate_type: &str, aggregate_id: &str) -> Vec<(String, Value)> {
        self.event_column(aggregate_type, aggregate_id, "payload")
            .await
    }

    /// `(event_type, column)` of one aggregate, in order, for a JSON column of the event table
    /// (`payload` or `metadata`).
    pub async fn event_column(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        column: &str,
    ) -> Vec<(String, Value)> {
        let db = &self.server().state.db;
        let sql = format!(
            "SELECT event_type, {} AS value FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
            db.dialect.json_text(column)
        );
        let rows: Vec<(String, String)> = sqlx::query_as(&sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(&db.pool)
            .await
            .expect("read events");
        rows.into_iter()
            .map(|(t, v)| (t, serde_json::from_str(&v).expect("JSON column")))
            .collect()
    }

    /// Waits (bounded) until the aggregate has an event of `event_type`; returns its payload.
    pub async fn wait_for_event(&self, aggregate_type: &str, id: &str, event_type: &str) -> Value {
        for _ in 0..200 {
            if let Some((_, payload)) = self
                .events(aggregate_type, id)
                .await
                .into_iter()
                .find(|(t, _)| t == event_type)
            {
                return payload[event_type].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no {event_type} on {aggregate_type}/{id}: {:?}",
            self.event_types(aggregate_type, id).await
        )
    }

    /// Every text value stored anywhere in the database, for "no secret in a dump" checks.
    pub async fn dump_database(&self) -> String {
        match self.store {
            Store::Postgres => {
                let out = std::process::Command::new("pg_dump")
                    .arg("--data-only")
                    .arg(&self.config.database_url)
                    .output()
                    .expect("pg_dump runs");
                assert!(
                    out.status.success(),
                    "pg_dump: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            Store::Sqlite => {
                let dir = self.dir.as_ref().expect("sqlite dir");
                let mut all = Vec::new();
                for entry in std::fs::read_dir(dir).expect("read dir") {
                    let path = entry.expect("entry").path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    // The key file is the master key, not the database.
                    if name.starts_with("tessera.db") && !name.ends_with(".key") {
                        all.extend(std::fs::read(&path).expect("read db file"));
                    }
                }
                String::from_utf8_lossy(&all).into_owned()
            }
        }
    }

    /// The events of one stream as `(event_type, payload)`, in order, read from the store.
    pub async fn events_of(&self, aggregate_id: &str) -> Vec<(String, Value)> {
        let sql = "SELECT event_type, CAST(payload AS TEXT) FROM events WHERE aggregate_id = $1 ORDER BY sequence";
        let rows: Vec<(String, String)> = sqlx::query_as(sql)
            .bind(aggregate_id)
            .fetch_all(&self.server().state.db.pool)
            .await
            .expect("read events");
        rows.into_iter()
            .map(|(t, p)| (t, serde_json::from_str(&p).expect("payload is JSON")))
            .collect()
    }

    /// How many `FailedAttempt` events of `aggregate_id` have `reason`.
    pub async fn failures(&self, aggregate_id: &str, reason: &str) -> usize {
        self.events_of(aggregate_id)
            .await
            .iter()
            .filter(|(t, p)| t == "FailedAttempt" && p["FailedAttempt"]["reason"] == reason)
            .count()
    }
}

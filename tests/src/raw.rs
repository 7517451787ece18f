//! Writing events as another process would, through the store's one append (never a
//! hand-written INSERT), for tests of what readers do with them.

use serde_json::{Value, json};
use tessera_store::{Conflict, Dialect, NewEvent, append};

/// Appends one event (`(aggregate type, id, sequence)`, type, payload) on `conn`, which may
/// be inside an open transaction; version `1.0`, empty metadata.
pub async fn append_one(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    (aggregate_type, aggregate_id, sequence): (&str, &str, i64),
    event_type: &str,
    payload: Value,
) {
    let row = NewEvent {
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        event_version: "1.0",
        payload: payload.to_string(),
        metadata: json!({}).to_string(),
    };
    append(conn, dialect, &[row], Conflict::Fail)
        .await
        .expect("append");
}

//! The security-alert reactor: reads failed attempts, lockouts, recovery-code uses and every
//! change to how a user authenticates (factor activated or removed, recovery codes replaced, a
//! device trusted) from the log through a durable checkpoint, raises `SecurityAlertRaised` once per incident and queues
//! its deliveries — all in the transaction that advances the checkpoint, so a crash or restart
//! neither loses nor repeats an alert. Alert ids are deterministic (`tessera_domain::alert`).

pub mod rules;

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{AnyConnection, FromRow, Row};
use tessera_domain::{
    alert::{AlertEvent, AlertKind, EventRef, SecurityAlertRaised, alert_id},
    factor::{FactorEvent, FailureReason},
    ids::UserId,
    user::{UserEvent, UserFailureReason},
};

use tessera_store::{AppendError, Conflict, NewEvent, append};

use crate::{Dialect, Error, StoredEvent, parse_ts, runner::Projection, ts};
pub use rules::FailureRule;

/// The actor recorded on the events the reactor writes.
pub const REACTOR_ACTOR: &str = "alert-reactor";

/// The reactor projection.
#[derive(Clone, Debug)]
pub struct AlertReactor {
    /// The failure-count rule.
    pub rule: FailureRule,
    /// Delivery channels to queue for every alert (`webhook`, `email`).
    pub channels: Vec<&'static str>,
}

impl Projection for AlertReactor {
    fn name(&self) -> &'static str {
        "alert_reactor_v1"
    }

    // Alerts are facts in the log, not a view of it: a rebuild must not raise or deliver
    // them again, so nothing is emptied.
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        event: &StoredEvent,
    ) -> Result<(), Error> {
        self.apply_batch(conn, dialect, std::slice::from_ref(event))
            .await
    }

    /// Set-based: the owners of the batch's factors and the users' last repeated-failures
    /// alerts are read in one query each, the failures are written in one multi-row INSERT and
    /// pruned in one DELETE at the end, and a user's window is read only where the rule can
    /// fire (once per user and batch, the batch's own failures added from memory). The events
    /// are still judged one by one, in log order, with the same results as one at a time.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        events: &[StoredEvent],
    ) -> Result<(), Error> {
        let mut decoded = Vec::with_capacity(events.len());
        for event in events {
            match event.aggregate_type.as_str() {
                "Factor" => decoded.push(Decoded::Factor(event, event.decode()?)),
                "User" => decoded.push(Decoded::User(event, event.decode()?)),
                "Alert" => decoded.push(Decoded::Alert(event, event.decode()?)),
                _ => {}
            }
        }
        let mut batch = Batch::default();
        batch.load_owners(conn, &decoded).await?;
        batch.load_last_alerts(conn, &decoded).await?;
        for d in decoded {
            match d {
                Decoded::Factor(stored, event) => {
                    self.on_factor(conn, dialect, &mut batch, stored, event)
                        .await?;
                }
                Decoded::User(stored, event) => {
                    self.on_user(conn, dialect, &mut batch, stored, event)
                        .await?;
                }
                Decoded::Alert(stored, event) => on_alert(conn, stored, event).await?,
            }
        }
        batch.flush(conn).await
    }
}

enum Decoded<'a> {
    Factor(&'a StoredEvent, FactorEvent),
    User(&'a StoredEvent, UserEvent),
    Alert(&'a StoredEvent, AlertEvent),
}

/// A failure the batch records in `alert_failures`.
struct Failure {
    key: (String, String, i64),
    event_type: String,
    user: String,
    at: String,
}

/// What one batch knows and has still to write.
#[derive(Default)]
struct Batch {
    /// Factor id → owner: the table's rows for the batch's factors, and the batch's enrolments.
    owners: HashMap<String, String>,
    /// Enrolments to record.
    new_owners: Vec<(String, String)>,
    /// User → when its last repeated-failures alert was raised (`None`: never).
    last_alert: HashMap<String, Option<DateTime<Utc>>>,
    /// The batch's failures, in log order.
    failures: Vec<Failure>,
    /// User → the earliest window start of its failures in the batch: older rows are pruned.
    prune: HashMap<String, DateTime<Utc>>,
    /// User → the rows of `alert_failures` (written before this batch) after a window start.
    windows: HashMap<String, (DateTime<Utc>, Vec<FailureRow>)>,
}

/// Ids per `IN (..)` list and rows per multi-row statement: far under both stores' limits on
/// bound parameters.
const CHUNK: usize = 500;

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Batch {
    async fn load_owners(
        &mut self,
        conn: &mut AnyConnection,
        decoded: &[Decoded<'_>],
    ) -> Result<(), Error> {
        let ids: BTreeSet<&str> = decoded
            .iter()
            .filter_map(|d| match d {
                Decoded::Factor(e, event) if !matches!(event, FactorEvent::Enrolled(_)) => {
                    Some(e.aggregate_id.as_str())
                }
                _ => None,
            })
            .collect();
        let ids: Vec<&str> = ids.into_iter().collect();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT factor_id, user_id FROM alert_factor_owners WHERE factor_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut *conn).await? {
                self.owners
                    .insert(row.try_get("factor_id")?, row.try_get("user_id")?);
            }
        }
        Ok(())
    }

    /// Reads the last repeated-failures alert of every user the batch may count a failure of.
    async fn load_last_alerts(
        &mut self,
        conn: &mut AnyConnection,
        decoded: &[Decoded<'_>],
    ) -> Result<(), Error> {
        let users: BTreeSet<String> = decoded
            .iter()
            .filter_map(|d| match d {
                Decoded::Factor(e, FactorEvent::FailedAttempt(_)) => {
                    self.owners.get(&e.aggregate_id).cloned()
                }
                Decoded::Factor(_, FactorEvent::Enrolled(en)) => Some(en.user_id.to_string()),
                Decoded::User(e, UserEvent::FailedAttempt(_)) => Some(e.aggregate_id.clone()),
                _ => None,
            })
            .collect();
        let users: Vec<String> = users.into_iter().collect();
        self.load_last_alerts_of(conn, &users).await
    }

    async fn load_last_alerts_of(
        &mut self,
        conn: &mut AnyConnection,
        users: &[String],
    ) -> Result<(), Error> {
        for chunk in users.chunks(CHUNK) {
            let sql = format!(
                "SELECT user_id, MAX(raised_at) AS last FROM security_alerts_v1 \
                 WHERE kind = $1 AND user_id IN ({}) GROUP BY user_id",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(AlertKind::RepeatedFailures.as_str());
            for user in chunk {
                query = query.bind(user);
                self.last_alert.insert(user.clone(), None);
            }
            for row in query.fetch_all(&mut *conn).await? {
                let user: String = row.try_get("user_id")?;
                let last: Option<String> = row.try_get("last")?;
                self.last_alert
                    .insert(user, last.as_deref().and_then(parse_ts));
            }
        }
        Ok(())
    }

    async fn last_alert(
        &mut self,
        conn: &mut AnyConnection,
        user: &str,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        if !self.last_alert.contains_key(user) {
            self.load_last_alerts_of(conn, &[user.to_string()]).await?;
        }
        Ok(self.last_alert.get(user).copied().flatten())
    }

    /// The user's failures in `(start, at]`, as `alert_failures` would hold them had every
    /// failure of the batch so far been written: ordered by time, stream and sequence.
    async fn window(
        &mut self,
        conn: &mut AnyConnection,
        user: &str,
        start: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<Vec<FailureRow>, Error> {
        let cached = self
            .windows
            .get(user)
            .is_some_and(|(from, _)| *from <= start);
        if !cached {
            let rows: Vec<FailureRow> = sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, sequence, event_type, at FROM alert_failures \
                 WHERE user_id = $1 AND at > $2",
            )
            .bind(user)
            .bind(ts(start))
            .fetch_all(&mut *conn)
            .await?;
            self.windows.insert(user.to_string(), (start, rows));
        }
        let (start, at) = (ts(start), ts(at));
        let mut seen = BTreeSet::new();
        let mut rows: Vec<FailureRow> = Vec::new();
        let stored = self.windows.get(user).map(|(_, rows)| rows.as_slice());
        for row in stored.unwrap_or_default() {
            if row.at > start && row.at <= at && seen.insert(row.key()) {
                rows.push(row.clone());
            }
        }
        for f in self.failures.iter().filter(|f| f.user == user) {
            if f.at > start && f.at <= at && seen.insert(f.key.clone()) {
                rows.push(FailureRow {
                    aggregate_type: f.key.0.clone(),
                    aggregate_id: f.key.1.clone(),
                    sequence: f.key.2,
                    event_type: f.event_type.clone(),
                    at: f.at.clone(),
                });
            }
        }
        rows.sort_by(|a, b| {
            (&a.at, &a.aggregate_id, a.sequence).cmp(&(&b.at, &b.aggregate_id, b.sequence))
        });
        Ok(rows)
    }

    /// Writes what the batch recorded: failures, pruning of failures out of every window,
    /// owners.
    async fn flush(self, conn: &mut AnyConnection) -> Result<(), Error> {
        for chunk in self.failures.chunks(CHUNK) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(i * 6 + 1, 6)))
                .collect();
            let sql = format!(
                "INSERT INTO alert_failures (aggregate_type, aggregate_id, sequence, event_type, \
                 user_id, at) VALUES {} ON CONFLICT DO NOTHING",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for f in chunk {
                query = query
                    .bind(&f.key.0)
                    .bind(&f.key.1)
                    .bind(f.key.2)
                    .bind(&f.event_type)
                    .bind(&f.user)
                    .bind(&f.at);
            }
            query.execute(&mut *conn).await?;
        }
        let prune: Vec<(&String, String)> = self
            .prune
            .iter()
            .map(|(user, start)| (user, ts(*start)))
            .collect();
        for chunk in prune.chunks(CHUNK) {
            let terms: Vec<String> = (0..chunk.len())
                .map(|i| format!("(user_id = ${} AND at <= ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!("DELETE FROM alert_failures WHERE {}", terms.join(" OR "));
            let mut query = sqlx::query(&sql);
            for (user, start) in chunk {
                query = query.bind(*user).bind(start);
            }
            query.execute(&mut *conn).await?;
        }
        for chunk in self.new_owners.chunks(CHUNK) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(i * 2 + 1, 2)))
                .collect();
            let sql = format!(
                "INSERT INTO alert_factor_owners (factor_id, user_id) VALUES {} \
                 ON CONFLICT (factor_id) DO NOTHING",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (factor, user) in chunk {
                query = query.bind(factor).bind(user);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

fn event_ref(e: &StoredEvent) -> EventRef {
    EventRef {
        aggregate_type: e.aggregate_type.clone(),
        aggregate_id: e.aggregate_id.clone(),
        sequence: e.sequence,
        event_type: e.event_type.clone(),
    }
}

impl AlertReactor {
    async fn on_factor(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        batch: &mut Batch,
        stored: &StoredEvent,
        event: FactorEvent,
    ) -> Result<(), Error> {
        if let FactorEvent::Enrolled(e) = &event {
            // The first owner recorded stays (as `ON CONFLICT DO NOTHING` keeps it).
            let user = e.user_id.to_string();
            batch
                .owners
                .entry(stored.aggregate_id.clone())
                .or_insert_with(|| user.clone());
            batch.new_owners.push((stored.aggregate_id.clone(), user));
            return Ok(());
        }
        let Some(user) = batch.owners.get(&stored.aggregate_id).cloned() else {
            return Ok(());
        };
        match event {
            // A counter that did not grow is an incident of its own, raised at once; it is
            // also a failure like any other.
            FactorEvent::FailedAttempt(f) if f.reason == FailureReason::CounterRegressed => {
                let reason = format!(
                    "factor {} answered with a signature counter that did not grow: the \
                     authenticator may be cloned",
                    stored.aggregate_id
                );
                let cause = vec![event_ref(stored)];
                self.raise(
                    conn,
                    dialect,
                    AlertKind::PossibleClonedAuthenticator,
                    &user,
                    reason,
                    cause,
                    f.at,
                )
                .await?;
                self.on_failure(conn, dialect, batch, stored, &user, f.at)
                    .await
            }
            // Attempts refused unchecked while locked are not new guesses.
            FactorEvent::FailedAttempt(f) if f.reason != FailureReason::Locked => {
                self.on_failure(conn, dialect, batch, stored, &user, f.at)
                    .await
            }
            FactorEvent::LockedOut(l) => {
                let reason = format!(
                    "factor {} locked after {} consecutive failures, until {}",
                    stored.aggregate_id,
                    l.consecutive_failures,
                    ts(l.until)
                );
                let cause = vec![event_ref(stored)];
                self.raise(
                    conn,
                    dialect,
                    AlertKind::FactorLocked,
                    &user,
                    reason,
                    cause,
                    l.at,
                )
                .await
            }
            // A factor change is what a stolen session would make to keep the account: each
            // raises an alert of its own kind (and the user hears of it).
            FactorEvent::Activated(a) => {
                let reason = format!("factor {} added (activated)", stored.aggregate_id);
                let cause = vec![event_ref(stored)];
                self.raise(
                    conn,
                    dialect,
                    AlertKind::FactorAdded,
                    &user,
                    reason,
                    cause,
                    a.at,
                )
                .await
            }
            FactorEvent::Removed(r) => {
                let reason = format!("factor {} removed", stored.aggregate_id);
                let cause = vec![event_ref(stored)];
                self.raise(
                    conn,
                    dialect,
                    AlertKind::FactorRemoved,
                    &user,
                    reason,
                    cause,
                    r.at,
                )
                .await
            }
            _ => Ok(()),
        }
    }

    async fn on_user(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        batch: &mut Batch,
        stored: &StoredEvent,
        event: UserEvent,
    ) -> Result<(), Error> {
        let user = stored.aggregate_id.clone();
        match event {
            // Factor-check failures are counted from the factor's own event.
            UserEvent::FailedAttempt(f) if f.reason == UserFailureReason::WrongRecoveryCode => {
                self.on_failure(conn, dialect, batch, stored, &user, f.at)
                    .await
            }
            UserEvent::LockedOut(l) => {
                let reason = format!(
                    "second factor locked after {} consecutive failures; an administrator must unlock it",
                    l.consecutive_failures
                );
                let cause = vec![event_ref(stored)];
                self.raise(
                    conn,
                    dialect,
                    AlertKind::UserLocked,
                    &user,
                    reason,
                    cause,
                    l.at,
                )
                .await
            }
            // A burst of wrong passwords: the throttle's run is the incident, raised once.
            UserEvent::LoginThrottled(t) => {
                let reason = format!(
                    "password guessing: login throttled until {} (run {})",
                    t.until.format("%Y-%m-%dT%H:%M:%SZ"),
                    t.runs
                );
                let cause = vec![event_ref(stored)];
                self.raise(
                    conn,
                    dialect,
                    AlertKind::LoginThrottled,
                    &user,
                    reason,
                    cause,
                    t.at,
                )
                .await
            }
            UserEvent::RecoveryUsed(r) => {
                let reason = format!("recovery code used; {} left", r.remaining);
                let cause = vec![event_ref(stored)];
                self.raise(
                    conn,
                    dialect,
                    AlertKind::RecoveryCodeUsed,
                    &user,
                    reason,
                    cause,
                    r.at,
                )
                .await
            }
            // A trusted device skips the second factor from now on: the user hears of it, so a
            // trust a stolen session asked for does not go unnoticed. The label is the user
            // agent's; control characters are dropped before it goes into a mail.
            UserEvent::DeviceTrusted(d) => {
                let label: String = d
                    .label
                    .as_deref()
                    .unwrap_or("an unnamed device")
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect();
                let reason = format!(
                    "a device ({label}) was trusted to skip the second factor until {}",
                    d.expires_at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                let cause = vec![event_ref(stored)];
                self.raise(
                    conn,
                    dialect,
                    AlertKind::DeviceTrusted,
                    &user,
                    reason,
                    cause,
                    d.at,
                )
                .await
            }
            UserEvent::SmsBudgetThresholdCrossed(c) => {
                let reason = format!(
                    "{} of the {} text messages allowed this hour are spent (80%); the window \
                     ends at {}. Many codes to many numbers may be SMS pumping",
                    c.sent,
                    c.budget,
                    c.window_ends_at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                let cause = vec![event_ref(stored)];
                self.raise(
                    conn,
                    dialect,
                    AlertKind::SmsBudgetWarning,
                    &user,
                    reason,
                    cause,
                    c.at,
                )
                .await
            }
            // The first set comes with the first factor (whose activation raised its own).
            UserEvent::RecoveryCodesGenerated(g) if g.generation > 1 => {
                let reason = format!(
                    "recovery codes replaced (set {}); the previous ones no longer work",
                    g.generation
                );
                let cause = vec![event_ref(stored)];
                self.raise(
                    conn,
                    dialect,
                    AlertKind::RecoveryCodesRegenerated,
                    &user,
                    reason,
                    cause,
                    g.at,
                )
                .await
            }
            _ => Ok(()),
        }
    }

    async fn on_failure(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        batch: &mut Batch,
        stored: &StoredEvent,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        batch.failures.push(Failure {
            key: (
                stored.aggregate_type.clone(),
                stored.aggregate_id.clone(),
                stored.sequence,
            ),
            event_type: stored.event_type.clone(),
            user: user.to_string(),
            at: ts(at),
        });
        let start = self.rule.window_start(at);
        batch
            .prune
            .entry(user.to_string())
            .and_modify(|s| *s = (*s).min(start))
            .or_insert(start);
        let last = batch.last_alert(conn, user).await?;
        // Inside the window of the last alert no count can fire: do not read the window. Under
        // a sustained attack it holds every failure of the last window, and reading it for
        // each new failure made the reactor quadratic (100k failures: hours; SQLite writers
        // timed out behind its transactions).
        if !self.rule.fires(usize::MAX, at, last) {
            return Ok(());
        }
        let recent = batch.window(conn, user, start, at).await?;
        if !self.rule.fires(recent.len(), at, last) {
            return Ok(());
        }
        let reason = format!(
            "{} failed proofs of possession within {} s",
            recent.len(),
            self.rule.window.num_seconds()
        );
        let cause = recent.into_iter().map(FailureRow::into_ref).collect();
        let raised = self
            .raise_once(
                conn,
                dialect,
                AlertKind::RepeatedFailures,
                user,
                reason,
                cause,
                at,
            )
            .await?;
        if raised {
            // As `MAX(raised_at)` would read it back.
            let shown = parse_ts(&ts(at));
            let last = batch.last_alert.entry(user.to_string()).or_default();
            if shown > *last {
                *last = shown;
            }
        }
        Ok(())
    }

    /// [`AlertReactor::raise_once`], for callers that need not know whether it raised.
    #[allow(clippy::too_many_arguments)]
    async fn raise(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        kind: AlertKind,
        user: &str,
        reason: String,
        caused_by: Vec<EventRef>,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.raise_once(conn, dialect, kind, user, reason, caused_by, at)
            .await
            .map(|_| ())
    }

    /// Appends `SecurityAlertRaised` to the log, shows it in `security_alerts_v1` and queues
    /// its deliveries. The last element of `caused_by` is the trigger the id derives from;
    /// a repeat of the same trigger inserts nothing anywhere. Whether it raised the alert now.
    #[allow(clippy::too_many_arguments)]
    async fn raise_once(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        kind: AlertKind,
        user: &str,
        reason: String,
        caused_by: Vec<EventRef>,
        at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let (Some(trigger), Some(user_id)) = (caused_by.last(), UserId::parse(user)) else {
            return Ok(false);
        };
        let id = alert_id(kind, trigger);
        let raised = SecurityAlertRaised {
            alert_id: id,
            user_id,
            kind,
            reason: reason.clone(),
            caused_by: caused_by.clone(),
            at,
        };
        let payload = serde_json::to_string(&AlertEvent::SecurityAlertRaised(raised))
            .map_err(|e| Error::Db(sqlx::Error::Encode(Box::new(e))))?;
        // The same metadata as every command's: who, which command, what caused it (here the
        // event that tipped the rule, so an auditor can follow the chain back).
        let causation = format!(
            "{}/{}/{}",
            trigger.aggregate_type, trigger.aggregate_id, trigger.sequence
        );
        let metadata = json!({
            "actor": REACTOR_ACTOR,
            "command": "RaiseSecurityAlert",
            "causation_id": causation,
        })
        .to_string();
        let id_text = id.to_string();
        // The id is derived from the trigger, so a second node (or a replay after a checkpoint
        // reset) that raises the same alert finds its row taken and raises nothing.
        let row = NewEvent {
            aggregate_type: "Alert",
            aggregate_id: &id_text,
            sequence: 1,
            event_type: "SecurityAlertRaised",
            event_version: "1.0",
            payload,
            metadata,
        };
        let inserted = match append(&mut *conn, dialect, &[row], Conflict::Skip).await {
            Ok(n) => n,
            Err(AppendError::Db(e)) => return Err(Error::Db(e)),
            Err(AppendError::Conflict) => 0,
        };
        if inserted == 0 {
            return Ok(false);
        }
        let caused_by = serde_json::to_string(&caused_by)
            .map_err(|e| Error::Db(sqlx::Error::Encode(Box::new(e))))?;
        sqlx::query(
            "INSERT INTO security_alerts_v1 (id, user_id, kind, reason, caused_by, raised_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(user)
        .bind(kind.as_str())
        .bind(reason)
        .bind(caused_by)
        .bind(ts(at))
        .execute(&mut *conn)
        .await?;
        let channels = self
            .channels
            .iter()
            .filter(|c| kind.notifies_user() || **c != "email");
        for channel in channels {
            sqlx::query(
                "INSERT INTO alert_deliveries (alert_id, channel, next_attempt_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id.to_string())
            .bind(*channel)
            .bind(ts(Utc::now()))
            .execute(&mut *conn)
            .await?;
        }
        Ok(true)
    }
}

async fn on_alert(
    conn: &mut AnyConnection,
    stored: &StoredEvent,
    event: AlertEvent,
) -> Result<(), Error> {
    match event {
        AlertEvent::SecurityAlertAcknowledged(a) => {
            sqlx::query("UPDATE security_alerts_v1 SET acknowledged_at = $1, acknowledged_by = $2 WHERE id = $3")
                .bind(ts(a.at))
                .bind(a.by)
                .bind(&stored.aggregate_id)
                .execute(&mut *conn)
                .await?;
        }
        // The user's own "seen": `acknowledged_at` (the security team's) stays as it is.
        AlertEvent::SecurityAlertSeenByUser(a) => {
            sqlx::query("UPDATE security_alerts_v1 SET seen_by_user_at = $1 WHERE id = $2")
                .bind(ts(a.at))
                .bind(&stored.aggregate_id)
                .execute(&mut *conn)
                .await?;
        }
        AlertEvent::SecurityAlertRaised(_) => {}
    }
    Ok(())
}

#[derive(Clone, FromRow)]
struct FailureRow {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    at: String,
}

impl FailureRow {
    fn key(&self) -> (String, String, i64) {
        (
            self.aggregate_type.clone(),
            self.aggregate_id.clone(),
            self.sequence,
        )
    }

    fn into_ref(self) -> EventRef {
        EventRef {
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
        }
    }
}

/// A row of `security_alerts_v1`.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct AlertRow {
    /// Alert id.
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// `REPEATED_FAILURES`, …
    pub kind: String,
    /// For people.
    pub reason: String,
    /// JSON array of event references.
    pub caused_by: String,
    /// RFC 3339.
    pub raised_at: String,
    /// RFC 3339.
    pub acknowledged_at: Option<String>,
    /// RFC 3339: when the alert's user first marked it seen.
    pub seen_by_user_at: Option<String>,
}

const ALERT_COLUMNS: &str =
    "id, user_id, kind, reason, caused_by, raised_at, acknowledged_at, seen_by_user_at";

impl crate::read_model::Queries {
    /// One alert.
    ///
    /// # Errors
    /// Database errors.
    pub async fn alert(&self, id: &str) -> Result<Option<AlertRow>, Error> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM security_alerts_v1 WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Alerts (of one user, if given) after the `(raised_at, id)` cursor, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn alerts_after(
        &self,
        user: Option<&str>,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<AlertRow>, Error> {
        let (at, id) = after.unwrap_or(("", ""));
        Ok(sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM security_alerts_v1 \
             WHERE ($1 = '' OR user_id = $1) AND (raised_at > $2 OR (raised_at = $2 AND id > $3)) \
             ORDER BY raised_at, id LIMIT $4"
        ))
        .bind(user.unwrap_or(""))
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// How many alerts there are (of one user, if given).
    ///
    /// # Errors
    /// Database errors.
    pub async fn alert_count(&self, user: Option<&str>) -> Result<i64, Error> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM security_alerts_v1 WHERE ($1 = '' OR user_id = $1)",
        )
        .bind(user.unwrap_or(""))
        .fetch_one(self.pool())
        .await?)
    }
}

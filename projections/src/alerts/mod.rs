//! The security-alert reactor: reads failed attempts, lockouts, recovery-code uses and every
//! change to how a user authenticates (factor activated or removed, recovery codes replaced, a
//! device trusted) from the log through a durable checkpoint, raises `SecurityAlertRaised` once per incident and queues
//! its deliveries — all in the transaction that advances the checkpoint, so a crash or restart
//! neither loses nor repeats an alert. Alert ids are deterministic (`tessera_domain::alert`).

pub mod rules;

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
        match event.aggregate_type.as_str() {
            "Factor" => self.on_factor(conn, dialect, event, event.decode()?).await,
            "User" => self.on_user(conn, dialect, event, event.decode()?).await,
            "Alert" => on_alert(conn, event, event.decode()?).await,
            _ => Ok(()),
        }
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

async fn owner_of(conn: &mut AnyConnection, factor_id: &str) -> Result<Option<String>, Error> {
    let row = sqlx::query("SELECT user_id FROM alert_factor_owners WHERE factor_id = $1")
        .bind(factor_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get("user_id")?),
        None => None,
    })
}

impl AlertReactor {
    async fn on_factor(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        stored: &StoredEvent,
        event: FactorEvent,
    ) -> Result<(), Error> {
        if let FactorEvent::Enrolled(e) = &event {
            sqlx::query(
                "INSERT INTO alert_factor_owners (factor_id, user_id) VALUES ($1, $2) \
                 ON CONFLICT (factor_id) DO NOTHING",
            )
            .bind(&stored.aggregate_id)
            .bind(e.user_id.to_string())
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        let Some(user) = owner_of(conn, &stored.aggregate_id).await? else {
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
                self.on_failure(conn, dialect, stored, &user, f.at).await
            }
            // Attempts refused unchecked while locked are not new guesses.
            FactorEvent::FailedAttempt(f) if f.reason != FailureReason::Locked => {
                self.on_failure(conn, dialect, stored, &user, f.at).await
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
        stored: &StoredEvent,
        event: UserEvent,
    ) -> Result<(), Error> {
        let user = stored.aggregate_id.clone();
        match event {
            // Factor-check failures are counted from the factor's own event.
            UserEvent::FailedAttempt(f) if f.reason == UserFailureReason::WrongRecoveryCode => {
                self.on_failure(conn, dialect, stored, &user, f.at).await
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
        stored: &StoredEvent,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO alert_failures (aggregate_type, aggregate_id, sequence, event_type, user_id, at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&stored.aggregate_type)
        .bind(&stored.aggregate_id)
        .bind(stored.sequence)
        .bind(&stored.event_type)
        .bind(user)
        .bind(ts(at))
        .execute(&mut *conn)
        .await?;
        let start = ts(self.rule.window_start(at));
        sqlx::query("DELETE FROM alert_failures WHERE user_id = $1 AND at <= $2")
            .bind(user)
            .bind(&start)
            .execute(&mut *conn)
            .await?;
        let last: Option<String> = sqlx::query(
            "SELECT MAX(raised_at) AS last FROM security_alerts_v1 WHERE user_id = $1 AND kind = $2",
        )
        .bind(user)
        .bind(AlertKind::RepeatedFailures.as_str())
        .fetch_one(&mut *conn)
        .await?
        .try_get("last")?;
        let last = last.as_deref().and_then(parse_ts);
        // Inside the window of the last alert no count can fire: do not read the window. Under
        // a sustained attack it holds every failure of the last window, and reading it for
        // each new failure made the reactor quadratic (100k failures: hours; SQLite writers
        // timed out behind its transactions).
        if !self.rule.fires(usize::MAX, at, last) {
            return Ok(());
        }
        let recent: Vec<FailureRow> = sqlx::query_as(
            "SELECT aggregate_type, aggregate_id, sequence, event_type FROM alert_failures \
             WHERE user_id = $1 AND at > $2 AND at <= $3 ORDER BY at, aggregate_id, sequence",
        )
        .bind(user)
        .bind(&start)
        .bind(ts(at))
        .fetch_all(&mut *conn)
        .await?;
        if !self.rule.fires(recent.len(), at, last) {
            return Ok(());
        }
        let reason = format!(
            "{} failed proofs of possession within {} s",
            recent.len(),
            self.rule.window.num_seconds()
        );
        let cause = recent.into_iter().map(FailureRow::into_ref).collect();
        self.raise(
            conn,
            dialect,
            AlertKind::RepeatedFailures,
            user,
            reason,
            cause,
            at,
        )
        .await
    }

    /// Appends `SecurityAlertRaised` to the log, shows it in `security_alerts_v1` and queues
    /// its deliveries. The last element of `caused_by` is the trigger the id derives from;
    /// a repeat of the same trigger inserts nothing anywhere.
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
        let (Some(trigger), Some(user_id)) = (caused_by.last(), UserId::parse(user)) else {
            return Ok(());
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
            return Ok(());
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
        Ok(())
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

#[derive(FromRow)]
struct FailureRow {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
}

impl FailureRow {
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

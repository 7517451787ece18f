//! Recorded histories and checkers run on the whole of them afterwards, as Jepsen's are.
//!
//! Each operation is recorded with the process (node) that served it, its arguments, when it
//! was invoked and when it completed (one monotonic clock for every node of a test) and its
//! answer: [`Outcome::Ok`], [`Outcome::Fail`] (a definite refusal), or [`Outcome::Info`] (no
//! answer came: it may or may not have taken effect). Every request carries the operation's
//! id as its `x-request-id`, which the server records as the `client_request_id` of the
//! events it writes: so the checkers tie each answer to its effects in the event log read
//! back, and check answers, log and real-time order together. A checker returns every
//! violation it finds (empty: the history is valid); its own tests below feed it histories
//! that break each invariant.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::{ADMIN_KEY, TestServer};

/// What became of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It was refused (a definite answer: it did not succeed).
    Fail,
    /// No answer: its effect is unknown.
    Info,
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Op {
    /// Its id, sent as `x-request-id`; its events carry it as `client_request_id`.
    pub id: String,
    /// The process (node) that served it.
    pub process: usize,
    /// What it was (`verify`, …).
    pub op: String,
    /// Its arguments.
    pub args: Value,
    /// When it was invoked, since the history began.
    pub invoked: Duration,
    /// When its answer came (or the request gave up), since the history began.
    pub completed: Duration,
    /// Ok, fail or info.
    pub outcome: Outcome,
    /// The answer: the mutation's payload, the first error's `extensions`, or for `Info` the
    /// transport error.
    pub answer: Value,
}

impl Op {
    /// `factorResult` of the answer (empty for an error).
    pub fn result(&self) -> &str {
        self.answer["factorResult"].as_str().unwrap_or("")
    }

    /// `factor.failedAttempts` of the answer, if it shows one.
    pub fn failed_attempts(&self) -> Option<i64> {
        self.answer["factor"]["failedAttempts"].as_i64()
    }

    /// Whether it completed before `other` was invoked: then it must appear before it.
    pub fn precedes(&self, other: &Op) -> bool {
        self.completed < other.invoked
    }

    /// A refusal for losing a race (`CONFLICT`): definite, and without any effect.
    fn lost_race(&self) -> bool {
        self.outcome == Outcome::Fail && self.answer["code"] == "CONFLICT"
    }
}

/// A history being recorded by concurrent clients.
pub struct History {
    origin: Instant,
    prefix: String,
    next: AtomicUsize,
    ops: Mutex<Vec<Op>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history; its clock starts now.
    pub fn new() -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string();
        Self {
            origin: Instant::now(),
            prefix: format!("h{}", &run[..8]),
            next: AtomicUsize::new(0),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// The operations recorded so far, in order of completion.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }

    /// `verifyFactor(factor, code)` on `node` as `process`, recorded.
    pub async fn verify(&self, process: usize, node: &TestServer, factor: &str, code: &str) -> Op {
        self.gql(
            process,
            node,
            "verify",
            "mutation($f: ID!, $c: String!) { verifyFactor(input: {factorId: $f, passCode: $c}) \
             { factorResult factor { status failedAttempts } } }",
            json!({ "f": factor, "c": code }),
            "verifyFactor",
        )
        .await
    }

    /// A GraphQL request with the admin key on `node` as `process`, recorded. `Ok` when
    /// `data.<field>` comes back and (for a proof) its `factorResult` is `SUCCESS`; `Fail` for
    /// another result or an error; `Info` when no JSON answer came.
    pub async fn gql(
        &self,
        process: usize,
        node: &TestServer,
        op: &str,
        query: &str,
        variables: Value,
        field: &str,
    ) -> Op {
        let id = format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::SeqCst)
        );
        let invoked = self.origin.elapsed();
        let sent = node
            .http
            .post(format!("{}/graphql", node.base))
            .bearer_auth(ADMIN_KEY)
            .header("x-request-id", &id)
            .timeout(Duration::from_secs(120))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await;
        let body = match sent {
            Ok(response) => response.json::<Value>().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let completed = self.origin.elapsed();
        let (outcome, answer) = match body {
            Err(e) => (Outcome::Info, json!(e)),
            Ok(body) if body.get("errors").is_some() => {
                (Outcome::Fail, body["errors"][0]["extensions"].clone())
            }
            Ok(body) => {
                let payload = body["data"][field].clone();
                let ok = payload["factorResult"]
                    .as_str()
                    .is_none_or(|r| r == "SUCCESS");
                let outcome = if ok { Outcome::Ok } else { Outcome::Fail };
                (outcome, payload)
            }
        };
        let op = Op {
            id,
            process,
            op: op.into(),
            args: variables,
            invoked,
            completed,
            outcome,
            answer,
        };
        self.ops.lock().expect("history lock").push(op.clone());
        op
    }
}

/// Panics with every violation and the whole history, if there is any violation.
pub fn assert_valid(checker: &str, violations: &[String], ops: &[Op]) {
    if violations.is_empty() {
        return;
    }
    let mut text = format!("{checker}: {} violation(s)\n", violations.len());
    for v in violations {
        text.push_str(&format!("  - {v}\n"));
    }
    text.push_str("history (process, id, invoked ms, completed ms, outcome, answer):\n");
    let mut sorted: Vec<&Op> = ops.iter().collect();
    sorted.sort_by_key(|o| o.invoked);
    for o in sorted {
        text.push_str(&format!(
            "  {} {} {:.1} {:.1} {:?} {}\n",
            o.process,
            o.id,
            o.invoked.as_secs_f64() * 1e3,
            o.completed.as_secs_f64() * 1e3,
            o.outcome,
            o.answer
        ));
    }
    panic!("{text}");
}

fn sequence(event: &Value) -> i64 {
    event["sequence"].as_i64().unwrap_or(-1)
}

fn event_type(event: &Value) -> &str {
    event["eventType"].as_str().unwrap_or("")
}

/// `payload.<eventType>` of an event node.
fn body(event: &Value) -> &Value {
    &event["payload"][event_type(event)]
}

fn at(value: &Value) -> Option<DateTime<Utc>> {
    value["at"].as_str().and_then(|t| t.parse().ok())
}

/// The events of stream `stream` that the history's operations wrote, by operation id, each
/// operation's in log order.
fn effects<'a>(ops: &[Op], log: &'a [Value], stream: &str) -> HashMap<String, Vec<&'a Value>> {
    let ids: HashSet<&str> = ops.iter().map(|o| o.id.as_str()).collect();
    let mut by_op: HashMap<String, Vec<&Value>> = HashMap::new();
    for event in log.iter().filter(|e| e["aggregateId"] == stream) {
        match event["metadata"]["client_request_id"].as_str() {
            Some(id) if ids.contains(id) => by_op.entry(id.to_string()).or_default().push(event),
            _ => {}
        }
    }
    for events in by_op.values_mut() {
        events.sort_by_key(|e| sequence(e));
    }
    by_op
}

/// Acknowledged operations are in the log and refusals for a lost race are not; log order
/// respects real time: an operation that completed before another was invoked has its
/// events before the other's.
fn check_effects(ops: &[Op], effects: &HashMap<String, Vec<&Value>>, violations: &mut Vec<String>) {
    for o in ops {
        let wrote = effects.get(&o.id).is_some_and(|e| !e.is_empty());
        if o.lost_race() && wrote {
            violations.push(format!(
                "{} was refused as a lost race, yet the log holds its events",
                o.id
            ));
        }
        if o.outcome != Outcome::Info && !o.lost_race() && !wrote {
            violations.push(format!(
                "{} was answered ({}) but the log holds no event of it",
                o.id, o.answer
            ));
        }
    }
    for a in ops {
        for b in ops {
            let (Some(ea), Some(eb)) = (effects.get(&a.id), effects.get(&b.id)) else {
                continue;
            };
            if a.precedes(b) && sequence(ea[0]) > sequence(eb[0]) {
                violations.push(format!(
                    "{} completed before {} was invoked, but its event (sequence {}) is after \
                     the other's ({}) in the log",
                    a.id,
                    b.id,
                    sequence(ea[0]),
                    sequence(eb[0])
                ));
            }
        }
    }
}

/// Invariant 1, one code verified by many at once: exactly one `SUCCESS`, and the log holds
/// exactly one `Verified` for it, that operation's; every other answer is a typed refusal
/// (`PASSCODE_REPLAYED` with its `FailedAttempt` `REPLAYED` in the log, or a lost race with
/// nothing in the log); no refusal that says "already used" completed before the success was
/// invoked, and none is before the `Verified` in the log.
pub fn check_single_use(ops: &[Op], log: &[Value], factor: &str) -> Vec<String> {
    let mut v = Vec::new();
    let effects = effects(ops, log, factor);
    check_effects(ops, &effects, &mut v);
    let successes: Vec<&Op> = ops.iter().filter(|o| o.outcome == Outcome::Ok).collect();
    if successes.len() > 1 {
        v.push(format!(
            "{} SUCCESS answers for one code: {:?}",
            successes.len(),
            successes.iter().map(|o| &o.id).collect::<Vec<_>>()
        ));
    }
    for o in ops.iter().filter(|o| o.outcome == Outcome::Fail) {
        if o.result() != "PASSCODE_REPLAYED" && !o.lost_race() {
            v.push(format!(
                "{} answered {}: not a typed refusal (PASSCODE_REPLAYED or a lost race)",
                o.id, o.answer
            ));
        }
    }
    let verified: Vec<&Value> = effects
        .values()
        .flatten()
        .copied()
        .filter(|e| event_type(e) == "Verified")
        .collect();
    if verified.len() != 1 {
        v.push(format!(
            "the log holds {} Verified for the code, not exactly one",
            verified.len()
        ));
    }
    if successes.is_empty() && !ops.iter().any(|o| o.outcome == Outcome::Info) {
        v.push("no operation succeeded and none is unknown".into());
    }
    for o in ops {
        let Some(events) = effects.get(&o.id) else {
            continue;
        };
        let first = events[0];
        let agrees = match (o.outcome, o.result()) {
            (Outcome::Ok, _) => event_type(first) == "Verified",
            (Outcome::Fail, "PASSCODE_REPLAYED") => {
                event_type(first) == "FailedAttempt" && body(first)["reason"] == "REPLAYED"
            }
            _ => true,
        };
        if !agrees || events.len() != 1 {
            v.push(format!(
                "{} answered {} but wrote {:?}",
                o.id,
                o.answer,
                events.iter().map(|e| event_type(e)).collect::<Vec<_>>()
            ));
        }
    }
    // The winner is the operation whose event is the `Verified`, answered or not.
    let winner = verified.first().and_then(|w| {
        let id = w["metadata"]["client_request_id"].as_str()?;
        ops.iter().find(|o| o.id == id).map(|o| (o, sequence(w)))
    });
    if let Some((winner, verified_at)) = winner {
        for o in ops.iter().filter(|o| o.result() == "PASSCODE_REPLAYED") {
            if o.completed < winner.invoked {
                v.push(format!(
                    "{} answered PASSCODE_REPLAYED at {:?}, before the success {} was invoked \
                     at {:?}",
                    o.id, o.completed, winner.id, winner.invoked
                ));
            }
            let replay_at = effects.get(&o.id).map(|e| sequence(e[0]));
            if let Some(replay_at) = replay_at.filter(|s| *s < verified_at) {
                v.push(format!(
                    "{}'s replay (sequence {replay_at}) is before the Verified ({verified_at}) \
                     in the log",
                    o.id
                ));
            }
        }
    }
    v
}

/// Invariant 2, wrong codes from many at once: exactly `threshold` answers `REJECTED`, whose
/// `failedAttempts` are 1..=threshold once each (and grow in real-time order); the one that
/// reached the threshold shows the factor locked; every other answer is `LOCKED_OUT` (or a
/// lost race), none completed before the locking one was invoked. The log agrees operation by
/// operation: each `REJECTED` wrote a counted `WRONG_CODE` failure with its count, whose counts
/// run 1..=threshold in log order; the locking one wrote the one `LockedOut` right after it;
/// each `LOCKED_OUT` wrote an uncounted `LOCKED` failure after the `LockedOut`.
pub fn check_lockout(ops: &[Op], log: &[Value], factor: &str, threshold: i64) -> Vec<String> {
    let mut v = Vec::new();
    let effects = effects(ops, log, factor);
    check_effects(ops, &effects, &mut v);
    let rejected: Vec<&Op> = ops.iter().filter(|o| o.result() == "REJECTED").collect();
    let locked: Vec<&Op> = ops.iter().filter(|o| o.result() == "LOCKED_OUT").collect();
    for o in ops {
        let typed = matches!(o.result(), "REJECTED" | "LOCKED_OUT") || o.lost_race();
        if o.outcome != Outcome::Info && !typed {
            v.push(format!(
                "{} answered {}: neither REJECTED nor LOCKED_OUT",
                o.id, o.answer
            ));
        }
    }
    if rejected.len() as i64 != threshold {
        v.push(format!(
            "{} answers REJECTED: exactly {threshold} wrong codes are counted",
            rejected.len()
        ));
    }
    let mut counts: Vec<i64> = rejected
        .iter()
        .map(|o| o.failed_attempts().unwrap_or(0))
        .collect();
    counts.sort_unstable();
    if counts != (1..=threshold).collect::<Vec<_>>() {
        v.push(format!(
            "REJECTED answers show failedAttempts {counts:?}, not 1..={threshold} once each"
        ));
    }
    for a in &rejected {
        for b in &rejected {
            if a.precedes(b) && a.failed_attempts() >= b.failed_attempts() {
                v.push(format!(
                    "{} (failedAttempts {:?}) completed before {} was invoked, which shows {:?}",
                    a.id,
                    a.failed_attempts(),
                    b.id,
                    b.failed_attempts()
                ));
            }
        }
    }
    let locker = rejected
        .iter()
        .find(|o| o.failed_attempts() == Some(threshold));
    if let Some(locker) = locker {
        if locker.answer["factor"]["status"] != "LOCKED_OUT" {
            v.push(format!(
                "{} reached the threshold but shows the factor {}",
                locker.id, locker.answer["factor"]["status"]
            ));
        }
        for o in &locked {
            if o.completed < locker.invoked {
                v.push(format!(
                    "{} answered LOCKED_OUT before the locking {} was invoked",
                    o.id, locker.id
                ));
            }
        }
    }
    // Operation by operation: the answer and what it wrote agree.
    let mut lock_sequence = None;
    for o in ops {
        let Some(events) = effects.get(&o.id) else {
            continue;
        };
        let first = body(events[0]);
        let failed = event_type(events[0]) == "FailedAttempt";
        match o.result() {
            "REJECTED" => {
                if !failed
                    || first["reason"] != "WRONG_CODE"
                    || first["counted"] != true
                    || first["consecutive_failures"].as_i64() != o.failed_attempts()
                {
                    v.push(format!(
                        "{} answered {} but wrote {}",
                        o.id, o.answer, events[0]["payload"]
                    ));
                }
                let locks = o.failed_attempts() == Some(threshold);
                let wrote_lock = events.get(1).is_some_and(|e| {
                    event_type(e) == "LockedOut" && sequence(e) == sequence(events[0]) + 1
                });
                if locks && wrote_lock {
                    lock_sequence = Some(sequence(events[1]));
                }
                let expected = if locks { 2 } else { 1 };
                if locks != wrote_lock || events.len() != expected {
                    v.push(format!(
                        "{} (failedAttempts {:?}) wrote {:?}",
                        o.id,
                        o.failed_attempts(),
                        events.iter().map(|e| event_type(e)).collect::<Vec<_>>()
                    ));
                }
            }
            "LOCKED_OUT"
                if !failed
                    || first["reason"] != "LOCKED"
                    || first["counted"] != false
                    || events.len() != 1 =>
            {
                v.push(format!(
                    "{} answered LOCKED_OUT but wrote {:?}",
                    o.id,
                    events.iter().map(|e| &e["payload"]).collect::<Vec<_>>()
                ));
            }
            _ => {}
        }
    }
    // The log on its own, in its order.
    let mut written: Vec<&Value> = effects.values().flatten().copied().collect();
    written.sort_by_key(|e| sequence(e));
    let counted: Vec<i64> = written
        .iter()
        .filter(|e| event_type(e) == "FailedAttempt" && body(e)["reason"] == "WRONG_CODE")
        .map(|e| body(e)["consecutive_failures"].as_i64().unwrap_or(0))
        .collect();
    if counted != (1..=threshold).collect::<Vec<_>>() {
        v.push(format!(
            "the log's counted failures, in log order, are {counted:?}: not 1..={threshold}"
        ));
    }
    let lockouts = written
        .iter()
        .filter(|e| event_type(e) == "LockedOut")
        .count();
    if lockouts != 1 {
        v.push(format!("the log holds {lockouts} LockedOut, not one"));
    }
    if let Some(lock) = lock_sequence {
        for e in &written {
            if body(e)["reason"] == "LOCKED" && sequence(e) < lock {
                v.push(format!(
                    "a LOCKED failure (sequence {}) is before the LockedOut ({lock})",
                    sequence(e)
                ));
            }
        }
    }
    v
}

/// Invariant 3, one alert per incident. The incidents are computed from the log itself, by
/// the rule's definition: for each user, in log order, a failed proof of possession (a
/// factor's `FailedAttempt`, not `LOCKED`) is an incident when at least `threshold` of the
/// user's failures fall in the `window` ending at it and no incident of the user was less
/// than `window` earlier. The log must hold exactly one `REPEATED_FAILURES` alert per
/// incident, triggered by it (the last of its `caused_by`); every event an alert names is a
/// failure of that user actually in the log, inside the alert's window; each alert is its
/// stream's only `SecurityAlertRaised`; `securityAlerts` (`api_alerts`: nodes with `id`,
/// `kind`, `userId`) shows exactly these alerts.
pub fn check_alerts(
    log: &[Value],
    api_alerts: &[Value],
    threshold: usize,
    window: TimeDelta,
) -> Vec<String> {
    let mut v = Vec::new();
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for e in log.iter().filter(|e| event_type(e) == "Enrolled") {
        if let (Some(f), Some(u)) = (e["aggregateId"].as_str(), body(e)["user_id"].as_str()) {
            owner.insert(f, u);
        }
    }
    type Ref = (String, String, i64);
    let key = |e: &Value| -> Ref {
        (
            e["aggregateType"].as_str().unwrap_or("").to_string(),
            e["aggregateId"].as_str().unwrap_or("").to_string(),
            sequence(e),
        )
    };
    // Failures of each user in log order, and every failure by its reference.
    let mut failures: BTreeMap<&str, Vec<(Ref, DateTime<Utc>)>> = BTreeMap::new();
    let mut failure_of: HashMap<Ref, (&str, DateTime<Utc>)> = HashMap::new();
    for e in log.iter().filter(|e| {
        e["aggregateType"] == "Factor"
            && event_type(e) == "FailedAttempt"
            && body(e)["reason"] != "LOCKED"
    }) {
        let (Some(user), Some(when)) = (
            e["aggregateId"]
                .as_str()
                .and_then(|f| owner.get(f).copied()),
            at(body(e)),
        ) else {
            v.push(format!("failure {:?} has no owner or time", key(e)));
            continue;
        };
        failures.entry(user).or_default().push((key(e), when));
        failure_of.insert(key(e), (user, when));
    }
    let mut expected: BTreeMap<&str, Vec<Ref>> = BTreeMap::new();
    for (user, list) in &failures {
        let mut last: Option<DateTime<Utc>> = None;
        for (i, (r, when)) in list.iter().enumerate() {
            let in_window = list[..=i]
                .iter()
                .filter(|(_, t)| *t > *when - window && t <= when)
                .count();
            if in_window >= threshold.max(1) && last.is_none_or(|l| *when - l >= window) {
                expected.entry(*user).or_default().push(r.clone());
                last = Some(*when);
            }
        }
    }
    let mut raised: BTreeMap<String, Vec<Ref>> = BTreeMap::new();
    let mut raised_ids: HashMap<String, String> = HashMap::new();
    let mut per_stream: HashMap<&str, usize> = HashMap::new();
    for e in log
        .iter()
        .filter(|e| event_type(e) == "SecurityAlertRaised")
    {
        *per_stream
            .entry(e["aggregateId"].as_str().unwrap_or(""))
            .or_default() += 1;
        let alert = body(e);
        if alert["kind"] != "REPEATED_FAILURES" {
            continue;
        }
        let id = alert["alert_id"].as_str().unwrap_or("").to_string();
        let user = alert["user_id"].as_str().unwrap_or("").to_string();
        raised_ids.insert(id.clone(), user.clone());
        let causes = alert["caused_by"].as_array().cloned().unwrap_or_default();
        if causes.len() < threshold {
            v.push(format!(
                "alert {id} names {} failures, fewer than {threshold}",
                causes.len()
            ));
        }
        let when = at(alert);
        for c in &causes {
            let r: Ref = (
                c["aggregate_type"].as_str().unwrap_or("").to_string(),
                c["aggregate_id"].as_str().unwrap_or("").to_string(),
                c["sequence"].as_i64().unwrap_or(-1),
            );
            match failure_of.get(&r) {
                None => v.push(format!("alert {id} names {r:?}, no failure in the log")),
                Some((u, t)) => {
                    if *u != user {
                        v.push(format!("alert {id} of {user} names a failure of {u}"));
                    }
                    if when.is_none_or(|w| *t <= w - window || *t > w) {
                        v.push(format!("alert {id} names {r:?}, outside its window"));
                    }
                }
            }
        }
        match causes.last() {
            Some(c) => raised.entry(user).or_default().push((
                c["aggregate_type"].as_str().unwrap_or("").to_string(),
                c["aggregate_id"].as_str().unwrap_or("").to_string(),
                c["sequence"].as_i64().unwrap_or(-1),
            )),
            None => v.push(format!("alert {id} names no failure")),
        }
    }
    for (stream, n) in per_stream {
        if n != 1 {
            v.push(format!(
                "alert stream {stream} holds {n} SecurityAlertRaised"
            ));
        }
    }
    let users: HashSet<&str> = expected
        .keys()
        .copied()
        .chain(raised.keys().map(String::as_str))
        .collect();
    for user in users {
        let want = expected.get(user).cloned().unwrap_or_default();
        let mut got = raised.get(user).cloned().unwrap_or_default();
        got.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        if got != want_sorted {
            v.push(format!(
                "user {user}: the log's failures make {} incident(s), triggered by {want:?}; \
                 the log holds {} REPEATED_FAILURES alert(s), triggered by {got:?}",
                want.len(),
                got.len()
            ));
        }
    }
    let mut shown: HashMap<String, String> = HashMap::new();
    for a in api_alerts
        .iter()
        .filter(|a| a["kind"] == "REPEATED_FAILURES")
    {
        let id = a["id"].as_str().unwrap_or("").to_string();
        let user = a["userId"].as_str().unwrap_or("").to_string();
        if shown.insert(id.clone(), user).is_some() {
            v.push(format!("securityAlerts shows {id} twice"));
        }
    }
    if shown != raised_ids {
        v.push(format!(
            "securityAlerts shows {} REPEATED_FAILURES alert(s), the log holds {}: {shown:?} vs \
             {raised_ids:?}",
            shown.len(),
            raised_ids.len()
        ));
    }
    v
}

/// Invariant 4: every stream's sequences are 1..=N, no gap, no repeat (`identities`:
/// `(aggregate type, aggregate id, sequence)` of every event, as the table holds them).
pub fn check_sequences(identities: &[(String, String, i64)]) -> Vec<String> {
    let mut streams: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    for (t, id, seq) in identities {
        streams.entry((t, id)).or_default().push(*seq);
    }
    let mut v = Vec::new();
    for ((t, id), mut seqs) in streams {
        seqs.sort_unstable();
        if seqs != (1..=seqs.len() as i64).collect::<Vec<_>>() {
            v.push(format!(
                "{t}/{id}: sequences {seqs:?}, not 1..={}",
                seqs.len()
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    //! The checkers can fail: each invariant broken once, and a valid history passes.

    use super::*;

    const F: &str = "factor-1";

    fn op(id: &str, invoked: u64, completed: u64, outcome: Outcome, answer: Value) -> Op {
        Op {
            id: id.into(),
            process: 0,
            op: "verify".into(),
            args: Value::Null,
            invoked: Duration::from_millis(invoked),
            completed: Duration::from_millis(completed),
            outcome,
            answer,
        }
    }

    fn result(r: &str) -> Value {
        json!({ "factorResult": r })
    }

    fn rejected(n: i64, status: &str) -> Value {
        json!({ "factorResult": "REJECTED", "factor": { "status": status, "failedAttempts": n } })
    }

    fn event(stream: &str, seq: i64, kind: &str, payload: Value, op: &str) -> Value {
        json!({
            "aggregateType": "Factor", "aggregateId": stream, "sequence": seq,
            "eventType": kind, "payload": { kind: payload },
            "metadata": { "client_request_id": op },
        })
    }

    fn replayed(seq: i64, op: &str) -> Value {
        event(F, seq, "FailedAttempt", json!({ "reason": "REPLAYED" }), op)
    }

    /// One success (a), two replays after it (b, c), one lost race (d).
    fn single_use() -> (Vec<Op>, Vec<Value>) {
        let ops = vec![
            op("a", 0, 10, Outcome::Ok, result("SUCCESS")),
            op("b", 1, 12, Outcome::Fail, result("PASSCODE_REPLAYED")),
            op("c", 11, 15, Outcome::Fail, result("PASSCODE_REPLAYED")),
            op("d", 2, 20, Outcome::Fail, json!({ "code": "CONFLICT" })),
        ];
        let log = vec![
            event(F, 3, "Verified", json!({}), "a"),
            replayed(4, "b"),
            replayed(5, "c"),
        ];
        (ops, log)
    }

    #[test]
    fn single_use_accepts_a_valid_history() {
        let (ops, log) = single_use();
        assert_eq!(check_single_use(&ops, &log, F), Vec::<String>::new());
    }

    #[test]
    fn single_use_reports_two_successes() {
        let (mut ops, mut log) = single_use();
        ops[2] = op("c", 11, 15, Outcome::Ok, result("SUCCESS"));
        log[2] = event(F, 5, "Verified", json!({}), "c");
        let v = check_single_use(&ops, &log, F);
        assert!(v.iter().any(|v| v.contains("2 SUCCESS answers")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("2 Verified")), "{v:?}");
    }

    #[test]
    fn single_use_reports_a_replay_answered_before_the_success_began() {
        let (mut ops, _) = single_use();
        ops[0] = op("a", 13, 14, Outcome::Ok, result("SUCCESS"));
        let log = vec![
            replayed(3, "b"),
            event(F, 4, "Verified", json!({}), "a"),
            replayed(5, "c"),
        ];
        let v = check_single_use(&ops, &log, F);
        assert!(v.iter().any(|v| v.contains("before the success")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("before the Verified")), "{v:?}");
    }

    #[test]
    fn single_use_reports_an_answer_the_log_does_not_hold() {
        let (ops, mut log) = single_use();
        log.remove(2);
        let v = check_single_use(&ops, &log, F);
        assert!(v.iter().any(|v| v.starts_with("c was answered")), "{v:?}");
        // And a lost race that wrote something anyway.
        let (ops, mut log) = single_use();
        log.push(replayed(6, "d"));
        let v = check_single_use(&ops, &log, F);
        assert!(v.iter().any(|v| v.contains("lost race, yet")), "{v:?}");
    }

    #[test]
    fn single_use_reports_an_untyped_refusal_and_a_log_out_of_real_time_order() {
        let (mut ops, mut log) = single_use();
        ops[3] = op("d", 2, 20, Outcome::Fail, json!({ "code": "INTERNAL" }));
        log.swap(1, 2);
        log[1]["sequence"] = json!(4);
        log[2]["sequence"] = json!(5);
        // b now completes before c is invoked, yet c's replay is before b's in the log.
        ops[1] = op("b", 1, 10, Outcome::Fail, result("PASSCODE_REPLAYED"));
        let v = check_single_use(&ops, &log, F);
        assert!(v.iter().any(|v| v.contains("not a typed refusal")), "{v:?}");
        assert!(
            v.iter()
                .any(|v| v.starts_with("b completed before c was invoked")),
            "{v:?}"
        );
    }

    fn wrong(seq: i64, n: i64, op: &str) -> Value {
        event(
            F,
            seq,
            "FailedAttempt",
            json!({ "reason": "WRONG_CODE", "counted": true, "consecutive_failures": n }),
            op,
        )
    }

    fn refused(seq: i64, op: &str) -> Value {
        event(
            F,
            seq,
            "FailedAttempt",
            json!({ "reason": "LOCKED", "counted": false, "consecutive_failures": 3 }),
            op,
        )
    }

    /// Threshold 3: a, b, c counted (c locks), d refused as locked.
    fn lockout() -> (Vec<Op>, Vec<Value>) {
        let ops = vec![
            op("a", 0, 5, Outcome::Fail, rejected(1, "ACTIVE")),
            op("b", 1, 8, Outcome::Fail, rejected(2, "ACTIVE")),
            op("c", 2, 9, Outcome::Fail, rejected(3, "LOCKED_OUT")),
            op("d", 3, 12, Outcome::Fail, result("LOCKED_OUT")),
        ];
        let log = vec![
            wrong(3, 1, "a"),
            wrong(4, 2, "b"),
            wrong(5, 3, "c"),
            event(F, 6, "LockedOut", json!({ "consecutive_failures": 3 }), "c"),
            refused(7, "d"),
        ];
        (ops, log)
    }

    #[test]
    fn lockout_accepts_a_valid_history() {
        let (ops, log) = lockout();
        assert_eq!(check_lockout(&ops, &log, F, 3), Vec::<String>::new());
    }

    #[test]
    fn lockout_reports_an_extra_count() {
        let (mut ops, mut log) = lockout();
        ops[3] = op("d", 3, 12, Outcome::Fail, rejected(4, "LOCKED_OUT"));
        log[4] = wrong(7, 4, "d");
        let v = check_lockout(&ops, &log, F, 3);
        assert!(v.iter().any(|v| v.contains("4 answers REJECTED")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("[1, 2, 3, 4]")), "{v:?}");
    }

    #[test]
    fn lockout_reports_a_duplicate_count_and_a_missing_lock() {
        let (mut ops, mut log) = lockout();
        ops[1] = op("b", 1, 8, Outcome::Fail, rejected(1, "ACTIVE"));
        log[1] = wrong(4, 1, "b");
        log.remove(3);
        let v = check_lockout(&ops, &log, F, 3);
        assert!(v.iter().any(|v| v.contains("[1, 1, 3]")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("0 LockedOut")), "{v:?}");
    }

    #[test]
    fn lockout_reports_answers_out_of_real_time_order() {
        let (mut ops, _) = lockout();
        // b (count 2) completed before a (count 1) was invoked.
        ops[1] = op("b", 0, 1, Outcome::Fail, rejected(2, "ACTIVE"));
        ops[0] = op("a", 2, 5, Outcome::Fail, rejected(1, "ACTIVE"));
        // d refused as locked before c, the locking one, began.
        ops[3] = op("d", 0, 1, Outcome::Fail, result("LOCKED_OUT"));
        let (_, log) = lockout();
        let v = check_lockout(&ops, &log, F, 3);
        assert!(
            v.iter()
                .any(|v| v.starts_with("b (failedAttempts Some(2)) completed before a")),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|v| v.contains("LOCKED_OUT before the locking c")),
            "{v:?}"
        );
    }

    #[test]
    fn lockout_reports_an_answer_the_log_contradicts() {
        let (ops, mut log) = lockout();
        log[4] = wrong(7, 4, "d");
        let v = check_lockout(&ops, &log, F, 3);
        assert!(
            v.iter().any(|v| v.starts_with("d answered LOCKED_OUT")),
            "{v:?}"
        );
        assert!(v.iter().any(|v| v.contains("[1, 2, 3, 4]")), "{v:?}");
    }

    const U: &str = "user-1";

    fn enrolled(factor: &str, user: &str) -> Value {
        event(factor, 1, "Enrolled", json!({ "user_id": user }), "")
    }

    fn failure(factor: &str, seq: i64, at: &str) -> Value {
        event(
            factor,
            seq,
            "FailedAttempt",
            json!({ "reason": "WRONG_CODE", "at": at }),
            "",
        )
    }

    fn alert(id: &str, user: &str, causes: &[(&str, i64)], at: &str) -> Value {
        let caused_by: Vec<Value> = causes
            .iter()
            .map(|(f, s)| {
                json!({ "aggregate_type": "Factor", "aggregate_id": f, "sequence": s,
                        "event_type": "FailedAttempt" })
            })
            .collect();
        let mut e = event(
            id,
            1,
            "SecurityAlertRaised",
            json!({ "alert_id": id, "user_id": user, "kind": "REPEATED_FAILURES",
                    "caused_by": caused_by, "at": at }),
            "",
        );
        e["aggregateType"] = json!("Alert");
        e
    }

    fn shown(id: &str, user: &str) -> Value {
        json!({ "id": id, "kind": "REPEATED_FAILURES", "userId": user })
    }

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:20:00Z";

    /// Two incidents of one user, twenty minutes apart, three failures each.
    fn incidents() -> (Vec<Value>, Vec<Value>) {
        let mut log = vec![enrolled(F, U)];
        for s in 2..=4 {
            log.push(failure(F, s, T0));
        }
        log.push(alert("x", U, &[(F, 2), (F, 3), (F, 4)], T0));
        for s in 5..=7 {
            log.push(failure(F, s, T1));
        }
        log.push(alert("y", U, &[(F, 5), (F, 6), (F, 7)], T1));
        (log, vec![shown("x", U), shown("y", U)])
    }

    fn window() -> TimeDelta {
        TimeDelta::seconds(600)
    }

    #[test]
    fn alerts_accept_a_valid_history() {
        let (log, api) = incidents();
        assert_eq!(check_alerts(&log, &api, 3, window()), Vec::<String>::new());
    }

    #[test]
    fn alerts_report_a_second_alert_for_one_incident_and_a_missing_one() {
        let (mut log, mut api) = incidents();
        // Two nodes both raised the first incident, under two ids; nobody raised the second.
        log.pop();
        api.pop();
        log.push(alert("z", U, &[(F, 2), (F, 3), (F, 4)], T0));
        api.push(shown("z", U));
        let v = check_alerts(&log, &api, 3, window());
        assert!(
            v.iter()
                .any(|v| v.contains("make 2 incident(s)") && v.contains("holds 2")),
            "{v:?}"
        );
        // And one stream holding the alert twice.
        let (mut log, api) = incidents();
        let mut again = log[4].clone();
        again["sequence"] = json!(2);
        log.push(again);
        let v = check_alerts(&log, &api, 3, window());
        assert!(
            v.iter().any(|v| v.contains("holds 2 SecurityAlertRaised")),
            "{v:?}"
        );
    }

    #[test]
    fn alerts_report_causes_not_in_the_log_or_of_another_user() {
        let (mut log, api) = incidents();
        log.insert(0, enrolled("factor-2", "user-2"));
        log.push(failure("factor-2", 2, T0));
        log[5] = alert("x", U, &[(F, 2), (F, 3), ("factor-2", 2), (F, 9)], T0);
        let v = check_alerts(&log, &api, 3, window());
        assert!(
            v.iter().any(|v| v.contains("no failure in the log")),
            "{v:?}"
        );
        assert!(
            v.iter().any(|v| v.contains("names a failure of user-2")),
            "{v:?}"
        );
    }

    #[test]
    fn alerts_report_an_alert_the_api_does_not_show() {
        let (log, mut api) = incidents();
        api.pop();
        let v = check_alerts(&log, &api, 3, window());
        assert!(
            v.iter().any(|v| v.starts_with("securityAlerts shows 1")),
            "{v:?}"
        );
    }

    #[test]
    #[should_panic(expected = "exact lockout: 1 violation(s)")]
    fn assert_valid_panics_with_the_violations_and_the_history() {
        let (ops, log) = lockout();
        let v = check_lockout(&ops, &log[..4], F, 3);
        assert_valid("exact lockout", &v, &ops);
    }

    #[test]
    fn assert_valid_passes_a_valid_history() {
        let (ops, log) = lockout();
        assert_valid("exact lockout", &check_lockout(&ops, &log, F, 3), &ops);
    }

    fn ids(seqs: &[i64]) -> Vec<(String, String, i64)> {
        seqs.iter()
            .map(|s| ("Factor".to_string(), F.to_string(), *s))
            .collect()
    }

    #[test]
    fn sequences_report_a_gap_and_a_repeat() {
        assert_eq!(check_sequences(&ids(&[2, 1, 3])), Vec::<String>::new());
        let v = check_sequences(&ids(&[1, 2, 4]));
        assert_eq!(v, [format!("Factor/{F}: sequences [1, 2, 4], not 1..=3")]);
        let v = check_sequences(&ids(&[1, 2, 2]));
        assert_eq!(v.len(), 1, "{v:?}");
    }
}

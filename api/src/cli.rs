//! The subcommands that work on the log rather than serve it: `rebuild-projections`,
//! `export-events`, `verify-log`, `signing-key rotate` and `api-key create|list|revoke`. They live in the library so tests run exactly what the
//! binary runs.

use std::{io::Write, sync::Arc, time::Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tessera_domain::{
    api_key::ApiKeyScope,
    services::{Clock, SystemClock},
};
use tessera_projections::{
    audit,
    seal::{self, Report, Sealed, Sealer},
};
use tessera_store::{Cursor, Db, Runner, parse_ts};

use crate::{
    Config, Create, StartError,
    app::{
        AppError, Call,
        api_keys::{self, CreatedKey, NewApiKey},
    },
    auth::ApiKeyRow,
    connect_store, open_existing as open,
};

/// Failures of a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Opening the store.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Reading the log.
    #[error(transparent)]
    Projections(#[from] tessera_store::Error),
    /// Writing the output.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
    /// A bad argument.
    #[error("{0}")]
    Input(String),
    /// The use case refused.
    #[error("{0}")]
    App(#[from] AppError),
}

impl From<sqlx::Error> for CliError {
    fn from(e: sqlx::Error) -> Self {
        Self::Start(StartError::Db(e))
    }
}

/// What a rebuild did.
#[derive(Clone, Copy, Debug)]
pub struct Rebuilt {
    /// Events replayed.
    pub events: usize,
    /// Wall time.
    pub seconds: f64,
}

impl Rebuilt {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// `tessera rebuild-projections`: replays the whole log into fresh read models, in one
/// transaction (readers see the old tables until the new ones are complete).
///
/// # Errors
/// Opening the store; the rebuild (the old tables stay then).
pub async fn rebuild_projections(config: Config) -> Result<Rebuilt, CliError> {
    let state = open(config, Arc::new(SystemClock)).await?;
    let started = Instant::now();
    let events = state.read_models.rebuild().await?;
    Ok(Rebuilt {
        events,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The existing store of `config` (never created), migrated, on a small pool.
async fn log_db(config: &Config) -> Result<Db, CliError> {
    let config = Config {
        db_pool_size: 2,
        ..config.clone()
    };
    Ok(connect_store(&config, Create::Never).await?)
}

/// `tessera signing-key rotate`: adds the next access-token signing key, which every node
/// signs with once it reloads its keys (within seconds); the previous key stays published
/// and accepted until the tokens it signed have expired. Returns the new key's generation
/// and `kid`.
///
/// # Errors
/// Key material; database errors.
pub async fn rotate_signing_key(config: &Config) -> Result<(i64, String), CliError> {
    let db = log_db(config).await?;
    let keys = crate::keys::load_keys(config, &db)
        .await
        .map_err(StartError::from)?;
    let deriver = crate::signing::KeyDeriver::new(&keys.root);
    let key = crate::signing::rotate(&db, &deriver, Utc::now()).await?;
    Ok((key.generation, key.kid))
}

/// Output formats of `export-events`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    #[default]
    Jsonl,
}

/// Arguments of `tessera export-events`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ExportArgs {
    /// Only events recorded at or after this time (RFC 3339).
    #[arg(long)]
    pub from: Option<DateTime<Utc>>,
    /// Only events recorded before this time (RFC 3339).
    #[arg(long)]
    pub to: Option<DateTime<Utc>>,
    /// Only events after this position (the `position` of the last line of a previous export).
    #[arg(long)]
    pub after: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
}

/// One exported line: the event (redacted) with its link in the hash chain. Anyone holding
/// the lines can check each link: `hash = SHA-256(hex-decoded prevHash || canonical)`, with
/// `canonical` rebuilt from the line's fields (see `tessera_projections::seal`).
fn line(s: &Sealed) -> serde_json::Value {
    let e = &s.event;
    json!({
        "n": s.n,
        "position": e.cursor.encode(),
        "aggregateType": e.aggregate_type,
        "aggregateId": e.aggregate_id,
        "sequence": e.sequence,
        "eventType": e.event_type,
        "eventVersion": e.event_version,
        "recordedAt": e.recorded_at,
        "payload": audit::redact_payload(&e.payload),
        "metadata": audit::redact(&e.metadata),
        "payloadSha256": seal::digest_of(&e.payload),
        "metadataSha256": seal::digest_of(&e.metadata),
        "prevHash": s.prev_hash,
        "hash": s.hash,
    })
}

/// `tessera export-events`: seals what is committed, then streams the sealed log in order,
/// one line per event, checking every link on the way. Returns the number of lines.
///
/// # Errors
/// Bad arguments; the log does not match its seal (nothing after that point is written);
/// database or output errors.
pub async fn export_events(
    config: &Config,
    args: &ExportArgs,
    out: &mut dyn Write,
) -> Result<u64, CliError> {
    let after = args
        .after
        .as_deref()
        .map(|s| {
            Cursor::decode(s).ok_or_else(|| CliError::Input(format!("--after {s}: not a position")))
        })
        .transpose()?;
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from > to
    {
        return Err(CliError::Input("--from is after --to".into()));
    }
    let db = log_db(config).await?;
    Runner::new(db.clone(), Sealer).await?.catch_up().await?;
    let mut written = 0;
    let ExportFormat::Jsonl = args.format;
    seal::walk_sealed(&db, after, |sealed: Sealed| -> Result<(), CliError> {
        let at = parse_ts(&sealed.event.recorded_at);
        let inside = at.is_some_and(|t| {
            args.from.is_none_or(|from| t >= from) && args.to.is_none_or(|to| t < to)
        });
        if inside {
            serde_json::to_writer(&mut *out, &line(&sealed)).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        Ok(())
    })
    .await?;
    out.flush()?;
    Ok(written)
}

/// `tessera verify-log`: checks every event against the hash chain and writes a report.
/// Read-only. Returns the report; the binary exits 1 unless it is intact.
///
/// # Errors
/// Database or output errors.
pub async fn verify_log(config: &Config, out: &mut dyn Write) -> Result<Report, CliError> {
    let db = log_db(config).await?;
    let report = seal::verify(&db).await?;
    if report.head.is_none() && report.unsealed == 0 && report.problems.is_empty() {
        writeln!(
            out,
            "EMPTY: the store holds no events; there is nothing to verify"
        )?;
        return Ok(report);
    }
    for problem in &report.problems {
        writeln!(out, "{problem}")?;
    }
    match &report.head {
        Some(head) => writeln!(
            out,
            "{} events sealed; head #{} at position {}: {}",
            report.sealed,
            head.n,
            head.cursor.encode(),
            head.hash
        )?,
        None => writeln!(out, "no events sealed yet")?,
    }
    if report.unsealed > 0 {
        writeln!(
            out,
            "{} newer events not sealed yet (the sealer runs inside `tessera serve`)",
            report.unsealed
        )?;
    }
    if report.intact() {
        writeln!(out, "OK: the log matches its hash chain")?;
    } else {
        writeln!(out, "TAMPERED: {} problem(s) found", report.problems.len())?;
    }
    Ok(report)
}

/// What `tessera key check` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    /// The key ids the store recorded, oldest first (empty: never started, or a store from
    /// before key records).
    pub expected: Vec<String>,
    /// The configured keys' ids, the active one first (empty: no key configured, no key file).
    pub configured: Vec<String>,
    /// Factors whose secret is sealed under each key id, by key id.
    pub sealed_under: std::collections::BTreeMap<String, usize>,
}

impl KeyReport {
    /// Whether the configured ring fits the store: one of its keys is the store's (or the
    /// store has no record yet), and it holds every key a stored secret needs.
    pub fn matches(&self) -> bool {
        !self.configured.is_empty()
            && (self.expected.is_empty()
                || self.configured.iter().any(|c| self.expected.contains(c)))
            && self.lacking().is_empty()
    }

    /// Key ids stored secrets are sealed under that the ring lacks.
    pub fn lacking(&self) -> Vec<&str> {
        self.sealed_under
            .keys()
            .filter(|id| !self.configured.contains(id))
            .map(String::as_str)
            .collect()
    }

    /// Factors sealed under a key other than the active one (re-sealed on their next write).
    pub fn stale(&self) -> usize {
        self.sealed_under
            .iter()
            .filter(|(id, _)| self.configured.first() != Some(*id))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The key id each live factor's secret is sealed under (`Enrolled`, then `SecretResealed`;
/// removed factors are left out: nothing opens their secret again), by factor id. Reads the
/// log, never a secret.
///
/// # Errors
/// Database errors.
pub async fn sealed_secrets(
    db: &Db,
) -> Result<std::collections::BTreeMap<String, String>, CliError> {
    use sqlx::Row;
    let sql = format!(
        "SELECT aggregate_id, event_type, {} AS payload FROM events \
         WHERE aggregate_type = 'Factor' AND event_type IN ('Enrolled', 'SecretResealed', 'Removed') \
         ORDER BY aggregate_id, sequence",
        db.dialect.json_text("payload")
    );
    let rows = sqlx::query(&sql).fetch_all(&db.pool).await?;
    let mut sealed = std::collections::BTreeMap::new();
    for row in rows {
        let id: String = row.try_get("aggregate_id")?;
        let event_type: String = row.try_get("event_type")?;
        let payload: String = row.try_get("payload")?;
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
        let key_id = match event_type.as_str() {
            "Enrolled" => payload["Enrolled"]["totp"]["secret"]["key_id"].as_str(),
            "SecretResealed" => payload["SecretResealed"]["secret"]["key_id"].as_str(),
            _ => {
                sealed.remove(&id);
                continue;
            }
        };
        if let Some(key_id) = key_id {
            sealed.insert(id, key_id.to_string());
        }
    }
    Ok(sealed)
}

/// `tessera key check`: which master keys the store expects, whether the configured ring
/// (`TESSERA_MASTER_KEY` and `TESSERA_PREVIOUS_MASTER_KEYS`, or the key file) fits it, and
/// which key ids the stored secrets are sealed under, naming any the ring lacks. Writes
/// nothing to the store and shows no key material.
///
/// # Errors
/// No store; an unreadable key; database or output errors.
pub async fn key_check(config: &Config, out: &mut dyn Write) -> Result<KeyReport, CliError> {
    let db = log_db(config).await?;
    let expected: Vec<String> = crate::keys::recorded_checks(&db)
        .await?
        .into_iter()
        .map(|c| c.key_id)
        .collect();
    let configured = crate::keys::configured_ring(config).map_err(StartError::from)?;
    let mut sealed_under = std::collections::BTreeMap::new();
    for key_id in sealed_secrets(&db).await?.into_values() {
        *sealed_under.entry(key_id).or_insert(0) += 1;
    }
    if expected.is_empty() {
        writeln!(
            out,
            "the store has no key record yet (it records its key on the next `tessera serve`)"
        )?;
    } else {
        writeln!(
            out,
            "the store expects master key {}",
            expected.join(" or ")
        )?;
    }
    let report = KeyReport {
        expected,
        configured: configured
            .as_ref()
            .map(|(ring, _)| ring.keys().map(|k| k.check().key_id).collect())
            .unwrap_or_default(),
        sealed_under,
    };
    match &configured {
        Some((_, source)) => {
            let fits = report.configured.is_empty()
                || report.expected.is_empty()
                || report
                    .configured
                    .iter()
                    .any(|c| report.expected.contains(c));
            let verdict = if fits {
                "OK: it matches"
            } else {
                "MISMATCH: the server will refuse to start with it"
            };
            let ids = &report.configured;
            let older = if ids.len() > 1 {
                format!(" (older, opening only: {})", ids[1..].join(", "))
            } else {
                String::new()
            };
            writeln!(
                out,
                "{source} holds master key {}{older}: {verdict}",
                ids[0]
            )?;
        }
        None => writeln!(
            out,
            "MISSING: neither TESSERA_MASTER_KEY nor the key file {} is set",
            config
                .sqlite_path()
                .map(|p| crate::keys::key_file_for(&p).display().to_string())
                .unwrap_or_default()
        )?,
    }
    for (key_id, n) in &report.sealed_under {
        writeln!(out, "{n} factor secret(s) sealed under master key {key_id}")?;
    }
    for key_id in report.lacking() {
        writeln!(
            out,
            "MISSING KEY: secrets are sealed under master key {key_id}, which is not configured: they cannot be verified (SECRET_UNAVAILABLE) until it is back"
        )?;
    }
    if report.lacking().is_empty() && report.stale() > 0 {
        writeln!(
            out,
            "{} factor secret(s) under older keys: re-sealed on their next verification, or now with `tessera key reseal`",
            report.stale()
        )?;
    } else if report.lacking().is_empty() && report.configured.len() > 1 {
        writeln!(out, "no secret needs the older keys: they can be removed")?;
    }
    Ok(report)
}

/// What `tessera key rotate` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotated {
    /// SQLite: the key file holds a new active key (its id), the old ones behind it.
    KeyFile {
        /// The new key's id.
        key_id: String,
        /// The key file.
        path: std::path::PathBuf,
    },
    /// PostgreSQL (or `TESSERA_MASTER_KEY` set): nothing changed; how to rotate.
    Instructions(String),
}

/// `tessera key rotate`: on SQLite with a key file, a new master key becomes the active one
/// in the file (the old ones stay, and open what they sealed); it is recorded in the store and
/// takes effect on the next start. With `TESSERA_MASTER_KEY` (PostgreSQL), keys are the
/// operator's: the answer says how (and `print` adds a fresh key to the answer).
///
/// # Errors
/// No store; a key that does not fit it; I/O or database errors.
pub async fn rotate_key(config: &Config, print: bool) -> Result<Rotated, CliError> {
    let db = log_db(config).await?;
    // The current ring must fit the store before anything changes.
    crate::keys::load_keys(config, &db)
        .await
        .map_err(StartError::from)?;
    if config.master_key.is_some() {
        let mut how = "the master key comes from TESSERA_MASTER_KEY: generate a key (`openssl rand -base64 32`, or `tessera key rotate --print`), set it as TESSERA_MASTER_KEY and put the old one first in TESSERA_PREVIOUS_MASTER_KEYS (comma-separated) on every node, restart them, then `tessera key reseal`; remove the old key once `tessera key check` says no secret needs it".to_string();
        if print {
            how = format!("{how}\n{}", crate::keys::new_key_b64());
        }
        return Ok(Rotated::Instructions(how));
    }
    let ring = crate::keys::rotate_key_file(config).map_err(StartError::from)?;
    let path = config
        .sqlite_path()
        .map(|p| crate::keys::key_file_for(&std::path::absolute(&p).unwrap_or(p)))
        .unwrap_or_default();
    // Recorded now (with the root sealed under it), so the store knows the new key at once.
    crate::keys::load_keys(config, &db)
        .await
        .map_err(StartError::from)?;
    Ok(Rotated::KeyFile {
        key_id: ring.active().check().key_id,
        path,
    })
}

/// `tessera key reseal`: every live factor whose secret is sealed under an older key gets
/// `SecretResealed` under the active one (recorded by `operator:cli`), so the old key can be
/// retired. Returns how many were re-sealed; a factor whose key is not configured is reported
/// and skipped.
///
/// # Errors
/// Opening the store; store errors.
pub async fn reseal(config: Config, out: &mut dyn Write) -> Result<usize, CliError> {
    let state = open(config, Arc::new(SystemClock)).await?;
    let active = crate::keys::load_keys(&state.config, &state.db)
        .await
        .map_err(StartError::from)?
        .ring
        .totp_cipher();
    let metadata = Call::operator().metadata();
    let mut resealed = 0;
    for (factor, key_id) in sealed_secrets(&state.db).await? {
        if key_id == active.key_id() {
            continue;
        }
        if !active.holds(&key_id) {
            writeln!(
                out,
                "factor {factor}: sealed under master key {key_id}, which is not configured; left as it is"
            )?;
            continue;
        }
        state
            .factors
            .execute(
                &factor,
                tessera_domain::factor::FactorCommand::ResealSecret,
                &metadata,
            )
            .await
            .map_err(|e| CliError::Input(format!("factor {factor}: {e}")))?;
        resealed += 1;
    }
    writeln!(
        out,
        "re-sealed {resealed} factor secret(s) under master key {}",
        active.key_id()
    )?;
    Ok(resealed)
}

/// Scopes as `api-key create --scope` spells them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    /// Everything.
    #[default]
    Admin,
    /// Read the event log and nothing else (a SIEM).
    #[value(name = "read:audit")]
    ReadAudit,
}

impl From<ScopeArg> for ApiKeyScope {
    fn from(s: ScopeArg) -> Self {
        match s {
            ScopeArg::Admin => Self::Admin,
            ScopeArg::ReadAudit => Self::ReadAudit,
        }
    }
}

/// Arguments of `tessera api-key create`.
#[derive(Clone, Debug, clap::Args)]
pub struct CreateKeyArgs {
    /// A name to recognise the key by.
    #[arg(long)]
    pub name: String,
    /// What the key may do: `admin` (everything) or `read:audit` (the event log only).
    #[arg(long, value_enum, default_value_t = ScopeArg::Admin)]
    pub scope: ScopeArg,
    /// When the key stops working: an RFC 3339 time or a duration from now (`90d`, `12h`,
    /// `30m`). Never, if unset.
    #[arg(long)]
    pub expires: Option<String>,
}

/// `tessera api-key create`: mints a key (recorded as `ApiKeyCreated` by `operator:cli`);
/// the token is in the result, and shown only then.
///
/// # Errors
/// A bad `--expires` or name; opening the store; store errors.
pub async fn create_api_key(
    config: Config,
    clock: Arc<dyn Clock>,
    args: &CreateKeyArgs,
) -> Result<CreatedKey, CliError> {
    let expires_at = args
        .expires
        .as_deref()
        .map(|s| api_keys::parse_expiry(s, clock.now()))
        .transpose()?;
    let state = open(config, clock).await?;
    let input = NewApiKey {
        name: args.name.clone(),
        scope: args.scope.into(),
        expires_at,
    };
    Ok(api_keys::create(&state, &Call::operator(), input).await?)
}

/// `tessera api-key revoke ID`: refused from the next request on, on every node; recorded as
/// `ApiKeyRevoked` by `operator:cli`.
///
/// # Errors
/// No such key, revoked before; opening the store; store errors.
pub async fn revoke_api_key(config: Config, id: &str) -> Result<ApiKeyRow, CliError> {
    let state = open(config, Arc::new(SystemClock)).await?;
    Ok(api_keys::revoke(&state, &Call::operator(), id).await?)
}

/// `tessera api-key list`: every key (never a secret), one line each, and the rows.
///
/// # Errors
/// Opening the store; store or output errors.
pub async fn list_api_keys(
    config: Config,
    out: &mut dyn Write,
) -> Result<Vec<ApiKeyRow>, CliError> {
    let state = open(config, Arc::new(SystemClock)).await?;
    let now = Utc::now();
    let call = Call::operator();
    let mut keys = Vec::new();
    loop {
        let page = api_keys::list(
            &state,
            &call,
            keys.last().map(|k: &ApiKeyRow| k.id.as_str()),
            500,
        )
        .await?;
        if page.is_empty() {
            break;
        }
        keys.extend(page);
    }
    writeln!(out, "ID\tSCOPE\tSTATUS\tCREATED\tEXPIRES\tNAME")?;
    for k in &keys {
        let status = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        let time = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_string(), |t| t.to_rfc3339());
        writeln!(
            out,
            "{}\t{}\t{status}\t{}\t{}\t{}",
            k.id,
            k.scope.as_str(),
            time(Some(k.created_at)),
            time(k.expires_at),
            k.name
        )?;
    }
    out.flush()?;
    Ok(keys)
}

/// What `tessera backup` wrote.
#[derive(Clone, Debug)]
pub struct Backup {
    /// The backup file.
    pub path: std::path::PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The key file the backup's secrets are sealed under (not in the backup: keep it apart).
    pub key_file: Option<std::path::PathBuf>,
}

/// How PostgreSQL is backed up instead.
const PG_BACKUP: &str = "on PostgreSQL, back up with the database's own tools: `pg_dump --format=custom --file=tessera.dump DATABASE` (consistent while servers run) and `pg_restore --dbname=DATABASE tessera.dump`; keep TESSERA_MASTER_KEY apart from the dump";

/// An empty file, mode 0600, that SQLite's `VACUUM INTO` may fill (it takes a missing or
/// empty file); refused if something is there already.
fn create_private_file(path: &std::path::Path) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
}

/// `VACUUM INTO` a fresh 0600 file: a consistent copy (one read transaction, so writers go on
/// and the copy holds exactly what was committed when it began).
async fn vacuum_into<'c, E: sqlx::Executor<'c>>(
    executor: E,
    to: &std::path::Path,
) -> Result<u64, CliError> {
    let Some(target) = to.to_str() else {
        return Err(CliError::Input(format!(
            "{}: not a UTF-8 path",
            to.display()
        )));
    };
    create_private_file(to)?;
    let sql = format!("VACUUM INTO '{}'", target.replace('\'', "''"));
    if let Err(e) = executor.execute(sql.as_str()).await {
        let _ = std::fs::remove_file(to);
        return Err(e.into());
    }
    Ok(std::fs::metadata(to)?.len())
}

/// `tessera backup --to PATH`: on SQLite, a consistent copy of the live store through
/// `VACUUM INTO`, safe while the server runs (copying the file of a store in WAL mode is not);
/// the file is created 0600 and must not exist. On PostgreSQL, refused with how to use
/// `pg_dump`.
///
/// # Errors
/// PostgreSQL; an existing `PATH`; no store; database errors.
pub async fn backup(config: &Config, to: &std::path::Path) -> Result<Backup, CliError> {
    if config.is_postgres() {
        return Err(CliError::Input(PG_BACKUP.into()));
    }
    let db = log_db(config).await?;
    let path = std::path::absolute(to).unwrap_or_else(|_| to.to_path_buf());
    let bytes = vacuum_into(&db.pool, &path).await?;
    db.pool.close().await;
    let key_file = config
        .sqlite_path()
        .map(|p| crate::keys::key_file_for(&std::path::absolute(&p).unwrap_or(p)))
        .filter(|k| config.master_key.is_none() && k.exists());
    Ok(Backup {
        path,
        bytes,
        key_file,
    })
}

/// `tessera restore --from PATH`: puts a backup in place as the configured SQLite store. The
/// store must not exist (stop the server and move the old file away first); the backup is
/// checked (`PRAGMA integrity_check`, a Tessera store) before anything is written, and the
/// new file is 0600. The key is not in a backup: put the key file back beside the store (or
/// set `TESSERA_MASTER_KEY`); `tessera key check` says whether it is the right one. Returns
/// the path of the restored store.
///
/// # Errors
/// PostgreSQL; an existing store; a missing or damaged backup; database errors.
pub async fn restore(
    config: &Config,
    from: &std::path::Path,
) -> Result<std::path::PathBuf, CliError> {
    if config.is_postgres() {
        return Err(CliError::Input(PG_BACKUP.into()));
    }
    crate::config::check_database_url(&config.database_url).map_err(StartError::Config)?;
    let Some(target) = config.sqlite_path() else {
        return Err(CliError::Input(
            "TESSERA_DATABASE_URL names no SQLite file".into(),
        ));
    };
    let target = std::path::absolute(&target).unwrap_or(target);
    if target.exists() {
        return Err(CliError::Input(format!(
            "{} exists: restore only into a new place (stop the server and move the old store away first)",
            target.display()
        )));
    }
    if !from.is_file() {
        return Err(CliError::Input(format!(
            "{}: no backup there",
            from.display()
        )));
    }
    // Read-only and as it is: no WAL switch, nothing written to the backup.
    let mut backup = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(from)
            .read_only(true),
    )
    .await?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut backup)
        .await?;
    let tessera: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('events', '_sqlx_migrations')",
    )
    .fetch_one(&mut backup)
    .await?;
    if integrity != "ok" || tessera != 2 {
        return Err(CliError::Input(format!(
            "{} is not an intact Tessera backup ({integrity})",
            from.display()
        )));
    }
    vacuum_into(&mut backup, &target).await?;
    let _ = sqlx::Connection::close(backup).await;
    Ok(target)
}

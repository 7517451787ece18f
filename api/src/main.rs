//! The `tessera` binary.
//!
//! ```text
//! tessera serve                      # GraphQL on TESSERA_LISTEN (default 127.0.0.1:8080)
//! tessera migrate                    # apply migrations and exit
//! tessera rebuild-projections        # replay the log into fresh read models
//! tessera export-events --from T     # the sealed log as JSON lines, each with its chain link
//! tessera verify-log                 # check the log against its hash chain (exit 1 if not)
//! tessera schema                     # print the GraphQL SDL
//! tessera api-key create --name ci   # mint an API key (shown once); --scope, --expires
//! tessera api-key list               # every key: id, scope, status, expiry (never a secret)
//! tessera api-key revoke ID          # refuse a key from now on, on every node
//! tessera signing-key rotate         # add the next access-token signing key
//! tessera key check                  # which master keys the store expects; which secrets need which
//! tessera key rotate                 # a new active master key (SQLite key file; else: how)
//! tessera key reseal                 # re-seal every secret under the active master key
//! tessera backup --to PATH           # consistent copy of the live SQLite store (0600)
//! tessera restore --from PATH        # put a backup in place as a new store
//! ```
//!
//! Only `serve` and `migrate` create a store; every other command refuses a missing one.

use std::{process::ExitCode, sync::Arc};

use clap::{CommandFactory, Parser, Subcommand};
use tessera_api::{
    Config, Create,
    cli::{self, ExportArgs},
    config::{KeyedStoreArgs, StoreArgs, redacted_url},
    connect_store,
    graphql::build_schema,
    keys, start,
};
use tessera_domain::services::SystemClock;

/// mimalloc rather than glibc's allocator: a request allocates and frees many small buffers
/// across two worker threads, where glibc spent ~7% of the server's time and kept freed
/// memory in per-thread arenas (RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Event-sourced multi-factor authentication over GraphQL"
)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,sqlx=warn` or
    /// `tessera_api=debug`). Logs go to stderr.
    #[arg(long, env = "TESSERA_LOG", default_value = DEFAULT_LOG, global = true,
          help_heading = "Global options", display_order = 1000,
          value_parser = parse_log_filter)]
    log: String,
    /// Log line format: `text` (for people) or `json` (one JSON object per line, for log
    /// shippers). Colour only when stderr is a terminal and `NO_COLOR` is unset.
    #[arg(
        long,
        env = "TESSERA_LOG_FORMAT",
        default_value = "text",
        global = true,
        help_heading = "Global options",
        display_order = 1001,
        value_enum
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_LOG: &str = "info,sqlx=warn";

/// `TESSERA_LOG_FORMAT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON layer).
    Json,
}

fn parse_log_filter(filter: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| filter.to_string())
        .map_err(|e| format!("not a log filter: {e}"))
}

// Each command takes only the settings it reads: the server's thirty belong to `serve`.
#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL.
    Serve(#[command(flatten)] Box<Config>),
    /// Apply database migrations and exit.
    Migrate(#[command(flatten)] StoreArgs),
    /// Rebuild every read model from the event log.
    RebuildProjections(#[command(flatten)] KeyedStoreArgs),
    /// Write the sealed event log (redacted, each event with its hash-chain link) to stdout.
    ExportEvents {
        #[command(flatten)]
        args: ExportArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check the event log against its hash chain; exit 1 if a row was edited, inserted or
    /// deleted.
    VerifyLog(#[command(flatten)] StoreArgs),
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Manage API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Manage the keys access tokens are signed with.
    SigningKey {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
    /// Write a consistent copy of the SQLite store (safe while the server runs) to a new
    /// file, mode 0600. On PostgreSQL: explains pg_dump.
    Backup {
        /// The backup file to create (must not exist).
        #[arg(long)]
        to: std::path::PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Put a backup in place as the configured SQLite store, which must not exist yet.
    Restore {
        /// The backup file (from `tessera backup`).
        #[arg(long)]
        from: std::path::PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Inspect the master key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Say which master keys the store expects, whether the configured ones
    /// (TESSERA_MASTER_KEY and TESSERA_PREVIOUS_MASTER_KEYS, or the key file) fit it, and
    /// which keys the stored secrets are sealed under; exit 1 if a needed key is missing.
    Check(#[command(flatten)] KeyedStoreArgs),
    /// Rotate the master key. SQLite key file: a new key becomes the active one (printed by
    /// id; the old ones stay in the file and open what they sealed), in effect on the next
    /// start. With TESSERA_MASTER_KEY (PostgreSQL): says how. Secrets move to the new key on
    /// their next verification, or at once with `tessera key reseal`.
    Rotate {
        /// With TESSERA_MASTER_KEY: also print a fresh key (base64) to set as the new one.
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        store: KeyedStoreArgs,
    },
    /// Re-seal every factor secret sealed under an older master key under the active one,
    /// so an old key can be removed (`tessera key check` then says no secret needs it).
    Reseal(#[command(flatten)] KeyedStoreArgs),
}

#[derive(Subcommand)]
enum SigningKeyCommand {
    /// Add the next signing key; the previous one verifies until its tokens expire.
    Rotate(#[command(flatten)] Box<Config>),
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Mint an API key (admin unless --scope says otherwise); the token is printed once.
    Create {
        #[command(flatten)]
        args: cli::CreateKeyArgs,
        #[command(flatten)]
        store: KeyedStoreArgs,
    },
    /// List every API key: id, scope, status, creation and expiry, name. Never a secret.
    List(#[command(flatten)] KeyedStoreArgs),
    /// Revoke an API key: refused from the next request on, on every node.
    Revoke {
        /// The key's id (the `<id>` of `tsk_<id>_<secret>`, as `api-key list` shows it).
        id: String,
        #[command(flatten)]
        store: KeyedStoreArgs,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // A bad value of a `TESSERA_*` variable names the variable, not only the flag.
            eprint!(
                "{}",
                tessera_api::config::explain_parse_error(&e, &Cli::command())
            );
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => e.exit(),
    };
    let filter = tracing_subscriber::EnvFilter::new(&cli.log);
    match cli.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            // No escape codes in files, pipes and journals, nor where NO_COLOR asks.
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            tracing_subscriber::fmt()
                .with_ansi(colour)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
        }
    }
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        Command::Serve(config) => {
            if let Some(path) = config.sqlite_path() {
                let path = std::path::absolute(&path).unwrap_or(path);
                tracing::info!(database = %path.display(), key_file = %keys::key_file_for(&path).display(), "using the embedded SQLite store");
            }
            let server = start(*config).await?;
            tracing::info!(addr = %server.addr, "tessera listening; GraphiQL at http://{}/graphql", server.addr);
            let stop = server.shutdown_handle();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                let _ = stop.send(true);
            });
            server.wait().await?;
        }
        Command::Migrate(store) => {
            let config = store.config();
            connect_store(&config, Create::IfMissing).await?;
            println!(
                "migrations applied to {}",
                config.sqlite_path().map_or_else(
                    || redacted_url(&config.database_url),
                    |p| std::path::absolute(&p).unwrap_or(p).display().to_string()
                )
            );
        }
        Command::RebuildProjections(store) => {
            let rebuilt = cli::rebuild_projections(store.config()).await?;
            println!(
                "rebuilt read models from {} events in {:.2} s ({:.0} events/s)",
                rebuilt.events,
                rebuilt.seconds,
                rebuilt.rate()
            );
        }
        Command::ExportEvents { args, store } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = cli::export_events(&store.config(), &args, &mut out).await?;
            eprintln!("exported {n} events");
        }
        Command::VerifyLog(store) => {
            let report = cli::verify_log(&store.config(), &mut std::io::stdout()).await?;
            if !report.intact() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Schema => println!("{}", build_schema(None).sdl()),
        Command::ApiKey {
            command: ApiKeyCommand::Create { args, store },
        } => {
            let created = cli::create_api_key(store.config(), Arc::new(SystemClock), &args).await?;
            let key = &created.key;
            let expiry = key.expires_at.map_or_else(
                || "never expires".to_string(),
                |e| format!("expires {}", e.to_rfc3339()),
            );
            eprintln!(
                "created API key {} ({}, {}, {expiry}); the token is shown only now:",
                key.id,
                key.name,
                key.scope.as_str()
            );
            println!("{}", created.token);
        }
        Command::ApiKey {
            command: ApiKeyCommand::List(store),
        } => {
            cli::list_api_keys(store.config(), &mut std::io::stdout()).await?;
        }
        Command::ApiKey {
            command: ApiKeyCommand::Revoke { id, store },
        } => {
            let key = cli::revoke_api_key(store.config(), &id).await?;
            eprintln!("revoked API key {} ({})", key.id, key.name);
        }
        Command::Backup { to, store } => {
            let backup = cli::backup(&store.config(), &to).await?;
            println!("{}", backup.path.display());
            eprintln!(
                "backed up {} bytes to {}{}",
                backup.bytes,
                backup.path.display(),
                backup.key_file.map_or_else(String::new, |k| format!(
                    "; the key is not in the backup: keep a copy of {} apart",
                    k.display()
                ))
            );
        }
        Command::Restore { from, store } => {
            let path = cli::restore(&store.config(), &from).await?;
            eprintln!(
                "restored {} to {}; put its key file back as {} (or set TESSERA_MASTER_KEY) and run `tessera key check`",
                from.display(),
                path.display(),
                keys::key_file_for(&path).display()
            );
        }
        Command::Key {
            command: KeyCommand::Check(store),
        } => {
            let report = cli::key_check(&store.config(), &mut std::io::stdout()).await?;
            if !report.matches() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Key {
            command: KeyCommand::Rotate { print, store },
        } => match cli::rotate_key(&store.config(), print).await? {
            cli::Rotated::KeyFile { key_id, path } => {
                eprintln!(
                    "added master key {key_id} to {} as the active key; the old ones stay and open what they sealed. Restart the server to seal with it; `tessera key reseal` moves every secret to it now",
                    path.display()
                );
                println!("{key_id}");
            }
            cli::Rotated::Instructions(how) => println!("{how}"),
        },
        Command::Key {
            command: KeyCommand::Reseal(store),
        } => {
            cli::reseal(store.config(), &mut std::io::stdout()).await?;
        }
        Command::SigningKey {
            command: SigningKeyCommand::Rotate(config),
        } => {
            let (generation, kid) = cli::rotate_signing_key(&config).await?;
            eprintln!(
                "added signing key generation {generation}; nodes sign with it within seconds"
            );
            println!("{kid}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

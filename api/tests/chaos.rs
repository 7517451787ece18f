//! Chaos against the built binary: `kill -9` under a write load, then a restart on the same
//! store. The whole history (request, answer, invoke and complete time) is kept and checked
//! afterwards against the log, as Jepsen's checkers do: every acknowledged write is in the
//! log, as the user it was acknowledged as; no id was handed out twice; the log holds no write
//! nobody asked for and none twice (an unanswered request may or may not have taken effect);
//! a write acknowledged before another was sent is before it in the log order; every stream's
//! sequence is 1..N. PostgreSQL restarted under load (`pg_ctlcluster restart`)
//! runs only with `TESSERA_TEST_CHAOS_PG=1` (`.ci/run` sets it): it would break every other
//! test using the cluster at that moment.

use std::{
    collections::{HashMap, HashSet},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const KEY: &str = "chaos-test-bootstrap-key-0123456";
const MASTER: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

/// One operation of the history.
#[derive(Clone, Debug)]
struct Op {
    login: String,
    /// The user id, if the server acknowledged the write.
    acked: Option<String>,
    /// The error or transport failure otherwise.
    failed: Option<String>,
    /// When it was sent, since the load began.
    invoked: Duration,
    /// When its answer (or failure) came.
    completed: Duration,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_clear()
        .arg("serve")
        .env("TESSERA_DATABASE_URL", url)
        .env("TESSERA_LISTEN", format!("127.0.0.1:{port}"))
        .env("TESSERA_BOOTSTRAP_API_KEY", KEY)
        .env("TESSERA_MASTER_KEY", MASTER)
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tessera serve")
}

async fn up(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not come up");
}

async fn create(http: &reqwest::Client, base: &str, login: &str) -> Result<String, String> {
    let answer = http
        .post(format!("{base}/graphql"))
        .bearer_auth(KEY)
        .timeout(Duration::from_secs(30))
        .json(&json!({
            "query": "mutation($l: String!) { createUserV2(input: {login: $l}) { user { id } } }",
            "variables": { "l": login },
        }))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("hang: no answer within 30 s: {e}")
            } else {
                format!("transport: {e}")
            }
        })?;
    let body: Value = answer.json().await.map_err(|e| format!("body: {e}"))?;
    body["data"]["createUserV2"]["user"]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| body.to_string())
}

/// Writers creating users until `stop`, each operation into `history`.
fn load(
    base: &str,
    history: &Arc<Mutex<Vec<Op>>>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    started: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|w| {
            let (base, history, stop) = (base.to_string(), Arc::clone(history), Arc::clone(stop));
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    i += 1;
                    let login = format!("w{w}n{i}");
                    let invoked = started.elapsed();
                    let result = create(&http, &base, &login).await;
                    let failed = result.is_err();
                    history.lock().unwrap().push(Op {
                        login,
                        acked: result.as_ref().ok().cloned(),
                        failed: result.err(),
                        invoked,
                        completed: started.elapsed(),
                    });
                    if failed {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect()
}

/// Checks the history against the log of the store at `url`.
async fn check(url: &str, history: &[Op]) {
    let acked: Vec<&Op> = history.iter().filter(|o| o.acked.is_some()).collect();
    assert!(!acked.is_empty(), "nothing was acknowledged");
    let ids: HashSet<&str> = acked.iter().filter_map(|o| o.acked.as_deref()).collect();
    assert_eq!(ids.len(), acked.len(), "an id was handed out twice");
    let db = tessera_store::Db::connect(url, 1).await.unwrap();
    let stored: HashSet<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE aggregate_type = 'User' AND sequence = 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for op in &acked {
        let id = op.acked.as_deref().unwrap();
        assert!(
            stored.contains(id),
            "{} was acknowledged as {id} but is not in the log",
            op.login
        );
    }
    // Every user the log registered, in the log's order: each one a login the history asked
    // for, registered once, as the id it was acknowledged with.
    let registered: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT aggregate_id, CAST(payload AS TEXT) FROM events \
         WHERE aggregate_type = 'User' AND event_type = 'Registered' ORDER BY {}",
        db.dialect.log_order()
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let asked: HashSet<&str> = history.iter().map(|o| o.login.as_str()).collect();
    let mut rank: HashMap<String, (usize, String)> = HashMap::new();
    for (position, (id, payload)) in registered.into_iter().enumerate() {
        let payload: Value = serde_json::from_str(&payload).unwrap();
        let login = payload["Registered"]["login"].as_str().unwrap().to_string();
        assert!(
            asked.contains(login.as_str()),
            "the log registered {login}, which nobody asked for"
        );
        let again = rank.insert(login.clone(), (position, id));
        assert!(again.is_none(), "the log registered {login} twice");
    }
    for op in &acked {
        let (_, id) = &rank[&op.login];
        assert_eq!(
            op.acked.as_ref(),
            Some(id),
            "{op:?} is another user in the log"
        );
    }
    // Real-time order: a write acknowledged before another was sent comes first in the log.
    for a in &acked {
        for b in &acked {
            if a.completed < b.invoked {
                assert!(
                    rank[&a.login].0 < rank[&b.login].0,
                    "{a:?} was acknowledged before {b:?} was sent, but is after it in the log"
                );
            }
        }
    }
    let broken: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT aggregate_type, aggregate_id, MIN(sequence) AS low, \
         MAX(sequence) AS top, COUNT(*) AS n FROM events GROUP BY aggregate_type, aggregate_id) AS a \
         WHERE low <> 1 OR top <> n",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(broken, 0, "a stream whose sequence is not 1..N");
    // Every failed request got an answer (an error or a closed connection), none hung.
    for op in history.iter().filter(|o| o.acked.is_none()) {
        let failed = op.failed.as_deref().unwrap_or("no outcome");
        assert!(!failed.starts_with("hang"), "{op:?}");
    }
}

async fn new_pg_database() -> String {
    let base = std::env::var("TESSERA_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let prefix = std::env::var("TESSERA_TEST_DB_PREFIX").unwrap_or_else(|_| "t".into());
    let name = format!(
        "{prefix}_{:032x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/postgres"))
        .await
        .expect("PostgreSQL must be running for the tests");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    format!("{base}/{name}")
}

async fn kill_nine_under_load(url: String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut child = spawn(&url, port);
    up(&http, &base).await;
    let history = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let writers = load(&base, &history, &stop, started);
    while history
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.acked.is_some())
        .count()
        < 40
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    // The writers see the server gone, then it comes back on the same store.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut child = spawn(&url, port);
    up(&http, &base).await;
    let before = history.lock().unwrap().len();
    while history.lock().unwrap().len() < before + 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let history = history.lock().unwrap().clone();
    assert!(
        history.iter().any(|o| o.failed.is_some()),
        "the kill was seen by no writer"
    );
    check(&url, &history).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_under_write_load_loses_no_acknowledged_write_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("chaos_{}_{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    kill_nine_under_load(format!("sqlite://{}/tessera.db", dir.display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_under_write_load_loses_no_acknowledged_write_on_postgres() {
    kill_nine_under_load(new_pg_database().await).await;
}

/// PostgreSQL restarted under a write load: the server reconnects by itself, every
/// acknowledged write is there, and failed requests got errors, not hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_under_write_load_reconnects_and_keeps_acknowledged_writes() {
    if std::env::var("TESSERA_TEST_CHAOS_PG").as_deref() != Ok("1") {
        eprintln!("skipped: set TESSERA_TEST_CHAOS_PG=1 (restarts the shared cluster)");
        return;
    }
    let url = new_pg_database().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut child = spawn(&url, port);
    up(&http, &base).await;
    let history = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = load(&base, &history, &stop, Instant::now());
    while history.lock().unwrap().len() < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let restarted = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect"])
        .arg(&version)
        .args(["main", "restart"])
        .status()
        .unwrap();
    assert!(restarted.success());
    // Ready again by itself, and writes succeed again.
    up(&http, &base).await;
    let acked_before = history
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.acked.is_some())
        .count();
    while history
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.acked.is_some())
        .count()
        < acked_before + 20
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let history = history.lock().unwrap().clone();
    check(&url, &history).await;
}

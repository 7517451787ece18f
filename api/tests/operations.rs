//! The built `tessera` binary as an operator meets it: keys that fail closed, commands that
//! do not invent a store in the wrong folder, and start-up errors that say what is wrong.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// A fresh, empty working directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ops_{name}_{}_{}", std::process::id(), uuid_ish()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Runs `tessera ARGS` in `dir` with only `env` set.
fn tessera(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .env_clear()
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run tessera")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const OTHER_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

#[test]
fn a_lost_or_wrong_key_is_refused_and_never_replaced() {
    let dir = Dir::new("keys");
    let key_file = dir.path("tessera.db.key");
    let run = |args: &[&str], env: &[(&str, &str)]| tessera(&dir.0, args, env);

    // A new, empty store: its key file is generated, and the store records the key.
    assert!(run(&["migrate"], &[]).status.success());
    let created = run(&["api-key", "create", "--name", "ci"], &[]);
    assert!(created.status.success(), "{}", text(&created));
    assert!(key_file.exists());
    let check = run(&["key", "check"], &[]);
    assert!(check.status.success(), "{}", text(&check));
    let shown = text(&check);
    assert!(shown.contains("the store expects master key "), "{shown}");
    assert!(shown.contains("OK: it matches"), "{shown}");
    let original = std::fs::read(&key_file).unwrap();

    // The key file is lost: refused, naming the file, and no new key is generated.
    std::fs::remove_file(&key_file).unwrap();
    let refused = run(&["api-key", "list"], &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let shown = text(&refused);
    assert!(shown.contains(&key_file.display().to_string()), "{shown}");
    assert!(shown.contains("is missing"), "{shown}");
    assert!(!key_file.exists(), "a new key file was generated");
    let check = run(&["key", "check"], &[]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("MISSING"), "{}", text(&check));

    // Another key, in the file or the variable: refused, naming where it came from.
    std::fs::write(&key_file, OTHER_KEY).unwrap();
    for (env, names) in [
        (&[][..], key_file.display().to_string()),
        (
            &[("TESSERA_MASTER_KEY", OTHER_KEY)][..],
            "TESSERA_MASTER_KEY holds master key".to_string(),
        ),
    ] {
        let refused = run(&["api-key", "list"], env);
        assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
        let shown = text(&refused);
        assert!(shown.contains(&names), "{shown}");
        assert!(shown.contains("sealed under master key"), "{shown}");
        assert!(shown.contains("tessera key check"), "{shown}");
        let check = run(&["key", "check"], env);
        assert_eq!(check.status.code(), Some(1), "{}", text(&check));
        assert!(text(&check).contains("MISMATCH"), "{}", text(&check));
    }

    // The original key back: accepted again, and the key minted before is still there.
    std::fs::write(&key_file, &original).unwrap();
    let listed = run(&["api-key", "list"], &[]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(text(&listed).contains("\tci"), "{}", text(&listed));
}

#[test]
fn only_serve_and_migrate_create_a_store() {
    let dir = Dir::new("nostore");
    let looked_at = dir.path("tessera.db").display().to_string();
    for args in [
        &["verify-log"][..],
        &["export-events"],
        &["rebuild-projections"],
        &["api-key", "create", "--name", "ci"],
        &["api-key", "list"],
        &["api-key", "revoke", "abc"],
        &["key", "check"],
        &["signing-key", "rotate"],
        &["backup", "--to", "copy.db"],
    ] {
        let out = tessera(&dir.0, args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let shown = text(&out);
        assert!(shown.contains("no Tessera store at"), "{args:?}: {shown}");
        assert!(shown.contains(&looked_at), "{args:?}: {shown}");
        assert_eq!(dir.files(), Vec::<String>::new(), "{args:?} created files");
    }
    let migrated = tessera(&dir.0, &["migrate"], &[]);
    assert!(migrated.status.success(), "{}", text(&migrated));
    assert!(text(&migrated).contains(&looked_at), "{}", text(&migrated));
    // An empty store says so rather than vouching for a log that is not there.
    let verified = tessera(&dir.0, &["verify-log"], &[]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains("EMPTY: the store holds no events"),
        "{}",
        text(&verified)
    );
    assert!(!text(&verified).contains("OK:"), "{}", text(&verified));
}

/// A command, its environment, and what its refusal must say.
type Misconfiguration<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, Vec<String>);

#[test]
fn misconfigurations_are_refused_with_what_is_wrong() {
    let dir = Dir::new("misconfig");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let key = ("TESSERA_MASTER_KEY", OTHER_KEY);
    let cases: Vec<Misconfiguration> = vec![
        (
            &["serve"],
            vec![("TESSERA_DATABASE_URL", "garbage")],
            vec![
                "TESSERA_DATABASE_URL".into(),
                "postgres://".into(),
                "sqlite://".into(),
            ],
        ),
        (
            &["serve"],
            vec![
                ("TESSERA_DATABASE_URL", "mysql://root@localhost/tessera"),
                key,
            ],
            vec![
                "unsupported scheme \"mysql\"".into(),
                "sqlite://PATH".into(),
            ],
        ),
        (
            &["migrate"],
            vec![(
                "TESSERA_DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/tessera",
            )],
            vec![
                "cannot connect to PostgreSQL at 127.0.0.1:1/tessera".into(),
                "refused".into(),
            ],
        ),
        (
            &["serve"],
            vec![("TESSERA_DATABASE_URL", "sqlite:///no-such-folder/x/t.db")],
            vec!["the folder /no-such-folder/x does not exist".into()],
        ),
        (
            &["serve"],
            vec![("TESSERA_LISTEN", taken_addr.as_str())],
            vec![format!("cannot listen on {taken_addr}"), "in use".into()],
        ),
        (
            &["serve"],
            vec![("TESSERA_MASTER_KEY", "c2hvcnQ=")],
            vec!["TESSERA_MASTER_KEY must hold base64 of exactly 32 bytes".into()],
        ),
        (
            &["serve"],
            vec![
                ("TESSERA_DATABASE_URL", "postgres://postgres@127.0.0.1:1/t"),
                ("TESSERA_LISTEN", "127.0.0.1:0"),
            ],
            vec!["TESSERA_MASTER_KEY is required with PostgreSQL".into()],
        ),
        (
            &["serve"],
            vec![("TESSERA_OOB_CODE_TTL_SECONDS", "5")],
            vec!["--oob-code-ttl-seconds".into(), "30..=3600".into()],
        ),
        (
            &["serve"],
            vec![("TESSERA_LOCKOUT_THRESHOLD", "many")],
            vec!["--lockout-threshold".into(), "many".into()],
        ),
        (
            &["serve"],
            vec![("TESSERA_LISTEN", "localhost")],
            vec!["--listen".into(), "HOST:PORT".into()],
        ),
        // Every value error of a variable names the variable (and the flag) and what it takes.
        // A number out of range:
        (
            &["serve"],
            vec![("TESSERA_OOB_CODE_TTL_SECONDS", "5")],
            vec![
                "TESSERA_OOB_CODE_TTL_SECONDS (--oob-code-ttl-seconds".into(),
                "5 is not in 30..=3600".into(),
            ],
        ),
        // Not a number, for a ranged setting and for a plain one:
        (
            &["serve"],
            vec![("TESSERA_OOB_CODE_TTL_SECONDS", "abc")],
            vec![
                "TESSERA_OOB_CODE_TTL_SECONDS (--oob-code-ttl-seconds".into(),
                "accepts a whole number in 30..=3600".into(),
            ],
        ),
        (
            &["serve"],
            vec![("TESSERA_LOCKOUT_THRESHOLD", "many")],
            vec![
                "TESSERA_LOCKOUT_THRESHOLD (--lockout-threshold".into(),
                "'many'".into(),
                "accepts a whole number in 0..=4294967295".into(),
            ],
        ),
        // Not an address:
        (
            &["serve"],
            vec![("TESSERA_LISTEN", "nonsense")],
            vec!["TESSERA_LISTEN (--listen".into(), "HOST:PORT".into()],
        ),
        // A bad enum value, on a global option and on `serve`'s own:
        (
            &["migrate"],
            vec![("TESSERA_LOG_FORMAT", "xml")],
            vec![
                "TESSERA_LOG_FORMAT (--log-format".into(),
                "[possible values: text, json]".into(),
            ],
        ),
        (
            &["serve"],
            vec![("TESSERA_GRAPHIQL", "maybe")],
            vec![
                "TESSERA_GRAPHIQL (--graphiql".into(),
                "[possible values: true, false]".into(),
            ],
        ),
        // One bad item of a list:
        (
            &["serve"],
            vec![("TESSERA_TRUSTED_PROXIES", "10.0.0.0/8,bad")],
            vec![
                "TESSERA_TRUSTED_PROXIES (--trusted-proxies".into(),
                "neither an IP address nor a CIDR network".into(),
            ],
        ),
        // A bad URL, refused before a store is made; one that may hold a password is not
        // repeated.
        (
            &["serve"],
            vec![("TESSERA_ALERT_WEBHOOK_URL", "nonsense")],
            vec![
                "TESSERA_ALERT_WEBHOOK_URL (--alert-webhook-url".into(),
                "expected http:// or https://".into(),
            ],
        ),
        (
            &["serve"],
            vec![("TESSERA_SMTP_URL", "ftp://mailer:hunter2@mail")],
            vec![
                "TESSERA_SMTP_URL (--smtp-url".into(),
                "expected smtp:// or smtps://".into(),
            ],
        ),
    ];
    for (args, env, says) in cases {
        let out = tessera(&dir.0, args, &env);
        let shown = text(&out);
        assert!(!out.status.success(), "{env:?}: {shown}");
        for s in &says {
            assert!(
                shown.contains(s.as_str()),
                "{env:?} should say {s:?}: {shown}"
            );
        }
        assert!(
            !shown.contains("hunter2"),
            "{env:?} showed a password: {shown}"
        );
        assert_eq!(dir.files(), Vec::<String>::new(), "{env:?} created files");
    }
}

/// Starts `tessera serve` in `dir` with `env`, stderr into `log`; returns the child and its
/// address once `/healthz` answers.
// The caller waits for the child, in `stop`.
#[allow(clippy::zombie_processes)]
fn serve(dir: &Path, env: &[(&str, &str)], log: &Path) -> (std::process::Child, String) {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .env_clear()
        .current_dir(dir)
        .arg("serve")
        .env("TESSERA_LISTEN", &addr)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().expect("start tessera serve");
    loop {
        if let Ok(mut probe) = std::net::TcpStream::connect(&addr) {
            probe
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nx-request-id: probe-1\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            let _ = probe.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                // The request id is the server's own; the probe's is kept as the client's.
                assert!(answer.contains("x-request-id: "), "{answer}");
                assert!(!answer.contains("x-request-id: probe-1"), "{answer}");
                return (child, addr);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn logs_are_json_on_request_with_an_access_line_per_request_and_never_colour_in_files() {
    let dir = Dir::new("logs");
    let json_log = dir.path("json.log");
    let (child, _) = serve(&dir.0, &[("TESSERA_LOG_FORMAT", "json")], &json_log);
    stop(child);
    let text = std::fs::read_to_string(&json_log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["target"] == "tessera::access" && l["fields"]["client_request_id"] == "probe-1")
        .unwrap_or_else(|| panic!("no access line for probe-1: {text}"));
    let own = access["fields"]["request_id"].as_str().unwrap_or_default();
    assert!(uuid::Uuid::parse_str(own).is_ok(), "{access}");
    assert_eq!(access["fields"]["route"], "/healthz", "{access}");
    assert_eq!(access["fields"]["status"], 200, "{access}");
    assert!(lines.iter().any(|l| l["level"] == "INFO"));

    // Text to a file (not a terminal): no escape codes, with or without NO_COLOR.
    for env in [&[][..], &[("NO_COLOR", "1")][..]] {
        let text_log = dir.path("text.log");
        let (child, _) = serve(&dir.0, env, &text_log);
        stop(child);
        let text = std::fs::read_to_string(&text_log).unwrap();
        assert!(text.contains("tessera::access"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "escape codes in a log file: {text:?}"
        );
    }
}

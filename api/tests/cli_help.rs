//! The built `tessera` binary's help: each command lists the options it reads and no
//! other, `serve` has a flag for every variable of the README's settings table, and
//! `TESSERA_LOG` / `--log` is a real option.

use std::{collections::BTreeSet, process::Command};

fn tessera(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    // No TESSERA_* from the caller's environment changes what help shows.
    command.env_clear().args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run tessera")
}

/// The long flags an invocation's `--help` lists.
fn flags(command: &[&str]) -> BTreeSet<String> {
    let mut args = command.to_vec();
    args.push("--help");
    let out = tessera(&args, &[]);
    assert!(out.status.success(), "{command:?} --help failed");
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| l.split_whitespace().take(2))
        .filter_map(|t| t.strip_prefix("--"))
        .map(|t| t.trim_end_matches(',').to_string())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_string()).collect()
}

/// `TESSERA_*` variables in the README's settings table, in order.
fn readme_variables() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let vars: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `TESSERA_"))
        .filter_map(|l| l.split('`').next())
        .map(|v| format!("TESSERA_{v}"))
        .collect();
    assert!(
        vars.len() > 20,
        "the settings table was not found: {vars:?}"
    );
    vars
}

#[test]
fn each_command_lists_only_its_own_options() {
    for (command, own) in [
        (&["migrate"][..], &["database-url"][..]),
        (
            &["rebuild-projections"],
            &["database-url", "master-key", "previous-master-keys"],
        ),
        (
            &["export-events"],
            &["from", "to", "after", "format", "database-url"],
        ),
        (&["verify-log"], &["database-url"]),
        (&["schema"], &[]),
        (
            &["api-key", "create"],
            &[
                "name",
                "scope",
                "expires",
                "database-url",
                "master-key",
                "previous-master-keys",
            ],
        ),
        (
            &["api-key", "list"],
            &["database-url", "master-key", "previous-master-keys"],
        ),
        (
            &["api-key", "revoke"],
            &["database-url", "master-key", "previous-master-keys"],
        ),
        (
            &["key", "check"],
            &["database-url", "master-key", "previous-master-keys"],
        ),
        (&["backup"], &["to", "database-url"]),
        (&["restore"], &["from", "database-url"]),
    ] {
        let mut want = set(own);
        want.extend(set(&["log", "log-format", "help"]));
        assert_eq!(flags(command), want, "tessera {command:?} --help");
    }
    assert_eq!(flags(&[]), set(&["log", "log-format", "help", "version"]));
}

#[test]
fn serve_has_a_flag_and_an_env_for_every_setting_in_the_readme() {
    let vars = readme_variables();
    let mut want: BTreeSet<String> = vars
        .iter()
        .map(|v| v["TESSERA_".len()..].to_lowercase().replace('_', "-"))
        .collect();
    want.insert("help".into());
    assert_eq!(
        flags(&["serve"]),
        want,
        "README table vs `tessera serve --help`"
    );
    let help = String::from_utf8(tessera(&["serve", "--help"], &[]).stdout).unwrap();
    for var in &vars {
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} is not an env of serve"
        );
    }
}

#[test]
fn the_log_filter_is_a_flag_and_an_env_and_is_checked() {
    // A command that fails logs why, at ERROR, through the filter.
    let failing = [
        "migrate",
        "--database-url",
        "sqlite:///nonexistent-dir/x/tessera.db",
    ];
    let shown = tessera(&failing, &[]);
    assert!(!shown.status.success());
    assert!(
        String::from_utf8_lossy(&shown.stderr).contains("ERROR"),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    for silenced in [
        tessera(&failing, &[("TESSERA_LOG", "off")]),
        tessera(&[&["--log", "off"][..], &failing[..]].concat(), &[]),
        tessera(&[&failing[..], &["--log", "off"][..]].concat(), &[]),
    ] {
        assert!(!silenced.status.success());
        assert_eq!(String::from_utf8_lossy(&silenced.stderr), "");
    }
    // A filter that does not parse is refused up front, naming the option.
    let bad = tessera(&["schema"], &[("TESSERA_LOG", "tessera=[")]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--log"));
    assert!(bad.stdout.is_empty());
}

//! Build steps: rebuild when a migration is added (`sqlx::migrate!` embeds them), and embed
//! the hosted pages under `ui/` (`$OUT_DIR/ui_files.rs`, read by `src/ui/mod.rs`): every
//! file found there is compiled in with `include_bytes!`, so a new page or asset needs no
//! table edited by hand, and `cargo build` needs no Node toolchain.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-changed=ui");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut out = String::from("&[\n");
    for (name, path) in &files {
        let _ = writeln!(
            out,
            "    ({name:?}, include_bytes!({:?}) as &[u8]),",
            path.display().to_string()
        );
    }
    out.push_str("]\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("ui_files.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("write {}: {e}", dest.display());
    }
}

/// Every file under `dir` as (`/`-separated path relative to `root`, absolute path); hidden
/// files (editor swap files and the like) are left out.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.push((name, path.clone()));
        }
    }
}

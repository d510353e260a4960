//! Records the git commit the binary is built from (`TESSERA_GIT_COMMIT`, with `-dirty` when
//! tracked files had uncommitted changes), for provenance records. Outside a git checkout the
//! variable is `unknown`. The script reruns when HEAD, the branch or the index change (a commit, a
//! checkout, `git add`), so an edit that is never staged does not by itself mark the build dirty.

use std::path::Path;
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{c}-dirty") } else { c }
        }
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=TESSERA_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves or the index changes (a commit, a checkout, staged edits).
    for p in [".git/HEAD", ".git/index", ".git/packed-refs"] {
        let path = root.join(p);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let path = root.join(".git").join(head);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

//! Where the built binaries are: `WEAVE_BIN_DIR` if set, else the directory of the running
//! executable or its parent (a test or bench binary runs from `target/<profile>/deps`, the
//! `weaver` it drives sits in `target/<profile>`; the demo sits beside them).

use std::path::PathBuf;

/// Path of binary `name` (`weaver`, `weave-net`, `weave-ipam`, `weave`); panics with a hint
/// if it is not built.
pub fn bin(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| {
        panic!("{name} not found next to the running executable or in WEAVE_BIN_DIR: run `cargo build --bins` first")
    })
}

/// Path of binary `name`, if it is built.
pub fn find(name: &str) -> Option<PathBuf> {
    candidates()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("WEAVE_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_path_buf());
            if let Some(up) = dir.parent() {
                dirs.push(up.to_path_buf());
            }
        }
    }
    dirs
}

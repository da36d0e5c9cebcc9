//! Where the built binaries are.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Makes every later lookup use `dir` (xtask points it at the release build). The first call
/// wins; later calls with another directory are ignored.
pub fn use_bin_dir(dir: &Path) {
    let _ = BIN_DIR.set(dir.to_owned());
}

/// The directory holding the binaries under test: the one given to [`use_bin_dir`], else
/// `$UDSECHO_BIN_DIR`, else the target directory of the running test executable (cargo
/// builds every workspace binary before it runs any test).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = BIN_DIR.get() {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("UDSECHO_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("an executable lives in a directory")
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of one binary (`udsecho-server`, `udsecho-client`, ...). Panics with the command
/// that builds it when it is missing: a test cannot run without it.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build --workspace --bins`, or --release for xtask)",
        path.display()
    );
    path
}

//! `cargo xtask nc-compat` with a broken `socat` first on `PATH` (a script that fails): it
//! stops at once, naming that socat and the command to run, where before it waited 30 s per
//! case and failed with `never listened on …/socat.sock`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn nc_compat_with_a_broken_socat_stops_at_once_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socat = dir.path().join("socat");
    std::fs::write(&socat, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&socat, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut path = dir.path().as_os_str().to_owned();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let started = Instant::now();
    // UDSECHO_NO_INSTALL: where it cannot install (not root, no sudo), which this is made to
    // look like; nothing is installed by a test.
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("nc-compat")
        .env("PATH", &path)
        .env("UDSECHO_NO_INSTALL", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it took {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains(&format!("`socat` at {} does not work", socat.display()))
            && stderr.contains("install with `sudo apt-get install -y socat`"),
        "{stderr}"
    );
    assert!(!stderr.contains("never listened"), "{stderr}");
}

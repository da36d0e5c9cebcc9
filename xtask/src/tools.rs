//! Running cargo and system tools, and installing the ones the checks need.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root (the parent of the xtask crate).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

/// A `cargo` command in the workspace root: the cargo that runs xtask (`$CARGO`, set by cargo
/// for the programs it runs), so a `cargo +toolchain xtask ...` stays on that toolchain.
pub(crate) fn cargo_command() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cargo` with `args` in the workspace root, streaming its output.
pub(crate) fn cargo(args: &[&str]) -> Result<(), String> {
    let status = cargo_command()
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// Builds the release binaries once and points the harness at them.
pub(crate) fn release_binaries() -> Result<(), String> {
    release_binaries_and(&[])
}

/// Like [`release_binaries`], building the packages in `extra` in the same cargo run.
pub(crate) fn release_binaries_and(extra: &[&str]) -> Result<(), String> {
    let mut args = vec![
        "build",
        "--release",
        "--bins",
        "-p",
        "udsecho-server",
        "-p",
        "udsecho-client",
    ];
    for package in extra {
        args.extend(["-p", package]);
    }
    cargo(&args)?;
    udsecho_harness::use_bin_dir(&target_dir().join("release"));
    Ok(())
}

/// The value of `--seconds N` in `args`, or `default` when it is absent.
pub(crate) fn seconds_arg(args: &[String], default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == "--seconds") {
        Some(i) => args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "--seconds takes a whole number".to_owned()),
        None => Ok(default),
    }
}

/// Cargo's target directory.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Is `cmd` on PATH?
pub(crate) fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Is the `nc` on PATH OpenBSD's (the one with `-U` and `-N`)?
fn nc_is_openbsd() -> bool {
    Command::new("nc")
        .arg("-h")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stderr).contains("OpenBSD"))
}

/// Makes sure OpenBSD `nc` and `socat` are installed: installs them with apt-get when this
/// user can (root, or password-less sudo), otherwise stops with the command to run.
pub(crate) fn ensure_nc_and_socat() -> Result<(), String> {
    let missing: Vec<&str> = [
        (!have("nc") || !nc_is_openbsd()).then_some("netcat-openbsd"),
        (!have("socat")).then_some("socat"),
    ]
    .into_iter()
    .flatten()
    .collect();
    install(&missing, "nc-compat")?;
    if nc_is_openbsd() {
        Ok(())
    } else {
        Err(
            "`nc` is still not OpenBSD netcat; run `sudo update-alternatives --config nc`"
                .to_owned(),
        )
    }
}

/// Installs the Debian packages `missing` with apt-get, saying so (`who` needs them), when
/// this user can (root, or password-less sudo); otherwise an error with the command to run.
fn install(missing: &[&str], who: &str) -> Result<(), String> {
    if missing.is_empty() {
        return Ok(());
    }
    let manual = format!("sudo apt-get install -y {}", missing.join(" "));
    let root = rustix::process::geteuid().is_root();
    let sudo = !root
        && Command::new("sudo")
            .args(["-n", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !have("apt-get") || !(root || sudo) {
        return Err(format!(
            "{who} needs {}: install with `{manual}`",
            missing.join(" and ")
        ));
    }
    eprintln!(
        "xtask: installing {} with apt-get ({who} needs it)",
        missing.join(" ")
    );
    let prefix: &[&str] = if root { &[] } else { &["sudo", "-n"] };
    for step in [
        vec!["apt-get", "update", "-qq"],
        [vec!["apt-get", "install", "-y", "-qq"], missing.to_vec()].concat(),
    ] {
        let argv: Vec<&str> = prefix.iter().copied().chain(step).collect();
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
        if !status.success() {
            return Err(format!(
                "`{}` failed; install by hand with `{manual}`",
                argv.join(" ")
            ));
        }
    }
    Ok(())
}

/// Builds the tutorial's Go echo server (`xtask/fixtures/go-echo`) into `out_dir` with the
/// system Go, installing golang-go first where this user can (`who` needs it).
pub(crate) fn build_go(out_dir: &Path, who: &str) -> Result<PathBuf, String> {
    let works = |go: &str| {
        Command::new(go)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let find = || ["go", "/usr/lib/go/bin/go"].into_iter().find(|g| works(g));
    let go = match find() {
        Some(go) => go,
        None => {
            install(&["golang-go"], who)?;
            find().ok_or("golang-go is installed but `go version` does not run")?
        }
    };
    let binary = out_dir.join("go-echo");
    let status = Command::new(go)
        .args(["build", "-o"])
        .arg(&binary)
        .arg(root().join("xtask/fixtures/go-echo/main.go"))
        .env("GOCACHE", out_dir.join("go-cache"))
        .env("GO111MODULE", "off")
        .status()
        .map_err(|e| format!("cannot run {go}: {e}"))?;
    if status.success() {
        Ok(binary)
    } else {
        Err(format!(
            "`{go} build` of xtask/fixtures/go-echo failed ({status})"
        ))
    }
}

//! Running cargo and system tools, and installing the ones the checks need: every tool is
//! checked up front (present, and answering its probe within seconds), what is missing is
//! installed with a line saying what and why, then checked again; where nothing can be
//! installed, the checks stop at once with the command to run.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// A program the checks run: how to tell that the one on `PATH` works, and the Debian package
/// that brings it.
#[derive(Debug)]
pub(crate) struct Tool {
    /// The command, as looked up on `PATH`.
    pub(crate) command: &'static str,
    /// Arguments that make a working one answer at once.
    probe: &'static [&'static str],
    /// What a working one prints (stdout and stderr together) for `probe`; `None`: it exits 0.
    says: Option<&'static str>,
    /// What it is, when `says` is missing from a present one (`OpenBSD netcat`).
    kind: &'static str,
    /// The Debian package.
    pub(crate) package: &'static str,
    /// Why the checks need it (the line that announces an install says so).
    why: &'static str,
}

/// OpenBSD netcat: the `nc -U` and `nc -lU` that nc-compat checks against (others lack `-N`
/// or `-U`).
pub(crate) const NC: Tool = Tool {
    command: "nc",
    probe: &["-h"],
    says: Some("OpenBSD"),
    kind: "OpenBSD netcat",
    package: "netcat-openbsd",
    why: "nc-compat runs nc -U and nc -lU against our binaries",
};

/// socat: a client of our server and an echo server for our client in nc-compat.
pub(crate) const SOCAT: Tool = Tool {
    command: "socat",
    probe: &["-V"],
    says: Some("socat version"),
    kind: "socat",
    package: "socat",
    why: "nc-compat and the benchmark run socat as a client and as a server",
};

/// Go: the bench's Go tutorial server and the conformance step's raw-only target are built
/// from `xtask/fixtures/go-echo` with it.
pub(crate) const GO: Tool = Tool {
    command: "go",
    probe: &["version"],
    says: None,
    kind: "go",
    package: "golang-go",
    why: "the conformance step and the benchmark build the Go tutorial's echo server",
};

/// Every tool `cargo xtask ci` needs, checked before its first step. `.ci/run` installs the
/// same packages (a test keeps the two lists equal).
pub(crate) const ALL: [Tool; 14] = [
    NC,
    SOCAT,
    GO,
    Tool {
        command: "setpriv",
        probe: &["--version"],
        says: None,
        kind: "setpriv",
        package: "util-linux",
        why: "tests run the binaries as another user with setpriv",
    },
    Tool {
        command: "prlimit",
        probe: &["--version"],
        says: None,
        kind: "prlimit",
        package: "util-linux",
        why: "tests run the binaries under a low descriptor limit with prlimit",
    },
    Tool {
        command: "systemd-socket-activate",
        probe: &["--version"],
        says: None,
        kind: "systemd-socket-activate",
        package: "systemd",
        why: "tests hand the server its socket as systemd does",
    },
    Tool {
        command: "strace",
        probe: &["-V"],
        says: None,
        kind: "strace",
        package: "strace",
        why: "tests count the server's system calls with strace",
    },
    Tool {
        command: "python3",
        probe: &["--version"],
        says: None,
        kind: "python3",
        package: "python3",
        why: "test peers that std cannot play (and the README's Python example) are Python",
    },
    Tool {
        command: "script",
        probe: &["--version"],
        says: None,
        kind: "script",
        package: "bsdutils",
        why: "tests run the binaries on a terminal with script",
    },
    Tool {
        command: "zsh",
        probe: &["--version"],
        says: None,
        kind: "zsh",
        package: "zsh",
        why: "the completion scripts are checked in zsh",
    },
    Tool {
        command: "fish",
        probe: &["--version"],
        says: None,
        kind: "fish",
        package: "fish",
        why: "the completion scripts are checked in fish",
    },
    Tool {
        command: "man",
        probe: &["--version"],
        says: None,
        kind: "man",
        package: "man-db",
        why: "the man pages are rendered with man -l",
    },
    Tool {
        command: "curl",
        probe: &["--version"],
        says: None,
        kind: "curl",
        package: "curl",
        why: "the README's proxy recipe sends an HTTP request over a Unix socket with curl",
    },
    Tool {
        command: "jq",
        probe: &["--version"],
        says: None,
        kind: "jq",
        package: "jq",
        why: "the README's proxy recipe reads the recording with jq",
    },
];

/// How long a tool's probe may take: a tool that hangs is broken, and is said so at once.
const PROBE_LIMIT: Duration = Duration::from_secs(5);

/// What is wrong with one tool.
#[derive(Debug)]
enum Problem {
    /// Not on `PATH`.
    Missing,
    /// On `PATH` at this path, but its probe failed (how).
    Broken(PathBuf, String),
    /// On `PATH` at this path, but another program of that name (what its probe said).
    Other(PathBuf, String),
}

/// Finds `command` in the directories of `path` (a `PATH` value).
fn find(command: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(command))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Checks `tool` as `PATH` = `path` finds it.
fn check(tool: &Tool, path: &OsStr) -> Result<(), Problem> {
    let Some(found) = find(tool.command, path) else {
        return Err(Problem::Missing);
    };
    let mut probe = Command::new(&found);
    probe.args(tool.probe).env("PATH", path);
    let run = format!("`{} {}`", tool.command, tool.probe.join(" "));
    let out = match crate::child::output_within(&mut probe, b"", PROBE_LIMIT) {
        Ok(out) => out,
        Err(e) => return Err(Problem::Broken(found, format!("{run}: {e}"))),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let first_line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    match tool.says {
        Some(says) if text.contains(says) => Ok(()),
        // A program that answers its probe but is not the one meant (ncat as `nc`).
        Some(_) if out.status.success() || !first_line.is_empty() => Err(Problem::Other(
            found,
            format!("{run} says \"{}\"", first_line.trim()),
        )),
        None if out.status.success() => Ok(()),
        _ => Err(Problem::Broken(
            found,
            format!("{run} exited with {}: {}", out.status, first_line.trim()),
        )),
    }
}

/// One line for a tool that is not right.
fn describe(tool: &Tool, problem: &Problem) -> String {
    match problem {
        Problem::Missing => format!("`{}` is not installed", tool.command),
        Problem::Broken(path, how) => {
            format!(
                "`{}` at {} does not work ({how})",
                tool.command,
                path.display()
            )
        }
        Problem::Other(path, what) => format!(
            "`{}` at {} is not {} ({what})",
            tool.command,
            path.display(),
            tool.kind
        ),
    }
}

/// Who may install packages here, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Installer {
    /// `apt-get` as root.
    Root,
    /// `sudo -n apt-get`: a password-less sudo.
    Sudo,
    /// Nobody: not root, no password-less sudo, no apt-get, or `UDSECHO_NO_INSTALL` set.
    Cannot,
}

impl Installer {
    /// What this machine and user allow.
    pub(crate) fn here() -> Installer {
        let no_apt = find("apt-get", &std::env::var_os("PATH").unwrap_or_default()).is_none();
        if no_apt || std::env::var_os("UDSECHO_NO_INSTALL").is_some_and(|v| !v.is_empty()) {
            return Installer::Cannot;
        }
        if rustix::process::geteuid().is_root() {
            return Installer::Root;
        }
        let sudo = Command::new("sudo")
            .args(["-n", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if sudo {
            Installer::Sudo
        } else {
            Installer::Cannot
        }
    }

    /// The command that installs `packages`, as a person would type it.
    fn command_line(self, packages: &[&str]) -> String {
        let sudo = if self == Installer::Root { "" } else { "sudo " };
        format!("{sudo}apt-get install -y {}", packages.join(" "))
    }

    /// Runs `apt-get update` and `apt-get install` for `packages`.
    fn install(self, packages: &[&str]) -> Result<(), String> {
        let prefix: &[&str] = match self {
            Installer::Root => &[],
            Installer::Sudo => &["sudo", "-n"],
            Installer::Cannot => return Err("cannot install here".to_owned()),
        };
        for step in [
            vec!["apt-get", "update", "-qq"],
            [vec!["apt-get", "install", "-y", "-qq"], packages.to_vec()].concat(),
        ] {
            let argv: Vec<&str> = prefix.iter().copied().chain(step).collect();
            let status = Command::new(argv[0])
                .args(&argv[1..])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
            if !status.success() {
                return Err(format!("`{}` failed ({status})", argv.join(" ")));
            }
        }
        Ok(())
    }
}

/// Makes sure every tool of `tools` works (see [`ensure_with`]), installing what is missing
/// where this user can.
pub(crate) fn ensure(tools: &[Tool]) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let installer = Installer::here();
    ensure_with(
        tools,
        &path,
        installer,
        &mut |packages| installer.install(packages),
        &mut |line| eprintln!("xtask: {line}"),
    )
}

/// Checks every tool of `tools` on `path` first. All there and working: `Ok`. Otherwise,
/// where `installer` cannot install, it stops at once with each problem and the exact
/// command to run; where it can, it says what it installs and why (`say`), runs `install`
/// once for every package needed, checks again, and stops naming whatever is still wrong (a
/// broken program earlier on `PATH` is not fixed by installing the package).
pub(crate) fn ensure_with(
    tools: &[Tool],
    path: &OsStr,
    installer: Installer,
    install: &mut dyn FnMut(&[&str]) -> Result<(), String>,
    say: &mut dyn FnMut(String),
) -> Result<(), String> {
    let problems = |tools: &[Tool]| -> Vec<(usize, Problem)> {
        tools
            .iter()
            .enumerate()
            .filter_map(|(i, tool)| check(tool, path).err().map(|p| (i, p)))
            .collect()
    };
    let found = problems(tools);
    if found.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = Vec::new();
    for (i, _) in &found {
        if !packages.contains(&tools[*i].package) {
            packages.push(tools[*i].package);
        }
    }
    let listed: Vec<String> = found.iter().map(|(i, p)| describe(&tools[*i], p)).collect();
    if installer == Installer::Cannot {
        return Err(format!(
            "{}; install with `{}` (Debian's packages; elsewhere the same tools by your \
             system's names), then run again",
            listed.join("; "),
            Installer::Sudo.command_line(&packages),
        ));
    }
    for (i, problem) in &found {
        let tool = &tools[*i];
        say(format!(
            "installing {} with apt-get: {} ({})",
            tool.package,
            describe(tool, problem),
            tool.why
        ));
    }
    install(&packages).map_err(|e| {
        format!(
            "{}; installing failed: {e}; install with `{}`",
            listed.join("; "),
            installer.command_line(&packages)
        )
    })?;
    let left = problems(tools);
    if left.is_empty() {
        return Ok(());
    }
    let still: Vec<String> = left
        .iter()
        .map(|(i, p)| {
            let tool = &tools[*i];
            let hint = match p {
                Problem::Missing => format!("{} did not install it", tool.package),
                Problem::Broken(at, _) | Problem::Other(at, _) => format!(
                    "{} is installed, but {} comes first on PATH: remove it or change PATH",
                    tool.package,
                    at.display()
                ),
            };
            format!("{} after installing ({hint})", describe(tool, p))
        })
        .collect();
    Err(still.join("; "))
}

/// Makes sure OpenBSD `nc` and `socat` work (nc-compat, the benchmark).
pub(crate) fn ensure_nc_and_socat() -> Result<(), String> {
    ensure(&[NC, SOCAT])
}

/// Builds the tutorial's Go echo server (`xtask/fixtures/go-echo`) into `out_dir` with the
/// system Go, which [`ensure`] installs first where it can.
pub(crate) fn build_go(out_dir: &Path) -> Result<PathBuf, String> {
    ensure(&[GO])?;
    let binary = out_dir.join("go-echo");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(root().join("xtask/fixtures/go-echo/main.go"))
        .env("GOCACHE", out_dir.join("go-cache"))
        .env("GO111MODULE", "off")
        .status()
        .map_err(|e| format!("cannot run go: {e}"))?;
    if status.success() {
        Ok(binary)
    } else {
        Err(format!(
            "`go build` of xtask/fixtures/go-echo failed ({status})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A directory holding executable scripts named `name` with `body`, for a `PATH` that
    /// finds them before the system's.
    fn shadows(scripts: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in scripts {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    fn path_with(dir: &Path) -> std::ffi::OsString {
        let mut path = dir.as_os_str().to_owned();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        path
    }

    #[test]
    fn a_broken_socat_first_on_path_stops_at_once_with_the_command_to_run() {
        let dir = shadows(&[("socat", "exit 1")]);
        let started = Instant::now();
        let mut installs = 0;
        let err = ensure_with(
            &[SOCAT],
            &path_with(dir.path()),
            Installer::Cannot,
            &mut |_| {
                installs += 1;
                Ok(())
            },
            &mut |line| panic!("announced an install it cannot make: {line}"),
        )
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "it took {:?}",
            started.elapsed()
        );
        assert_eq!(installs, 0);
        let socat = dir.path().join("socat");
        assert!(
            err.starts_with(&format!(
                "`socat` at {} does not work (`socat -V` exited",
                socat.display()
            )),
            "{err}"
        );
        assert!(
            err.contains("install with `sudo apt-get install -y socat`"),
            "{err}"
        );
    }

    #[test]
    fn what_is_installed_is_announced_and_checked_again() {
        let dir = shadows(&[("socat", "exit 1")]);
        let mut asked = Vec::new();
        let mut said = Vec::new();
        let err = ensure_with(
            &[SOCAT],
            &path_with(dir.path()),
            Installer::Root,
            &mut |packages| {
                asked.push(packages.join(" "));
                Ok(())
            },
            &mut |line| said.push(line),
        )
        .unwrap_err();
        assert_eq!(asked, ["socat"], "one install of what was wrong");
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with("installing socat with apt-get: `socat` at ")
                && said[0].ends_with(
                    "(nc-compat and the benchmark run socat as a client and as a server)"
                ),
            "{said:?}"
        );
        // Installing does not fix a broken program earlier on PATH: checked again, said so.
        assert!(
            err.contains("after installing (socat is installed, but ")
                && err.contains("comes first on PATH"),
            "{err}"
        );
    }

    #[test]
    fn a_netcat_that_is_not_openbsd_s_is_named_as_such() {
        let dir = shadows(&[("nc", "echo 'Ncat 7.93 ( https://nmap.org/ncat )'")]);
        let err = ensure_with(
            &[NC],
            &path_with(dir.path()),
            Installer::Cannot,
            &mut |_| Ok(()),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            err.contains(
                "is not OpenBSD netcat (`nc -h` says \"Ncat 7.93 ( https://nmap.org/ncat )\")"
            ),
            "{err}"
        );
        assert!(err.contains("apt-get install -y netcat-openbsd"), "{err}");
    }

    #[test]
    fn missing_and_working_tools_are_told_apart_and_a_working_one_installs_nothing() {
        let dir = shadows(&[(
            "socat",
            "echo 'socat by Gerhard Rieger - see www.dest-unreach.org'; echo 'socat version 1.8.0.0'",
        )]);
        // Only our directory on PATH: socat works, nc is missing.
        let path = dir.path().as_os_str();
        ensure_with(
            &[SOCAT],
            path,
            Installer::Cannot,
            &mut |_| Ok(()),
            &mut |_| {},
        )
        .unwrap();
        let err = ensure_with(
            &[NC, SOCAT],
            path,
            Installer::Cannot,
            &mut |_| Ok(()),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            err.starts_with(
                "`nc` is not installed; install with `sudo apt-get install -y netcat-openbsd`"
            ),
            "{err}"
        );
    }

    /// `.ci/run` installs with apt-get before it runs `cargo xtask ci` (which checks again):
    /// it names every tool and package the checks need.
    #[test]
    fn ci_run_installs_every_tool_the_checks_need() {
        let script = std::fs::read_to_string(root().join(".ci/run")).unwrap();
        for tool in &ALL {
            assert!(
                script.contains(&format!("command -v {} ", tool.command))
                    || (tool.command == "nc" && script.contains("nc -h")),
                ".ci/run does not check for {}",
                tool.command
            );
            assert!(
                script.contains(&format!("need+=({})", tool.package)),
                ".ci/run does not install {}",
                tool.package
            );
        }
    }
}

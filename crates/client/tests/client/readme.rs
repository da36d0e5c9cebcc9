//! The README's examples, run as written: every ```console block after a
//! `<!-- readme-test` comment. `$ udsecho-server ...` lines start a server (and must print the
//! `listening` line shown); every other `$` line runs in bash and must print exactly the lines
//! shown under it (stdout and stderr together; `...` ends the comparison; `/tmp/` in it is the
//! block's directory, as in the commands). The binaries under
//! test come first on `PATH`, and `/tmp/` is a fresh temporary directory, so runs never meet.
//! A block that uses a socket none of its lines serves gets a `udsecho-server` there, standing
//! in for the reader's own server. At the end each server gets SIGTERM and must exit 0 and
//! remove its socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use udsecho_harness::{Signal, bin_dir, short_temp_dir, wait_for_socket};

/// One `$` line and what the README shows under it.
#[derive(Debug)]
struct Step {
    command: String,
    output: Vec<String>,
}

/// The tested blocks of the README, in order.
fn tested_blocks() -> Vec<Vec<Step>> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("<!-- readme-test") {
            continue;
        }
        assert_eq!(
            lines.next(),
            Some("```console"),
            "a console block follows the marker"
        );
        let mut steps: Vec<Step> = Vec::new();
        for line in lines.by_ref().take_while(|l| *l != "```") {
            if let Some(command) = line.strip_prefix("$ ") {
                steps.push(Step {
                    command: command.to_owned(),
                    output: Vec::new(),
                });
            } else if !line.is_empty() {
                steps
                    .last_mut()
                    .expect("output follows a command")
                    .output
                    .push(line.to_owned());
            }
        }
        blocks.push(steps);
    }
    blocks
}

/// The socket a command names: the first word ending in `.sock`.
fn socket_of(command: &str) -> Option<&str> {
    command.split_whitespace().find(|w| w.ends_with(".sock"))
}

fn bash(command: &str) -> Command {
    let mut path = std::ffi::OsString::from(bin_dir());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut cmd = Command::new("bash");
    cmd.args(["-o", "pipefail", "-c", command])
        .env("PATH", path)
        .env_remove("UDSECHO_SOCKET")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// A server a block started; killed if the test fails before it is stopped (an orphaned
/// server would keep holding whatever its parent held, such as the build lock).
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `command` (a server) and waits until its socket accepts.
fn start_server(command: &str, socket: &Path) -> Running {
    let mut child = bash(&format!("exec {command}\n"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    if let Err(e) = wait_for_socket(socket, deadline, || false) {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "`{command}` never served {}: {e}; stderr: {}",
            socket.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Running(Some(child))
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_readme_examples_print_what_the_readme_shows() {
    let blocks = tested_blocks();
    assert!(blocks.len() >= 2, "the README's tested blocks: {blocks:?}");
    for steps in blocks {
        let dir = short_temp_dir();
        let tmp = format!("{}/", dir.path().display());
        let local = |s: &str| s.replace("/tmp/", &tmp);
        let mut servers: Vec<(Running, PathBuf, &Step)> = Vec::new();
        // A socket the block uses but does not serve: a stand-in server.
        let served: Vec<&str> = steps
            .iter()
            .filter(|s| s.command.starts_with("udsecho-server"))
            .filter_map(|s| socket_of(&s.command))
            .collect();
        let stand_in = Step {
            command: "udsecho-server -q".to_owned(),
            output: Vec::new(),
        };
        for step in &steps {
            if let Some(socket) = socket_of(&step.command)
                && !served.contains(&socket)
                && !servers
                    .iter()
                    .any(|(_, p, _)| *p == Path::new(&local(socket)))
            {
                let path = PathBuf::from(local(socket));
                let child =
                    start_server(&format!("udsecho-server -q -s {}", path.display()), &path);
                servers.push((child, path, &stand_in));
            }
        }
        for step in &steps {
            let command = local(&step.command);
            if step.command.starts_with("udsecho-server") {
                let path = PathBuf::from(local(socket_of(&step.command).unwrap()));
                let child = start_server(&command, &path);
                servers.push((child, path, step));
                continue;
            }
            if step.command.contains("nc ") && !has("nc") {
                eprintln!(
                    "skipped (no nc here; cargo xtask ci installs it): {}",
                    step.command
                );
                continue;
            }
            if let Some(tool) = ["curl", "jq"]
                .into_iter()
                .find(|tool| step.command.starts_with(&format!("{tool} ")) && !has(tool))
            {
                eprintln!("skipped (no {tool} here): {}", step.command);
                continue;
            }
            let out = // A newline ends the command's own `# comment`.
            bash(&format!("{{ {command}\n}} 2>&1"))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let printed = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "`{command}` failed: {printed}");
            let printed: Vec<&str> = printed.lines().collect();
            // Paths under /tmp/ in the output are the block's directory too.
            let shown: Vec<String> = step
                .output
                .iter()
                .take_while(|l| *l != "...")
                .map(|l| local(l))
                .collect();
            let upto = if step.output.iter().any(|l| l == "...") {
                shown.len().min(printed.len())
            } else {
                printed.len()
            };
            assert_eq!(
                printed[..upto],
                shown[..],
                "`{}` prints what the README shows",
                step.command
            );
        }
        for (mut running, path, step) in servers {
            let child = running.0.take().expect("still running");
            udsecho_harness::signal(child.id(), Signal::TERM).unwrap();
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "`{}`: {stderr}", step.command);
            if let Some(first) = step.output.first() {
                assert_eq!(
                    stderr.lines().next(),
                    Some(local(first).as_str()),
                    "`{}`",
                    step.command
                );
            }
            assert!(
                !path.exists(),
                "`{}` removed {}",
                step.command,
                path.display()
            );
        }
    }
}

/// The README once named the zsh completion `_udsecho-client` while the tarball ships
/// `completions/udsecho-client.zsh` (`cargo xtask dist` writes `BINARY.SHELL`): every
/// `completions/…` file the docs name must be one dist ships.
#[test]
fn the_docs_name_the_completion_files_dist_ships() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let shipped: Vec<String> = ["udsecho-server", "udsecho-client"]
        .iter()
        .flat_map(|bin| ["bash", "zsh", "fish"].map(|shell| format!("{bin}.{shell}")))
        .collect();
    let mut named = 0;
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (i, _) in text.match_indices("completions/") {
            let name: String = text[i + "completions/".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            let name = name.trim_end_matches('.');
            if name.is_empty() {
                continue;
            }
            named += 1;
            assert!(
                shipped.iter().any(|s| s == name),
                "{} names completions/{name}, which dist does not ship ({shipped:?})",
                doc.display()
            );
        }
    }
    assert!(named > 0, "the docs name the completion files");
}

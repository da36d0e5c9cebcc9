//! The README's code blocks, every one run, compiled or checked (a block of any other kind
//! fails the test, so none goes unchecked):
//!
//! - ```console blocks (each after a `<!-- readme-test` comment) are run as written.
//!   `$ udsecho-server ...` lines start a server (and must print the `listening` line shown);
//!   every other `$` line runs in bash and must print exactly the lines shown under it (stdout
//!   and stderr together; `...` ends the comparison; `/tmp/` in it is the block's directory,
//!   as in the commands). A block that uses a socket none of its lines serves gets a
//!   `udsecho-server` there, standing in for the reader's own server. At the end each server
//!   gets SIGTERM and must exit 0 and remove its socket.
//! - The ```python block runs in python3 against a udsecho-server.
//! - The ```rust block is `readme_example.rs`, byte for byte, which this test crate compiles
//!   (against the workspace's rustix) and runs against a udsecho-server.
//! - ```sh blocks hold what a test cannot run whole: a build (`cargo build --release`, minutes),
//!   a server in terminal 1 that runs until Ctrl-C, `cargo install` (it writes to
//!   ~/.cargo/bin), the test command itself (`cargo xtask ci`) and `sudo`/`systemctl` set-ups
//!   that change the machine. They are checked mechanically: bash parses each block; every
//!   udsecho-server and udsecho-client command in them is parsed by the binary itself (run
//!   with `--help` added: an unknown flag or a bad value exits 2); every file under
//!   `contrib/` they name exists; `cargo install` installs every binary of `crates/`; and
//!   each plain `udsecho-server ...` line (no build needed) is run as a
//!   server, answered, and stopped.
//!
//! The binaries under test come first on `PATH`, and `/tmp/` is a fresh temporary
//! directory, so runs never meet.

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

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// A fenced code block of the README.
#[derive(Debug)]
struct Block {
    /// What follows the opening fence (`sh`, `console`, `rust`...).
    lang: String,
    /// Whether a `<!-- readme-test` comment stands right before it.
    marked: bool,
    /// Its lines, joined with newlines (a newline after the last).
    text: String,
}

/// Every fenced code block of the README, in order.
fn blocks() -> Vec<Block> {
    let readme = readme();
    let mut blocks = Vec::new();
    let mut previous = "";
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let text: String = lines
                .by_ref()
                .take_while(|l| *l != "```")
                .map(|l| format!("{l}\n"))
                .collect();
            blocks.push(Block {
                lang: lang.to_owned(),
                marked: previous.starts_with("<!-- readme-test"),
                text,
            });
        }
        previous = line;
    }
    blocks
}

/// The tested blocks of the README, in order.
fn tested_blocks() -> Vec<Vec<Step>> {
    let readme = readme();
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

/// No block goes unchecked: each is of a kind one of these tests runs, compiles or checks.
#[test]
fn every_code_block_in_the_readme_is_run_compiled_or_checked() {
    let blocks = blocks();
    assert!(blocks.len() >= 10, "{blocks:?}");
    for block in &blocks {
        let checked = match block.lang.as_str() {
            "console" => block.marked,
            "sh" | "python" | "rust" => true,
            _ => false,
        };
        assert!(
            checked,
            "a ```{} block no test runs (console blocks need `<!-- readme-test -->`):\n{}",
            block.lang, block.text
        );
    }
}

/// The commands of one shell line: split at pipes, `&&` and `;`, comments dropped.
fn commands(line: &str) -> Vec<String> {
    let line = match line.find(" #") {
        Some(at) => &line[..at],
        None => line,
    };
    line.split(['|', ';'])
        .flat_map(|part| part.split("&&"))
        .map(|part| part.trim().to_owned())
        .filter(|part| !part.is_empty())
        .collect()
}

/// A udsecho binary's command in a sh block, rewritten to run the binaries under test.
fn udsecho_command(command: &str) -> Option<String> {
    let command = command.strip_prefix("target/release/").unwrap_or(command);
    (command.starts_with("udsecho-server ") || command.starts_with("udsecho-client "))
        .then(|| command.to_owned())
}

#[test]
fn the_readme_sh_blocks_parse_and_name_only_flags_and_files_that_exist() {
    let sh: Vec<Block> = blocks().into_iter().filter(|b| b.lang == "sh").collect();
    assert!(sh.len() >= 5, "{sh:?}");
    let dir = short_temp_dir();
    let tmp = format!("{}/", dir.path().display());
    let mut installed = Vec::new();
    let mut parsed = 0;
    for block in &sh {
        let syntax = Command::new("bash")
            .args(["-n", "-c", &block.text])
            .output()
            .unwrap();
        assert!(
            syntax.status.success(),
            "bash cannot parse:\n{}{}",
            block.text,
            String::from_utf8_lossy(&syntax.stderr)
        );
        for line in block.text.lines() {
            for command in commands(line) {
                if let Some(udsecho) = udsecho_command(&command) {
                    // Parsed by the binary: `--help` after the words exits 0 only when every
                    // flag before it exists and every value is valid.
                    let out = bash(&format!("{} --help", udsecho.replace("/tmp/", &tmp)))
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "`{command}` does not parse: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    parsed += 1;
                }
                let words: Vec<&str> = command.split_whitespace().collect();
                for word in &words {
                    if word.starts_with("contrib/") {
                        assert!(root().join(word).exists(), "`{command}` names {word}");
                    }
                }
                if words.starts_with(&["cargo", "install"]) {
                    let at = words.iter().position(|w| *w == "--path").expect("--path");
                    installed.push(words[at + 1].to_owned());
                }
            }
        }
    }
    assert!(parsed >= 5, "{parsed} udsecho commands");
    // Every binary of crates/ is installed: the ones a release ships, udsecho-conformance too
    // (not on crates.io, but in the tarball with the others).
    let mut published = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let crate_dir = entry.unwrap().path();
        if crate_dir.join("src/main.rs").exists() {
            published.push(format!(
                "crates/{}",
                crate_dir.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    published.sort();
    installed.sort();
    assert_eq!(installed, published, "the README's cargo install");
}

/// The plain server lines of the sh blocks (`udsecho-server -v -u -s /tmp/test.sock`...) serve
/// as they are: each starts, answers, and stops cleanly on SIGTERM.
#[test]
fn the_readme_sh_blocks_server_lines_serve() {
    let mut served = 0;
    for block in blocks().into_iter().filter(|b| b.lang == "sh") {
        for line in block.text.lines() {
            let Some(command) = commands(line).into_iter().next() else {
                continue;
            };
            if !command.starts_with("udsecho-server ") {
                continue;
            }
            let dir = short_temp_dir();
            let local = command.replace("/tmp/", &format!("{}/", dir.path().display()));
            let socket = PathBuf::from(socket_of(&local).expect("a socket"));
            let mut running = start_server(&local, &socket);
            let child = running.0.take().expect("running");
            udsecho_harness::signal(child.id(), Signal::TERM).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "`{command}`: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            served += 1;
        }
    }
    assert!(served >= 3, "{served} server lines");
}

/// The body of the README's one block of `lang`.
fn the_block(lang: &str) -> String {
    let mut found: Vec<Block> = blocks().into_iter().filter(|b| b.lang == lang).collect();
    assert_eq!(found.len(), 1, "one ```{lang} block");
    found.remove(0).text
}

#[test]
fn the_readme_python_example_gets_its_descriptor_back() {
    if !has("python3") {
        eprintln!("skipped (no python3 here; cargo xtask ci installs it)");
        return;
    }
    let dir = short_temp_dir();
    let socket = dir.path().join("test.sock");
    let mut server = start_server(
        &format!("udsecho-server -q -s {}", socket.display()),
        &socket,
    );
    let script = the_block("python").replace("/tmp/", &format!("{}/", dir.path().display()));
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = server.0.take().expect("running");
    udsecho_harness::signal(child.id(), Signal::TERM).unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
}

/// The README's Rust example: this crate compiles `readme_example.rs` (the block, byte for
/// byte) and runs it.
mod rust_example {
    use super::*;

    include!("readme_example.rs");

    #[test]
    fn the_readme_rust_block_is_the_example_compiled_here() {
        let file = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client/readme_example.rs"),
        )
        .unwrap();
        assert_eq!(the_block("rust"), file, "the README's ```rust block");
    }

    #[test]
    fn the_readme_rust_example_gets_the_same_open_file_back() {
        let dir = short_temp_dir();
        let socket = dir.path().join("test.sock");
        let mut server = start_server(
            &format!("udsecho-server -q -s {}", socket.display()),
            &socket,
        );
        let back = pass_a_file(socket.to_str().unwrap()).unwrap();
        assert_eq!(back.len(), 1);
        let hostname = std::fs::File::open("/etc/hostname").unwrap();
        let (a, b) = (
            rustix::fs::fstat(back[0].as_fd()).unwrap(),
            rustix::fs::fstat(hostname.as_fd()).unwrap(),
        );
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        let child = server.0.take().expect("running");
        udsecho_harness::signal(child.id(), Signal::TERM).unwrap();
        assert!(child.wait_with_output().unwrap().status.success());
    }
}

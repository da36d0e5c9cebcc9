//! `cargo xtask examples`: the proto crate's examples, run against each other and against the
//! release server, so they cannot rot.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use udsecho_harness::{Server, short_temp_dir, wait_for_socket};

use crate::scenario::{Scenarios, ensure};
use crate::tools::cargo;

pub(crate) fn run() -> Result<(), String> {
    cargo(&["build", "-p", "udsecho-proto", "--examples"])?;
    crate::tools::release_binaries()?;
    let mut s = Scenarios::new("examples");
    s.run(
        "framed_client against framed_server",
        client_against_example_server,
    );
    s.run(
        "framed_client against udsecho-server",
        client_against_udsecho_server,
    );
    s.finish()
}

fn example(name: &str) -> Command {
    let mut cmd = crate::tools::cargo_command();
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "udsecho-proto",
        "--example",
        name,
        "--",
    ]);
    cmd
}

fn run_client(socket: &std::path::Path) -> Result<String, String> {
    let out = example("framed_client")
        .arg(socket)
        .args(["hello", "olá mundo"])
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure(out.status.success(), || {
        format!(
            "framed_client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    ensure(stdout.contains("echo: hello\necho: olá mundo\n"), || {
        format!("framed_client printed:\n{stdout}")
    })?;
    Ok(stdout)
}

fn client_against_example_server() -> Result<(), String> {
    let dir = short_temp_dir();
    let socket = dir.path().join("example.sock");
    let mut server = example("framed_server")
        .arg(&socket)
        .arg("2") // one probe connection below, then the client
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = wait_for_socket(&socket, Instant::now() + Duration::from_secs(60), || false)
        .map_err(|e| format!("framed_server never listened: {e}"))
        .and_then(|()| run_client(&socket).map(drop));
    if result.is_err() {
        crate::child::kill(&mut server);
    }
    let status = crate::child::finish(&mut server, Duration::from_secs(60))
        .map_err(|e| format!("framed_server {e}"))?;
    result?;
    ensure(status.success(), || {
        format!("framed_server exited with {status}")
    })
}

fn client_against_udsecho_server() -> Result<(), String> {
    let server = Server::start(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let out = run_client(server.socket())?;
    ensure(out.contains("connected to udsecho/"), || out.clone())
}

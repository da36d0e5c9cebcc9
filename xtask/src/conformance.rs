//! `cargo xtask conformance`: `udsecho-conformance` against both release binaries, the way
//! another implementation would run it (README, "Checking your implementation").

use std::process::Command;

use crate::tools::{release_binaries_and, target_dir};

pub(crate) fn run() -> Result<(), String> {
    release_binaries_and(&["udsecho-conformance"])?;
    let bin = target_dir().join("release");
    let runner = bin.join("udsecho-conformance");
    let server = format!(
        "{} -q --socket {{sock}}",
        bin.join("udsecho-server").display()
    );
    let client = format!(
        "{} pipe --framed --socket {{sock}}",
        bin.join("udsecho-client").display()
    );
    let reports = target_dir().join("conformance");
    std::fs::create_dir_all(&reports).map_err(|e| format!("{}: {e}", reports.display()))?;
    for (mode, cmd) in [("server", &server), ("client", &client)] {
        println!("conformance: {mode}: {cmd}");
        let mut command = Command::new(&runner);
        command.args([mode, "--cmd", cmd.as_str()]);
        command
            .arg("--junit")
            .arg(reports.join(format!("{mode}.xml")));
        let status = command
            .status()
            .map_err(|e| format!("cannot run {}: {e}", runner.display()))?;
        if !status.success() {
            return Err(format!(
                "udsecho-{mode} failed conformance cases ({status})"
            ));
        }
    }
    Ok(())
}

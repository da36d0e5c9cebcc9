//! `cargo xtask ci`: everything CI checks, in order, stopping at the first failure: fmt,
//! clippy, tests, the proto examples, `udsecho-conformance` against both release binaries, a
//! dist build (completions, man pages), `cargo package` of the four published crates, a
//! quick benchmark run (smoke only, figures not judged), e2e, nc-compat and a 20-second soak.
//! The list is [`STEPS`].

use std::time::Instant;

use crate::tools::cargo;

/// One CI step: its name and what it runs.
type Step = (&'static str, fn() -> Result<(), String>);

/// Every step, in order. `cargo xtask --help` lists these names, so it cannot drift.
pub(crate) const STEPS: [Step; 11] = [
    ("fmt", || cargo(&["fmt", "--all", "--check"])),
    ("clippy", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ])
    }),
    ("test", || cargo(&["test", "--workspace", "--locked"])),
    ("examples", crate::examples::run),
    ("conformance", crate::conformance::run),
    ("dist", || crate::dist::run(&[])),
    ("package", || {
        cargo(&[
            "package",
            "--locked",
            "--no-verify",
            "-p",
            "udsecho-proto",
            "-p",
            "udsecho-unix",
            "-p",
            "udsecho-fault",
            "-p",
            "udsecho-server",
            "-p",
            "udsecho-client",
        ])
    }),
    // A smoke check that the benchmark itself works, and its scaling mode end to end (1 + 1
    // on a 2-core machine); their figures are not judged.
    ("bench --quick", || {
        crate::bench::run(&["--quick".to_owned()])?;
        crate::bench::run(&["--scaling".to_owned(), "--quick".to_owned()])
    }),
    ("e2e", crate::e2e::run),
    ("nc-compat", crate::nc_compat::run),
    ("soak 20 s", || {
        crate::soak::run(&["--seconds".to_owned(), "20".to_owned()])
    }),
];

pub(crate) fn run() -> Result<(), String> {
    let total = Instant::now();
    let tools: Vec<&str> = crate::tools::ALL.iter().map(|t| t.command).collect();
    println!(
        "==> ci: checking the tools the steps run: {}",
        tools.join(", ")
    );
    crate::tools::ensure(&crate::tools::ALL)?;
    for (name, step) in STEPS {
        let start = Instant::now();
        println!("==> ci: {name}");
        if let Err(e) = step() {
            println!(
                "==> ci: {name} FAILED after {:.1} s",
                start.elapsed().as_secs_f64()
            );
            return Err(format!("ci stopped at `{name}`: {e}"));
        }
        println!("==> ci: {name} ok ({:.1} s)", start.elapsed().as_secs_f64());
    }
    println!(
        "==> ci: all steps passed in {:.1} s",
        total.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `cargo xtask ci` on a fresh clone spends its first minute or more in cargo building
    /// xtask: the alias must let cargo say so (a `--quiet` alias kept it silent for ~80 s).
    #[test]
    fn the_xtask_alias_lets_cargo_show_the_build() {
        let config =
            std::fs::read_to_string(crate::tools::root().join(".cargo/config.toml")).unwrap();
        let alias = config
            .lines()
            .find(|l| l.starts_with("xtask"))
            .expect("the xtask alias");
        assert!(
            !alias.contains("--quiet") && !alias.contains(" -q"),
            "{alias}"
        );
    }
}

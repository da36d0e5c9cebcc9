//! `cargo xtask dist`: release binaries, shell completions and man pages in one folder, with a
//! checksum file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{release_binaries, root, target_dir};

const BINARIES: [&str; 2] = ["udsecho-server", "udsecho-client"];
const SHELLS: [(&str, &str); 3] = [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")];

pub(crate) fn run() -> Result<(), String> {
    release_binaries()?;
    let bin_dir = udsecho_harness::bin_dir();
    let dist = target_dir().join("dist").join(format!(
        "udsecho-{}-{}-linux",
        version()?,
        std::env::consts::ARCH
    ));
    if dist.exists() {
        fs::remove_dir_all(&dist).map_err(|e| format!("{}: {e}", dist.display()))?;
    }
    for sub in ["bin", "completions", "man/man1"] {
        fs::create_dir_all(dist.join(sub)).map_err(|e| format!("{}: {e}", dist.display()))?;
    }
    let mut files = Vec::new();
    for name in BINARIES {
        let binary = bin_dir.join(name);
        let installed = dist.join("bin").join(name);
        fs::copy(&binary, &installed).map_err(|e| format!("copying {}: {e}", binary.display()))?;
        files.push(installed);

        let man = dist.join("man/man1").join(format!("{name}.1"));
        write_generated(&binary, "man", &man)?;
        check_man_renders(&man)?;
        files.push(man);

        for (shell, ext) in SHELLS {
            let script = dist.join("completions").join(format!("{name}.{ext}"));
            write_generated(&binary, shell, &script)?;
            files.push(script);
        }
    }
    write_checksums(&dist, &files)?;
    println!("dist: {}", dist.display());
    for f in &files {
        println!("  {}", f.strip_prefix(&dist).unwrap_or(f).display());
    }
    println!("  SHA256SUMS");
    Ok(())
}

/// The workspace version, from the root manifest.
fn version() -> Result<String, String> {
    let manifest =
        fs::read_to_string(root().join("Cargo.toml")).map_err(|e| format!("Cargo.toml: {e}"))?;
    manifest
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .ok_or_else(|| "no version in [workspace.package]".to_owned())
}

/// Runs `binary --generate what` into `out`.
fn write_generated(binary: &Path, what: &str, out: &Path) -> Result<(), String> {
    let output = Command::new(binary)
        .args(["--generate", what])
        .output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    if !output.status.success() || output.stdout.is_empty() {
        return Err(format!(
            "{} --generate {what} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    fs::write(out, &output.stdout).map_err(|e| format!("{}: {e}", out.display()))
}

/// `man -l` must render the page (skipped, with a note, where man is not installed).
fn check_man_renders(page: &Path) -> Result<(), String> {
    let rendered = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output();
    match rendered {
        Ok(out)
            if out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("SYNOPSIS") =>
        {
            Ok(())
        }
        Ok(out) => Err(format!(
            "man -l {} did not render: {}",
            page.display(),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(_) => {
            eprintln!(
                "dist: `man` is not installed; not checking that {} renders",
                page.display()
            );
            Ok(())
        }
    }
}

/// Writes `SHA256SUMS` (the format `sha256sum -c` reads) for `files`.
fn write_checksums(dist: &Path, files: &[PathBuf]) -> Result<(), String> {
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(dist).unwrap_or(f).display().to_string())
        .collect();
    let output = Command::new("sha256sum")
        .args(&names)
        .current_dir(dist)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "sha256sum failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    fs::write(dist.join("SHA256SUMS"), &output.stdout).map_err(|e| format!("SHA256SUMS: {e}"))
}

//! What ships next to the binary: man pages (rendered by `man -l`) and shell completions
//! (driven in real bash, zsh and fish).

use std::path::Path;

use udsecho_harness::{Shell, complete, render_man};

use crate::bare_client;

fn generate_into(dir: &Path, what: &str) -> Vec<u8> {
    let mut cmd = bare_client();
    cmd.args(["--generate", what]);
    if what == "man" {
        cmd.arg(dir);
    }
    cmd.assert().success().get_output().stdout.clone()
}

#[test]
fn every_subcommand_has_a_man_page_with_environment_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    generate_into(dir.path(), "man");
    let pages: [(&str, &[&str]); 4] = [
        (
            "udsecho-client.1",
            &["--socket", "--timeout", "--type", "udsecho-client-send(1)"],
        ),
        ("udsecho-client-pipe.1", &["--framed", "half-closes"]),
        (
            "udsecho-client-send.1",
            &["--count", "--interval", "--message"],
        ),
        (
            "udsecho-client-bench.1",
            &["--connections", "--pipeline", "--duration"],
        ),
    ];
    for (page, flags) in pages {
        let text = render_man(&dir.path().join(page)).unwrap();
        for needle in
            flags
                .iter()
                .chain(&["ENVIRONMENT", "UDSECHO_SOCKET", "NO_COLOR", "EXIT STATUS"])
        {
            assert!(text.contains(needle), "{page} lacks {needle:?}:\n{text}");
        }
        assert!(!text.contains("generate"), "{page} shows --generate");
    }
    // The SYNOPSIS names the values (`[-c|--connections <N>]`, not `[-c|--connections]`).
    let bench = render_man(&dir.path().join("udsecho-client-bench.1")).unwrap();
    let synopsis: String = bench
        .split("SYNOPSIS")
        .nth(1)
        .and_then(|rest| rest.split("DESCRIPTION").next())
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for shown in [
        "[-c|--connections <N>]",
        "[-d|--duration <DUR>]",
        "[--size <BYTES>]",
        "[-i|--interval <DUR>]",
    ] {
        assert!(synopsis.contains(shown), "{shown} in {synopsis}");
    }
}

#[test]
fn completions_offer_subcommand_flags_in_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().unwrap();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let script = dir.path().join(format!("udsecho-client.{}", shell.name()));
        std::fs::write(&script, generate_into(dir.path(), shell.name())).unwrap();

        let bench = complete(shell, &script, "udsecho-client", "udsecho-client bench --").unwrap();
        for flag in ["--connections", "--pipeline", "--json", "--socket"] {
            assert!(
                bench.iter().any(|c| c == flag),
                "{shell:?}: `udsecho-client bench --<TAB>` offers {bench:?}, not {flag}"
            );
        }
        let send = complete(shell, &script, "udsecho-client", "udsecho-client send --c").unwrap();
        assert_eq!(send, ["--count"], "{shell:?}");

        let top = complete(shell, &script, "udsecho-client", "udsecho-client --").unwrap();
        assert!(top.iter().any(|c| c == "--timeout"), "{shell:?}: {top:?}");
        assert!(
            !top.iter().any(|c| c.contains("generate")),
            "{shell:?} offers the internal --generate: {top:?}"
        );
    }
}

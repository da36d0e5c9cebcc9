//! Real shells completing a command line with a generated completion script, and `man -l`
//! rendering a page: how the files `cargo xtask dist` ships are checked.
//!
//! bash is driven through its programmable-completion variables (`COMP_WORDS`, `COMP_CWORD`)
//! and the function `complete -p` names; fish through `complete -C`; zsh, whose completion
//! only runs inside its line editor, through a pseudo-terminal (`zpty`) where a Tab is typed
//! and `compadd` is wrapped to print the candidates.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A shell whose completion can be driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// zsh, with `compinit`.
    Zsh,
    /// fish.
    Fish,
}

impl Shell {
    /// The shell's name, as `clap_complete` and the program call it.
    pub fn name(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Zsh => "zsh",
            Shell::Fish => "fish",
        }
    }
}

/// bash: `$1` script, `$2` command, `$3` the line (the cursor at its end).
const BASH: &str = r#"
source "$1" || exit 3
COMP_LINE="$3"; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
spec=$(complete -p "$2") || exit 4
func=$(sed -n 's/.*-F \([^ ]*\).*/\1/p' <<< "$spec")
[[ -n "$func" ]] || exit 5
"$func" "$2" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;

/// zsh, outer side: `$1` a directory holding `_command`, `$2` the line. Starts an interactive
/// zsh on a pty, loads `ZSH_INNER` there, types the line and a Tab, and prints what the
/// wrapped `compadd` reported.
const ZSH_OUTER: &str = r#"
zmodload zsh/zpty || exit 3
zpty z zsh -f -i
zpty -w z "PROMPT=''; fpath=(${(q)1} \$fpath); source ${(q)1}/inner.zsh"
zpty -w z "$2"$'\t'
local line
while zpty -r z line; do
  [[ $line == *COMPLETION-END* ]] && break
  [[ $line == *COMPLETION:* ]] && print -r -- ${${line##*COMPLETION:}%%[[:space:]]#}
done
zpty -d z
"#;

/// zsh, inside the pty: completion on, `compadd` wrapped to print each candidate that
/// matches, and a marker once completion is over.
const ZSH_INNER: &str = r#"
autoload -Uz compinit && compinit -u -D
zstyle ':completion:*' list-grouped false
zstyle ':completion:*' insert-tab false
compadd () {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
    builtin compadd "$@"; return $?
  fi
  typeset -a __hits
  builtin compadd -A __hits "$@"
  local h
  for h in $__hits; do print -r -- "COMPLETION:$h"; done
}
_harness_done () { print -r -- "COMPLETION-END"; }
comppostfuncs=( _harness_done )
bindkey '^I' complete-word
"#;

/// The candidates `shell` offers for `line` (cursor at the end), with `script` (the
/// completion script generated for `command`) loaded. Sorted, without descriptions.
pub fn complete(shell: Shell, script: &Path, command: &str, line: &str) -> io::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let mut cmd = match shell {
        Shell::Bash => {
            let mut cmd = Command::new("bash");
            cmd.args(["--norc", "--noprofile", "-c", BASH, "bash"])
                .arg(script)
                .args([command, line]);
            cmd
        }
        Shell::Fish => {
            let mut cmd = Command::new("fish");
            cmd.args([
                "--no-config",
                "-c",
                "source $argv[1]; and complete -C $argv[2]",
            ])
            .arg(script)
            .arg(line);
            cmd
        }
        Shell::Zsh => {
            // compinit finds `_command` on fpath by its `#compdef` line.
            std::fs::copy(script, dir.path().join(format!("_{command}")))?;
            std::fs::write(dir.path().join("inner.zsh"), ZSH_INNER)?;
            let mut cmd = Command::new("zsh");
            cmd.args(["-f", "-c", ZSH_OUTER, "zsh"])
                .arg(dir.path())
                .arg(line);
            cmd
        }
    };
    let out = run(&mut cmd, shell.name(), Duration::from_secs(20))?;
    let mut candidates: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    candidates.sort();
    candidates.dedup();
    Ok(candidates)
}

/// `man -l page`, rendered as plain text 100 columns wide.
pub fn render_man(page: &Path) -> io::Result<String> {
    let mut cmd = Command::new("man");
    cmd.arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0");
    let out = run(&mut cmd, "man", Duration::from_secs(20))?;
    // Without a terminal, man still marks bold and underline by overstriking (`N\bN`,
    // `_\bX`); keep the visible character.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    Ok(text)
}

/// Runs `cmd` and returns its stdout; errors if it fails, is missing (with the package to
/// install) or runs past `within`.
fn run(cmd: &mut Command, program: &str, within: Duration) -> io::Result<Vec<u8>> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                let package = if program == "man" { "man-db" } else { program };
                io::Error::new(
                    e.kind(),
                    format!("{program} is not installed (apt-get install {package})"),
                )
            } else {
                e
            }
        })?;
    let output = crate::process::output_within(child, within)
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    let (status, out, err) = (output.status, output.stdout, output.stderr);
    if status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{program} failed ({status}): {}",
            String::from_utf8_lossy(&err).trim()
        )))
    }
}

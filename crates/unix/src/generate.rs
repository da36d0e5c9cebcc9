//! `--generate`: the man pages and shell completions `cargo xtask dist` ships, made from a
//! binary's clap command. Release tooling only: `--generate` is not a flag, so it is in no help
//! text and no completion; each binary's `main` looks for it first ([`requested`]) and hands
//! the words after it to [`generate`]. What differs per binary (its command, its ENVIRONMENT
//! and EXIT STATUS sections) is a [`Docs`] its `cli.rs` builds.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

/// What one binary's pages and completions are made of.
#[derive(Debug)]
pub struct Docs {
    /// The command as parsed: a page for it, and one per subcommand.
    pub command: clap::Command,
    /// The command the completions are made from (the client leaves out its positional
    /// socket, see its `cli.rs`).
    pub completion: clap::Command,
    /// What `--generate man` writes, named when it is given no directory (`udsecho-server.1`);
    /// `None`: no such hint, and `man` alone is read as a shell name.
    pub man_pages: Option<&'static str>,
    /// The ENVIRONMENT section: (variable, what it does).
    pub environment: &'static [(&'static str, &'static str)],
    /// The EXIT STATUS section: (status, when).
    pub exit_status: &'static [(&'static str, &'static str)],
}

/// Why `--generate` failed: the line for stderr (after the binary's name) and the exit status.
#[derive(Debug)]
pub struct Failed {
    /// The message, e.g. `--generate: usage: ...`.
    pub line: String,
    /// 2 for a missing directory (a usage error), 1 otherwise.
    pub status: u8,
}

/// The words after `--generate` when it is the first argument (`args` as
/// [`std::env::args_os`] gives them, the binary's name first); `None` for an ordinary
/// command line. Words that are not UTF-8 are read lossily: they name a shell or a directory,
/// and a wrong one is an error that [`generate`] reports.
///
/// ```
/// use std::ffi::OsString;
///
/// let args: Vec<OsString> = ["udsecho-server", "--generate", "man", "out"].map(Into::into).into();
/// assert_eq!(udsecho_unix::generate::requested(&args), Some(vec!["man".to_owned(), "out".to_owned()]));
/// let args: Vec<OsString> = ["udsecho-server", "-s", "--generate"].map(Into::into).into();
/// assert_eq!(udsecho_unix::generate::requested(&args), None);
/// ```
pub fn requested(args: &[OsString]) -> Option<Vec<String>> {
    if args.get(1).is_none_or(|a| a != "--generate") {
        return None;
    }
    Some(
        args[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    )
}

/// `--generate man DIR` writes a man page for the binary and one per subcommand into DIR and
/// prints each path; `--generate bash|zsh|fish` prints a completion script. `args` are the
/// words after `--generate`.
pub fn generate(args: &[String], docs: Docs) -> Result<(), Failed> {
    let name = docs.command.get_name().to_owned();
    let written = match (args, docs.man_pages) {
        ([what, dir], _) if what == "man" => {
            man_pages(Path::new(dir), &docs, &mut std::io::stdout().lock())
        }
        ([what], Some(pages)) if what == "man" => {
            return Err(Failed {
                line: format!(
                    "--generate man needs a directory: {name} --generate man DIR (it writes \
                     {pages} there)"
                ),
                status: 2,
            });
        }
        ([shell], _) => completions(shell, docs.completion),
        _ => Err(std::io::Error::other(format!(
            "usage: {name} --generate man DIR | bash | zsh | fish"
        ))),
    };
    written.map_err(|e| Failed {
        line: format!("--generate: {e}"),
        status: 1,
    })
}

/// Writes the pages into `dir`, and each one's path as a line to `listing` (stdout: a reader
/// that went away is an error to report, not a panic).
fn man_pages(dir: &Path, docs: &Docs, listing: &mut impl Write) -> std::io::Result<()> {
    let mut command = docs.command.clone().disable_help_subcommand(true);
    command.build();
    let source = format!(
        "{} {}",
        command.get_name(),
        command.get_version().unwrap_or_default()
    );
    let mut pages = vec![command.clone()];
    pages.extend(command.get_subcommands().cloned());
    for page in pages {
        let has_subcommands = page.get_subcommands().any(|s| !s.is_hide_set());
        let usage = synopsis(&page);
        let man = clap_mangen::Man::new(page.override_usage(usage)).source(source.clone());
        let path = dir.join(man.get_filename());
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
        if has_subcommands {
            man.render_subcommands_section(&mut out)?;
        }
        roff_section(&mut out, "ENVIRONMENT", docs.environment)?;
        roff_section(&mut out, "EXIT STATUS", docs.exit_status)?;
        man.render_version_section(&mut out)?;
        out.flush()?;
        writeln!(listing, "{}", path.display())?;
    }
    Ok(())
}

/// The SYNOPSIS line of `command`'s page: each visible option with the value it takes
/// (`[-c|--connections <N>]`; clap_mangen's own lists `[-c|--connections]` without it), then
/// the positional arguments and the subcommand. Rendered by clap_mangen as an overridden usage
/// (the name in bold).
fn synopsis(command: &clap::Command) -> String {
    let mut line = command
        .get_bin_name()
        .unwrap_or_else(|| command.get_name())
        .to_owned();
    for arg in command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
    {
        let names = match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => format!("-{short}|--{long}"),
            (Some(short), None) => format!("-{short}"),
            (None, Some(long)) => format!("--{long}"),
            (None, None) => continue,
        };
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let value = match arg.get_value_names() {
            Some(names) if takes_value => format!(" <{}>", names.join("> <")),
            None if takes_value => format!(" <{}>", arg.get_id().as_str().to_uppercase()),
            _ => String::new(),
        };
        let repeated = match arg.get_action() {
            clap::ArgAction::Append | clap::ArgAction::Count => "...",
            _ => "",
        };
        let (open, close) = if arg.is_required_set() {
            ("<", ">")
        } else {
            ("[", "]")
        };
        line.push_str(&format!(" {open}{names}{value}{close}{repeated}"));
    }
    for arg in command.get_positionals().filter(|a| !a.is_hide_set()) {
        let name = arg
            .get_value_names()
            .map(|v| v.join(" "))
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
        line.push_str(&format!(" [{name}]"));
    }
    if command.get_subcommands().any(|s| !s.is_hide_set()) {
        line.push_str(" [COMMAND]");
    }
    line
}

/// A man page section of tagged paragraphs, in roff.
fn roff_section(out: &mut impl Write, title: &str, items: &[(&str, &str)]) -> std::io::Result<()> {
    fn escape(text: &str) -> String {
        let text = text.replace('\\', "\\e").replace('-', "\\-");
        if text.starts_with(['.', '\'']) {
            format!("\\&{text}")
        } else {
            text
        }
    }
    writeln!(out, ".SH \"{title}\"")?;
    for (term, text) in items {
        writeln!(out, ".TP\n\\fB{}\\fR\n{}", escape(term), escape(text))?;
    }
    Ok(())
}

fn completions(shell: &str, mut command: clap::Command) -> std::io::Result<()> {
    let shell: clap_complete::Shell = shell.parse().map_err(std::io::Error::other)?;
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, &name, &mut script);
    let mut script = String::from_utf8(script).map_err(std::io::Error::other)?;
    if shell == clap_complete::Shell::Bash {
        // clap_complete names a subcommand's case label after the binary with each `-` turned
        // into `__subcmd__` (`udsecho__subcmd__client__subcmd__bench`) but sets `cmd` with
        // `-` turned into `__` (`udsecho__client__subcmd__bench`), so no subcommand's flags
        // would ever complete. Make the labels match (a binary without subcommands has none).
        script = script.replace(
            &format!("{}__subcmd__", name.replace('-', "__subcmd__")),
            &format!("{}__subcmd__", name.replace('-', "__")),
        );
    }
    std::io::stdout().write_all(script.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> Docs {
        let command = clap::Command::new("udsecho-demo")
            .version("1.2.3")
            // As every binary's does: each page has a VERSION section.
            .propagate_version(true)
            .about("A demo")
            .arg(
                clap::Arg::new("socket")
                    .short('s')
                    .long("socket")
                    .value_name("PATH"),
            )
            .arg(
                clap::Arg::new("verbose")
                    .short('v')
                    .action(clap::ArgAction::Count),
            )
            .subcommand(
                clap::Command::new("send").about("Sends").arg(
                    clap::Arg::new("count")
                        .short('n')
                        .long("count")
                        .value_parser(clap::value_parser!(u64)),
                ),
            );
        Docs {
            completion: command.clone(),
            command,
            man_pages: Some("udsecho-demo.1"),
            environment: &[("UDSECHO_SOCKET", "The socket.")],
            exit_status: &[("2", "Bad flags.")],
        }
    }

    #[test]
    fn a_page_for_the_command_and_each_subcommand_is_written_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut listing = Vec::new();
        man_pages(dir.path(), &docs(), &mut listing).unwrap();
        let listing = String::from_utf8(listing).unwrap();
        let names: Vec<&str> = listing.lines().collect();
        let expected = [
            dir.path().join("udsecho-demo.1"),
            dir.path().join("udsecho-demo-send.1"),
        ];
        assert_eq!(
            names,
            expected
                .iter()
                .map(|p| p.to_str().unwrap())
                .collect::<Vec<_>>()
        );
        let page = std::fs::read_to_string(&expected[0]).unwrap();
        let environment = ".SH \"ENVIRONMENT\"\n.TP\n\\fBUDSECHO_SOCKET\\fR\nThe socket.\n";
        assert!(page.contains(environment), "{page}");
        assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
        assert!(page.contains("\"udsecho-demo 1.2.3\""), "{page}");
        assert!(page.ends_with("v1.2.3\n"), "{page}");
    }

    /// The SYNOPSIS names each option's value (`[-n|--count <COUNT>]`), as --help does;
    /// clap_mangen's own left it out (`[-c|--connections]`, #34).
    #[test]
    fn the_synopsis_shows_the_values_options_take() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(dir.path(), &docs(), &mut Vec::new()).unwrap();
        let page = std::fs::read_to_string(dir.path().join("udsecho-demo.1")).unwrap();
        let synopsis = page
            .split(".SH SYNOPSIS\n")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .unwrap();
        assert_eq!(
            synopsis,
            "\\fBudsecho\\-demo\\fR [\\-s|\\-\\-socket <PATH>] [\\-v]... [\\-h|\\-\\-help] \
             [\\-V|\\-\\-version] [COMMAND]"
        );
        let page = std::fs::read_to_string(dir.path().join("udsecho-demo-send.1")).unwrap();
        assert!(
            page.contains("\\fBudsecho\\-demo send\\fR [\\-n|\\-\\-count <COUNT>]"),
            "{page}"
        );
    }

    #[test]
    fn a_listing_nobody_reads_is_an_error() {
        struct Gone;
        impl Write for Gone {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let err = man_pages(dir.path(), &docs(), &mut Gone).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn man_without_a_directory_is_a_usage_error_naming_the_pages() {
        let failed = generate(&["man".to_owned()], docs()).unwrap_err();
        assert_eq!(failed.status, 2);
        assert_eq!(
            failed.line,
            "--generate man needs a directory: udsecho-demo --generate man DIR (it writes \
             udsecho-demo.1 there)"
        );
        let failed = generate(&["tcsh".to_owned()], docs()).unwrap_err();
        assert_eq!(failed.status, 1);
        assert!(failed.line.starts_with("--generate: "), "{}", failed.line);
    }

    #[test]
    fn roff_text_is_escaped() {
        let mut out = Vec::new();
        roff_section(&mut out, "X", &[("-a", ".starts with a dot \\ and a-dash")]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ".SH \"X\"\n.TP\n\\fB\\-a\\fR\n\\&.starts with a dot \\e and a\\-dash\n"
        );
    }
}

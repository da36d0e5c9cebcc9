//! The results: a terminal summary (its last line is `N passed, N failed`), `--json` and
//! `--junit` files for CI. Text that comes from the target (its stderr, its bytes) is escaped
//! before it reaches any of them: see [`printable`].

use std::io::{self, Write};
use std::path::Path;

use crate::case::{Outcome, Verdict};

/// Counts by verdict; "passed" is everything that did not fail.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) ok: usize,
    pub(crate) non_strict: usize,
    pub(crate) unimplemented: usize,
    pub(crate) failed: usize,
}

impl Totals {
    pub(crate) fn of(outcomes: &[Outcome]) -> Totals {
        let mut t = Totals::default();
        for o in outcomes {
            match o.verdict {
                Verdict::Ok => t.ok += 1,
                Verdict::NonStrict(..) => t.non_strict += 1,
                Verdict::Unimplemented(..) => t.unimplemented += 1,
                Verdict::Failed(_) => t.failed += 1,
            }
        }
        t
    }

    pub(crate) fn passed(&self) -> usize {
        self.ok + self.non_strict + self.unimplemented
    }
}

/// `text` safe to print on a terminal: control characters (escape sequences, carriage
/// returns, newlines, bells) and the invisible formatting characters that reorder or hide
/// text (bidirectional overrides, zero-width marks) are written as Rust escapes (`\u{1b}`).
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let hidden = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}' | '\u{feff}');
        if c.is_control() || hidden {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The line that says what the runner saw of the target before the cases (a server's
/// modes), first in the report.
pub(crate) fn target(out: &mut impl Write, line: &str) -> io::Result<()> {
    writeln!(out, "{}", printable(line))
}

/// One line per case as it finishes, its detail (if `detail`) indented under it.
pub(crate) fn line(out: &mut impl Write, outcome: &Outcome, detail: bool) -> io::Result<()> {
    writeln!(
        out,
        "{:<13} {:<40} {}",
        outcome.verdict.word(),
        outcome.id,
        outcome.description
    )?;
    if let (Some(text), true) = (outcome.verdict.detail(), detail) {
        writeln!(out, "              {}", printable(text))?;
    }
    Ok(())
}

/// The summary; its last line is exactly `N passed, N failed`.
pub(crate) fn summary(
    out: &mut impl Write,
    outcomes: &[Outcome],
    skipped: &[&str],
) -> io::Result<()> {
    let t = Totals::of(outcomes);
    writeln!(out)?;
    if !skipped.is_empty() {
        writeln!(
            out,
            "not run (need --cmd, so the runner can signal the server): {}",
            skipped.join(", ")
        )?;
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.verdict.failed())
        .map(|o| o.id)
        .collect();
    if !failed.is_empty() {
        writeln!(out, "failed: {}", failed.join(", "))?;
    }
    writeln!(
        out,
        "{} ok, {} non-strict, {} unimplemented",
        t.ok, t.non_strict, t.unimplemented
    )?;
    writeln!(out, "{} passed, {} failed", t.passed(), t.failed)
}

/// What a report file says beyond the outcomes: what was tested, and what the runner saw
/// of it first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run<'a> {
    /// `server` or `client`.
    pub(crate) mode: &'a str,
    /// The probe's line (servers), if there was one.
    pub(crate) target: Option<&'a str>,
}

/// A report file writer: the path, the run, the outcomes.
pub(crate) type Writer = fn(&Path, Run<'_>, &[Outcome]) -> io::Result<()>;

/// `--json FILE`: every case with its verdict, plus the totals.
pub(crate) fn json(path: &Path, run: Run<'_>, outcomes: &[Outcome]) -> io::Result<()> {
    let t = Totals::of(outcomes);
    let cases: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            serde_json::json!({
                "id": o.id,
                "section": o.id.split('/').next().unwrap_or(o.id),
                "description": o.description,
                "verdict": o.verdict.word(),
                "detail": o.verdict.detail().map(printable),
                "needs": o.needs.iter().map(|n| n.name()).collect::<Vec<_>>(),
                "duration_ms": o.duration.as_millis() as u64,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "tested": run.mode,
        "target": run.target.map(printable),
        "cases": cases,
        "ok": t.ok,
        "non_strict": t.non_strict,
        "unimplemented": t.unimplemented,
        "passed": t.passed(),
        "failed": t.failed,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// Text for an XML attribute or element.
fn xml(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&apos;".to_owned(),
            // XML 1.0 has no way to carry other control characters.
            c if c.is_control() && !matches!(c, '\n' | '\t') => "\u{fffd}".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// `--junit FILE`: one testsuite, one testcase per case; FAILED is a failure, UNIMPLEMENTED
/// is skipped, NON-STRICT passes with its reason in system-out.
pub(crate) fn junit(path: &Path, run: Run<'_>, outcomes: &[Outcome]) -> io::Result<()> {
    let mode = run.mode;
    let t = Totals::of(outcomes);
    let total: f64 = outcomes.iter().map(|o| o.duration.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out += &format!(
        "<testsuites><testsuite name=\"udsecho-conformance {}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total:.3}\">\n",
        xml(mode),
        outcomes.len(),
        t.failed,
        t.unimplemented
    );
    for o in outcomes {
        out += &format!(
            "  <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.3}\">",
            xml(mode),
            xml(o.id.split('/').next().unwrap_or(o.id)),
            xml(o.id),
            o.duration.as_secs_f64()
        );
        match &o.verdict {
            Verdict::Ok => {}
            Verdict::Failed(d) => {
                out += &format!(
                    "<failure message=\"{}\">{}</failure>",
                    xml(o.description),
                    xml(&printable(d))
                );
            }
            Verdict::Unimplemented(_, d) => {
                out += &format!("<skipped message=\"{}\"/>", xml(&printable(d)))
            }
            Verdict::NonStrict(_, d) => {
                out += &format!(
                    "<system-out>NON-STRICT: {}</system-out>",
                    xml(&printable(d))
                )
            }
        }
        out += "</testcase>\n";
    }
    out += "</testsuite></testsuites>\n";
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Feature;
    use std::time::Duration;

    fn outcome(id: &'static str, verdict: Verdict) -> Outcome {
        Outcome {
            id,
            description: "d",
            needs: &[],
            verdict,
            duration: Duration::from_millis(3),
        }
    }

    #[test]
    fn the_summary_ends_with_passed_and_failed() {
        let outcomes = [
            outcome("1/a", Verdict::Ok),
            outcome("1/b", Verdict::NonStrict(Feature::CutThrough, "n".into())),
            outcome("2/c", Verdict::Unimplemented(Feature::Raw, "u".into())),
            outcome("3/d", Verdict::Failed("f".into())),
        ];
        let mut out = Vec::new();
        summary(&mut out, &outcomes, &[]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().last(), Some("3 passed, 1 failed"), "{text}");
        assert!(text.contains("failed: 3/d"));
    }

    #[test]
    fn target_text_reaches_the_terminal_escaped() {
        assert_eq!(
            printable("ok\x1b[2J\r\n\u{7}\u{202e}gnp.exe é"),
            r"ok\u{1b}[2J\u{d}\u{a}\u{7}\u{202e}gnp.exe é"
        );
        let mut out = Vec::new();
        let failed = outcome("4/a", Verdict::Failed("stderr: \x1b]0;owned\x07".into()));
        line(&mut out, &failed, true).unwrap();
        assert!(!out.contains(&0x1b) && !out.contains(&0x07), "{out:?}");
    }

    #[test]
    fn xml_escapes_markup_and_control_bytes() {
        assert_eq!(
            xml("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot;\u{fffd}"
        );
    }
}

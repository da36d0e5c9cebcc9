//! A case, its verdict, what it needs of the target, and choosing cases by id or glob.

use std::time::Duration;

/// What a case may take beyond `--timeout`, all its waits and pauses included: the runner's
/// own scripted pauses (1 s at most) and room for the target to start. So every case ends
/// within `--timeout` plus this, whatever the target does.
pub(crate) const GRACE: Duration = Duration::from_secs(3);

/// A behaviour PROTOCOL.md leaves to the implementation: when it is absent the verdict is
/// UNIMPLEMENTED (an optional mode or shutdown) or NON-STRICT (a SHOULD), unless `--require`
/// or `--strict` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Feature {
    /// The framed session (§3-4): absent in a raw echo server (forced raw mode, §8 S7).
    Framed,
    /// Raw mode with auto detection (§1-2): absent in a framed-only server.
    Raw,
    /// Graceful shutdown on SIGTERM (§4): absent in a server that just dies.
    Drain,
    /// Data echoed as it arrives (§4 item 3, a SHOULD).
    CutThrough,
}

impl Feature {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Feature::Framed => "framed",
            Feature::Raw => "raw",
            Feature::Drain => "drain",
            Feature::CutThrough => "cut-through",
        }
    }
}

/// What a case needs of the target before it can say anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// A framed session: UNIMPLEMENTED at once on a raw echo server.
    Framed,
    /// Raw mode: UNIMPLEMENTED at once on a server seen refusing raw bytes.
    Raw,
    /// The runner signals the server, so it must have started it (`--cmd`): not run with
    /// `--socket`.
    Signal,
}

impl Need {
    /// Its name in the JSON report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Need::Framed => "framed",
            Need::Raw => "raw",
            Need::Signal => "signal",
        }
    }
}

/// What a case found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The implementation does what PROTOCOL.md says.
    Ok,
    /// Allowed, but not what PROTOCOL.md recommends: the SHOULD missed, and why.
    NonStrict(Feature, String),
    /// An optional feature is absent, and what the target was seen doing that shows it.
    Unimplemented(Feature, String),
    /// A rule is broken: what was expected and what was seen.
    Failed(String),
}

impl Verdict {
    /// The word in reports.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::NonStrict(..) => "NON-STRICT",
            Verdict::Unimplemented(..) => "UNIMPLEMENTED",
            Verdict::Failed(_) => "FAILED",
        }
    }

    /// The explanation, if any.
    pub(crate) fn detail(&self) -> Option<&str> {
        match self {
            Verdict::Ok => None,
            Verdict::NonStrict(_, s) | Verdict::Unimplemented(_, s) | Verdict::Failed(s) => Some(s),
        }
    }

    pub(crate) fn failed(&self) -> bool {
        matches!(self, Verdict::Failed(_))
    }

    /// Held to `required`: a NON-STRICT or UNIMPLEMENTED verdict about a required feature is
    /// a failure.
    pub(crate) fn held_to(self, required: &[Feature]) -> Verdict {
        match self {
            Verdict::NonStrict(f, why) | Verdict::Unimplemented(f, why)
                if required.contains(&f) =>
            {
                Verdict::Failed(format!("{why} (required: --require {})", f.name()))
            }
            other => other,
        }
    }
}

impl From<Result<(), String>> for Verdict {
    fn from(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Verdict::Ok,
            Err(e) => Verdict::Failed(e),
        }
    }
}

impl From<Result<Verdict, String>> for Verdict {
    fn from(result: Result<Verdict, String>) -> Self {
        result.unwrap_or_else(Verdict::Failed)
    }
}

/// One case: its id names the PROTOCOL.md section (and the rule of §8) it checks.
#[derive(Debug)]
pub(crate) struct Case<Ctx> {
    pub(crate) id: &'static str,
    pub(crate) description: &'static str,
    /// What it needs of the target (the runner decides before running it).
    pub(crate) needs: &'static [Need],
    pub(crate) run: fn(&mut Ctx) -> Verdict,
}

/// One case's outcome.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) id: &'static str,
    pub(crate) description: &'static str,
    pub(crate) needs: &'static [Need],
    pub(crate) verdict: Verdict,
    pub(crate) duration: Duration,
}

/// Does `id` match the glob `pattern` (`*` any run of characters, `?` one character)?
pub(crate) fn glob_match(pattern: &str, id: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), id.chars().collect());
    // The classic two-pointer matcher: on a mismatch, retry from the last `*`.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Does `id` match one of the patterns? A pattern that is a bare section (`4.1`) matches
/// every case of that section.
fn matches_any(patterns: &[String], id: &str) -> bool {
    patterns.iter().any(|p| {
        glob_match(p, id) || (!p.contains('/') && id.split('/').next() == Some(p.as_str()))
    })
}

/// The cases `--cases` keeps and `--exclude` does not drop. A pattern that matches no case
/// at all is an error (a typo would otherwise run nothing and pass).
pub(crate) fn select<'a, Ctx>(
    all: &'a [Case<Ctx>],
    cases: &[String],
    exclude: &[String],
) -> Result<Vec<&'a Case<Ctx>>, String> {
    for pattern in cases.iter().chain(exclude) {
        if !all
            .iter()
            .any(|c| matches_any(std::slice::from_ref(pattern), c.id))
        {
            return Err(format!(
                "no case matches {pattern:?} (`--list` shows the ids)"
            ));
        }
    }
    Ok(all
        .iter()
        .filter(|c| cases.is_empty() || matches_any(cases, c.id))
        .filter(|c| !matches_any(exclude, c.id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_ids() {
        assert!(glob_match("4.1/*", "4.1/negotiate-down"));
        assert!(glob_match("*/length-*", "3/length-over-max"));
        assert!(glob_match("3/length-at-max", "3/length-at-max"));
        assert!(glob_match("3/length-?t-max", "3/length-at-max"));
        assert!(!glob_match("4.1/*", "4/hello-first"));
        assert!(!glob_match("3/length", "3/length-at-max"));
        assert!(glob_match("*", ""));
    }

    fn case(id: &'static str) -> Case<()> {
        Case {
            id,
            description: "",
            needs: &[],
            run: |_| Verdict::Ok,
        }
    }

    #[test]
    fn selection_by_id_section_and_exclusion() {
        let all = [case("1/a"), case("4/b"), case("4.1/c")];
        let ids = |c: &[String], e: &[String]| -> Vec<&str> {
            select(&all, c, e).unwrap().iter().map(|c| c.id).collect()
        };
        assert_eq!(ids(&[], &[]), ["1/a", "4/b", "4.1/c"]);
        assert_eq!(ids(&["4".into()], &[]), ["4/b"]);
        assert_eq!(ids(&["4*".into()], &["4.1/c".into()]), ["4/b"]);
        assert!(select(&all, &["9/x".to_owned()], &[]).is_err());
    }

    #[test]
    fn required_features_turn_their_verdicts_into_failures() {
        let absent = Verdict::Unimplemented(Feature::Drain, "dies".into());
        assert_eq!(absent.clone().held_to(&[Feature::Raw]), absent);
        assert!(absent.held_to(&[Feature::Drain]).failed());
        let should = Verdict::NonStrict(Feature::CutThrough, "holds".into());
        assert!(should.held_to(&[Feature::CutThrough]).failed());
        assert_eq!(Verdict::Ok.held_to(&[Feature::CutThrough]), Verdict::Ok);
    }
}

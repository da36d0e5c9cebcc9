//! A case, its verdict, and choosing cases by id or glob.

use std::time::Duration;

/// What a case found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The implementation does what PROTOCOL.md says.
    Ok,
    /// Allowed, but not what PROTOCOL.md recommends: why.
    NonStrict(String),
    /// An optional feature is absent: which.
    Unimplemented(String),
    /// A rule is broken: what was expected and what was seen.
    Failed(String),
}

impl Verdict {
    /// The word in reports.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::NonStrict(_) => "NON-STRICT",
            Verdict::Unimplemented(_) => "UNIMPLEMENTED",
            Verdict::Failed(_) => "FAILED",
        }
    }

    /// The explanation, if any.
    pub(crate) fn detail(&self) -> Option<&str> {
        match self {
            Verdict::Ok => None,
            Verdict::NonStrict(s) | Verdict::Unimplemented(s) | Verdict::Failed(s) => Some(s),
        }
    }

    pub(crate) fn failed(&self) -> bool {
        matches!(self, Verdict::Failed(_))
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
    pub(crate) run: fn(&mut Ctx) -> Verdict,
}

/// One case's outcome.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) id: &'static str,
    pub(crate) description: &'static str,
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
}

//! The fault grammar udsecho's server and client share: one `--fault` value (or one `add` on
//! the server's control socket) parsed into a [`FaultSpec`], once, at the edge. It knows
//! text, durations and sizes, nothing about connections or sockets; what each side does with
//! a fault is its own (the server's `fault` module, the client's pipe).
//!
//! ```
//! use std::time::Duration;
//! use udsecho_fault::{Fault, FaultSpec};
//!
//! let spec = FaultSpec::parse("slicer=1,gap=10ms@0.25").unwrap();
//! assert_eq!(spec.fault, Fault::Slicer { size: 1, gap: Duration::from_millis(10) });
//! assert_eq!(spec.share_ppm, 250_000);
//! assert!(FaultSpec::parse("lag=1s").is_err());
//! ```
//!
//! ```text
//! SPEC     = NAME [ "=" VALUE ] { "," KEY "=" VALUE } [ "@" SHARE ]
//! SHARE    = a fraction of connections: 0.25, or 25%
//! ```
//!
//! The names follow Toxiproxy's toxics (`latency`, `bandwidth`, `slicer`, `limit_data`,
//! `slow_close`, `timeout`, `reset_peer`) and netem's (`delay`, `loss`, `duplicate`, `reorder`,
//! `corrupt`) where one of them means the same thing; docs/faults.md has the whole table.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

/// The longest a fault may wait: beyond it a delay means nothing (and `Instant` arithmetic
/// could overflow).
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The most lines of a canned-answer file, and the most bytes of a canned answer: they are
/// held for the server's life.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// One fault as it was asked for: what it does, and to which share of connections.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// What happens to a connection it hits.
    pub fault: Fault,
    /// The share of connections it hits, in millionths (1,000,000: every one). Which ones is
    /// drawn per connection from `--fault-seed`.
    pub share_ppm: u32,
    /// The text it was parsed from, for `-v` and the control socket's `list`.
    text: String,
}

/// What a fault does to a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// `latency=DUR[~JITTER]` (netem: `delay`): each echo waits DUR, plus or minus up to
    /// JITTER (uniform), before its first byte goes out.
    Latency { delay: Duration, jitter: Duration },
    /// `bandwidth=BYTES`: echoes go out at this many bytes a second at most.
    Bandwidth { bytes_per_sec: u64 },
    /// `slicer=BYTES[,gap=DUR]`: echoes go out in slices of at most BYTES, GAP apart
    /// (default 10ms).
    Slicer { size: usize, gap: Duration },
    /// `stop_reading=BYTES`: after reading BYTES the server reads no more from the
    /// connection, so the peer's writes fill the socket and block.
    StopReading { after: u64 },
    /// `limit_data=BYTES`: after echoing BYTES the connection is closed, even in the middle
    /// of a message.
    LimitData { bytes: u64 },
    /// `timeout[=DUR]`: input is read and dropped, nothing is ever answered; after DUR (if
    /// given) the connection is closed.
    Timeout { close_after: Option<Duration> },
    /// `reset_peer[=DUR]`: the connection is closed at once (after DUR, if given), without
    /// reading: a peer that sent something sees `ECONNRESET`.
    ResetPeer { after: Duration },
    /// `slow_close=DUR`: after the peer's half-close, the server waits DUR before its own.
    SlowClose { delay: Duration },
    /// `corrupt[=OFFSET]`: the echo's byte at OFFSET (counted from the connection's first
    /// echoed byte, default 0) is inverted.
    Corrupt { offset: u64 },
    /// `answer=TEXT` or `answer_file=PATH`: instead of the echo, each line the peer sends
    /// (each message, on a message socket) gets this answer, or the file's next line.
    Answer(Answer),
    /// `error_after=N[,code=C]`: framed, after N Data frames are echoed the server sends an
    /// Error frame (code C, default 65535) and closes.
    ErrorAfter { frames: u32, code: u16 },
    /// `goodbye_after=N`: framed, after N Data frames are echoed the server says Goodbye
    /// (reason Done) and closes.
    GoodbyeAfter { frames: u32 },
    /// `loss=P` (also `drop`): a message socket's message is dropped with probability P.
    Loss { probability: f64 },
    /// `duplicate=P`: a message is echoed twice with probability P.
    Duplicate { probability: f64 },
    /// `reorder=P`: a message is held back with probability P and echoed after the next one.
    Reorder { probability: f64 },
    /// `truncate=BYTES`: a message's echo is cut to its first BYTES.
    Truncate { len: usize },
    /// `withhold_fds`: descriptors the peer passes (`SCM_RIGHTS`) are closed, not sent back
    /// with their echo.
    WithholdFds,
    /// `extra_fd`: every echo carries one descriptor more than the peer passed (`/dev/null`).
    ExtraFd,
    /// `half_close=BYTES` (client): after sending BYTES the client shuts down its write side,
    /// sends no more, and reads the rest of the answer.
    HalfClose { after: u64 },
}

/// A canned answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The same bytes every time.
    Fixed(Bytes),
    /// A file's lines in turn (each with its newline), from the first again after the last.
    Lines { path: PathBuf, lines: Vec<Bytes> },
}

/// Why a fault spec was refused: one line, naming the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad fault {spec:?}: {why}")]
pub struct FaultError {
    /// The spec as given.
    pub spec: String,
    /// What is wrong with it.
    pub why: String,
}

/// Every name the grammar knows, for the error that lists them.
const NAMES: &str = "latency (delay), bandwidth, slicer, stop_reading, limit_data, timeout, \
                     reset_peer, slow_close, corrupt, answer, answer_file, error_after, \
                     goodbye_after, loss (drop), duplicate, reorder, truncate, withhold_fds, \
                     extra_fd, half_close";

impl FaultSpec {
    /// Parses one spec, e.g. `latency=100ms~20ms@0.25`, `slicer=1,gap=10ms`.
    pub fn parse(text: &str) -> Result<FaultSpec, FaultError> {
        let fail = |why: String| FaultError {
            spec: text.to_owned(),
            why,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(fail(format!("empty (expected one of: {NAMES})")));
        }
        // `answer=` text may hold '@' and ',': it takes the rest of the spec, unsplit.
        let (body, share_ppm) = if trimmed.starts_with("answer=") {
            (trimmed, 1_000_000)
        } else {
            match trimmed.rsplit_once('@') {
                Some((body, share)) => (body, parse_share(share).map_err(fail)?),
                None => (trimmed, 1_000_000),
            }
        };
        let (head, options) = if body.starts_with("answer=") {
            (body, "")
        } else {
            body.split_once(',').unwrap_or((body, ""))
        };
        let (name, value) = match head.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (head, None),
        };
        let mut options = Options::parse(options).map_err(fail)?;
        let fault = Fault::parse(name, value, &mut options).map_err(fail)?;
        if let Some(key) = options.unused() {
            return Err(fail(format!("{name} takes no option {key:?}")));
        }
        Ok(FaultSpec {
            fault,
            share_ppm,
            text: trimmed.to_owned(),
        })
    }

    /// The spec as it was given.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for FaultSpec {
    type Err = FaultError;

    fn from_str(s: &str) -> Result<Self, FaultError> {
        FaultSpec::parse(s)
    }
}

impl Fault {
    fn parse(name: &str, value: Option<&str>, options: &mut Options<'_>) -> Result<Fault, String> {
        let need = |what: &str| -> Result<&str, String> {
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{name} needs a value: {name}={what}"))
        };
        Ok(match name {
            "latency" | "delay" => {
                let value = need("DUR[~JITTER]")?;
                let (delay, jitter) = match value.split_once('~') {
                    Some((delay, jitter)) => (parse_wait(delay)?, parse_wait(jitter)?),
                    None => (parse_wait(value)?, Duration::ZERO),
                };
                Fault::Latency { delay, jitter }
            }
            "bandwidth" => {
                let value = need("BYTES (a second)")?;
                let bytes_per_sec = parse_size(value.strip_suffix("/s").unwrap_or(value))?;
                Fault::Bandwidth { bytes_per_sec }
            }
            "slicer" => {
                let size = parse_size(need("BYTES[,gap=DUR]")?)?;
                let gap = match options.take("gap") {
                    Some(gap) => parse_wait(gap)?,
                    None => Duration::from_millis(10),
                };
                Fault::Slicer {
                    size: usize::try_from(size).map_err(|_| "slice too large".to_owned())?,
                    gap,
                }
            }
            "stop_reading" => Fault::StopReading {
                after: parse_count(need("BYTES")?)?,
            },
            "limit_data" => Fault::LimitData {
                bytes: parse_count(need("BYTES")?)?,
            },
            "timeout" => Fault::Timeout {
                close_after: value.map(parse_wait).transpose()?,
            },
            "reset_peer" => Fault::ResetPeer {
                after: value.map(parse_wait).transpose()?.unwrap_or_default(),
            },
            "slow_close" => Fault::SlowClose {
                delay: parse_wait(need("DUR")?)?,
            },
            "corrupt" => Fault::Corrupt {
                offset: value.map(parse_count).transpose()?.unwrap_or(0),
            },
            "answer" => {
                let text = unescape(need("TEXT")?)?;
                if text.len() > MAX_ANSWER_BYTES {
                    return Err("the answer is longer than 1 MiB".to_owned());
                }
                Fault::Answer(Answer::Fixed(Bytes::from(text)))
            }
            "answer_file" => {
                let path = PathBuf::from(need("PATH")?);
                Fault::Answer(Answer::Lines {
                    lines: read_lines(&path)?,
                    path,
                })
            }
            "error_after" => {
                let frames = parse_frames(need("FRAMES[,code=CODE]")?)?;
                let code = match options.take("code") {
                    Some(code) => code
                        .parse::<u16>()
                        .map_err(|_| format!("code {code:?}: expected 0 to 65535"))?,
                    None => u16::MAX,
                };
                Fault::ErrorAfter { frames, code }
            }
            "goodbye_after" => Fault::GoodbyeAfter {
                frames: parse_frames(need("FRAMES")?)?,
            },
            "loss" | "drop" => Fault::Loss {
                probability: parse_probability(need("P")?)?,
            },
            "duplicate" => Fault::Duplicate {
                probability: parse_probability(need("P")?)?,
            },
            "reorder" => Fault::Reorder {
                probability: parse_probability(need("P")?)?,
            },
            "truncate" => Fault::Truncate {
                len: usize::try_from(parse_count(need("BYTES")?)?)
                    .map_err(|_| "too large".to_owned())?,
            },
            "withhold_fds" | "extra_fd" if value.is_some() => {
                return Err(format!("{name} takes no value"));
            }
            "withhold_fds" => Fault::WithholdFds,
            "extra_fd" => Fault::ExtraFd,
            "half_close" => Fault::HalfClose {
                after: parse_count(need("BYTES")?)?,
            },
            other => {
                return Err(format!(
                    "unknown fault {other:?} (expected one of: {NAMES})"
                ));
            }
        })
    }

    /// The fault's name in the grammar.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Latency { .. } => "latency",
            Fault::Bandwidth { .. } => "bandwidth",
            Fault::Slicer { .. } => "slicer",
            Fault::StopReading { .. } => "stop_reading",
            Fault::LimitData { .. } => "limit_data",
            Fault::Timeout { .. } => "timeout",
            Fault::ResetPeer { .. } => "reset_peer",
            Fault::SlowClose { .. } => "slow_close",
            Fault::Corrupt { .. } => "corrupt",
            Fault::Answer(_) => "answer",
            Fault::ErrorAfter { .. } => "error_after",
            Fault::GoodbyeAfter { .. } => "goodbye_after",
            Fault::Loss { .. } => "loss",
            Fault::Duplicate { .. } => "duplicate",
            Fault::Reorder { .. } => "reorder",
            Fault::Truncate { .. } => "truncate",
            Fault::WithholdFds => "withhold_fds",
            Fault::ExtraFd => "extra_fd",
            Fault::HalfClose { .. } => "half_close",
        }
    }

    /// Whether a server can do it (all but the client's `half_close`).
    pub fn for_server(&self) -> bool {
        !matches!(self, Fault::HalfClose { .. })
    }

    /// Whether the client can do it, as a misbehaving client (the pipe; `send` takes slices
    /// only): slices with a gap, stop reading, close mid-message (`limit_data`), half-close
    /// early.
    pub fn for_client(&self) -> bool {
        matches!(
            self,
            Fault::Slicer { .. }
                | Fault::StopReading { .. }
                | Fault::LimitData { .. }
                | Fault::HalfClose { .. }
        )
    }

    /// Whether it concerns messages only (seqpacket and datagram sockets).
    pub fn messages_only(&self) -> bool {
        matches!(
            self,
            Fault::Loss { .. }
                | Fault::Duplicate { .. }
                | Fault::Reorder { .. }
                | Fault::Truncate { .. }
        )
    }
}

/// The `KEY=VALUE` options after the first comma, each to be taken once.
struct Options<'a>(Vec<(&'a str, &'a str, bool)>);

impl<'a> Options<'a> {
    fn parse(text: &'a str) -> Result<Options<'a>, String> {
        let mut options = Vec::new();
        for option in text.split(',').filter(|o| !o.is_empty()) {
            let Some((key, value)) = option.split_once('=') else {
                return Err(format!("option {option:?}: expected KEY=VALUE"));
            };
            if options.iter().any(|(k, _, _)| *k == key) {
                return Err(format!("option {key:?} is given twice"));
            }
            options.push((key, value, false));
        }
        Ok(Options(options))
    }

    fn take(&mut self, key: &str) -> Option<&'a str> {
        let option = self.0.iter_mut().find(|(k, _, _)| *k == key)?;
        option.2 = true;
        Some(option.1)
    }

    fn unused(&self) -> Option<&'a str> {
        self.0.iter().find(|(_, _, used)| !used).map(|(k, _, _)| *k)
    }
}

/// `0.25` or `25%`, as a number (not yet checked to be a fraction).
fn parse_fraction(text: &str) -> Option<f64> {
    match text.strip_suffix('%') {
        Some(percent) => percent.parse::<f64>().ok().map(|p| p / 100.0),
        None => text.parse::<f64>().ok(),
    }
}

/// `0.25` or `25%`: above 0, at most 1.
fn parse_share(text: &str) -> Result<u32, String> {
    let share = parse_fraction(text).ok_or_else(|| {
        format!("share {text:?}: expected a fraction of connections (0.25 or 25%)")
    })?;
    if !(share > 0.0 && share <= 1.0) {
        return Err(format!(
            "share {text:?}: must be above 0 and at most 1 (100%)"
        ));
    }
    // Rounded to a millionth; at least one.
    Ok(((share * 1e6).round() as u32).max(1))
}

fn parse_probability(text: &str) -> Result<f64, String> {
    let p = parse_fraction(text)
        .ok_or_else(|| format!("{text:?}: expected a probability (0.1 or 10%)"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{text:?}: a probability is from 0 to 1"));
    }
    Ok(p)
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?}: {e} (write durations like 100ms, 2s)"))?;
    if d > MAX_WAIT {
        return Err(format!("{text:?}: at most 24h"));
    }
    Ok(d)
}

/// A size of at least one byte (`64KiB`, `1500`).
fn parse_size(text: &str) -> Result<u64, String> {
    match parse_count(text)? {
        0 => Err(format!("{text:?}: must be at least 1 byte")),
        n => Ok(n),
    }
}

/// A byte count, zero allowed.
fn parse_count(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{text:?}: {e} (write sizes like 100, 64KiB)"))
}

fn parse_frames(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .map_err(|_| format!("{text:?}: expected a number of frames"))
}

/// `answer=` text: `\n`, `\r`, `\t`, `\\` and `\xNN` escapes, so a shell line can say any
/// bytes.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = [bytes.next(), bytes.next()];
                let byte = match hex {
                    [Some(h), Some(l)] => std::str::from_utf8(&[h, l])
                        .ok()
                        .and_then(|s| u8::from_str_radix(s, 16).ok()),
                    _ => None,
                };
                out.push(byte.ok_or("\\x needs two hex digits")?);
            }
            other => {
                return Err(format!(
                    "unknown escape \\{} (\\n \\r \\t \\0 \\\\ \\xNN)",
                    other.map_or(String::new(), |b| char::from(b).to_string())
                ));
            }
        }
    }
    Ok(out)
}

/// A canned-answer file's lines, each with its newline (the last one given one if it has
/// none).
fn read_lines(path: &std::path::Path) -> Result<Vec<Bytes>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() > MAX_ANSWER_BYTES {
        return Err(format!("{}: longer than 1 MiB", path.display()));
    }
    let lines: Vec<Bytes> = text
        .split_inclusive(|&b| b == b'\n')
        .map(|line| {
            let mut line = line.to_vec();
            if line.last() != Some(&b'\n') {
                line.push(b'\n');
            }
            Bytes::from(line)
        })
        .collect();
    if lines.is_empty() {
        return Err(format!("{}: the file is empty", path.display()));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Fault {
        FaultSpec::parse(text).unwrap().fault
    }

    #[test]
    fn every_fault_reads_as_documented() {
        assert_eq!(
            parse("latency=100ms~20ms"),
            Fault::Latency {
                delay: Duration::from_millis(100),
                jitter: Duration::from_millis(20)
            }
        );
        assert_eq!(parse("delay=1s"), parse("latency=1s~0s"));
        assert_eq!(
            parse("bandwidth=64KiB/s"),
            Fault::Bandwidth {
                bytes_per_sec: 65536
            }
        );
        assert_eq!(
            parse("slicer=1,gap=5ms"),
            Fault::Slicer {
                size: 1,
                gap: Duration::from_millis(5)
            }
        );
        assert_eq!(
            parse("slicer=3"),
            Fault::Slicer {
                size: 3,
                gap: Duration::from_millis(10)
            }
        );
        assert_eq!(
            parse("stop_reading=1KiB"),
            Fault::StopReading { after: 1024 }
        );
        assert_eq!(parse("limit_data=5"), Fault::LimitData { bytes: 5 });
        assert_eq!(parse("timeout"), Fault::Timeout { close_after: None });
        assert_eq!(
            parse("timeout=2s"),
            Fault::Timeout {
                close_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            parse("reset_peer"),
            Fault::ResetPeer {
                after: Duration::ZERO
            }
        );
        assert_eq!(
            parse("slow_close=300ms"),
            Fault::SlowClose {
                delay: Duration::from_millis(300)
            }
        );
        assert_eq!(parse("corrupt"), Fault::Corrupt { offset: 0 });
        assert_eq!(parse("corrupt=7"), Fault::Corrupt { offset: 7 });
        assert_eq!(
            parse("answer=OK, done @ 5\\n"),
            Fault::Answer(Answer::Fixed(Bytes::from_static(b"OK, done @ 5\n")))
        );
        assert_eq!(
            parse("error_after=2,code=7"),
            Fault::ErrorAfter { frames: 2, code: 7 }
        );
        assert_eq!(
            parse("error_after=2"),
            Fault::ErrorAfter {
                frames: 2,
                code: u16::MAX
            }
        );
        assert_eq!(parse("goodbye_after=0"), Fault::GoodbyeAfter { frames: 0 });
        assert_eq!(parse("drop=10%"), Fault::Loss { probability: 0.1 });
        assert_eq!(parse("duplicate=1"), Fault::Duplicate { probability: 1.0 });
        assert_eq!(parse("reorder=0.5"), Fault::Reorder { probability: 0.5 });
        assert_eq!(parse("truncate=4"), Fault::Truncate { len: 4 });
        assert_eq!(parse("half_close=3"), Fault::HalfClose { after: 3 });
        assert_eq!(parse("withhold_fds"), Fault::WithholdFds);
        assert_eq!(parse("extra_fd@0.5"), Fault::ExtraFd);
    }

    #[test]
    fn a_share_picks_a_fraction_of_connections() {
        assert_eq!(FaultSpec::parse("timeout@0.25").unwrap().share_ppm, 250_000);
        assert_eq!(FaultSpec::parse("timeout@25%").unwrap().share_ppm, 250_000);
        assert_eq!(FaultSpec::parse("timeout").unwrap().share_ppm, 1_000_000);
        assert_eq!(
            FaultSpec::parse("slicer=2,gap=1ms@0.5").unwrap().share_ppm,
            500_000
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong_in_one_line() {
        for (spec, says) in [
            ("", "empty"),
            ("lag=1s", "unknown fault \"lag\""),
            ("latency", "latency needs a value"),
            ("latency=fast", "write durations like"),
            ("latency=100ms@2", "at most 1"),
            ("latency=100ms@0", "above 0"),
            ("slicer=0", "at least 1 byte"),
            ("slicer=1,gaps=1ms", "takes no option \"gaps\""),
            ("slicer=1,gap=1ms,gap=2ms", "given twice"),
            ("loss=1.5", "from 0 to 1"),
            ("answer=\\q", "unknown escape"),
            ("answer_file=/nonexistent/answers", "/nonexistent/answers"),
            ("latency=48h", "at most 24h"),
            ("extra_fd=2", "takes no value"),
        ] {
            let e = FaultSpec::parse(spec).unwrap_err().to_string();
            assert!(e.contains(says), "{spec:?}: {e}");
            assert!(!e.contains('\n'), "{spec:?}: {e}");
        }
    }

    proptest! {
        /// Whatever the text, parsing returns a spec or one line: it never panics.
        #[test]
        fn parsing_never_panics(text in ".{0,40}") {
            match FaultSpec::parse(&text) {
                Ok(spec) => prop_assert_eq!(spec.text(), text.trim()),
                Err(e) => prop_assert!(!e.to_string().contains('\n') || text.contains('\n')),
            }
        }
    }
}

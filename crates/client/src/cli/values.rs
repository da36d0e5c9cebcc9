//! Parsers of flag values: each says in one line what it wants.

use std::time::Duration;

use udsecho_client::bench;
use udsecho_fault::FaultSpec;

/// The longest duration any flag takes: beyond it a wait means "never", and deadlines
/// computed from it must not overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

pub(super) fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 400ms, 2s, 1m)"))?;
    if d.is_zero() {
        Err("must be more than 0 (write durations like 400ms, 2s, 1m)".to_owned())
    } else if d > MAX_DURATION {
        Err("at most 1 year".to_owned())
    } else {
        Ok(d)
    }
}

/// `bench --busy-poll`: 0 (off) up to a second, as the server takes it.
pub(super) fn parse_busy_poll(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 50us, 1ms)"))?;
    if d > Duration::from_secs(1) {
        return Err("must be at most 1s (0 turns polling off)".to_owned());
    }
    Ok(d)
}

/// `bench --interval`: no shorter than the threads count ([`bench::COUNTED_EVERY`]).
pub(super) fn report_interval(s: &str) -> Result<Duration, String> {
    let d = positive_duration(s)?;
    if d < bench::COUNTED_EVERY {
        return Err(format!(
            "at least {} (the threads count every {0})",
            humantime::format_duration(bench::COUNTED_EVERY)
        ));
    }
    Ok(d)
}

pub(super) fn parse_size(s: &str) -> Result<usize, String> {
    let bytes = s
        .parse::<bytesize::ByteSize>()
        .map_err(|e| format!("{e} (write sizes like 64, 16KiB, 1MiB)"))?
        .as_u64();
    match usize::try_from(bytes) {
        Ok(0) => Err("must be at least 1 byte".to_owned()),
        Ok(n) if n <= 64 << 20 => Ok(n),
        _ => Err("at most 64MiB".to_owned()),
    }
}

pub(super) fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1 (leave --count out to send until Ctrl-C)".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (a whole number of messages, at least 1)")),
    }
}

pub(super) fn socket_path(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("the socket path must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

pub(super) fn non_empty_message(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("the message must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

/// `--fault`: the grammar shared with the server (`udsecho-fault`); which faults the client
/// can commit, and where, is checked with the rest of the command line.
pub(super) fn parse_fault(s: &str) -> Result<FaultSpec, String> {
    FaultSpec::parse(s).map_err(|e| e.why)
}

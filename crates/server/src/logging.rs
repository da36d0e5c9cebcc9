//! Logging that can never hurt the server.
//!
//! - **Never fatal, never blocking.** Log lines go through a bounded queue to a writer thread
//!   (`tracing-appender`, lossy): a stderr that is closed (EPIPE, EBADF), full (ENOSPC) or a
//!   pipe nobody reads drops lines and nothing else. The writer swallows its own errors, so
//!   nothing ever reports a failed log write by writing to stderr again (what made
//!   `tracing-subscriber` panic on a closed pipe).
//! - **Colour only on a terminal**, and never when `NO_COLOR` is set.
//! - **Under systemd** (`JOURNAL_STREAM` names our stderr) each line starts with its syslog
//!   priority (`<6>`, `<4>`...), which journald turns into the record's priority, and carries
//!   no level word and no colour.
//! - **Timestamps are an option** ([`Timestamps`], `--timestamps`): none by default (a
//!   supervisor's journal stamps lines itself), the wall clock in RFC 3339, or the seconds
//!   since the start from the monotonic clock.

use std::io::{self, IsTerminal, Write};

use tracing::{Level, Subscriber};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Lines queued for stderr before new ones are dropped.
const QUEUED_LINES: usize = 4096;

/// Keeps the log writer thread alive; dropping it flushes what is queued (briefly).
#[derive(Debug)]
#[must_use = "logging stops when the guard is dropped"]
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

/// Where stderr goes, which decides the line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// A terminal: coloured levels.
    Terminal,
    /// systemd's journal: `<N>` priority prefixes, no level word, no colour.
    Journal,
    /// A file or a pipe: plain lines.
    Plain,
    /// Nowhere: stderr is the connection itself (classic inetd puts the socket on fds 0, 1
    /// and 2), where a log line would be data for the peer.
    Off,
}

impl Sink {
    /// Looks at stderr and the environment (`NO_COLOR`, `JOURNAL_STREAM`).
    pub fn detect() -> Sink {
        if stderr_is_stdin() {
            Sink::Off
        } else if stderr_is_journal() {
            Sink::Journal
        } else if io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        {
            Sink::Terminal
        } else {
            Sink::Plain
        }
    }
}

/// Is stderr the very file (socket) stdin is? Under `--inetd` that is the peer's connection.
pub fn stderr_is_stdin() -> bool {
    match (
        rustix::fs::fstat(io::stdin()),
        rustix::fs::fstat(io::stderr()),
    ) {
        (Ok(a), Ok(b)) => {
            a.st_dev == b.st_dev
                && a.st_ino == b.st_ino
                && rustix::fs::FileType::from_raw_mode(a.st_mode) == rustix::fs::FileType::Socket
        }
        _ => false,
    }
}

/// `JOURNAL_STREAM=DEV:INO` says systemd connected this stream to the journal; it is ours only
/// if stderr is still that very socket (a child of a service may have its stderr redirected).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    rustix::fs::fstat(io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// What each log line starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamps {
    /// Nothing: the line starts with its level.
    None,
    /// The wall clock in UTC, RFC 3339 with microseconds (`2026-12-07T18:00:00.123456Z`).
    Rfc3339,
    /// Seconds since logging began, from the monotonic clock (`   0.001234s`): unaffected by
    /// the wall clock being set.
    Uptime,
}

/// Writes to stderr and reports success whatever happens: a log line that cannot be written is
/// dropped, never turned into an error that something would try to log.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Prefixes each line with its syslog priority for journald.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber: `RUST_LOG` if set, else `default_filter` (e.g. `info`),
/// each line starting with `timestamps`.
pub fn init(default_filter: &str, sink: Sink, timestamps: Timestamps) -> LogGuard {
    use tracing_subscriber::fmt::time;
    if sink == Sink::Off {
        return LogGuard { _worker: None };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("udsecho-log")
        .finish(LossyStderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(sink == Sink::Terminal);
    // The journal's lines: a priority instead of the level word, no colour.
    let journal = tracing_subscriber::fmt::format()
        .with_target(false)
        .with_level(false)
        .with_ansi(false);
    // Each timer is a type of its own; `without_time` also drops the space after the time.
    match timestamps {
        Timestamps::None => install(builder.without_time(), journal.without_time(), sink),
        Timestamps::Rfc3339 => install(
            builder.with_timer(time::SystemTime),
            journal.with_timer(time::SystemTime),
            sink,
        ),
        Timestamps::Uptime => {
            let uptime = time::Uptime::default();
            install(builder.with_timer(uptime), journal.with_timer(uptime), sink)
        }
    }
    LogGuard {
        _worker: Some(guard),
    }
}

/// Sets `builder` as the global subscriber, with `journal`'s format under journald.
fn install<T>(
    builder: tracing_subscriber::fmt::SubscriberBuilder<
        tracing_subscriber::fmt::format::DefaultFields,
        tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, T>,
        tracing_subscriber::EnvFilter,
        tracing_appender::non_blocking::NonBlocking,
    >,
    journal: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, T>,
    sink: Sink,
) where
    T: tracing_subscriber::fmt::time::FormatTime + Send + Sync + 'static,
{
    if sink == Sink::Journal {
        builder.event_format(JournalPriority(journal)).init();
    } else {
        builder.init();
    }
}

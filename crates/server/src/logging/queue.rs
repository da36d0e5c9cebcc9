//! The log writer's thread: formatted lines wait in a bounded queue ([`LineQueue`]) and one
//! thread writes them out, so an output that blocks (a pipe nobody reads) holds up that thread
//! only, and when the queue is full new lines are dropped. The same design as
//! `tracing-appender`'s non-blocking writer, which this replaced because it panics when the
//! system will not create its thread (`RLIMIT_NPROC`, a pids cgroup): here that is an error
//! the caller reports in one line.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// How long the last flush may wait for room in the queue, then for the lines to be written.
const ROOM_WAIT: Duration = Duration::from_millis(100);
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// What goes through the queue.
#[derive(Debug)]
enum Message {
    /// One formatted line.
    Line(Vec<u8>),
    /// Say when every line before this one is written.
    Flush(SyncSender<()>),
}

/// The subscriber's writer: each event's line goes into the queue, or is dropped if the queue
/// is full.
#[derive(Debug, Clone)]
pub(super) struct LineQueue {
    queue: SyncSender<Message>,
}

/// Writes out what is queued when dropped, waiting a moment at most (the last lines before
/// the process exits).
#[derive(Debug)]
pub(super) struct Flusher {
    queue: SyncSender<Message>,
}

/// Starts the writer thread: up to `lines` lines wait for it, then go to `out`.
pub(super) fn start(
    lines: usize,
    out: impl Write + Send + 'static,
) -> io::Result<(LineQueue, Flusher)> {
    let (queue, waiting) = mpsc::sync_channel(lines);
    thread::Builder::new()
        .name("udsecho-log".to_owned())
        .spawn(move || write_out(&waiting, out))?;
    Ok((
        LineQueue {
            queue: queue.clone(),
        },
        Flusher { queue },
    ))
}

/// The writer thread: until the last queue handle goes (never, for the global subscriber's).
fn write_out(waiting: &Receiver<Message>, mut out: impl Write) {
    for message in waiting {
        match message {
            Message::Line(line) => {
                let _ = out.write_all(&line);
            }
            Message::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        let (done_tx, done) = mpsc::sync_channel(1);
        let mut message = Message::Flush(done_tx);
        let deadline = Instant::now() + ROOM_WAIT;
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    message = again;
                    thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
        let _ = done.recv_timeout(FLUSH_WAIT);
    }
}

impl<'a> MakeWriter<'a> for LineQueue {
    type Writer = QueuedLine<'a>;

    fn make_writer(&'a self) -> QueuedLine<'a> {
        QueuedLine {
            queue: &self.queue,
            line: Vec::new(),
        }
    }
}

/// One event's output, queued whole when the subscriber is done writing it.
#[derive(Debug)]
pub(super) struct QueuedLine<'a> {
    queue: &'a SyncSender<Message>,
    line: Vec<u8>,
}

impl Write for QueuedLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine<'_> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            // Lossy: a full queue (an output nobody reads) drops the line.
            let _ = self
                .queue
                .try_send(Message::Line(std::mem::take(&mut self.line)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An output that keeps what it is given.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_whole_and_in_order_by_the_time_the_flusher_goes() {
        let out = Kept::default();
        let (queue, flusher) = start(16, out.clone()).unwrap();
        for i in 0..10 {
            let mut line = queue.make_writer();
            write!(line, "line ").unwrap();
            writeln!(line, "{i}").unwrap();
        }
        drop(flusher);
        let written = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(written, expected);
    }

    /// An output that blocks until told: the queue fills, and lines are dropped, not waited
    /// for.
    #[test]
    fn a_blocked_output_drops_lines_instead_of_blocking_the_logger() {
        let (release, blocked) = mpsc::channel::<()>();
        struct Stuck(Receiver<()>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let _ = self.0.recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (queue, flusher) = start(4, Stuck(blocked)).unwrap();
        let started = Instant::now();
        for _ in 0..1000 {
            writeln!(queue.make_writer(), "a line").unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(release);
        drop(flusher);
    }
}

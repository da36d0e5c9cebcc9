//! Waiting for child processes with a deadline: the one helper every task uses instead of a
//! `try_wait`-and-sleep loop of its own.
//!
//! On Linux 5.3+ it waits on a pidfd, which becomes readable the moment the child exits: no
//! polling interval, no sleep. Elsewhere it falls back to checking every 5 ms.

use std::io::{self, Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

/// Waits up to `within` for `child` to exit and reaps it; `None` if it is still running.
pub(crate) fn wait_timeout(child: &mut Child, within: Duration) -> io::Result<Option<ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    let deadline = Instant::now() + within;
    match pidfd_open(Pid::from_child(child), PidfdFlags::empty()) {
        Ok(pidfd) => loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = Timespec::try_from(left).map_err(io::Error::other)?;
            let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => return child.try_wait(),
                Ok(_) => return child.wait().map(Some),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        },
        Err(_) => loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(5));
        },
    }
}

/// Waits up to `within` for `child`; kills it if it is still running then.
pub(crate) fn finish(child: &mut Child, within: Duration) -> Result<ExitStatus, String> {
    match wait_timeout(child, within) {
        Ok(Some(status)) => Ok(status),
        Ok(None) => {
            kill(child);
            Err(format!("did not finish within {within:?}"))
        }
        Err(e) => {
            kill(child);
            Err(format!("cannot wait for it: {e}"))
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `within`.
pub(crate) fn stop(child: &mut Child, within: Duration) {
    let _ = udsecho_harness::signal(child.id(), udsecho_harness::Signal::TERM);
    if !matches!(wait_timeout(child, within), Ok(Some(_))) {
        kill(child);
    }
}

/// SIGKILL and reap.
pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads a pipe to its end on a thread of its own (a full pipe would stall the child).
pub(crate) fn collect(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `cmd` with `stdin` fed to it and its output captured; kills it after `within`.
pub(crate) fn output_within(
    cmd: &mut Command,
    stdin: &[u8],
    within: Duration,
) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let feeder = child.stdin.take().map(|mut pipe| {
        let input = stdin.to_vec();
        // The child may exit before reading everything; judging that is the caller's job.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = finish(&mut child, within).map_err(|e| format!("{cmd:?}: {e}"))?;
    if let Some(f) = feeder {
        let _ = f.join();
    }
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_child_is_reaped_and_a_slow_one_times_out() {
        let mut quick = Command::new("true").spawn().unwrap();
        let status = wait_timeout(&mut quick, Duration::from_secs(10)).unwrap();
        assert!(status.is_some_and(|s| s.success()));

        let mut slow = Command::new("sleep").arg("10").spawn().unwrap();
        let started = Instant::now();
        assert!(finish(&mut slow, Duration::from_millis(100)).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn output_is_captured_with_stdin_fed() {
        let out =
            output_within(&mut Command::new("cat"), b"hello", Duration::from_secs(10)).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
    }
}

//! Child processes of any command (nc, socat, the benchmark's peers) with a deadline, on top of
//! the harness's [`wait_timeout`] (a pidfd, no polling): finish or be killed, stop politely,
//! collect output. The harness itself spawns only udsecho's binaries.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::Duration;

use udsecho_harness::wait_timeout;

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
    use std::time::Instant;

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

//! Cases that test a client: the runner is the server, on a fresh socket per case, and plays
//! the server behaviours PROTOCOL.md allows.
//!
//! The contract for the command (`--cmd 'COMMAND {sock}'`): it connects to `{sock}`, opens a
//! framed session, sends its standard input (two short lines; one Data frame per line is
//! typical, any split is fine) as Data, reads the echoes, ends with Goodbye (Done) or a
//! half-close, and exits 0 when the session went well, non-zero when the server refused or
//! broke it.

use std::os::unix::net::UnixListener;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::case::{Case, GRACE, Verdict};
use crate::target::{self, Process, TargetError, status_text};
use crate::wire::{self, Conn, Got, PREAMBLE, PeerHello, code, reason};

/// What a client case works with.
#[derive(Debug)]
pub(crate) struct ClientCtx {
    command: String,
    pub(crate) timeout: Duration,
    /// When the current case's time is up (`--timeout` plus [`GRACE`] from its start).
    deadline: Instant,
    /// Set when the command could not be started at all (the shell could not run it): the
    /// line to say, once, instead of a FAILED line per case.
    pub(crate) cannot_start: Option<String>,
}

/// The standard input the client gets.
pub(crate) const INPUT: &[u8] = b"udsecho conformance\nsecond line\n";

impl ClientCtx {
    pub(crate) fn new(command: String, timeout: Duration) -> Self {
        ClientCtx {
            command,
            timeout,
            deadline: Instant::now() + timeout + GRACE,
            cannot_start: None,
        }
    }

    /// Starts a case's clock.
    pub(crate) fn begin(&mut self) {
        self.deadline = Instant::now() + self.timeout + GRACE;
    }

    /// Starts the client and accepts its connection.
    fn start(&mut self) -> Result<Run, String> {
        let started = Process::start(&self.command, Some(INPUT.to_vec()), |path| {
            UnixListener::bind(path).map_err(|source| TargetError::Listen {
                socket: path.to_owned(),
                source,
            })
        });
        let (mut process, listener) = match started {
            Ok(started) => started,
            Err(e @ TargetError::Spawn { .. }) => {
                self.cannot_start = Some(e.to_string());
                return Err(e.to_string());
            }
            Err(e) => return Err(e.to_string()),
        };
        let start = Instant::now();
        let until = (start + self.timeout).min(self.deadline);
        let stream = target::accept(&listener, until, || process.status().is_some())
            .map_err(|e| format!("accepting the client's connection: {e}"))?;
        let Some(stream) = stream else {
            let why = process
                .stderr_line()
                .map(|l| format!(" (its stderr: {l})"))
                .unwrap_or_default();
            return Err(match process.status() {
                // The shell's own codes: the command was not found, or not executable.
                Some(status) if matches!(status.code(), Some(126 | 127)) => {
                    let line = format!(
                        "cannot start `{}`: it exited with {} without connecting{why}",
                        crate::report::printable(&self.command),
                        status_text(status)
                    );
                    self.cannot_start = Some(line.clone());
                    line
                }
                Some(status) => format!(
                    "the client exited with {} without connecting to its socket{why}",
                    status_text(status)
                ),
                None => format!("the client did not connect within {:?}{why}", until - start),
            });
        };
        let mut conn = Conn::new(stream, self.timeout, self.deadline);
        // Until the runner's Hello says more, a client may send control frames only.
        conn.accept_max = wire::MAX_CONTROL;
        Ok(Run {
            conn,
            process,
            timeout: self.timeout,
        })
    }
}

/// One client run.
struct Run {
    conn: Conn,
    process: Process,
    timeout: Duration,
}

impl Run {
    /// The client's preamble and Hello (judged by `1/client-preamble` and
    /// `4/client-hello-first`; the other cases only need them to be there).
    fn opening(&mut self) -> Result<PeerHello, String> {
        let preamble = self.conn.raw(PREAMBLE.len())?;
        if preamble != PREAMBLE {
            return Err(format!(
                "expected the preamble [{}]; saw [{}]",
                wire::hex(&PREAMBLE),
                wire::hex(&preamble)
            ));
        }
        self.conn.expect_hello()
    }

    /// Answers with a Hello of `version` and `max_frame` (and `extra` appended), sent in
    /// pieces of `piece` bytes.
    fn answer(
        &mut self,
        version: u16,
        max_frame: u32,
        extra: &[u8],
        piece: usize,
    ) -> Result<(), String> {
        let payload = wire::hello_payload(version, max_frame, "udsecho-conformance", extra);
        self.conn.accept_max = max_frame;
        self.send_in_pieces(&wire::frame(wire::HELLO, &payload), piece)
    }

    fn send_in_pieces(&mut self, bytes: &[u8], piece: usize) -> Result<(), String> {
        if piece >= bytes.len() {
            return self.conn.send(bytes);
        }
        for chunk in bytes.chunks(piece) {
            self.conn.send(chunk)?;
            self.conn.pause(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Serves as an echo server until the client ends the session: Goodbye (answered with
    /// Goodbye (Done)) or a half-close. Every frame the client sends must be within `limit`.
    fn echo(&mut self, piece: usize, limit: u32) -> Result<usize, String> {
        let mut echoed = 0;
        loop {
            match self.conn.next()? {
                Got::Frame {
                    kind: wire::DATA,
                    payload,
                } => {
                    if payload.len() + 1 > limit as usize {
                        return Err(format!(
                            "the client sent a Data frame of L = {} above the server's max_frame {limit}",
                            payload.len() + 1
                        ));
                    }
                    self.send_in_pieces(&wire::data(&payload), piece)?;
                    echoed += 1;
                }
                Got::Frame {
                    kind: wire::GOODBYE,
                    payload,
                } => {
                    let reason = wire::Fields::new(&payload).u16("Goodbye.reason")?;
                    if reason != wire::reason::DONE {
                        return Err(format!(
                            "the client's Goodbye has reason {reason}, not Done (0)"
                        ));
                    }
                    self.send_in_pieces(&wire::goodbye(wire::reason::DONE), piece)?;
                    return Ok(echoed);
                }
                Got::Eof => return Ok(echoed),
                other => {
                    return Err(wire::mismatch(
                        "Data or Goodbye from the client",
                        None,
                        &other,
                    ));
                }
            }
        }
    }

    /// Waits for the client to exit; a client still running after the timeout fails.
    fn exit(mut self) -> Result<ExitStatus, String> {
        let until = (Instant::now() + self.timeout).min(self.conn.deadline);
        drop(self.conn);
        self.process.wait(until).ok_or_else(|| {
            format!(
                "the client did not exit within {:?} of the session's end",
                self.timeout
            )
        })
    }

    /// Waits until the client closes its side (reading and dropping what it still sends,
    /// judged by `judge`), then for it to exit.
    fn until_closed(
        mut self,
        mut judge: impl FnMut(&Got) -> Result<(), String>,
    ) -> Result<ExitStatus, String> {
        loop {
            let got = self.conn.next()?;
            judge(&got)?;
            match got {
                Got::Frame { .. } => {}
                Got::Eof | Got::Partial(_) => return self.exit(),
                Got::Timeout(_) => {
                    return Err(format!(
                        "the client neither closed nor exited within {:?}",
                        self.timeout
                    ));
                }
                Got::OutOfTime(_) => {
                    return Err(
                        "the client neither closed nor exited before the case's time ran out \
                         (--timeout plus 3 s)"
                            .to_owned(),
                    );
                }
            }
        }
    }
}

/// A whole normal session: OK when the client exits 0.
fn normal(ctx: &mut ClientCtx, extra: &[u8], piece: usize) -> Verdict {
    (|| {
        let mut run = ctx.start()?;
        run.opening()?;
        run.answer(1, wire::MAX_CONTROL, extra, piece)?;
        let echoed = run.echo(piece, wire::MAX_CONTROL)?;
        if echoed == 0 {
            return Err("the client sent no Data frame".to_owned());
        }
        let stderr = run.process.stderr_line();
        let status = run.exit()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "the session went well but the client exited with {status}{}",
                stderr.map(|l| format!(": {l}")).unwrap_or_default()
            ))
        }
    })()
    .into()
}

/// The server refuses or ends the session after the Hello exchange with `bytes`: the client
/// must close without sending Data, and exit non-zero.
fn refused(ctx: &mut ClientCtx, hello_version: Option<u16>, bytes: &[u8]) -> Verdict {
    (|| {
        let mut run = ctx.start()?;
        let hello = run.opening()?;
        if let Some(version) = hello_version {
            run.answer(
                version_for(version, &hello),
                wire::MAX_CONTROL,
                &[],
                usize::MAX,
            )?;
        } else {
            run.answer(1, wire::MAX_CONTROL, &[], usize::MAX)?;
            // Wait for the first Data frame, so the refusal answers it.
            match run.conn.next()? {
                Got::Frame {
                    kind: wire::DATA, ..
                } => {}
                other => return Err(wire::mismatch("a Data frame", None, &other)),
            }
        }
        run.conn.send(bytes)?;
        let status = run.until_closed(|got| match got {
            Got::Frame {
                kind: wire::DATA, ..
            } if hello_version.is_some() => {
                Err("the client sent Data after a Hello of a version it did not offer".to_owned())
            }
            _ => Ok(()),
        })?;
        if status.success() {
            Err("the session was refused but the client exited 0".to_owned())
        } else {
            Ok(())
        }
    })()
    .into()
}

/// A version the client did not offer: one above its own.
fn version_for(marker: u16, hello: &PeerHello) -> u16 {
    if marker == 0 {
        hello.version.saturating_add(1)
    } else {
        marker
    }
}

pub(crate) fn cases() -> Vec<Case<ClientCtx>> {
    vec![
        Case {
            id: "1/client-preamble",
            description: "the client opens with the 8-byte preamble",
            needs: &[],
            run: |ctx| {
                (|| {
                    let mut run = ctx.start()?;
                    let preamble = run.conn.raw(PREAMBLE.len())?;
                    if preamble == PREAMBLE {
                        Ok(())
                    } else {
                        Err(format!(
                            "expected [{}]; saw [{}]",
                            wire::hex(&PREAMBLE),
                            wire::hex(&preamble)
                        ))
                    }
                })()
                .into()
            },
        },
        Case {
            id: "4/client-hello-first",
            description: "the first frame is a Hello: L <= 4096, version >= 1, max_frame >= 1",
            needs: &[],
            run: |ctx| {
                (|| {
                    let mut run = ctx.start()?;
                    let hello = run.opening()?;
                    if hello.version == 0 {
                        return Err("the client's Hello offers version 0".to_owned());
                    }
                    if hello.max_frame == 0 {
                        return Err("the client's Hello has max_frame 0 (Malformed)".to_owned());
                    }
                    Ok(())
                })()
                .into()
            },
        },
        Case {
            id: "4/client-session",
            description: "a whole session: Data echoed, Goodbye or half-close, exit 0",
            needs: &[],
            run: |ctx| normal(ctx, &[], usize::MAX),
        },
        Case {
            id: "4/client-split-reads",
            description: "the server's Hello and echoes arrive one byte at a time: the session still succeeds",
            needs: &[],
            run: |ctx| normal(ctx, &[], 1),
        },
        Case {
            id: "3.1/client-ignores-appended-fields",
            description: "a server Hello with bytes after its last known field is accepted",
            needs: &[],
            run: |ctx| normal(ctx, &[0x07, 0x81, 0x01, 0x00], usize::MAX),
        },
        Case {
            id: "4.1/client-rejects-unknown-version",
            description: "a server Hello choosing a version the client did not offer: no Data, close, exit non-zero",
            needs: &[],
            run: |ctx| refused(ctx, Some(0), &[]),
        },
        Case {
            id: "4.2/client-respects-max-frame",
            description: "the server's Hello says max_frame 4: the client never sends a Data frame above it",
            needs: &[],
            run: |ctx| {
                (|| {
                    let mut run = ctx.start()?;
                    run.opening()?;
                    run.answer(1, 4, &[], usize::MAX)?;
                    // Splitting lines into small frames or giving up are both fine.
                    run.echo(usize::MAX, 4)?;
                    run.exit().map(drop)
                })()
                .into()
            },
        },
        Case {
            id: "3.2/client-error-frame",
            description: "an Error frame (FrameTooLarge) from the server: the client closes and exits non-zero",
            needs: &[],
            run: |ctx| {
                refused(
                    ctx,
                    None,
                    &wire::error(code::FRAME_TOO_LARGE, "refused by the runner"),
                )
            },
        },
        Case {
            id: "3.2/client-unknown-error-code",
            description: "an Error frame with an unknown code (999) is still an error: close, exit non-zero",
            needs: &[],
            run: |ctx| refused(ctx, None, &wire::error(999, "a code from the future")),
        },
        Case {
            id: "3.3/client-goodbye-shutdown",
            description: "Goodbye (Shutdown) from the server: the client closes and exits",
            needs: &[],
            run: |ctx| {
                (|| {
                    let mut run = ctx.start()?;
                    run.opening()?;
                    run.answer(1, wire::MAX_CONTROL, &[], usize::MAX)?;
                    match run.conn.next()? {
                        Got::Frame {
                            kind: wire::DATA,
                            payload,
                        } => run.conn.send(&wire::data(&payload))?,
                        other => return Err(wire::mismatch("a Data frame", None, &other)),
                    }
                    run.conn.send(&wire::goodbye(reason::SHUTDOWN))?;
                    run.conn.half_close()?;
                    run.until_closed(|got| match got {
                        Got::Frame {
                            kind: wire::ERROR, ..
                        } => Err(
                            "the client answered the server's Goodbye with an Error frame"
                                .to_owned(),
                        ),
                        _ => Ok(()),
                    })
                    .map(drop)
                })()
                .into()
            },
        },
        Case {
            id: "4/client-server-closes-mid-frame",
            description: "the server closes inside an echo: the client exits non-zero (a truncated echo)",
            needs: &[],
            run: |ctx| {
                (|| {
                    let mut run = ctx.start()?;
                    run.opening()?;
                    run.answer(1, wire::MAX_CONTROL, &[], usize::MAX)?;
                    let payload = match run.conn.next()? {
                        Got::Frame {
                            kind: wire::DATA,
                            payload,
                        } => payload,
                        other => return Err(wire::mismatch("a Data frame", None, &other)),
                    };
                    let echo = wire::data(&payload);
                    run.conn.send(&echo[..echo.len().min(7)])?;
                    let status = run.exit()?;
                    if status.success() {
                        Err("the echo was cut short but the client exited 0".to_owned())
                    } else {
                        Ok(())
                    }
                })()
                .into()
            },
        },
    ]
}

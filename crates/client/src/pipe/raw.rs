//! The raw pipe: stdin to a stream socket and the socket to stdout, binary-safe, on two
//! blocking threads (see the module above for why). Its one piece of protocol knowledge: a
//! framed-only server refuses raw bytes with one Error frame, which must be reported, not
//! printed. With `--fd` each stdin read goes out as one message carrying the descriptors, and
//! what comes back is closed.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use rustix::net::RecvFlags;
use udsecho_proto::{Kind, MAX_CONTROL_FRAME, PREAMBLE};

use crate::descriptors::{self, Passing};
use crate::error::{ClientError, ErrorKind, TURNED_AWAY};
use crate::misbehave::{Misbehaviour, SendEnd};
use crate::session;
use crate::target::Target;

/// Bytes moved per read/write in raw pipe mode.
const CHUNK: usize = 256 * 1024;

/// Copies `input` to the socket and the socket to `output`, both at once and binary-safe,
/// on blocking threads.
///
/// - On `input` EOF it half-closes and keeps copying the socket to `output`.
/// - On the server's EOF it keeps sending the rest of `input` until `input` ends, then
///   returns `Ok`: nothing piped in is dropped.
/// - If the server closes without reading everything sent (a reset, or a broken pipe), that
///   is an error that says so.
/// - A failing `output` ends the pipe at once with [`ErrorKind::Stdout`] (for a reader that
///   went away, [`ClientError::is_closed_stdout`]).
/// - A server in framed-only mode answers raw bytes with one Error frame and closes: that is
///   [`ErrorKind::FramedOnlyServer`], not output. Only the server's first bytes are watched
///   for it, and only while they could be that frame and are not an echo of what was sent;
///   everything else passes through as it comes.
/// - With `passing` (`--fd`), the first bytes of each read of `input` carry those
///   descriptors; descriptors that come back are closed (the kernel closing some because the
///   client is at its limit is [`ErrorKind::DescriptorLimit`]).
/// - With `misbehave` (`--fault`), it sends in slices, closes or half-closes after so many
///   bytes, or stops reading after so many (then, `linger` later, it closes and returns
///   `Ok`: the rest of the answer, and of `input`, is dropped on purpose).
pub fn raw<I, O>(
    stream: StdUnixStream,
    target: &Target,
    passing: &Passing,
    misbehave: &Misbehaviour,
    linger: Duration,
    input: I,
    mut output: O,
) -> Result<(), ClientError>
where
    I: Read + Send + 'static,
    O: Write,
{
    let fail = |kind: ErrorKind| kind.at(target);
    let io = |doing, source| fail(ErrorKind::Io { doing, source });
    stream
        .set_nonblocking(false)
        .map_err(|e| io("setting up the socket", e))?;
    let to_server = stream
        .try_clone()
        .map_err(|e| io("setting up the socket", e))?;
    let sent = Arc::new(Mutex::new(Vec::new()));
    let upload = thread::Builder::new()
        .name("upload".to_owned())
        .spawn({
            let sent = sent.clone();
            let passing = passing.clone();
            let misbehave = misbehave.clone();
            move || upload(input, to_server, &passing, &misbehave, &sent)
        })
        .map_err(|e| io("starting the upload thread", e))?;
    let room = !passing.is_empty();
    let stopped =
        download(&stream, &mut output, room, misbehave.stop_reading, &sent).map_err(fail)?;
    if stopped {
        // Stopped reading on purpose: the server may be blocked writing to us, and so our
        // upload blocked writing to it. Give it `linger` to be seen that way, then close.
        thread::sleep(linger);
        let _ = stream.shutdown(Shutdown::Both);
        let _ = upload.join();
        return Ok(());
    }
    // The server has finished sending. Like nc, keep sending until stdin ends: the server
    // may still be reading (a half-close, as `nc -N -lU` does).
    match upload.join() {
        Ok(result) => result.map(drop).map_err(fail),
        Err(_) => Err(io(
            "sending",
            std::io::Error::other("the upload thread panicked"),
        )),
    }
}

/// stdin to the socket, then a half-close. Returns the bytes sent. The first bytes are also
/// kept in `first` (before they are sent, so an echo of them is always found there).
fn upload(
    mut input: impl Read,
    mut socket: StdUnixStream,
    passing: &Passing,
    misbehave: &Misbehaviour,
    first: &Mutex<Vec<u8>>,
) -> Result<u64, ErrorKind> {
    let fds = passing.fds();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    loop {
        let limit = misbehave.send_limit(sent);
        if let Some((0, end)) = limit {
            if end == SendEnd::Close {
                // Closed mid-message, on purpose: the server reads EOF, its writes fail.
                let _ = socket.shutdown(Shutdown::Both);
                return Ok(sent);
            }
            break;
        }
        let mut n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ErrorKind::Stdin(e)),
        };
        if let Some((left, _)) = limit {
            n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        if sent < REFUSAL_MAX as u64 {
            let mut first = first.lock().unwrap_or_else(PoisonError::into_inner);
            let room = REFUSAL_MAX - first.len();
            first.extend_from_slice(&buf[..n.min(room)]);
        }
        crate::trace::sent(&buf[..n]);
        send_slices(&mut socket, &buf[..n], &fds, misbehave.slices).map_err(|e| {
            session::transport("sending", e, || {
                ErrorKind::closed_early(if sent == 0 {
                    format!("before reading anything: {TURNED_AWAY}")
                } else {
                    format!("it stopped reading after {sent} bytes of stdin")
                })
            })
        })?;
        sent += n as u64;
    }
    match socket.shutdown(Shutdown::Write) {
        // Already gone: everything was written, the server has it or chose not to read it;
        // its close is reported by the download side if it lost anything.
        Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(sent),
        Err(e) => Err(ErrorKind::Io {
            doing: "half-closing",
            source: e,
        }),
        Ok(()) => Ok(sent),
    }
}

/// Writes one read of stdin, in slices `gap` apart if asked (`slicer`), the first carrying
/// `fds`.
fn send_slices(
    socket: &mut StdUnixStream,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
    slices: Option<(usize, Duration)>,
) -> std::io::Result<()> {
    let Some((size, gap)) = slices else {
        return send_read(socket, bytes, fds);
    };
    for (i, slice) in bytes.chunks(size).enumerate() {
        if i > 0 {
            thread::sleep(gap);
        }
        send_read(socket, slice, if i == 0 { fds } else { &[] })?;
    }
    // The gap after the last slice too: the next read's first slice is a slice of its own.
    thread::sleep(gap);
    Ok(())
}

/// Writes one read of stdin, its first bytes carrying `fds` (none: a plain write).
fn send_read(
    socket: &mut StdUnixStream,
    mut bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<()> {
    if !fds.is_empty() {
        let n = loop {
            match descriptors::send(socket.as_fd(), bytes, fds) {
                Err(rustix::io::Errno::INTR) => {}
                other => break other?,
            }
        };
        bytes = &bytes[n..];
    }
    socket.write_all(bytes)
}

/// The socket to `output` until the server's EOF. The first bytes are held back while they
/// may be a framed-only server's refusal (see [`may_be_refusal`]). With `room`, each read
/// makes room for descriptors coming back, and closes them. With `stop_reading`, it stops
/// after that many bytes and returns `true`.
fn download(
    socket: &StdUnixStream,
    output: &mut impl Write,
    room: bool,
    stop_reading: Option<u64>,
    sent: &Mutex<Vec<u8>>,
) -> Result<bool, ErrorKind> {
    let mut buf = vec![0u8; CHUNK];
    // The server's first bytes, while they may still be a refusal.
    let mut first = Some(Vec::new());
    let mut received = 0u64;
    // Whether the server sent anything at all.
    let mut answered = false;
    loop {
        let mut cap = CHUNK;
        if let Some(stop) = stop_reading {
            let left = stop.saturating_sub(received);
            if left == 0 {
                if let Some(held) = first.take() {
                    output.write_all(&held).map_err(ErrorKind::Stdout)?;
                }
                output.flush().map_err(ErrorKind::Stdout)?;
                return Ok(true);
            }
            cap = cap.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        // Descriptors lost on the way in are reported after this read's bytes are out.
        let mut lost = Ok(());
        let read =
            match descriptors::recv(socket.as_fd(), &mut buf[..cap], RecvFlags::empty(), room) {
                Ok(got) => {
                    lost = got.returned.close();
                    Ok(got.len)
                }
                Err(e) => Err(std::io::Error::from(e)),
            };
        let n = match read {
            Ok(0) => {
                if let Some(held) = first.take() {
                    if is_refusal(&held, sent) {
                        return Err(refused(sent));
                    }
                    output.write_all(&held).map_err(ErrorKind::Stdout)?;
                }
                return output.flush().map_err(ErrorKind::Stdout).map(|()| false);
            }
            Ok(n) => {
                crate::trace::received(&buf[..n]);
                received += n as u64;
                answered = true;
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A reset means the server closed with some of what we sent unread.
            Err(e) => {
                if let Some(held) = first.take() {
                    if is_refusal(&held, sent) {
                        return Err(refused(sent));
                    }
                    output.write_all(&held).map_err(ErrorKind::Stdout)?;
                }
                return Err(session::transport("receiving", e, || {
                    ErrorKind::closed_early(if answered {
                        "it did not read all of stdin".to_owned()
                    } else {
                        format!("it answered nothing and left what was sent unread: {TURNED_AWAY}")
                    })
                }));
            }
        };
        match first.as_mut() {
            None => output.write_all(&buf[..n]).map_err(ErrorKind::Stdout)?,
            Some(held) => {
                held.extend_from_slice(&buf[..n]);
                if !may_be_refusal(held, sent) {
                    output.write_all(held).map_err(ErrorKind::Stdout)?;
                    first = None;
                }
            }
        }
        if lost.is_err() {
            if let Some(held) = first.take() {
                output.write_all(&held).map_err(ErrorKind::Stdout)?;
            }
            output.flush().map_err(ErrorKind::Stdout)?;
            return lost.map(|()| false);
        }
    }
}

/// What one Error frame in answer to raw bytes means: a framed-only server, unless what was
/// sent began with the framed preamble, which makes a server in auto mode read a framed
/// session (and refuse what follows as frames).
fn refused(sent: &Mutex<Vec<u8>>) -> ErrorKind {
    let sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
    if sent.starts_with(&PREAMBLE) {
        ErrorKind::PreambleInInput
    } else {
        ErrorKind::FramedOnlyServer
    }
}

/// The longest refusal: a length and a control frame's body.
const REFUSAL_MAX: usize = 4 + MAX_CONTROL_FRAME as usize;

/// Whether `held`, the server's first bytes so far, may still turn out to be a framed-only
/// server's refusal: the start of one Error frame (a control frame, so its length is at most
/// 4096 and it opens with two zero bytes, which text never does), and not an echo of what
/// was sent.
fn may_be_refusal(held: &[u8], sent: &Mutex<Vec<u8>>) -> bool {
    let shaped = match *held {
        [] => true,
        [a] => a == 0,
        [a, b] => a == 0 && b == 0,
        [a, b, c, ..] if a != 0 || b != 0 || c > 0x10 => false,
        [_, _, _] => true,
        [a, b, c, d, ref body @ ..] => {
            let len = u32::from_be_bytes([a, b, c, d]);
            (1..=MAX_CONTROL_FRAME).contains(&len)
                && body.first().is_none_or(|&kind| kind == Kind::Error as u8)
                && body.len() <= len as usize
        }
    };
    shaped && !is_echo(held, sent)
}

/// Whether `held` is exactly one whole Error frame that is not an echo: what a framed-only
/// server sends before it closes.
fn is_refusal(held: &[u8], sent: &Mutex<Vec<u8>>) -> bool {
    match *held {
        [a, b, c, d, _, ..] => {
            held.len() == 4 + u32::from_be_bytes([a, b, c, d]) as usize
                && may_be_refusal(held, sent)
        }
        _ => false,
    }
}

/// Whether `held` is what the client sent (so far): then it is an echo, whatever it holds.
fn is_echo(held: &[u8], sent: &Mutex<Vec<u8>>) -> bool {
    let sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
    !held.is_empty() && sent.starts_with(held)
}

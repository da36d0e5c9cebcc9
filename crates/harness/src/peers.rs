//! Test peers: a raw round trip and a framed client, both blocking and with deadlines.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;
use udsecho_proto::{Frame, FrameCodec, Hello, PREAMBLE};

/// Connects to a socket path, or to a Linux abstract socket written `@name`.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    #[cfg(target_os = "linux")]
    if let Some(name) = path.to_str().and_then(|p| p.strip_prefix('@')) {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        return UnixStream::connect_addr(&addr);
    }
    UnixStream::connect(path)
}

/// Connects to `path` until it accepts or `deadline` passes; `gave_up` is asked between
/// tries (a server that exited will never accept). A socket of another type answers a stream
/// connect with `EPROTOTYPE` as soon as it is bound, before it listens: a seqpacket server
/// is ready once a seqpacket connect succeeds; a datagram server (`EPROTOTYPE` again) once
/// it is bound.
pub fn wait_for_socket(
    path: &Path,
    deadline: Instant,
    gave_up: impl Fn() -> bool,
) -> io::Result<()> {
    let other_type = Some(rustix::io::Errno::PROTOTYPE.raw_os_error());
    loop {
        let tried = match connect(path) {
            Err(e) if e.raw_os_error() == other_type => match connect_seqpacket(path) {
                Err(e) if e.raw_os_error() == other_type => Ok(()),
                seqpacket => seqpacket,
            },
            stream => stream.map(drop),
        };
        match tried {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) if gave_up() => {
                return Err(io::Error::other("the process exited before it accepted"));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One seqpacket connect to `path` (a path or `@name`), closed at once.
fn connect_seqpacket(path: &Path) -> io::Result<()> {
    use rustix::net::SocketAddrUnix;
    let fd = crate::packets::seqpacket_socket()?;
    let addr = match path.to_str().and_then(|p| p.strip_prefix('@')) {
        Some(name) => SocketAddrUnix::new_abstract_name(name.as_bytes())?,
        None => SocketAddrUnix::new(path)?,
    };
    rustix::net::connect(&fd, &addr)?;
    Ok(())
}

/// Sends `data` in `chunk`-sized writes, half-closes, and returns everything that came back
/// before the server closed. Fails if nothing moves for 10 s.
pub fn raw_round_trip(path: &Path, data: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
    let stream = connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let data = data.to_vec();
    let chunk = chunk.max(1);
    let sender = thread::spawn(move || -> io::Result<()> {
        for piece in data.chunks(chunk) {
            writer.write_all(piece)?;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut echoed = Vec::new();
    (&stream).read_to_end(&mut echoed)?;
    sender
        .join()
        .map_err(|_| io::Error::other("the sender thread panicked"))??;
    Ok(echoed)
}

/// A blocking framed client built on the proto crate's codec.
#[derive(Debug)]
pub struct FramedPeer {
    stream: UnixStream,
    codec: FrameCodec,
    rbuf: BytesMut,
}

impl FramedPeer {
    /// Connects and sends the preamble (nothing else).
    pub fn connect(path: &Path) -> io::Result<FramedPeer> {
        let mut stream = connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(&PREAMBLE)?;
        Ok(FramedPeer {
            stream,
            codec: FrameCodec::with_max_frame(u32::MAX),
            rbuf: BytesMut::new(),
        })
    }

    /// Connects, sends the preamble and a Hello, and returns the server's Hello.
    pub fn handshake(path: &Path) -> io::Result<(FramedPeer, Hello)> {
        let mut peer = FramedPeer::connect(path)?;
        peer.send(&Frame::Hello(Hello::new(
            udsecho_proto::DEFAULT_MAX_FRAME,
            "harness",
        )))?;
        match peer.recv()? {
            Some(Frame::Hello(hello)) => Ok((peer, hello)),
            other => Err(io::Error::other(format!(
                "expected the server's Hello, got {other:?}"
            ))),
        }
    }

    /// Sends one frame.
    pub fn send(&mut self, frame: &Frame) -> io::Result<()> {
        let mut out = BytesMut::new();
        frame
            .encode(&mut out, self.codec.max_frame())
            .map_err(io::Error::other)?;
        self.stream.write_all(&out)
    }

    /// Sends bytes as they are (for malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next frame, or `None` when the server closed cleanly between frames.
    pub fn recv(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self
                .codec
                .decode(&mut self.rbuf)
                .map_err(io::Error::other)?
            {
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed mid-frame",
                    ))
                };
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends each payload as a Data frame, then reads the echoes and checks that each is its
    /// frame, in order: what `cargo xtask e2e` and `soak` ask of a well-behaved framed client.
    /// The error names the frame that went wrong.
    pub fn echo_all(&mut self, payloads: &[Bytes]) -> Result<(), String> {
        for payload in payloads {
            self.send(&Frame::Data(payload.clone()))
                .map_err(|e| e.to_string())?;
        }
        for (k, payload) in payloads.iter().enumerate() {
            match self.recv() {
                Ok(Some(Frame::Data(echo))) if echo == payload => {}
                other => return Err(format!("frame {k}: got {other:?}")),
            }
        }
        Ok(())
    }

    /// Half-closes the connection (no more frames from us).
    pub fn finish(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// The underlying socket.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}

/// A raw client that sends `block` over and over, in `chunk`-sized writes, until the server
/// goes away, while a second thread reads the echo. For checking that a drain loses nothing:
/// note [`StreamingPeer::sent`] at the signal, then compare with what came back.
#[derive(Debug)]
pub struct StreamingPeer {
    block: Vec<u8>,
    sent: Arc<AtomicUsize>,
    writer: thread::JoinHandle<()>,
    reader: thread::JoinHandle<Vec<u8>>,
}

impl StreamingPeer {
    /// Connects and starts sending.
    pub fn start(path: &Path, block: Vec<u8>, chunk: usize) -> io::Result<StreamingPeer> {
        let stream = connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let sent = Arc::new(AtomicUsize::new(0));
        let writer = {
            let mut stream = stream.try_clone()?;
            let (block, sent) = (block.clone(), sent.clone());
            thread::spawn(move || {
                for piece in block.chunks(chunk.max(1)).cycle() {
                    if stream.write_all(piece).is_err() {
                        break;
                    }
                    sent.fetch_add(piece.len(), Ordering::SeqCst);
                }
            })
        };
        let reader = thread::spawn(move || {
            let mut echoed = Vec::new();
            // The server ends the stream after the drain; how it ends does not matter, what
            // arrived before it does.
            let _ = (&stream).read_to_end(&mut echoed);
            echoed
        });
        Ok(StreamingPeer {
            block,
            sent,
            writer,
            reader,
        })
    }

    /// Bytes the socket has accepted so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits for the server to end the stream and returns how many bytes came back, or what
    /// was wrong with them (they must repeat the block, in order).
    pub fn finish(self) -> Result<usize, String> {
        let echoed = self
            .reader
            .join()
            .map_err(|_| "the reader thread panicked".to_owned())?;
        let _ = self.writer.join();
        match echoed
            .chunks(self.block.len())
            .position(|c| c != &self.block[..c.len()])
        {
            None => Ok(echoed.len()),
            Some(at) => Err(format!(
                "the echo differs from what was sent (in repetition {at} of the block)"
            )),
        }
    }
}

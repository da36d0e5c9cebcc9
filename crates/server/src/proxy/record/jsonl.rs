//! `--record FILE.jsonl`: one JSON object a line, one line an event. The schema is
//! docs/proxy.md's and stays stable: fields are only ever added.
//!
//! A read's bytes are written once, exactly: as the JSON string `text` when they are UTF-8
//! with no NUL, else as `base64`. They are the last field of the line and written straight
//! into it (the rest goes through serde), so a busy stream costs one base64 pass and one copy
//! per byte, not an escaping pass over a string built for the purpose.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;

use super::frames::FrameNote;
use super::{Credentials, Event, Sink, What};
use crate::echo_log::escape_into;

/// The JSONL file.
pub(super) struct Jsonl<W> {
    out: W,
    path: PathBuf,
    /// One line, built whole before it is written (reused).
    scratch: Vec<u8>,
    base64: Base64,
}

/// The base64 crate's engine that uses the CPU's vector instructions (found at run time; the
/// scalar one without them), where the crate has one: the writer's cost on a busy stream is
/// mostly base64.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
type Base64 = base64::engine::Simd;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
type Base64 = base64::engine::GeneralPurpose;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn base64_engine() -> Base64 {
    base64::engine::Simd::standard(base64::engine::general_purpose::PAD)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn base64_engine() -> Base64 {
    base64::engine::general_purpose::STANDARD
}

impl<W: Write> Jsonl<W> {
    pub(super) fn new(out: W, path: &Path) -> Jsonl<W> {
        Jsonl {
            out,
            path: path.to_owned(),
            scratch: Vec::new(),
            base64: base64_engine(),
        }
    }
}

/// One line. Which fields an event has is fixed by its `event` (docs/proxy.md).
#[derive(Debug, Default, Serialize)]
struct Line<'a> {
    t: f64,
    conn: u64,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fds: Option<Vec<Fd>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frames: Option<&'a [FrameNote]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<Peer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_upstream: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_client: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Fd {
    kind: String,
    /// Escaped like the bytes' `text` (a path need not be UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

#[derive(Debug, Serialize)]
struct Peer<'a> {
    pid: u32,
    uid: u32,
    gid: u32,
    command: Option<&'a str>,
}

impl<'a> Peer<'a> {
    fn from(c: &'a Credentials) -> Peer<'a> {
        Peer {
            pid: c.pid,
            uid: c.uid,
            gid: c.gid,
            command: c.command.as_deref(),
        }
    }
}

/// How a read's bytes are written: `text` when they are UTF-8 with no NUL (a JSON string
/// holds them exactly), `base64` otherwise.
fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Appends `"text":"..."` or `"base64":"..."` for `bytes` to the line in `out`.
fn push_bytes(out: &mut Vec<u8>, bytes: &[u8], engine: &Base64) -> io::Result<()> {
    if let Some(text) = as_text(bytes) {
        out.extend_from_slice(b"\"text\":");
        serde_json::to_writer(&mut *out, text)?;
    } else {
        out.extend_from_slice(b"\"base64\":\"");
        let start = out.len();
        out.resize(
            start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
            0,
        );
        let written = engine
            .encode_slice(bytes, &mut out[start..])
            .map_err(io::Error::other)?;
        out.truncate(start + written);
        out.push(b'"');
    }
    Ok(())
}

/// `bytes` escaped as `-v` escapes them (controls as `\n`, `\u{1b}`, bytes that are not UTF-8
/// as `\xNN`), whole: for descriptor paths and commands, which are for reading.
pub(crate) fn escaped(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    escape_into(bytes, &mut text);
    text
}

/// The line for `event`, at `t`.
fn line(t: f64, event: &Event) -> Line<'_> {
    let mut line = Line {
        t,
        conn: event.conn,
        ..Line::default()
    };
    match &event.what {
        What::Open {
            peer,
            socket,
            upstream,
        } => {
            line.event = "open";
            line.peer = peer.as_ref().map(Peer::from);
            line.socket = Some(socket);
            line.upstream = Some(upstream);
        }
        What::Data {
            dir,
            bytes,
            fds,
            frames,
        } => {
            line.event = "data";
            line.dir = Some(dir.name());
            line.len = Some(bytes.len());
            line.fds = Some(
                fds.iter()
                    .map(|fd| Fd {
                        kind: fd.kind.clone(),
                        path: fd.path.as_deref().map(escaped),
                    })
                    .collect(),
            );
            if !frames.is_empty() {
                line.frames = Some(frames);
            }
        }
        What::Eof { dir } => {
            line.event = "eof";
            line.dir = Some(dir.name());
        }
        What::Error { dir, message } => {
            line.event = "error";
            line.dir = dir.map(|d| d.name());
            line.message = Some(message);
        }
        What::Close {
            to_upstream,
            to_client,
        } => {
            line.event = "close";
            line.to_upstream = Some(*to_upstream);
            line.to_client = Some(*to_client);
        }
    }
    line
}

impl<W: Write + Send> Sink for Jsonl<W> {
    fn write(&mut self, t: f64, event: &Event) -> io::Result<()> {
        let out = &mut self.scratch;
        out.clear();
        serde_json::to_writer(&mut *out, &line(t, event))?;
        if let What::Data { bytes, .. } = &event.what {
            // The object's closing brace comes back after the bytes.
            out.pop();
            out.push(b',');
            push_bytes(out, bytes, &self.base64)?;
            out.push(b'}');
        }
        out.push(b'\n');
        self.out.write_all(out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn name(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::record::Dir;
    use bytes::Bytes;
    use std::time::Instant;

    fn written(what: What) -> serde_json::Value {
        let mut sink = Jsonl::new(Vec::new(), Path::new("test.jsonl"));
        let event = Event {
            at: Instant::now(),
            conn: 3,
            what,
        };
        sink.write(1.5, &event).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        serde_json::from_str(&text).unwrap()
    }

    fn data(bytes: &'static [u8]) -> What {
        What::Data {
            dir: Dir::ToUpstream,
            bytes: Bytes::from_static(bytes),
            fds: vec![Identity {
                kind: "file".to_owned(),
                path: Some(b"/etc/hosts\n".to_vec()),
            }],
            frames: Vec::new(),
        }
    }

    #[test]
    fn a_read_of_text_is_one_line_with_its_text_exactly_and_its_descriptors() {
        let line = written(data("GET / HTTP/1.1\r\n\u{1b}[1m\"é\"\\".as_bytes()));
        assert_eq!(
            line,
            serde_json::json!({
                "t": 1.5, "conn": 3, "event": "data", "dir": "to_upstream", "len": 25,
                "text": "GET / HTTP/1.1\r\n\u{1b}[1m\"é\"\\",
                "fds": [{"kind": "file", "path": "/etc/hosts\\n"}],
            })
        );
    }

    #[test]
    fn a_read_that_is_not_utf8_or_holds_a_nul_is_base64() {
        for (bytes, base64) in [
            (&b"GET / HTTP/1.1\r\n\xff"[..], "R0VUIC8gSFRUUC8xLjENCv8="),
            (&b"\0\0\0\x05hello"[..], "AAAABWhlbGxv"),
        ] {
            let mut line = written(data(bytes));
            assert_eq!(line["len"], bytes.len());
            assert_eq!(line["base64"], base64, "{bytes:?}");
            assert!(line.as_object_mut().unwrap().remove("text").is_none());
        }
        // A seqpacket's empty message.
        assert_eq!(written(data(b""))["text"], "");
    }

    #[test]
    fn open_and_close_carry_the_peer_and_the_totals() {
        let open = written(What::Open {
            peer: Some(Credentials {
                pid: 42,
                uid: 1000,
                gid: 100,
                command: Some("curl".to_owned()),
            }),
            socket: "/tmp/p.sock".into(),
            upstream: "@app".into(),
        });
        assert_eq!(
            open,
            serde_json::json!({
                "t": 1.5, "conn": 3, "event": "open",
                "peer": {"pid": 42, "uid": 1000, "gid": 100, "command": "curl"},
                "socket": "/tmp/p.sock", "upstream": "@app",
            })
        );
        let close = written(What::Close {
            to_upstream: 5,
            to_client: 7,
        });
        assert_eq!(close["to_upstream"], 5);
        assert_eq!(close["to_client"], 7);
        assert_eq!(close["event"], "close");
    }

    use crate::descriptors::Identity;
}

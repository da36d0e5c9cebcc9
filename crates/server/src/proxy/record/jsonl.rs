//! `--record FILE.jsonl`: one JSON object a line, one line an event. The schema is
//! docs/proxy.md's and stays stable: fields are only ever added.

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
}

impl<W: Write> Jsonl<W> {
    pub(super) fn new(out: W, path: &Path) -> Jsonl<W> {
        Jsonl {
            out,
            path: path.to_owned(),
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
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
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

/// `bytes` escaped as `-v` escapes them (controls as `\n`, `\u{1b}`, bytes that are not UTF-8
/// as `\xNN`), whole.
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
            line.text = Some(escaped(bytes));
            line.base64 = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
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
        serde_json::to_writer(&mut self.out, &line(t, event))?;
        self.out.write_all(b"\n")
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

    #[test]
    fn a_read_is_one_line_with_its_bytes_twice_and_its_descriptors() {
        let line = written(What::Data {
            dir: Dir::ToUpstream,
            bytes: Bytes::from_static(b"GET / HTTP/1.1\r\n\xff"),
            fds: vec![Identity {
                kind: "file".to_owned(),
                path: Some(b"/etc/hosts".to_vec()),
            }],
            frames: Vec::new(),
        });
        assert_eq!(
            line,
            serde_json::json!({
                "t": 1.5, "conn": 3, "event": "data", "dir": "to_upstream", "len": 17,
                "text": "GET / HTTP/1.1\\r\\n\\xff",
                "base64": "R0VUIC8gSFRUUC8xLjENCv8=",
                "fds": [{"kind": "file", "path": "/etc/hosts"}],
            })
        );
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

//! `--pcap FILE.pcapng`: the recording as packets Wireshark dissects without plug-ins.
//!
//! A Unix socket has no addresses or ports, so each connection is given synthetic ones: a
//! stream connection is a TCP connection from `127.0.0.1:<port from the connection id>` to
//! `127.0.0.2:80` — the three-way handshake at `open`, a segment per read with sequence and
//! acknowledgement numbers that follow the bytes, a FIN for each `eof`, a RST if it ended
//! otherwise — so HTTP over docker.sock shows as HTTP. Seqpacket messages and datagrams are
//! UDP datagrams between the same addresses (port 9 on the upstream's side), one a message.
//! The link type is raw IPv4. The socket paths are the interface's name and description, the
//! client's credentials a comment on its connection's first packet, passed descriptors and
//! errors comments on the packets they came with. The pcapng format is `pcap-file`'s, the
//! IPv4, TCP and UDP headers are `etherparse`'s: neither is written by hand here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use etherparse::PacketBuilder;
use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};

use super::jsonl::escaped;
use super::{Dir, Event, Sink, What};
use crate::config::SocketType;

/// The client's synthetic address.
pub(crate) const CLIENT: [u8; 4] = [127, 0, 0, 1];
/// The upstream's synthetic address.
pub(crate) const UPSTREAM: [u8; 4] = [127, 0, 0, 2];
/// The upstream's port for a stream: HTTP's, so Wireshark's HTTP dissector takes it (and
/// its heuristics find most other protocols on any port).
pub(crate) const STREAM_PORT: u16 = 80;
/// The upstream's port for messages (discard: no dissector claims it).
pub(crate) const MESSAGE_PORT: u16 = 9;
/// The most payload one synthetic packet carries: an IPv4 packet is at most 65,535 bytes
/// with its 20-byte header and a 20-byte TCP header. A longer read is cut into segments; a
/// longer message is cut short in the capture (its full length in a comment).
const MAX_PAYLOAD: usize = 65_535 - 20 - 20;
const MAX_UDP_PAYLOAD: usize = 65_535 - 20 - 8;
/// The window advertised: the largest a TCP header says without scaling.
const WINDOW: u16 = u16::MAX;
/// Time to live of the synthetic packets.
const TTL: u8 = 64;

/// The client's port for connection `conn`: in the ephemeral range, 49152..=65535.
pub(crate) fn client_port(conn: u64) -> u16 {
    49152 + (conn % 16384) as u16
}

/// One connection's TCP state.
#[derive(Debug, Default)]
struct Tcp {
    /// Next sequence number from the client, and from the upstream.
    client_next: u32,
    upstream_next: u32,
    /// Which sides have sent their FIN.
    client_fin: bool,
    upstream_fin: bool,
    /// Which side sent the last FIN: the other acknowledges it at the close.
    last_fin: Option<Dir>,
    /// A comment for the next packet (an error).
    note: Option<String>,
}

/// The pcapng file.
pub(super) struct Pcapng<W: Write> {
    out: PcapNgWriter<W>,
    path: PathBuf,
    /// Wall-clock time of `t = 0`.
    start: SystemTime,
    /// Stream connections as TCP; other types as UDP.
    tcp: bool,
    /// The interface is described at the first `open` (it names the sockets).
    interface: bool,
    conns: HashMap<u64, Tcp>,
}

fn pcap_error(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        e => io::Error::other(e.to_string()),
    }
}

impl<W: Write> Pcapng<W> {
    /// Starts the file (its section header) on `out`.
    pub(super) fn new(
        out: W,
        path: &Path,
        kind: SocketType,
        start: SystemTime,
    ) -> io::Result<Self> {
        let section = SectionHeaderBlock {
            options: vec![
                SectionHeaderOption::UserApplication(Cow::Borrowed(concat!(
                    "udsecho-server ",
                    env!("CARGO_PKG_VERSION")
                ))),
                SectionHeaderOption::Comment(Cow::Owned(format!(
                    "A Unix {kind} socket through the udsecho proxy: each connection is shown \
                     with synthetic addresses (client 127.0.0.1, upstream 127.0.0.2)"
                ))),
            ],
            ..SectionHeaderBlock::default()
        };
        Ok(Pcapng {
            out: PcapNgWriter::with_section_header(out, section).map_err(pcap_error)?,
            path: path.to_owned(),
            start,
            tcp: kind == SocketType::Stream,
            interface: false,
            conns: HashMap::new(),
        })
    }

    /// Writes one packet of `bytes` (headers and payload), at `t`, with `comment`.
    fn packet(
        &mut self,
        t: f64,
        bytes: &[u8],
        original: usize,
        comment: Option<String>,
    ) -> io::Result<()> {
        let at = self
            .start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            + Duration::from_secs_f64(t);
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: at,
            original_len: u32::try_from(original).unwrap_or(u32::MAX),
            data: Cow::Borrowed(bytes),
            options: comment
                .map(|c| vec![EnhancedPacketOption::Comment(Cow::Owned(c))])
                .unwrap_or_default(),
        };
        self.out.write_pcapng_block(block).map_err(pcap_error)?;
        Ok(())
    }

    /// One TCP segment of connection `conn` in direction `dir` (flags as `build` sets them).
    fn segment(
        &mut self,
        t: f64,
        conn: u64,
        dir: Dir,
        payload: &[u8],
        build: impl FnOnce(
            etherparse::PacketBuilderStep<etherparse::TcpHeader>,
            &Tcp,
        ) -> etherparse::PacketBuilderStep<etherparse::TcpHeader>,
        comment: Option<String>,
    ) -> io::Result<()> {
        let state = self.conns.entry(conn).or_default();
        let port = client_port(conn);
        let builder = match dir {
            Dir::ToUpstream => PacketBuilder::ipv4(CLIENT, UPSTREAM, TTL).tcp(
                port,
                STREAM_PORT,
                state.client_next,
                WINDOW,
            ),
            Dir::ToClient => PacketBuilder::ipv4(UPSTREAM, CLIENT, TTL).tcp(
                STREAM_PORT,
                port,
                state.upstream_next,
                WINDOW,
            ),
        };
        let builder = build(builder, state);
        let mut bytes = Vec::with_capacity(builder.size(payload.len()));
        builder
            .write(&mut bytes, payload)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let comment = match (comment, state.note.take()) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let len = bytes.len();
        self.packet(t, &bytes, len, comment)
    }

    /// A UDP datagram for a message of connection `conn`.
    fn datagram(
        &mut self,
        t: f64,
        conn: u64,
        dir: Dir,
        payload: &[u8],
        comment: Option<String>,
    ) -> io::Result<()> {
        let port = client_port(conn);
        let builder = match dir {
            Dir::ToUpstream => PacketBuilder::ipv4(CLIENT, UPSTREAM, TTL).udp(port, MESSAGE_PORT),
            Dir::ToClient => PacketBuilder::ipv4(UPSTREAM, CLIENT, TTL).udp(MESSAGE_PORT, port),
        };
        let shown = &payload[..payload.len().min(MAX_UDP_PAYLOAD)];
        let mut comment = comment;
        if shown.len() < payload.len() {
            let cut = format!(
                "a message of {} bytes: the first {} are shown (the most one IPv4 packet holds)",
                payload.len(),
                shown.len()
            );
            comment = Some(comment.map_or(cut.clone(), |c| format!("{c}; {cut}")));
        }
        let mut bytes = Vec::with_capacity(builder.size(shown.len()));
        builder
            .write(&mut bytes, shown)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let len = bytes.len();
        self.packet(t, &bytes, len, comment)
    }

    /// The interface, described once the sockets are known.
    fn describe_interface(&mut self, socket: &str, upstream: &str) -> io::Result<()> {
        if self.interface {
            return Ok(());
        }
        self.interface = true;
        let interface = InterfaceDescriptionBlock {
            linktype: DataLink::IPV4,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(socket.to_owned())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                    "udsecho proxy: clients of {socket} (127.0.0.1) to the upstream {upstream} \
                     (127.0.0.2)"
                ))),
                // Timestamps in nanoseconds, as pcap-file writes them.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.out.write_pcapng_block(interface).map_err(pcap_error)?;
        Ok(())
    }
}

impl<W: Write + Send> Sink for Pcapng<W> {
    fn write(&mut self, t: f64, event: &Event) -> io::Result<()> {
        let conn = event.conn;
        match &event.what {
            What::Open {
                peer,
                socket,
                upstream,
            } => {
                self.describe_interface(socket, upstream)?;
                let who = match peer {
                    Some(p) => format!(
                        "conn {conn}: client pid {} uid {} gid {}{}; {socket} -> {upstream}",
                        p.pid,
                        p.uid,
                        p.gid,
                        p.command
                            .as_deref()
                            .map(|c| format!(" command {}", escaped(c.as_bytes())))
                            .unwrap_or_default()
                    ),
                    None => format!("conn {conn}: {socket} -> {upstream}"),
                };
                if !self.tcp {
                    // No handshake for messages: the comment waits for the first one.
                    self.conns.entry(conn).or_default().note = Some(who);
                    return Ok(());
                }
                // Client ISN 0, upstream ISN 0: the SYNs take one number each.
                self.conns.insert(conn, Tcp::default());
                self.segment(t, conn, Dir::ToUpstream, &[], |b, _| b.syn(), Some(who))?;
                self.segment(t, conn, Dir::ToClient, &[], |b, _| b.syn().ack(1), None)?;
                let state = self.conns.entry(conn).or_default();
                state.client_next = 1;
                state.upstream_next = 1;
                self.segment(
                    t,
                    conn,
                    Dir::ToUpstream,
                    &[],
                    |b, s| b.ack(s.upstream_next),
                    None,
                )
            }
            What::Data {
                dir, bytes, fds, ..
            } => {
                let mut comment = (!fds.is_empty()).then(|| {
                    let list: Vec<String> = fds
                        .iter()
                        .map(|fd| match &fd.path {
                            Some(path) => format!("{} {}", fd.kind, escaped(path)),
                            None => fd.kind.clone(),
                        })
                        .collect();
                    format!("{} passed descriptor(s): {}", fds.len(), list.join(", "))
                });
                if !self.tcp {
                    let note = self.conns.entry(conn).or_default().note.take();
                    let comment = match (note, comment) {
                        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                        (a, b) => a.or(b),
                    };
                    return self.datagram(t, conn, *dir, bytes, comment);
                }
                for piece in bytes.chunks(MAX_PAYLOAD) {
                    let dir = *dir;
                    self.segment(
                        t,
                        conn,
                        dir,
                        piece,
                        |b, s| match dir {
                            Dir::ToUpstream => b.psh().ack(s.upstream_next),
                            Dir::ToClient => b.psh().ack(s.client_next),
                        },
                        comment.take(),
                    )?;
                    let state = self.conns.entry(conn).or_default();
                    let n = piece.len() as u32;
                    match dir {
                        Dir::ToUpstream => state.client_next = state.client_next.wrapping_add(n),
                        Dir::ToClient => state.upstream_next = state.upstream_next.wrapping_add(n),
                    }
                }
                Ok(())
            }
            What::Eof { dir } if self.tcp => {
                let dir = *dir;
                self.segment(
                    t,
                    conn,
                    dir,
                    &[],
                    |b, s| match dir {
                        Dir::ToUpstream => b.fin().ack(s.upstream_next),
                        Dir::ToClient => b.fin().ack(s.client_next),
                    },
                    None,
                )?;
                let state = self.conns.entry(conn).or_default();
                state.last_fin = Some(dir);
                match dir {
                    Dir::ToUpstream => {
                        state.client_next = state.client_next.wrapping_add(1);
                        state.client_fin = true;
                    }
                    Dir::ToClient => {
                        state.upstream_next = state.upstream_next.wrapping_add(1);
                        state.upstream_fin = true;
                    }
                }
                Ok(())
            }
            What::Eof { .. } => Ok(()),
            What::Error { message, .. } => {
                let note = &mut self.conns.entry(conn).or_default().note;
                *note = Some(match note.take() {
                    Some(before) => format!("{before}; {message}"),
                    None => message.clone(),
                });
                Ok(())
            }
            What::Close { .. } => {
                let Some(state) = self.conns.get(&conn) else {
                    return Ok(());
                };
                if self.tcp && !(state.client_fin && state.upstream_fin) {
                    // It did not end with both FINs: a reset, with why (an error) as comment.
                    self.segment(
                        t,
                        conn,
                        Dir::ToUpstream,
                        &[],
                        |b, s| b.rst().ack(s.upstream_next),
                        None,
                    )?;
                } else if self.tcp {
                    // The last FIN acknowledged, by the other side.
                    match state.last_fin {
                        Some(Dir::ToUpstream) => self.segment(
                            t,
                            conn,
                            Dir::ToClient,
                            &[],
                            |b, s| b.ack(s.client_next),
                            None,
                        )?,
                        _ => self.segment(
                            t,
                            conn,
                            Dir::ToUpstream,
                            &[],
                            |b, s| b.ack(s.upstream_next),
                            None,
                        )?,
                    }
                }
                self.conns.remove(&conn);
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.get_mut().flush()
    }

    fn name(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::record::Credentials;
    use bytes::Bytes;
    use pcap_file::pcapng::{Block, PcapNgReader};
    use std::time::Instant;

    fn stream_sink() -> Pcapng<Vec<u8>> {
        Pcapng::new(
            Vec::new(),
            Path::new("t.pcapng"),
            SocketType::Stream,
            SystemTime::now(),
        )
        .unwrap()
    }

    fn event(conn: u64, what: What) -> Event {
        Event {
            at: Instant::now(),
            conn,
            what,
        }
    }

    /// (seq, ack, flags, payload length) of each TCP segment written.
    fn segments(file: &[u8]) -> Vec<(u32, u32, String, usize)> {
        let mut reader = PcapNgReader::new(file).unwrap();
        let mut out = Vec::new();
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap() {
                let sliced = etherparse::SlicedPacket::from_ip(&epb.data).unwrap();
                let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
                    panic!("TCP")
                };
                let flags: String = [
                    (tcp.syn(), 'S'),
                    (tcp.fin(), 'F'),
                    (tcp.rst(), 'R'),
                    (tcp.psh(), 'P'),
                    (tcp.ack(), 'A'),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, c)| *c)
                .collect();
                out.push((
                    tcp.sequence_number(),
                    tcp.acknowledgment_number(),
                    flags,
                    tcp.payload().len(),
                ));
            }
        }
        out
    }

    #[test]
    fn a_stream_is_a_tcp_connection_whose_numbers_follow_the_bytes() {
        let mut sink = stream_sink();
        let events = [
            What::Open {
                peer: Some(Credentials {
                    pid: 1,
                    uid: 2,
                    gid: 3,
                    command: Some("x".to_owned()),
                }),
                socket: "/s".into(),
                upstream: "/u".into(),
            },
            What::Data {
                dir: Dir::ToUpstream,
                bytes: Bytes::from(vec![1u8; 100_000]),
                fds: Vec::new(),
                frames: Vec::new(),
            },
            What::Data {
                dir: Dir::ToClient,
                bytes: Bytes::from_static(b"ok"),
                fds: Vec::new(),
                frames: Vec::new(),
            },
            What::Eof {
                dir: Dir::ToUpstream,
            },
            What::Eof { dir: Dir::ToClient },
            What::Close {
                to_upstream: 100_000,
                to_client: 2,
            },
        ];
        for (i, what) in events.into_iter().enumerate() {
            sink.write(i as f64 * 0.001, &event(7, what)).unwrap();
        }
        let file = sink.out.into_inner();
        let got = segments(&file);
        let first = 100_000 - MAX_PAYLOAD;
        assert_eq!(
            got,
            [
                (0, 0, "S".to_owned(), 0),
                (0, 1, "SA".to_owned(), 0),
                (1, 1, "A".to_owned(), 0),
                (1, 1, "PA".to_owned(), MAX_PAYLOAD),
                (1 + MAX_PAYLOAD as u32, 1, "PA".to_owned(), first),
                (1, 100_001, "PA".to_owned(), 2),
                (100_001, 3, "FA".to_owned(), 0),
                (3, 100_002, "FA".to_owned(), 0),
                (100_002, 4, "A".to_owned(), 0),
            ]
        );
    }

    #[test]
    fn a_connection_that_did_not_end_with_both_fins_ends_with_a_reset_saying_why() {
        let mut sink = stream_sink();
        let open = What::Open {
            peer: None,
            socket: "/s".into(),
            upstream: "/u".into(),
        };
        sink.write(0.0, &event(1, open)).unwrap();
        let error = What::Error {
            dir: Some(Dir::ToClient),
            message: "upstream: reset".to_owned(),
        };
        sink.write(0.1, &event(1, error)).unwrap();
        let close = What::Close {
            to_upstream: 0,
            to_client: 0,
        };
        sink.write(0.2, &event(1, close)).unwrap();
        let file = sink.out.into_inner();
        assert_eq!(segments(&file).last().unwrap().2, "RA");
        let mut reader = PcapNgReader::new(&file[..]).unwrap();
        let mut last_comment = None;
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap() {
                last_comment = epb.options.first().map(|o| format!("{o:?}"));
            }
        }
        assert!(last_comment.unwrap_or_default().contains("upstream: reset"));
    }
}

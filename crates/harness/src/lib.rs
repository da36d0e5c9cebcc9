//! Drives the built udsecho binaries from the outside, for tests and `cargo xtask`.
//!
//! It starts servers on fresh temp sockets and waits until they accept (polling connect with
//! a deadline, never a blind sleep), signals and reaps them, runs the client with a given
//! stdin and a deadline, offers raw, framed, seqpacket and datagram test peers, and drives
//! real shells and `man` over the completion scripts and man pages the binaries generate.
//! Every child is killed when its handle drops, so a failing test never leaks a process. It
//! uses no server or client internals: only the binaries, and `udsecho-proto` to speak
//! frames.

mod bins;
pub mod descriptors;
mod fixtures;
pub mod model;
mod packets;
mod peers;
mod process;
mod shells;

pub use crate::bins::{bin_dir, binary, use_bin_dir};
pub use crate::fixtures::{checksum, random_payload, short_temp_dir};
pub use crate::packets::{
    Answer, Datagram, DatagramPeer, Sender, SeqpacketConn, SeqpacketPeer, seqpacket_socket,
};
pub use crate::peers::{FramedPeer, StreamingPeer, connect, raw_round_trip, wait_for_socket};
pub use crate::process::{
    ClientRun, Server, ServerBuilder, cpu_time, open_fds, output_within, raise_fd_limit, rss_kib,
    run_client, signal, wait_timeout,
};
pub use crate::shells::{Shell, complete, render_man};
pub use rustix::process::Signal;

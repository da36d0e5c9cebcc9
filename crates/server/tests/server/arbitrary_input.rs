//! Property test: an in-process server fed arbitrary framed input in arbitrary chunks answers
//! exactly as the protocol says — the Hello answer, every Data payload echoed in order up to
//! the first violation, then the Error frame the violation calls for (or Goodbye, or nothing)
//! — never panics, and keeps serving other connections.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use udsecho_harness::model::{expected_replies, parse_replies};
use udsecho_proto::{Frame, Goodbye, GoodbyeReason, Hello, PREAMBLE};
use udsecho_server::{Config, Listener, Shutdown as ServerShutdown, SocketAddress};

const MAX_FRAME: u32 = 4096;

/// One in-process server for the whole test, on its own runtime thread.
fn server() -> &'static PathBuf {
    static SOCKET: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SOCKET.get_or_init(|| {
        let dir = udsecho_harness::short_temp_dir();
        let path = dir.path().join("p.sock");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let socket = path.clone();
        std::thread::spawn(move || {
            let _dir = dir;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut config = Config::new(SocketAddress::Path(socket));
                config.max_frame = MAX_FRAME;
                let listener =
                    Listener::bind(&config.socket, config.socket_mode, config.socket_type)
                        .await
                        .unwrap();
                ready_tx.send(()).unwrap();
                udsecho_server::run(listener, &config, ServerShutdown::new())
                    .await
                    .expect("the listening socket stays usable");
            });
        });
        ready_rx.recv().unwrap();
        path
    })
}

#[derive(Debug, Clone)]
enum Item {
    Hello { version: u16, max_frame: u32 },
    Data(Vec<u8>),
    Goodbye,
    Garbage(Vec<u8>),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        1 => (0u16..3, prop_oneof![Just(0u32), 1u32..10_000]).prop_map(|(version, max_frame)| Item::Hello { version, max_frame }),
        8 => proptest::collection::vec(any::<u8>(), 0..1500).prop_map(Item::Data),
        1 => Just(Item::Goodbye),
        1 => proptest::collection::vec(any::<u8>(), 1..12).prop_map(Item::Garbage),
    ]
}

fn encode(items: &[Item]) -> Vec<u8> {
    let mut out = BytesMut::from(&PREAMBLE[..]);
    for item in items {
        match item {
            Item::Hello { version, max_frame } => {
                let mut hello = Hello::new(*max_frame, "prop");
                hello.version = *version;
                Frame::Hello(hello).encode(&mut out, u32::MAX).unwrap();
            }
            Item::Data(p) => Frame::Data(Bytes::from(p.clone()))
                .encode(&mut out, u32::MAX)
                .unwrap(),
            Item::Goodbye => Frame::Goodbye(Goodbye::new(GoodbyeReason::Done))
                .encode(&mut out, u32::MAX)
                .unwrap(),
            Item::Garbage(g) => out.extend_from_slice(g),
        }
    }
    out.to_vec()
}

fn exchange(input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let stream = UnixStream::connect(server()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let input = input.to_vec();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let sender = std::thread::spawn(move || {
        let mut at = 0;
        for p in points {
            // The server may close first (after an Error); the rest is not read then.
            if writer.write_all(&input[at..p]).is_err() {
                return;
            }
            at = p;
        }
        let _ = writer.shutdown(Shutdown::Write);
    });
    let mut output = Vec::new();
    // After an Error the server may close with our late bytes unread: the read can end in
    // ECONNRESET once everything it sent has been read.
    let _ = (&stream).read_to_end(&mut output);
    sender.join().unwrap();
    output
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn server_answers_arbitrary_framed_input_as_the_protocol_says(
        hello_first in any::<bool>(),
        items in proptest::collection::vec(item(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        // Often the client half-closes in the middle of something.
        trim in prop_oneof![2 => Just(0usize), 1 => 1usize..200],
    ) {
        let mut all = Vec::new();
        if hello_first {
            all.push(Item::Hello { version: 1, max_frame: MAX_FRAME });
        }
        all.extend(items);
        let mut input = encode(&all);
        input.truncate(input.len().saturating_sub(trim).max(PREAMBLE.len()));
        let output = exchange(&input, &cuts);
        prop_assert_eq!(parse_replies(&output).unwrap(), expected_replies(&input, MAX_FRAME));

        // Whatever that connection did, the next one is served.
        let echo = udsecho_harness::raw_round_trip(server(), b"next", 2).unwrap();
        prop_assert_eq!(echo, b"next".to_vec());
    }

    #[test]
    fn raw_input_in_any_chunks_comes_back_byte_for_byte(
        first in 1u8..=255,
        rest in proptest::collection::vec(any::<u8>(), 0..20_000),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut input = vec![first];
        input.extend(rest);
        prop_assert_eq!(exchange(&input, &cuts), input);
    }
}

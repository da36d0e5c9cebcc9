//! A whole server connection fed arbitrary bytes in arbitrary chunks: an in-process server
//! on a Unix socket, one connection per input. Framed input must get exactly the replies the
//! protocol calls for (the reference model in `udsecho_harness::model`); raw input must come
//! back byte for byte; and the server must keep serving.
#![no_main]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use udsecho_harness::model::{expected_replies, parse_replies};
use udsecho_proto::PREAMBLE;
use udsecho_server::{Config, Listener, Shutdown as ServerShutdown, SocketAddress};

const MAX_FRAME: u32 = 4096;

fn server() -> &'static PathBuf {
    static SOCKET: OnceLock<PathBuf> = OnceLock::new();
    SOCKET.get_or_init(|| {
        let dir = udsecho_harness::short_temp_dir().keep();
        let path = dir.join("fuzz.sock");
        let socket = path.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut config = Config::new(SocketAddress::Path(socket));
                config.max_frame = MAX_FRAME;
                let listener = Listener::bind(&config.socket, config.socket_mode, config.socket_type)
                    .await
                    .expect("bind");
                ready_tx.send(()).expect("ready");
                udsecho_server::run(listener, &config, ServerShutdown::new())
                    .await
                    .expect("the listening socket stays usable");
            });
        });
        ready_rx.recv().expect("server started");
        path
    })
}

fn exchange(input: &[u8], chunk: usize) -> Vec<u8> {
    let stream = UnixStream::connect(server()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let input = input.to_vec();
    let sender = std::thread::spawn(move || {
        for piece in input.chunks(chunk.max(1)) {
            if writer.write_all(piece).is_err() {
                return;
            }
        }
        let _ = writer.shutdown(Shutdown::Write);
    });
    let mut output = Vec::new();
    let _ = (&stream).read_to_end(&mut output);
    sender.join().expect("sender");
    output
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(control >> 1) * 7;
    if control & 1 == 0 {
        let mut input = PREAMBLE.to_vec();
        input.extend_from_slice(body);
        let output = exchange(&input, chunk);
        let replies = parse_replies(&output).expect("the server sends well-formed frames");
        assert_eq!(replies, expected_replies(&input, MAX_FRAME));
    } else {
        // Raw: anything that does not start like the preamble.
        let mut input = vec![b'r'];
        input.extend_from_slice(body);
        assert_eq!(exchange(&input, chunk), input);
    }
});

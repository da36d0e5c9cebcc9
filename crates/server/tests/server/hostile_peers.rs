//! Issue #21: datagram, seqpacket, sd_notify and control frames under hostile peers. Each test
//! here failed against the server before its fix.

use std::time::Duration;

use udsecho_harness::{FramedPeer, Server, run_client};
use udsecho_proto::{Frame, Goodbye, GoodbyeReason, Hello};

const LIMIT: Duration = Duration::from_secs(10);

/// PROTOCOL.md 4.2: control frames up to 4096 bytes are accepted whatever `--max-frame` is,
/// so a tiny limit never locks out the project's own client or a long Hello agent.
#[test]
fn control_frames_pass_a_max_frame_smaller_than_them() {
    let server = Server::start(["--max-frame", "16"]).unwrap();
    let run = run_client(
        [
            server.socket().as_os_str(),
            "send".as_ref(),
            "--framed".as_ref(),
            "-n".as_ref(),
            "2".as_ref(),
            "-i".as_ref(),
            "1ms".as_ref(),
            "-m".as_ref(),
            "twelve bytes".as_ref(),
        ],
        b"",
        LIMIT,
    )
    .unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        run.stdout_text().matches("received: twelve bytes").count(),
        2
    );

    let server = Server::start(["--max-frame", "1000"]).unwrap();
    let mut peer = FramedPeer::connect(server.socket()).unwrap();
    peer.send(&Frame::Hello(Hello::new(1, "a".repeat(4000))))
        .unwrap();
    let Some(Frame::Hello(answer)) = peer.recv().unwrap() else {
        panic!("a 4,000-byte agent is a legal Hello at --max-frame 1000");
    };
    assert_eq!(
        answer.max_frame, 1,
        "the client's own limit is the lower one"
    );
    // A peer that accepts 1-byte frames still says Goodbye, and is answered with Goodbye.
    peer.send(&Frame::Goodbye(Goodbye::new(GoodbyeReason::Done)))
        .unwrap();
    match peer.recv().unwrap() {
        Some(Frame::Goodbye(g)) => assert_eq!(g.reason, GoodbyeReason::Done),
        other => panic!("expected Goodbye, got {other:?}"),
    }
}

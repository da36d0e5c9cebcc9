//! `--framed` against servers that are not what the client expects: each named plainly, in
//! words a person understands, never a codec's internals (issue #21).

use std::io::{Read, Write};

use udsecho_proto::{Frame, Hello};

use crate::{client, fake_server, one_line};

/// Reads the preamble and the client's Hello (whatever their length), leaving the stream
/// open; how many bytes that was.
pub(crate) fn swallow_opening(stream: &mut std::os::unix::net::UnixStream) -> usize {
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    head.len() + len
}

#[test]
fn an_http_server_is_said_not_to_be_a_framed_server_with_what_it_sent() {
    let (_dir, path) = fake_server(|mut stream| {
        swallow_opening(&mut stream);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let out = client(&path)
        .args(["send", "--framed", "-n", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(line.contains("not a udsecho framed server"), "{line}");
    assert!(line.contains(r"HTTP/1.1 400 Bad Request\r\n"), "{line}");
    assert!(!line.contains("max_frame"), "{line}");
}

#[test]
fn a_framed_server_that_closes_mid_frame_closed_early() {
    let (_dir, path) = fake_server(|mut stream| {
        swallow_opening(&mut stream);
        let mut hello = bytes::BytesMut::new();
        Frame::Hello(Hello::new(1 << 20, "cut"))
            .encode(&mut hello, u32::MAX)
            .unwrap();
        stream.write_all(&hello).unwrap();
        // The header of a 100-byte Data frame and three of its bytes, then the end.
        stream
            .write_all(&[0, 0, 0, 100, 1, b'a', b'b', b'c'])
            .unwrap();
    });
    let out = client(&path)
        .args(["send", "--framed", "-n", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(line.contains("closed the connection early"), "{line}");
    assert!(!line.contains("bytes remaining on stream"), "{line}");
}

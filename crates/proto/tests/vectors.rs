//! The test vectors of PROTOCOL.md, checked byte for byte in both directions.
//!
//! The vectors are read from PROTOCOL.md itself, so the document and the code cannot drift:
//! a vector in the document that the code does not produce fails, and so does a frame listed
//! here that the document lacks.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;
use udsecho_proto::{
    DEFAULT_MAX_FRAME, ErrorCode, ErrorFrame, Frame, FrameCodec, Goodbye, GoodbyeReason, Hello,
};

fn expected_frames() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "hello-client-8mib",
            Frame::Hello(Hello::new(8_388_608, "udsecho/0.1.0")),
        ),
        ("hello-64k-no-agent", Frame::Hello(Hello::new(65_536, ""))),
        ("data-ola-mundo", Frame::Data(Bytes::from("olá mundo"))),
        ("data-empty", Frame::Data(Bytes::new())),
        ("data-nul", Frame::Data(Bytes::from_static(b"\0"))),
        (
            "error-data-first",
            Frame::Error(ErrorFrame::new(
                ErrorCode::UnexpectedFrame,
                "Data before Hello",
            )),
        ),
        (
            "goodbye-shutdown",
            Frame::Goodbye(Goodbye::new(GoodbyeReason::Shutdown)),
        ),
        (
            "goodbye-done",
            Frame::Goodbye(Goodbye::new(GoodbyeReason::Done)),
        ),
    ]
}

/// The lines of the fenced block that follows `marker` in PROTOCOL.md.
fn vector_block(marker: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md");
    let doc = std::fs::read_to_string(path)
        .expect("PROTOCOL.md (a link to the workspace root's) is in the crate");
    let after = doc
        .split_once(marker)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {marker}"))
        .1;
    let block = after
        .split("```")
        .nth(1)
        .expect("a fenced block follows the marker");
    block
        .lines()
        .skip(1) // the info string, "text"
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn hex(bytes: &str) -> Vec<u8> {
    bytes
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("two hex digits"))
        .collect()
}

#[test]
fn valid_vectors_encode_and_decode_byte_for_byte() {
    let doc: Vec<(String, Vec<u8>)> = vector_block("<!-- vectors:valid -->")
        .iter()
        .map(|line| {
            let (name, bytes) = line.split_once(' ').expect("name then bytes");
            (name.to_owned(), hex(bytes))
        })
        .collect();
    let frames = expected_frames();
    assert_eq!(
        doc.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        frames.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "PROTOCOL.md and this test list the same vectors"
    );
    for ((name, bytes), (_, frame)) in doc.iter().zip(frames) {
        let mut encoded = BytesMut::new();
        frame.encode(&mut encoded, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(&encoded[..], &bytes[..], "encoding of {name}");

        let mut input = BytesMut::from(&bytes[..]);
        let decoded = FrameCodec::new().decode(&mut input).unwrap();
        assert_eq!(decoded, Some(frame), "decoding of {name}");
        assert!(input.is_empty(), "{name} is consumed whole");
    }
}

#[test]
fn invalid_vectors_are_rejected_with_their_code_from_the_bytes_shown() {
    let block = vector_block("<!-- vectors:invalid -->");
    assert!(block.len() >= 6, "the invalid vectors are all there");
    for line in block {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap();
        let code = words.next().unwrap();
        let bytes: Vec<u8> = words.map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
        let mut input = BytesMut::from(&bytes[..]);
        let err = FrameCodec::new()
            .decode(&mut input)
            .expect_err(&format!("{name} is rejected"));
        assert_eq!(
            format!("{:?}", err.code().expect("a protocol error")),
            code,
            "error code of {name} ({err})"
        );
    }
}

#[test]
fn session_example_decodes_to_hello_data_goodbye() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let session = doc.split("A whole framed session").nth(1).unwrap();
    let block = session.split("```").nth(1).unwrap();
    let bytes = hex(block.trim_start_matches("text"));
    assert_eq!(&bytes[..8], &udsecho_proto::PREAMBLE);
    let mut input = BytesMut::from(&bytes[8..]);
    let mut codec = FrameCodec::new();
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode(&mut input).unwrap() {
        frames.push(frame);
    }
    assert_eq!(
        frames,
        vec![
            Frame::Hello(Hello::new(DEFAULT_MAX_FRAME, "udsecho/0.1.0")),
            Frame::Data(Bytes::from_static(b"hi")),
            Frame::Goodbye(Goodbye::new(GoodbyeReason::Done)),
        ]
    );
}

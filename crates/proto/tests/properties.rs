//! Property tests: whatever the frames and however the stream is cut, decoding gives back
//! exactly what was encoded; and no input makes the decoder or the detector panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use udsecho_proto::{
    Detection, ErrorCode, ErrorFrame, Frame, FrameCodec, Goodbye, GoodbyeReason, Hello,
    MAX_CONTROL_FRAME, PREAMBLE, ProtoError, detect,
};

fn any_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..2048)
            .prop_map(|p| Frame::Data(Bytes::from(p))),
        1 => (any::<u16>(), any::<u32>(), ".{0,40}").prop_map(|(v, m, a)| {
            let mut h = Hello::new(m, a);
            h.version = v;
            Frame::Hello(h)
        }),
        1 => (any::<u16>(), ".{0,80}")
            .prop_map(|(c, m)| Frame::Error(ErrorFrame::new(ErrorCode::from(c), m))),
        1 => any::<u16>().prop_map(|r| Frame::Goodbye(Goodbye::new(GoodbyeReason::from(r)))),
    ]
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut codec = FrameCodec::new();
    let mut wire = BytesMut::new();
    for frame in frames {
        codec.encode(frame.clone(), &mut wire).unwrap();
    }
    wire
}

/// Feeds `wire` to a decoder in the chunks given by `cuts`, collecting every frame.
fn decode_in_chunks(wire: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, ProtoError> {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    for point in points {
        buf.extend_from_slice(&wire[at..point]);
        at = point;
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    assert!(buf.is_empty(), "no bytes are left over");
    Ok(frames)
}

proptest! {
    #[test]
    fn frames_round_trip_through_any_split(
        frames in proptest::collection::vec(any_frame(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let wire = encode_all(&frames);
        prop_assert_eq!(decode_in_chunks(&wire, &cuts).unwrap(), frames);
    }

    #[test]
    fn frames_round_trip_one_byte_at_a_time(
        frames in proptest::collection::vec(any_frame(), 0..6),
    ) {
        let wire = encode_all(&frames);
        let every_byte: Vec<usize> = (0..wire.len()).collect();
        prop_assert_eq!(decode_in_chunks(&wire, &every_byte).unwrap(), frames);
    }

    #[test]
    fn decoder_never_panics_and_never_buffers_past_the_limit(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        max_frame in 1u32..1024,
    ) {
        let mut codec = FrameCodec::with_max_frame(max_frame);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Frame::Data(p))) => prop_assert!(p.len() < max_frame as usize),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        // What is reserved for an incomplete frame is bounded by the limit, not by `L`.
        // Control frames up to MAX_CONTROL_FRAME pass any limit (PROTOCOL.md 4.2).
        let limit = max_frame.max(MAX_CONTROL_FRAME) as usize;
        prop_assert!(buf.capacity() <= bytes.len().max(4 + limit) + 64);
    }

    #[test]
    fn detector_never_panics_and_is_consistent(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        let expected = if bytes.len() >= 8 && bytes[..8] == PREAMBLE {
            Detection::Framed
        } else if PREAMBLE.starts_with(&bytes) {
            Detection::NeedMore
        } else {
            Detection::Raw
        };
        prop_assert_eq!(detect(&bytes), expected);
    }
}

#[test]
fn a_4_gib_length_is_rejected_after_four_bytes_without_allocating() {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    let capacity_before = buf.capacity();
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        ProtoError::FrameTooLarge {
            len: u32::MAX,
            max: 8_388_608
        }
    ));
    assert_eq!(
        buf.capacity(),
        capacity_before,
        "nothing was reserved for the body"
    );
}

#[test]
fn max_frame_is_inclusive() {
    let mut codec = FrameCodec::with_max_frame(4);
    // L = 4: kind + 3 payload bytes, exactly at the limit.
    let mut at_limit = BytesMut::from(&b"\x00\x00\x00\x04\x01abc"[..]);
    assert_eq!(
        codec.decode(&mut at_limit).unwrap(),
        Some(Frame::Data(Bytes::from_static(b"abc")))
    );
    // Five bytes could still be a control frame: the kind byte decides.
    let mut over = BytesMut::from(&b"\x00\x00\x00\x05"[..]);
    assert_eq!(codec.decode(&mut over).unwrap(), None);
    let mut over = BytesMut::from(&b"\x00\x00\x00\x05\x01"[..]);
    assert!(matches!(
        codec.decode(&mut over),
        Err(ProtoError::FrameTooLarge { len: 5, max: 4 })
    ));
    // The encoder refuses what the peer would refuse, and leaves the buffer as it was.
    let mut out = BytesMut::from(&b"keep"[..]);
    let too_big = Frame::Data(Bytes::from_static(b"abcd"));
    assert!(codec.encode(too_big, &mut out).is_err());
    assert_eq!(&out[..], b"keep");
}

#[test]
fn zero_length_is_an_empty_frame_error() {
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
    let err = FrameCodec::new().decode(&mut buf).unwrap_err();
    assert!(matches!(err, ProtoError::EmptyFrame));
    assert_eq!(err.code(), Some(ErrorCode::EmptyFrame));
}

#[test]
fn unknown_kind_is_rejected_before_its_payload_arrives() {
    // L says 100 bytes follow, but the kind byte alone is enough to reject.
    let mut buf = BytesMut::from(&[0u8, 0, 0, 100, 0x09][..]);
    assert!(matches!(
        FrameCodec::new().decode(&mut buf),
        Err(ProtoError::UnknownKind(0x09))
    ));
}

#[test]
fn a_large_frame_reserves_a_bounded_step_not_all_of_l() {
    let mut codec = FrameCodec::new();
    // 8 MiB announced, nothing sent yet.
    let mut buf = BytesMut::from(&[0x00, 0x80, 0x00, 0x00, 0x01][..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() < 1024 * 1024, "capacity {}", buf.capacity());
    assert!(
        buf.capacity() >= 64 * 1024,
        "but enough to read in big chunks"
    );
}

#[test]
fn data_payload_is_a_slice_of_the_read_buffer() {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(&b"\x00\x00\x00\x06\x01hello"[..]);
    let base = buf.as_ptr() as usize;
    let Some(Frame::Data(payload)) = codec.decode(&mut buf).unwrap() else {
        panic!("a Data frame");
    };
    assert_eq!(&payload[..], b"hello");
    assert_eq!(payload.as_ptr() as usize, base + 5, "no copy was made");
}

/// PROTOCOL.md 4.2: a receiver accepts control frames up to 4096 bytes whatever its
/// `max_frame`, so a peer with a tiny limit can still say Hello and Goodbye; Data is held to
/// the limit, and a control frame over 4096 is refused from its header.
#[test]
fn control_frames_up_to_4096_pass_any_max_frame_and_data_does_not() {
    let mut codec = FrameCodec::with_max_frame(16);
    let hello = Frame::Hello(Hello::new(16, "a".repeat(4000)));
    let mut wire = BytesMut::new();
    codec.encode(hello.clone(), &mut wire).unwrap();
    assert!(wire.len() > 4000);
    assert_eq!(codec.decode(&mut wire).unwrap(), Some(hello));

    let goodbye = Frame::Goodbye(Goodbye::new(GoodbyeReason::Done));
    let mut wire = BytesMut::new();
    FrameCodec::with_max_frame(1)
        .encode(goodbye.clone(), &mut wire)
        .unwrap();
    assert_eq!(
        FrameCodec::with_max_frame(1).decode(&mut wire).unwrap(),
        Some(goodbye)
    );

    let mut data = BytesMut::from(&b"\x00\x00\x00\x11\x01"[..]);
    assert!(matches!(
        codec.decode(&mut data),
        Err(ProtoError::FrameTooLarge { len: 17, max: 16 })
    ));
    let mut huge_hello = BytesMut::from(&b"\x00\x00\x10\x01\x00"[..]);
    assert!(matches!(
        FrameCodec::new().decode(&mut huge_hello),
        Err(ProtoError::FrameTooLarge {
            len: 4097,
            max: 4096
        })
    ));
    // Nor does the encoder produce one.
    let mut out = BytesMut::new();
    let too_long = Frame::Hello(Hello::new(16, "a".repeat(4096)));
    assert!(codec.encode(too_long, &mut out).is_err());
    assert!(out.is_empty());
}

//! Arbitrary bytes, cut at an arbitrary point, into the frame decoder: it must never panic,
//! never hand out a body above the limit, and decode the same frames whatever the cut.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use udsecho_proto::{Frame, FrameCodec};

fn decode_all(chunks: &[&[u8]], max_frame: u32) -> (Vec<Frame>, bool) {
    let mut codec = FrameCodec::with_max_frame(max_frame);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let max_frame = 1 + u32::from(cut) * 64;
    let at = usize::from(cut) % (rest.len() + 1);
    let whole = decode_all(&[rest], max_frame);
    let split = decode_all(&[&rest[..at], &rest[at..]], max_frame);
    assert_eq!(whole, split);
    for frame in &whole.0 {
        if let Frame::Data(p) = frame {
            assert!(p.len() < max_frame as usize);
        }
    }
});

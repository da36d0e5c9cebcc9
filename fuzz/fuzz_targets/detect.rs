//! The mode detector on arbitrary first bytes: never panics, and agrees with its definition.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udsecho_proto::{Detection, PREAMBLE, detect};

fuzz_target!(|data: &[u8]| {
    let expected = if data.len() >= 8 && data[..8] == PREAMBLE {
        Detection::Framed
    } else if PREAMBLE.starts_with(data) {
        Detection::NeedMore
    } else {
        Detection::Raw
    };
    assert_eq!(detect(data), expected);
});

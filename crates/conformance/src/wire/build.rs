//! Frames the runner sends, built byte by byte (sometimes deliberately wrong), and the
//! constants of PROTOCOL.md they use.

/// `"\0UDSECHO"`, PROTOCOL.md §1.
pub(crate) const PREAMBLE: [u8; 8] = udsecho_proto::PREAMBLE;
/// Control frames up to this body length are always accepted (PROTOCOL.md §4.2).
pub(crate) const MAX_CONTROL: u32 = udsecho_proto::MAX_CONTROL_FRAME;

/// Kind bytes.
pub(crate) const HELLO: u8 = 0;
pub(crate) const DATA: u8 = 1;
pub(crate) const ERROR: u8 = 2;
pub(crate) const GOODBYE: u8 = 3;

/// Error codes (PROTOCOL.md §3.2).
pub(crate) mod code {
    pub(crate) const FRAME_TOO_LARGE: u16 = 1;
    pub(crate) const EMPTY_FRAME: u16 = 2;
    pub(crate) const UNKNOWN_KIND: u16 = 3;
    pub(crate) const UNEXPECTED_FRAME: u16 = 4;
    pub(crate) const MALFORMED: u16 = 5;
    pub(crate) const UNSUPPORTED_VERSION: u16 = 6;
}

/// Goodbye reasons (PROTOCOL.md §3.3).
pub(crate) mod reason {
    pub(crate) const DONE: u16 = 0;
    pub(crate) const SHUTDOWN: u16 = 1;
}

/// Bytes as hex pairs, `00 55 44`, cut after 64 bytes with the total length.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 64;
    let mut out: Vec<String> = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > SHOWN {
        out.push(format!("… ({} bytes in all)", bytes.len()));
    }
    if out.is_empty() {
        "(nothing)".to_owned()
    } else {
        out.join(" ")
    }
}

/// An unsigned LEB128 varint, as postcard writes it.
pub(crate) fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A frame: the 4-byte length, the kind byte and the payload.
pub(crate) fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 1).expect("the runner builds frames below 4 GiB");
    let mut out = len.to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// A Data frame.
pub(crate) fn data(payload: &[u8]) -> Vec<u8> {
    frame(DATA, payload)
}

/// A Hello payload, with `extra` appended after the last field (a later revision's fields).
pub(crate) fn hello_payload(version: u16, max_frame: u32, agent: &str, extra: &[u8]) -> Vec<u8> {
    let mut out = varint(version.into());
    out.extend(varint(max_frame.into()));
    out.extend(varint(agent.len() as u64));
    out.extend_from_slice(agent.as_bytes());
    out.extend_from_slice(extra);
    out
}

/// A Hello frame.
pub(crate) fn hello(version: u16, max_frame: u32) -> Vec<u8> {
    frame(
        HELLO,
        &hello_payload(version, max_frame, "udsecho-conformance", &[]),
    )
}

/// A Goodbye frame.
pub(crate) fn goodbye(reason: u16) -> Vec<u8> {
    frame(GOODBYE, &varint(reason.into()))
}

/// An Error frame.
pub(crate) fn error(code: u16, message: &str) -> Vec<u8> {
    let mut payload = varint(code.into());
    payload.extend(varint(message.len() as u64));
    payload.extend_from_slice(message.as_bytes());
    frame(ERROR, &payload)
}

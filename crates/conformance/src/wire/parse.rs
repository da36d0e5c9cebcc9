//! Control payloads the runner receives, decoded strictly (a lenient decoder must not hide a
//! wrong implementation).

/// A strict postcard reader over a control payload.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes }
    }

    /// A varint of at most `max_bytes` bytes whose value fits `bits`.
    fn varint(&mut self, max_bytes: usize, bits: u32, what: &str) -> Result<u64, String> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let Some((&byte, rest)) = self.bytes.split_first() else {
                return Err(format!("{what}: the payload ends inside a varint"));
            };
            self.bytes = rest;
            value |= u64::from(byte & 0x7f)
                .checked_shl(7 * i as u32)
                .unwrap_or(0);
            if byte & 0x80 == 0 {
                return if value.checked_shr(bits).unwrap_or(0) == 0 {
                    Ok(value)
                } else {
                    Err(format!(
                        "{what}: varint value {value} does not fit {bits} bits"
                    ))
                };
            }
        }
        Err(format!("{what}: varint longer than {max_bytes} bytes"))
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, String> {
        self.varint(3, 16, what).map(|v| v as u16)
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.varint(5, 32, what).map(|v| v as u32)
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.varint(10, 64, what)? as usize;
        if len > self.bytes.len() {
            return Err(format!(
                "{what}: string of {len} bytes runs past the payload"
            ));
        }
        let (text, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        String::from_utf8(text.to_vec()).map_err(|_| format!("{what}: not UTF-8"))
    }
}

/// A server's or client's Hello, decoded by the runner.
#[derive(Debug, Clone)]
pub(crate) struct PeerHello {
    pub(crate) version: u16,
    pub(crate) max_frame: u32,
}

/// Decodes a Hello payload strictly (bytes after the last field are allowed: §3.1).
pub(crate) fn parse_hello(payload: &[u8]) -> Result<PeerHello, String> {
    let mut f = Fields::new(payload);
    let version = f.u16("Hello.version")?;
    let max_frame = f.u32("Hello.max_frame")?;
    f.string("Hello.agent")?;
    Ok(PeerHello { version, max_frame })
}

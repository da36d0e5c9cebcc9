//! PROTOCOL.md §6: the test vectors, read out of PROTOCOL.md at build time, sent to the
//! server byte for byte; the answers are compared byte for byte where the text fixes them.

use super::ServerCtx;
use crate::case::{Case, Need, Verdict};
use crate::wire::{self, Expect, PREAMBLE, code, reason};

const PROTOCOL: &str = include_str!("../../../../PROTOCOL.md");

/// The hex lines of the fenced block after `marker`: (name, words before the hex, bytes).
fn block(marker: &str) -> Vec<(String, Vec<String>, Vec<u8>)> {
    let Some(start) = PROTOCOL.find(marker) else {
        return Vec::new();
    };
    PROTOCOL[start..]
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let first_hex = words
                .iter()
                .position(|w| w.len() == 2 && u8::from_str_radix(w, 16).is_ok())?;
            let bytes = words[first_hex..]
                .iter()
                .map(|w| u8::from_str_radix(w, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            let (name, rest) = words[..first_hex].split_first()?;
            Some((
                (*name).to_owned(),
                rest.iter().map(|w| (*w).to_owned()).collect(),
                bytes,
            ))
        })
        .collect()
}

/// A valid vector's bytes by name.
fn valid(name: &str) -> Result<Vec<u8>, String> {
    block("<!-- vectors:valid -->")
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, _, b)| b)
        .ok_or_else(|| format!("PROTOCOL.md has no vector {name:?} (the runner is out of date)"))
}

/// An invalid vector's bytes and expected code by name.
fn invalid(name: &str) -> Result<(Vec<u8>, u16), String> {
    let (_, words, bytes) = block("<!-- vectors:invalid -->")
        .into_iter()
        .find(|(n, _, _)| n == name)
        .ok_or_else(|| format!("PROTOCOL.md has no vector {name:?}"))?;
    let code = match words.first().map(String::as_str) {
        Some("FrameTooLarge") => code::FRAME_TOO_LARGE,
        Some("EmptyFrame") => code::EMPTY_FRAME,
        Some("UnknownKind") => code::UNKNOWN_KIND,
        Some("UnexpectedFrame") => code::UNEXPECTED_FRAME,
        Some("Malformed") => code::MALFORMED,
        Some("UnsupportedVersion") => code::UNSUPPORTED_VERSION,
        other => {
            return Err(format!(
                "vector {name:?} names no known error code: {other:?}"
            ));
        }
    };
    Ok((bytes, code))
}

const FRAMED: &[Need] = &[Need::Framed];

pub(super) fn cases() -> Vec<Case<ServerCtx>> {
    vec![
        Case {
            id: "6/valid-vectors",
            description: "hello-64k-no-agent, the Data vectors and goodbye-done: echoes and Goodbye byte for byte",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.framed()?;
                    conn.send(&valid("hello-64k-no-agent")?)?;
                    conn.expect_hello()?;
                    for name in ["data-ola-mundo", "data-empty", "data-nul"] {
                        let bytes = valid(name)?;
                        conn.send(&bytes)?;
                        conn.expect(&[Expect::Data(bytes[5..].to_vec())])
                            .map_err(|e| format!("{name}: {e}"))?;
                    }
                    conn.send(&valid("goodbye-done")?)?;
                    conn.expect(&[Expect::Goodbye(reason::DONE), Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "6/error-data-first",
            description: "Data before Hello is answered like error-data-first (code 4; its text is free)",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.framed()?;
                    conn.send(&valid("data-empty")?)?;
                    conn.expect(&[Expect::Error(code::UNEXPECTED_FRAME), Expect::Eof])
                })()
                .into()
            },
        },
        Case {
            id: "6/session",
            description: "the whole session of §6 (preamble, hello-client-8mib, Data \"hi\", goodbye-done)",
            needs: FRAMED,
            run: |ctx| {
                (|| {
                    let mut conn = ctx.connect()?;
                    let mut bytes = PREAMBLE.to_vec();
                    bytes.extend(valid("hello-client-8mib")?);
                    bytes.extend(wire::data(b"hi"));
                    bytes.extend(valid("goodbye-done")?);
                    conn.send(&bytes)?;
                    conn.expect_hello()?;
                    conn.expect(&[
                        Expect::Data(b"hi".to_vec()),
                        Expect::Goodbye(reason::DONE),
                        Expect::Eof,
                    ])
                })()
                .into()
            },
        },
        Case {
            id: "6/too-large-4gib",
            description: "invalid vector too-large-4gib gets FrameTooLarge",
            needs: FRAMED,
            run: |ctx| invalid_vector(ctx, "too-large-4gib"),
        },
        Case {
            id: "6/too-large-by-one",
            description: "invalid vector too-large-by-one gets FrameTooLarge",
            needs: FRAMED,
            run: |ctx| invalid_vector(ctx, "too-large-by-one"),
        },
        Case {
            id: "6/empty-frame",
            description: "invalid vector empty-frame gets EmptyFrame",
            needs: FRAMED,
            run: |ctx| invalid_vector(ctx, "empty-frame"),
        },
        Case {
            id: "6/unknown-kind",
            description: "invalid vector unknown-kind gets UnknownKind",
            needs: FRAMED,
            run: |ctx| invalid_vector(ctx, "unknown-kind"),
        },
        Case {
            id: "6/hello-truncated",
            description: "invalid vector hello-truncated, as the first frame, gets Malformed",
            needs: FRAMED,
            run: |ctx| invalid_vector(ctx, "hello-truncated"),
        },
        Case {
            id: "6/goodbye-bad-varint",
            description: "invalid vector goodbye-bad-varint gets Malformed",
            needs: FRAMED,
            run: |ctx| invalid_vector(ctx, "goodbye-bad-varint"),
        },
    ]
}

/// Sends an invalid vector: `hello-truncated` right after the preamble, the others after the
/// Hello exchange (hello-client-8mib), as §6 says; expects its code, then the close.
fn invalid_vector(ctx: &mut ServerCtx, name: &str) -> Verdict {
    (|| {
        let (bytes, code) = invalid(name)?;
        let mut conn = ctx.framed()?;
        if name != "hello-truncated" {
            conn.send(&valid("hello-client-8mib")?)?;
            conn.expect_hello()?;
        }
        conn.send(&bytes)?;
        conn.expect(&[Expect::Error(code), Expect::Eof])
    })()
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vector_is_read_from_protocol_md() {
        assert_eq!(block("<!-- vectors:valid -->").len(), 8);
        assert_eq!(block("<!-- vectors:invalid -->").len(), 6);
        assert_eq!(valid("goodbye-done").unwrap(), [0, 0, 0, 2, 3, 0]);
        assert_eq!(
            invalid("unknown-kind").unwrap(),
            (vec![0, 0, 0, 1, 7], code::UNKNOWN_KIND)
        );
    }

    #[test]
    fn every_invalid_vector_has_a_case() {
        let ids: Vec<&str> = cases().iter().map(|c| c.id).collect();
        for (name, _, _) in block("<!-- vectors:invalid -->") {
            assert!(ids.contains(&format!("6/{name}").as_str()), "{name}");
        }
    }
}

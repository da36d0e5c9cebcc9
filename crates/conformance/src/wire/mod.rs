//! Bytes on the wire, judged by the runner itself.
//!
//! Frames the runner *sends* are built here byte by byte (sometimes deliberately wrong); frames
//! it *receives* are cut and decoded here too, strictly, without `udsecho-proto`'s decoder: a
//! lenient decoder must not hide a wrong implementation. Every wait is bounded twice: by
//! `--timeout` (the longest the peer may stay silent) and by the case's deadline (however the
//! peer trickles, the case ends).
//!
//! | file | holds |
//! |---|---|
//! | `build.rs` | the constants and the frames the runner sends |
//! | `parse.rs` | control payloads decoded strictly |
//! | `conn.rs` | a connection to the target, every wait bounded |

mod build;
mod conn;
mod parse;

pub(crate) use self::build::*;
pub(crate) use self::conn::*;
pub(crate) use self::parse::*;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    #[test]
    fn varints_match_the_protocol_examples() {
        assert_eq!(varint(1), [0x01]);
        assert_eq!(varint(8_388_608), [0x80, 0x80, 0x80, 0x04]);
    }

    #[test]
    fn built_frames_match_the_vectors() {
        assert_eq!(goodbye(0), [0, 0, 0, 2, 3, 0]);
        assert_eq!(data(b"\0"), [0, 0, 0, 2, 1, 0]);
        assert_eq!(
            frame(HELLO, &hello_payload(1, 65_536, "", &[])),
            [0, 0, 0, 6, 0, 1, 0x80, 0x80, 0x04, 0]
        );
    }

    #[test]
    fn strict_fields_refuse_overlong_and_overflowing_varints() {
        assert_eq!(Fields::new(&[0x81, 0x00]).u16("v"), Ok(1));
        assert!(Fields::new(&[0x80, 0x80, 0x80, 0x01]).u16("v").is_err());
        assert!(Fields::new(&[0xff, 0xff, 0x7f]).u16("v").is_err());
        assert!(Fields::new(&[0x80]).u16("v").is_err());
        assert!(Fields::new(&[0x02, 0xff, 0xfe]).string("s").is_err());
    }

    #[test]
    fn hex_cuts_long_input() {
        assert_eq!(hex(&[0, 0x55]), "00 55");
        assert!(hex(&[0; 100]).ends_with("(100 bytes in all)"));
        assert_eq!(hex(&[]), "(nothing)");
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(
            a,
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(9),
        );
        let bytes = data(b"abc");
        let writer = std::thread::spawn(move || {
            for byte in bytes {
                b.write_all(&[byte]).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        conn.expect(&[Expect::Data(b"abc".to_vec()), Expect::Eof])
            .unwrap();
        writer.join().unwrap();
    }

    #[test]
    fn a_silent_peer_is_a_timeout_not_a_hang() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(
            a,
            Duration::from_millis(50),
            Instant::now() + Duration::from_secs(9),
        );
        let err = conn.expect(&[Expect::Goodbye(0)]).unwrap_err();
        assert!(err.contains("timed out"), "{err}");
    }

    /// A peer that sends a byte well within each timeout still cannot keep a case going.
    #[test]
    fn a_trickling_peer_runs_into_the_case_deadline() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let mut conn = Conn::new(
            a,
            Duration::from_millis(500),
            start + Duration::from_millis(300),
        );
        let writer = std::thread::spawn(move || {
            while b.write_all(&[0]).is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let got = conn.raw(1 << 20).unwrap();
        assert!(!got.is_empty() && got.len() < 1 << 20);
        assert!(conn.out_of_time());
        assert!(start.elapsed() < Duration::from_millis(450));
        let err = conn.expect(&[Expect::Eof]).unwrap_err();
        assert!(err.contains("time ran out"), "{err}");
        drop(conn);
        writer.join().unwrap();
    }

    #[test]
    fn a_peer_that_stops_reading_cannot_hold_a_send_past_the_deadline() {
        let (a, _b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let mut conn = Conn::new(
            a,
            Duration::from_secs(5),
            start + Duration::from_millis(200),
        );
        let err = conn.send(&vec![0; 16 << 20]).unwrap_err();
        assert!(err.contains("time ran out"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}

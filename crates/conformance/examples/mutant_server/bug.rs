//! The deliberate bugs: one per instance, named on the command line.

/// The one bug this instance carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bug {
    None,
    /// §1: raw data that began as a preamble prefix loses that prefix.
    PrefixBytesLost,
    /// §1: the bytes read while detecting the mode are dropped when the connection turns out
    /// raw: a raw peer's first write never comes back (no Error frame, no close).
    DetectBytesLost,
    /// §1: no pause rule: a strict prefix waits for more forever.
    NoPause,
    /// §1: a strict prefix then the peer's half-close is closed without its echo.
    PrefixEofDropped,
    /// §1: a first read that is a strict prefix of the preamble means raw (a trickled
    /// preamble is not recognised).
    PreambleInOneRead,
    /// §1: in the read that brought the preamble, bytes after the first frame are dropped.
    FirstReadRestDropped,
    /// §1: a half-close before any byte is answered with an Error frame.
    ErrorOnEmptyConnection,
    /// §2: raw mode never half-closes back after the client's EOF.
    RawNoHalfClose,
    /// §2, §4: what a write could not hand the peer within 400 ms is dropped (bytes lost
    /// to a slow reader).
    DropsAfterStall,
    /// §3: L is judged only once the kind byte is there.
    LengthAfterKind,
    /// §3: a Data frame with L exactly at the limit is refused.
    LimitOffByOne,
    /// §3: L = 0 is closed without an Error frame.
    EmptyFrameCloses,
    /// §3: an unknown kind is answered only once its payload has arrived.
    UnknownKindWaits,
    /// §3: a header that takes three reads or more to arrive is refused.
    HeaderInPieces,
    /// §3.1: bytes after a Hello's last field are Malformed.
    StrictHello,
    /// §3.1: the Hello's agent is not checked for UTF-8.
    AgentNotChecked,
    /// §3.2: a client's Error frame is answered with one.
    AnswersClientError,
    /// §3.3: an unknown Goodbye reason is Malformed.
    UnknownReasonMalformed,
    /// §4: Data and Goodbye before Hello are served as if the Hello had come.
    NoHelloRequired,
    /// §4: a second Hello is answered like the first.
    DuplicateHelloOk,
    /// §4: empty Data frames are not echoed.
    DropsEmptyData,
    /// §4: the client's Goodbye is not answered: the server just closes.
    GoodbyeUnanswered,
    /// §4: frames already buffered after the client's Goodbye are still echoed.
    EchoAfterGoodbye,
    /// §4: a partial header at the client's half-close gets an Error frame.
    ErrorOnPartialHeader,
    /// §4: whole Data frames are held, then echoed (allowed: NON-STRICT).
    HoldsFrames,
    /// §4: on SIGTERM, Goodbye (Shutdown) goes out at the next frame boundary, dropping
    /// frames already queued.
    DrainDropsQueued,
    /// §4: on SIGTERM, Goodbye (Shutdown) goes out at once, even in the middle of a Data
    /// frame's echo.
    GoodbyeMidFrame,
    /// §4.1: the server answers with the client's version, whatever it is.
    NoNegotiateDown,
    /// §4.1: version 0 is accepted.
    AcceptsVersionZero,
    /// §4.2: the client's max_frame is not taken into account.
    LimitIgnoresClient,
    /// §4.2: a Hello.max_frame of 0 is accepted.
    AcceptsMaxFrameZero,
    /// §4.2: control frames are held to the Data limit.
    ControlLimited,
    /// §4.3: a Hello's payload is decoded before its place is judged.
    PayloadBeforePlace,
    /// §4.3: an unknown kind among the frames already read is refused before the frames
    /// ahead of it are echoed.
    ErrorBeforeEcho,
    /// §4.3: a protocol error on one connection stops the whole server.
    ErrorKillsServer,
    /// Reads everything and never answers (for the runner's timeouts).
    Silent,
}

impl Bug {
    pub(crate) fn parse(name: &str) -> Option<Bug> {
        Some(match name {
            "none" => Bug::None,
            "prefix-bytes-lost" => Bug::PrefixBytesLost,
            "detect-bytes-lost" => Bug::DetectBytesLost,
            "no-pause" => Bug::NoPause,
            "prefix-eof-dropped" => Bug::PrefixEofDropped,
            "preamble-in-one-read" => Bug::PreambleInOneRead,
            "first-read-rest-dropped" => Bug::FirstReadRestDropped,
            "error-on-empty-connection" => Bug::ErrorOnEmptyConnection,
            "raw-no-half-close" => Bug::RawNoHalfClose,
            "drops-after-stall" => Bug::DropsAfterStall,
            "length-after-kind" => Bug::LengthAfterKind,
            "limit-off-by-one" => Bug::LimitOffByOne,
            "empty-frame-closes" => Bug::EmptyFrameCloses,
            "unknown-kind-waits" => Bug::UnknownKindWaits,
            "header-in-pieces" => Bug::HeaderInPieces,
            "strict-hello" => Bug::StrictHello,
            "agent-not-checked" => Bug::AgentNotChecked,
            "answers-client-error" => Bug::AnswersClientError,
            "unknown-reason-malformed" => Bug::UnknownReasonMalformed,
            "no-hello-required" => Bug::NoHelloRequired,
            "duplicate-hello-ok" => Bug::DuplicateHelloOk,
            "drops-empty-data" => Bug::DropsEmptyData,
            "goodbye-unanswered" => Bug::GoodbyeUnanswered,
            "echo-after-goodbye" => Bug::EchoAfterGoodbye,
            "error-on-partial-header" => Bug::ErrorOnPartialHeader,
            "holds-frames" => Bug::HoldsFrames,
            "drain-drops-queued" => Bug::DrainDropsQueued,
            "goodbye-mid-frame" => Bug::GoodbyeMidFrame,
            "no-negotiate-down" => Bug::NoNegotiateDown,
            "accepts-version-zero" => Bug::AcceptsVersionZero,
            "limit-ignores-client" => Bug::LimitIgnoresClient,
            "accepts-max-frame-zero" => Bug::AcceptsMaxFrameZero,
            "control-limited" => Bug::ControlLimited,
            "payload-before-place" => Bug::PayloadBeforePlace,
            "error-before-echo" => Bug::ErrorBeforeEcho,
            "error-kills-server" => Bug::ErrorKillsServer,
            "silent" => Bug::Silent,
            _ => return None,
        })
    }
}

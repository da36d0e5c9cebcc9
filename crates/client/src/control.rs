//! `udsecho-client fault`: one command to a server's control socket (`udsecho-server
//! --control PATH`), and its answer. The protocol is a line each way (docs/faults.md): `add
//! SPEC`, `remove ID`, `list`, `clear`; the answer ends with a line `ok ...` or `error WHY`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{ClientError, ErrorKind};
use crate::target::Target;

/// The most an answer may be: a `list` of many faults fits many times over.
const MAX_ANSWER: u64 = 1 << 20;

/// Sends `line` (one command) to the control socket at `control` and returns the answer's
/// lines, the last one `ok ...`. An `error ...` answer is an error naming the socket.
pub async fn command(
    control: &Target,
    line: &str,
    timeout: Duration,
) -> Result<Vec<String>, ClientError> {
    if line.contains('\n') {
        return Err(ErrorKind::ControlRefused("a command is one line".to_owned()).at(control));
    }
    let mut stream = control.connect(timeout).await?;
    let io = |doing| move |source| ErrorKind::Io { doing, source }.at(control);
    let exchange = async {
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(io("sending the command"))?;
        stream.shutdown().await.map_err(io("sending the command"))?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map_err(io("reading the answer"))?;
        Ok(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            ErrorKind::timed_out("waiting for the control socket's answer", timeout).at(control)
        })??;
    let lines: Vec<String> = String::from_utf8_lossy(&answer)
        .lines()
        .map(str::to_owned)
        .collect();
    match lines.last() {
        Some(last) if last == "ok" || last.starts_with("ok ") => Ok(lines),
        Some(last) if last.starts_with("error ") => {
            Err(ErrorKind::ControlRefused(last["error ".len()..].to_owned()).at(control))
        }
        _ => Err(ErrorKind::ControlRefused(format!(
            "not a udsecho control socket: it answered {:?}",
            String::from_utf8_lossy(&answer)
        ))
        .at(control)),
    }
}

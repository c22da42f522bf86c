//! A minimal QMP client: enough to press the panel button.
//!
//! QMP is line-delimited JSON. After the greeting, `qmp_capabilities` leaves negotiation mode;
//! every command then gets one `return` or `error` line, with asynchronous `event` lines in
//! between, which are skipped here.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    pub fn connect(path: &Path) -> Result<Qmp> {
        let stream = UnixStream::connect(path).with_context(|| {
            format!(
                "connecting to QMP socket {} (is QEMU running?)",
                path.display()
            )
        })?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .context("setting QMP timeout")?;
        let writer = stream.try_clone().context("cloning the QMP socket")?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.line()?;
        if !greeting.contains("\"QMP\"") {
            bail!("{} did not greet with QMP: {greeting}", path.display());
        }
        qmp.execute(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("reading from QMP")?;
        if n == 0 {
            bail!("QEMU closed the QMP connection");
        }
        Ok(line)
    }

    /// Sends one command and waits for its answer; an `error` answer is an error.
    pub fn execute(&mut self, command: &str) -> Result<String> {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .with_context(|| format!("sending QMP command {command}"))?;
        loop {
            let line = self.line()?;
            if line.contains("\"return\"") {
                return Ok(line);
            }
            if line.contains("\"error\"") {
                bail!("QMP command {command} failed: {}", line.trim());
            }
            // An asynchronous event: not the answer.
        }
    }

    /// Presses (`down`) or releases a key given by its QEMU qcode (e.g. `f12`, `power`).
    pub fn key(&mut self, qcode: &str, down: bool) -> Result<()> {
        self.execute(&format!(
            r#"{{"execute":"input-send-event","arguments":{{"events":[{{"type":"key","data":{{"down":{down},"key":{{"type":"qcode","data":"{qcode}"}}}}}}]}}}}"#
        ))
        .map(|_| ())
    }
}

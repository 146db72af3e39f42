//! A folder copied in segments (`gtc cp -r`): the put side prints one
//! JSON line per segment as soon as it is put (`gtc put --segments
//! --json`), then an end line; the get side (`gtc get --segments`, or
//! `gtc cp` itself) fetches each segment as its line comes, so the copy
//! moves while the sender still reads. This module owns the lines:
//!
//! ```text
//! {"segment": N, "ticket": T, "oid": O, "entries": E, "files": F, "bytes": B}
//! {"segments": COUNT, "entries": E, "files": F, "bytes": B, "skipped": [...]}
//! ```
//!
//! Segments are numbered from 0 in order; the end line counts them, and a
//! stream without it (a put that stopped) is an error, not a copy.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, bail};
use dot_agent::trees::{Progress, Segmented, TreeGot, TreePut};
use dot_store::Ticket;

/// Longest line read.
const MAX_LINE: u64 = 64 << 10;

/// The line of segment `n`.
pub fn segment_line(n: usize, put: &TreePut) -> String {
    serde_json::json!({
        "segment": n,
        "ticket": put.result.ticket,
        "oid": put.result.oid,
        "entries": put.entries,
        "files": put.files,
        "bytes": put.bytes,
    })
    .to_string()
}

/// The end line.
pub fn end_line(s: &Segmented) -> String {
    serde_json::json!({
        "segments": s.segments,
        "entries": s.entries,
        "files": s.files,
        "bytes": s.bytes,
        "skipped": s.skipped,
    })
    .to_string()
}

/// Puts the folder `dir` in segments, handing each line to `out` as it is
/// made (the end line last).
///
/// # Errors
/// The put's errors; `out`'s.
pub fn put_lines(
    socket: Option<&Path>,
    dir: &Path,
    segment_bytes: Option<u64>,
    mut out: impl FnMut(String) -> anyhow::Result<()>,
) -> anyhow::Result<Segmented> {
    let mut n = 0;
    let done = dot_agent::trees::put_tree_segments(
        socket,
        dir,
        segment_bytes,
        |_, _| {},
        |put| {
            let line = segment_line(n, &put);
            n += 1;
            out(line)
        },
    )?;
    out(end_line(&done))?;
    Ok(done)
}

/// A line as read: a segment's ticket, or the end with the count.
enum Line {
    Segment(usize, Ticket),
    End(usize),
}

fn parse(line: &str) -> anyhow::Result<Line> {
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("a segment line that is not JSON: {line:.200}"))?;
    if let Some(count) = v.get("segments") {
        let count = count.as_u64().context("an end line without a count")?;
        return Ok(Line::End(usize::try_from(count)?));
    }
    let n = v
        .get("segment")
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("not a segment line: {line:.200}"))?;
    let ticket: Ticket = v
        .get("ticket")
        .and_then(serde_json::Value::as_str)
        .context("a segment line without a ticket")?
        .parse()?;
    if !ticket.is_tree() {
        bail!("segment {n}'s ticket is not a tree's");
    }
    Ok(Line::Segment(usize::try_from(n)?, ticket))
}

/// The segments' tickets read from `lines`, in order, checked against
/// the end line; an error for a stream that breaks off or breaks the
/// format.
pub struct Tickets<R> {
    lines: R,
    next: usize,
    ended: bool,
}

impl<R: BufRead> Tickets<R> {
    /// Reads `lines`.
    pub fn new(lines: R) -> Self {
        Tickets {
            lines,
            next: 0,
            ended: false,
        }
    }

    fn read_line(&mut self) -> anyhow::Result<Option<String>> {
        use std::io::Read;
        let mut line = Vec::new();
        (&mut self.lines)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .context("reading the segments")?;
        if line.is_empty() {
            return Ok(None);
        }
        if line.len() as u64 > MAX_LINE {
            bail!("a segment line longer than {MAX_LINE} bytes");
        }
        Ok(Some(
            String::from_utf8(line).context("a segment line that is not UTF-8")?,
        ))
    }

    fn step(&mut self) -> anyhow::Result<Option<Ticket>> {
        loop {
            let Some(line) = self.read_line()? else {
                bail!(
                    "the segments broke off after {} (the put stopped before its end)",
                    self.next
                );
            };
            if line.trim().is_empty() {
                continue;
            }
            return match parse(line.trim())? {
                Line::Segment(n, ticket) if n == self.next => {
                    self.next += 1;
                    Ok(Some(ticket))
                }
                Line::Segment(n, _) => bail!("segment {n} came where {} was due", self.next),
                Line::End(count) if count == self.next => {
                    if self.read_line()?.is_some_and(|l| !l.trim().is_empty()) {
                        bail!("lines after the segments' end");
                    }
                    Ok(None)
                }
                Line::End(count) => {
                    bail!("the segments' end counts {count}, {} came", self.next)
                }
            };
        }
    }
}

impl<R: BufRead> Iterator for Tickets<R> {
    type Item = anyhow::Result<Ticket>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let step = self.step();
        if !matches!(step, Ok(Some(_))) {
            self.ended = true;
        }
        step.transpose()
    }
}

/// Fetches the segments whose lines `lines` holds into `dest`.
///
/// # Errors
/// As [`dot_agent::trees::get_segments`]; a stream that breaks off.
pub fn get_lines(
    socket: Option<&Path>,
    lines: impl BufRead,
    dest: &Path,
    progress: &Progress,
) -> anyhow::Result<TreeGot> {
    dot_agent::trees::get_segments(socket, Tickets::new(lines), dest, progress)
}

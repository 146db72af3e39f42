//! The gateway's own SMTP client: one connection to the next hop (the
//! local MTA for inbound mail, the receiving gateway or MTA for outbound),
//! its EHLO capabilities, and the commands a transaction sends, each with
//! a deadline.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::wire::{self, Reply};

/// What the next hop's EHLO reply offers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Caps {
    /// `X-DOT-DATA`: it takes tickets.
    pub dot: bool,
    /// `8BITMIME`.
    pub eight_bit: bool,
    /// `SIZE`, with its limit if it named one (0: none).
    pub size: Option<u64>,
    /// `PIPELINING`: `MAIL` and `RCPT` may go without waiting for replies.
    pub pipelining: bool,
}

impl Caps {
    fn of(reply: &Reply) -> Caps {
        let mut caps = Caps::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(word) = words.next() else { continue };
            match word.to_ascii_uppercase().as_str() {
                "X-DOT-DATA" => caps.dot = true,
                "8BITMIME" => caps.eight_bit = true,
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                _ => {}
            }
        }
        caps
    }
}

/// Deadlines for a next hop, as RFC 5321 4.5.3.2 suggests (shorter).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// To connect and read the greeting.
    pub connect: Duration,
    /// For the reply to a command.
    pub command: Duration,
    /// For the reply after a message's data (or a ticket: the next hop
    /// fetches the message first).
    pub data: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(120),
            data: Duration::from_secs(600),
        }
    }
}

/// A connection to the next hop, greeted and EHLO'd.
pub struct NextHop {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    /// What it offers.
    pub caps: Caps,
    deadlines: Deadlines,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("no {what} in time"))
}

impl NextHop {
    /// Connects to `addr`, reads its greeting and says EHLO as `name`.
    ///
    /// # Errors
    /// Socket errors and deadlines; `Other` for a greeting or EHLO that is
    /// not 2xx (its text says why).
    pub async fn connect(
        addr: SocketAddr,
        name: &str,
        deadlines: Deadlines,
    ) -> io::Result<NextHop> {
        let opened = async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (r, w) = stream.into_split();
            let mut hop = NextHop {
                reader: BufReader::new(r),
                writer: BufWriter::new(w),
                caps: Caps::default(),
                deadlines,
            };
            let greeting = wire::read_reply(&mut hop.reader).await?;
            if greeting.code != 220 {
                return Err(io::Error::other(format!("{addr} greeted with {greeting}")));
            }
            Ok(hop)
        };
        let mut hop = tokio::time::timeout(deadlines.connect, opened)
            .await
            .map_err(|_| timed_out("greeting"))??;
        let ehlo = hop.command(&format!("EHLO {name}")).await?;
        if !ehlo.is_ok() {
            return Err(io::Error::other(format!(
                "{addr} answered EHLO with {ehlo}"
            )));
        }
        hop.caps = Caps::of(&ehlo);
        Ok(hop)
    }

    /// Sends one command line and reads its reply.
    ///
    /// # Errors
    /// Socket errors; the command deadline.
    pub async fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.queue(line).await?;
        self.reply().await
    }

    /// Queues one command line without sending it yet (pipelining: the
    /// next [`NextHop::reply`] sends what is queued).
    ///
    /// # Errors
    /// Socket errors.
    pub async fn queue(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(line.as_bytes()).await?;
        self.writer.write_all(b"\r\n").await
    }

    /// Sends what is queued and reads the next reply.
    ///
    /// # Errors
    /// Socket errors; the command deadline.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        self.reply_within(self.deadlines.command, "reply").await
    }

    /// Sends what is queued and reads the next reply within `deadline`.
    async fn reply_within(&mut self, deadline: Duration, what: &str) -> io::Result<Reply> {
        let exchange = async {
            self.writer.flush().await?;
            wire::read_reply(&mut self.reader).await
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| timed_out(what))?
    }

    /// The `MAIL FROM` line, with the parameters the next hop understands.
    pub fn mail_line(&self, from: &str, size: Option<u64>, eight_bit: bool) -> String {
        let mut line = format!("MAIL FROM:{from}");
        if let (Some(n), Some(_)) = (size, self.caps.size) {
            line.push_str(&format!(" SIZE={n}"));
        }
        if eight_bit && self.caps.eight_bit {
            line.push_str(" BODY=8BITMIME");
        }
        line
    }

    /// `MAIL FROM` and its reply.
    ///
    /// # Errors
    /// As [`NextHop::command`].
    pub async fn mail(
        &mut self,
        from: &str,
        size: Option<u64>,
        eight_bit: bool,
    ) -> io::Result<Reply> {
        let line = self.mail_line(from, size, eight_bit);
        self.command(&line).await
    }

    /// `DATA`, the message, and the final reply (or the reply refusing
    /// `DATA`).
    ///
    /// # Errors
    /// Socket errors; the deadlines.
    pub async fn data(&mut self, message: &[u8]) -> io::Result<Reply> {
        let go = self.command("DATA").await?;
        if go.code != 354 {
            return Ok(go);
        }
        self.finish_data(message).await
    }

    /// `X-DOT-DATA ticket [HEADERS]` and, with `headers`, the header block
    /// as data; the final reply (or the reply refusing the command).
    ///
    /// # Errors
    /// Socket errors; the deadlines.
    pub async fn dot_data(&mut self, ticket: &str, headers: Option<&[u8]>) -> io::Result<Reply> {
        let Some(headers) = headers else {
            // Answered once the next hop fetched the message: the data
            // deadline, not a command's.
            self.queue(&format!("X-DOT-DATA {ticket}")).await?;
            return self
                .reply_within(self.deadlines.data, "reply to the ticket")
                .await;
        };
        let go = self
            .command(&format!("X-DOT-DATA {ticket} HEADERS"))
            .await?;
        if go.code != 354 {
            return Ok(go);
        }
        self.finish_data(headers).await
    }

    async fn finish_data(&mut self, message: &[u8]) -> io::Result<Reply> {
        let data = async {
            wire::write_data(&mut self.writer, message).await?;
            wire::read_reply(&mut self.reader).await
        };
        tokio::time::timeout(self.deadlines.data, data)
            .await
            .map_err(|_| timed_out("reply to the message"))?
    }

    /// Says QUIT (best effort; the connection closes either way).
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.command("QUIT")).await;
    }
}

//! One SMTP client served: its commands read under a deadline and relayed
//! to the next hop as they come (so each recipient gets the next hop's own
//! verdict; `MAIL` and `RCPT` that the client pipelined go on pipelined,
//! and their replies come back in order), and each message handed on by
//! role: an inbound gateway
//! fetches a ticket's message through the local agent and gives the MTA
//! plain `DATA`; an outbound gateway sends a ticket where the next hop
//! takes one and `DATA` otherwise. The client hears the next hop's verdict
//! on every message, never one of our own making.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::command::{self, Command};
use super::dot;
use super::next_hop::NextHop;
use super::wire::{self, Data, Line, Reply};
use super::{Gateway, Role};

/// Recipients per message, at most (Postfix's default).
const MAX_RECIPIENTS: usize = 1000;
/// Bad commands before the client is sent away.
const MAX_ERRORS: u32 = 10;

/// The transaction in progress.
struct Transaction {
    from: String,
    size: Option<u64>,
    eight_bit: bool,
    /// Recipients the next hop accepted.
    rcpts: Vec<String>,
}

/// A command sent on to the next hop whose reply is still to come.
enum Pending {
    Mail,
    Rcpt(String),
}

struct Session<'a> {
    gw: &'a Gateway,
    peer: SocketAddr,
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    hop: NextHop,
    helo: bool,
    tx: Option<Transaction>,
    /// Pipelined commands awaiting the next hop's replies, in order.
    pending: VecDeque<Pending>,
    errors: u32,
}

/// What to do after a command.
enum Flow {
    Go,
    Close,
}

/// Serves one client until it quits, misbehaves, times out or the next
/// hop fails.
pub async fn serve(gw: &Gateway, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut writer = BufWriter::new(w);
    let hop = match NextHop::connect(gw.settings.next_hop, &gw.settings.name, gw.deadlines()).await
    {
        Ok(hop) => hop,
        Err(e) => {
            tracing::warn!(next_hop = %gw.settings.next_hop, error = %e, "next hop unavailable");
            let bye = Reply::new(
                421,
                format!(
                    "4.4.1 {} next hop unavailable, try again later",
                    gw.settings.name
                ),
            );
            let _ = send(&mut writer, &bye).await;
            return;
        }
    };
    let mut s = Session {
        gw,
        peer,
        reader: BufReader::new(r),
        writer,
        hop,
        helo: false,
        tx: None,
        pending: VecDeque::new(),
        errors: 0,
    };
    if let Err(e) = s.run().await {
        tracing::debug!(%peer, error = %e, "smtp session ended");
    }
    s.hop.quit().await;
}

async fn send(w: &mut BufWriter<OwnedWriteHalf>, reply: &Reply) -> io::Result<()> {
    w.write_all(&reply.encode()).await?;
    w.flush().await
}

impl Session<'_> {
    async fn reply(&mut self, reply: &Reply) -> io::Result<()> {
        self.writer.write_all(&reply.encode()).await?;
        // Pipelined commands already here are answered in one write.
        if self.reader.buffer().is_empty() {
            self.writer.flush().await?;
        }
        Ok(())
    }

    async fn run(&mut self) -> io::Result<()> {
        let greeting = Reply::new(
            220,
            format!("{} ESMTP gtc smtp gateway", self.gw.settings.name),
        );
        send(&mut self.writer, &greeting).await?;
        loop {
            let read = wire::read_line(&mut self.reader, wire::MAX_COMMAND_LINE);
            let line = match tokio::time::timeout(self.gw.settings.idle, read).await {
                Ok(line) => line?,
                Err(_) => {
                    send(&mut self.writer, &Reply::new(421, "4.4.2 Timeout, closing")).await?;
                    return Ok(());
                }
            };
            let parsed = match line {
                Line::Eof => return Ok(()),
                Line::TooLong => Err(Reply::new(500, "5.5.2 Line too long")),
                Line::Text(l) => command::parse(&l),
            };
            let flow = match parsed {
                Ok(cmd) => self.handle(cmd).await?,
                Err(reply) => self.refuse(reply).await?,
            };
            if let Flow::Close = flow {
                return Ok(());
            }
        }
    }

    /// Sends what was pipelined to the next hop, reads its replies in
    /// order (a refused `MAIL` ends the transaction, an accepted `RCPT`
    /// counts) and answers the client with each.
    async fn settle(&mut self) -> io::Result<()> {
        while let Some(p) = self.pending.pop_front() {
            let r = self.hop.reply().await?;
            match p {
                Pending::Mail if !r.is_ok() => self.tx = None,
                Pending::Rcpt(to) if r.is_ok() => {
                    if let Some(tx) = &mut self.tx {
                        tx.rcpts.push(to);
                    }
                }
                _ => {}
            }
            self.writer.write_all(&r.encode()).await?;
        }
        if self.reader.buffer().is_empty() {
            self.writer.flush().await?;
        }
        Ok(())
    }

    /// Settles unless the client has more commands waiting and the next
    /// hop takes them pipelined.
    async fn settle_unless_more(&mut self) -> io::Result<()> {
        if self.reader.buffer().is_empty() || !self.hop.caps.pipelining {
            self.settle().await?;
        }
        Ok(())
    }

    /// Answers a bad command; too many end the session.
    async fn refuse(&mut self, reply: Reply) -> io::Result<Flow> {
        self.settle().await?;
        self.errors += 1;
        if self.errors > MAX_ERRORS {
            send(
                &mut self.writer,
                &Reply::new(421, "4.7.0 Too many errors, closing"),
            )
            .await?;
            return Ok(Flow::Close);
        }
        self.reply(&reply).await?;
        Ok(Flow::Go)
    }

    async fn handle(&mut self, cmd: Command) -> io::Result<Flow> {
        if !matches!(cmd, Command::Mail { .. } | Command::Rcpt { .. }) {
            self.settle().await?;
        }
        let reply = match cmd {
            Command::Ehlo(_) | Command::Helo(_) => {
                self.abort().await?;
                self.helo = true;
                self.greet(matches!(cmd, Command::Ehlo(_)))
            }
            Command::Mail {
                from,
                size,
                eight_bit,
            } => {
                if !self.helo {
                    return self.refuse(Reply::new(503, "5.5.1 Send EHLO first")).await;
                }
                if self.tx.is_some() {
                    // Unless a pipelined MAIL before it was refused.
                    self.settle().await?;
                    if self.tx.is_some() {
                        return self
                            .refuse(Reply::new(503, "5.5.1 Nested MAIL command"))
                            .await;
                    }
                }
                if size.is_some_and(|n| n > self.gw.settings.max_size) {
                    self.settle().await?;
                    Reply::new(552, "5.3.4 Message size exceeds fixed limit")
                } else {
                    let line = self.hop.mail_line(&from, size, eight_bit);
                    self.hop.queue(&line).await?;
                    // Open until the next hop refuses it (`settle`).
                    self.tx = Some(Transaction {
                        from,
                        size,
                        eight_bit,
                        rcpts: Vec::new(),
                    });
                    self.pending.push_back(Pending::Mail);
                    self.settle_unless_more().await?;
                    return Ok(Flow::Go);
                }
            }
            Command::Rcpt { to } => {
                let Some(tx) = &self.tx else {
                    return self
                        .refuse(Reply::new(503, "5.5.1 Need MAIL command"))
                        .await;
                };
                if tx.rcpts.len() + self.pending.len() >= MAX_RECIPIENTS {
                    self.settle().await?;
                    Reply::new(452, "4.5.3 Too many recipients")
                } else {
                    self.hop.queue(&format!("RCPT TO:{to}")).await?;
                    self.pending.push_back(Pending::Rcpt(to));
                    self.settle_unless_more().await?;
                    return Ok(Flow::Go);
                }
            }
            Command::Data => {
                if let Some(refusal) = self.no_recipients() {
                    return self.refuse(refusal).await;
                }
                self.reply(&Reply::new(354, "End data with <CR><LF>.<CR><LF>"))
                    .await?;
                let reply = match self.read_data().await? {
                    Some(message) => self.deliver(message).await?,
                    None => self.too_big().await?,
                };
                self.tx = None;
                reply
            }
            Command::DotData { ticket, headers } => {
                if self.gw.settings.role != Role::Inbound {
                    return self
                        .refuse(Reply::new(502, "5.5.1 X-DOT-DATA not offered here"))
                        .await;
                }
                if let Some(refusal) = self.no_recipients() {
                    return self.refuse(refusal).await;
                }
                let reply = self.dot_data(&ticket, headers).await?;
                self.tx = None;
                reply
            }
            Command::Rset => {
                self.abort().await?;
                Reply::new(250, "2.0.0 Ok")
            }
            Command::Noop => Reply::new(250, "2.0.0 Ok"),
            Command::Help => Reply::new(214, "2.0.0 RFC 5321 and X-DOT-DATA <ticket> [HEADERS]"),
            Command::Vrfy => Reply::new(252, "2.5.2 Cannot VRFY user"),
            Command::Quit => {
                send(&mut self.writer, &Reply::new(221, "2.0.0 Bye")).await?;
                return Ok(Flow::Close);
            }
        };
        self.reply(&reply).await?;
        Ok(Flow::Go)
    }

    /// The EHLO (or HELO) answer.
    fn greet(&self, ehlo: bool) -> Reply {
        let s = &self.gw.settings;
        let mut lines = vec![format!("{} hello {}", s.name, self.peer.ip())];
        if ehlo {
            lines.extend([
                "PIPELINING".to_owned(),
                format!("SIZE {}", s.max_size),
                "8BITMIME".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
            ]);
            if s.role == Role::Inbound {
                lines.push("X-DOT-DATA".to_owned());
            }
        }
        Reply { code: 250, lines }
    }

    /// Why a message cannot be sent now, if it cannot.
    fn no_recipients(&self) -> Option<Reply> {
        match &self.tx {
            None => Some(Reply::new(503, "5.5.1 Need MAIL command")),
            Some(tx) if tx.rcpts.is_empty() => Some(Reply::new(554, "5.5.1 No valid recipients")),
            Some(_) => None,
        }
    }

    /// Ends the transaction here and at the next hop.
    async fn abort(&mut self) -> io::Result<()> {
        if self.tx.take().is_some() {
            self.hop.command("RSET").await?;
        }
        Ok(())
    }

    /// Reads a message's data under the data deadline; `None` if it was
    /// over the size limit.
    async fn read_data(&mut self) -> io::Result<Option<Vec<u8>>> {
        let limit = usize::try_from(self.gw.settings.max_size).unwrap_or(usize::MAX);
        let read = wire::read_data(&mut self.reader, limit);
        match tokio::time::timeout(self.gw.deadlines().data, read).await {
            Ok(Ok(Data::Message(m))) => Ok(Some(m)),
            Ok(Ok(Data::TooBig)) => Ok(None),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "message data too slow",
            )),
        }
    }

    async fn too_big(&mut self) -> io::Result<Reply> {
        self.abort().await?;
        Ok(Reply::new(552, "5.3.4 Message size exceeds fixed limit"))
    }

    /// Hands a message read by `DATA` on, by role.
    async fn deliver(&mut self, message: Vec<u8>) -> io::Result<Reply> {
        if self.gw.settings.role == Role::Inbound || !self.hop.caps.dot {
            return self.plain(&message, "data").await;
        }
        let s = &self.gw.settings;
        let (object, headers) = if s.whole {
            (&message[..], None)
        } else {
            match dot::split(&message) {
                Some((h, b)) => (b, Some(h)),
                None => return self.plain(&message, "data").await,
            }
        };
        if object.len() < s.dot_above {
            return self.plain(&message, "data: small").await;
        }
        let held = match self.gw.agent.put(object).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "cannot put the message into the local agent; sending it by DATA");
                return self.plain(&message, "data: no agent").await;
            }
        };
        if self.gw.attempts.failed(&held.oid) >= s.dot_attempts {
            let oid = held.oid.clone();
            self.gw.agent.release(held).await;
            self.gw.attempts.forget(&oid);
            return self.plain(&message, "data: ticket failed before").await;
        }
        let sent = self.hop.dot_data(&held.ticket, headers).await;
        let oid = held.oid.clone();
        self.gw.agent.release(held).await;
        let reply = sent?;
        tracing::info!(%oid, bytes = message.len(), reply = %reply, "message sent by ticket");
        if reply.is_ok() {
            self.gw.attempts.forget(&oid);
            return Ok(reply);
        }
        if reply.is_transient() {
            self.gw.attempts.fail(&oid);
            return Ok(reply);
        }
        // A permanent refusal of the ticket is no verdict on the message:
        // it goes again, by DATA, in a fresh transaction.
        self.gw.attempts.forget(&oid);
        if let Some(refused) = self.replay().await? {
            return Ok(refused);
        }
        self.plain(&message, "data: ticket refused").await
    }

    /// `DATA` to the next hop.
    async fn plain(&mut self, message: &[u8], how: &str) -> io::Result<Reply> {
        let reply = self.hop.data(message).await?;
        tracing::info!(bytes = message.len(), how, reply = %reply, "message relayed");
        Ok(reply)
    }

    /// The inbound half of `X-DOT-DATA`: the header block (if announced),
    /// the object fetched through the local agent from the client's own
    /// address, then `DATA` to the MTA.
    async fn dot_data(&mut self, ticket: &str, with_headers: bool) -> io::Result<Reply> {
        let s = &self.gw.settings;
        let hints = if s.any_hints {
            match ticket.parse::<dot_store::Ticket>() {
                Ok(_) => Some(Vec::new()),
                Err(_) => None,
            }
        } else {
            dot::hints_at(ticket, self.peer.ip()).await
        };
        let Some(hints) = hints else {
            self.abort().await?;
            return Ok(Reply::new(501, "5.5.4 Not a DOT ticket"));
        };
        if hints.is_empty() && !s.any_hints {
            self.abort().await?;
            return Ok(Reply::new(
                550,
                "5.7.1 The ticket names no source at your address",
            ));
        }
        let headers = if with_headers {
            self.reply(&Reply::new(
                354,
                "Send the header block, end with <CR><LF>.<CR><LF>",
            ))
            .await?;
            match self.read_data().await? {
                Some(h) => h,
                None => return self.too_big().await,
            }
        } else {
            Vec::new()
        };
        let limit = self
            .gw
            .settings
            .max_size
            .saturating_sub(headers.len() as u64);
        let fetched = self
            .gw
            .agent
            .fetch(ticket, &hints, limit, self.gw.settings.fetch_deadline)
            .await;
        let body = match fetched {
            Ok(body) => body,
            Err(dot::FetchError::TooBig { .. }) => return self.too_big().await,
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "fetching a message failed");
                self.abort().await?;
                let why: String = e.to_string().chars().take(200).collect();
                return Ok(Reply::new(451, format!("4.4.0 DOT fetch failed: {why}")));
            }
        };
        let mut message = headers;
        message.extend_from_slice(&body);
        self.plain(&message, "fetched by ticket").await
    }

    /// After a refused ticket: RSET, then MAIL and RCPT again as the client
    /// sent them. Returns the first refusal, if the next hop refuses.
    async fn replay(&mut self) -> io::Result<Option<Reply>> {
        self.hop.command("RSET").await?;
        let Some(tx) = &self.tx else {
            return Ok(Some(Reply::new(451, "4.3.0 No transaction to send again")));
        };
        let (from, size, eight_bit, rcpts) =
            (tx.from.clone(), tx.size, tx.eight_bit, tx.rcpts.clone());
        let r = self.hop.mail(&from, size, eight_bit).await?;
        if !r.is_ok() {
            return Ok(Some(r));
        }
        let mut any = false;
        for to in rcpts {
            any |= self.hop.command(&format!("RCPT TO:{to}")).await?.is_ok();
        }
        if !any {
            return Ok(Some(Reply::new(
                451,
                "4.3.0 The next hop took no recipient again",
            )));
        }
        Ok(None)
    }
}

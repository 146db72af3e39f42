//! The metrics endpoint: `GET /metrics` over HTTP/1.1, one request per
//! connection, for Prometheus to scrape.
//!
//! Whoever reaches the address may ask, so each connection is bounded: at
//! most [`MAX_CONNECTIONS`] at once (more are closed unanswered), a
//! request head of at most [`MAX_HEAD`] bytes, and [`DEADLINE`] for the
//! whole exchange. Only `GET` and `HEAD` of `/metrics` are answered; the
//! text tells counts, never object names or tickets.

use std::sync::Arc;
use std::time::Duration;

use dot_fusefs::ReadStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Agent;
use crate::exposition::CONTENT_TYPE;

/// Connections answered at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 8192;
/// Time for one connection, from accept to the last byte sent.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Serves `listener` until the agent stops.
pub(super) async fn serve(listener: TcpListener, agent: Arc<Agent>, reads: Option<Arc<ReadStats>>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut pause = Duration::ZERO;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                pause = dot_plugins::gtc::server::backoff(pause);
                tracing::warn!(error = %e, pause = ?pause, "accepting a metrics scrape failed");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        pause = Duration::ZERO;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (agent, reads) = (agent.clone(), reads.clone());
        tokio::spawn(async move {
            let answered =
                tokio::time::timeout(DEADLINE, answer(stream, &agent, reads.as_ref())).await;
            if let Ok(Err(e)) = answered {
                tracing::debug!(error = %e, "metrics scrape failed");
            }
            drop(slot);
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    agent: &Agent,
    reads: Option<&Arc<ReadStats>>,
) -> std::io::Result<()> {
    let reply = match read_head(&mut stream).await? {
        Err(status) => Reply::status(status),
        Ok(head) => match route(&head) {
            Route::Metrics { head_only } => match super::metrics::render(agent, reads).await {
                Ok(text) => Reply {
                    status: "200 OK",
                    content_type: CONTENT_TYPE,
                    body: text,
                    head_only,
                },
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "gathering metrics failed");
                    Reply::status("500 Internal Server Error")
                }
            },
            Route::Status(status) => Reply::status(status),
        },
    };
    stream.write_all(&reply.bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the end of the request head: its text, or the status
/// that refuses it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Result<String, &'static str>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(String::from_utf8(buf).map_err(|_| "400 Bad Request"));
        }
        if buf.len() >= MAX_HEAD {
            return Ok(Err("431 Request Header Fields Too Large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err("400 Bad Request"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

enum Route {
    Metrics { head_only: bool },
    Status(&'static str),
}

/// What a request head asks for.
fn route(head: &str) -> Route {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Status("400 Bad Request");
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Status("505 HTTP Version Not Supported");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Route::Status("404 Not Found");
    }
    match method {
        "GET" => Route::Metrics { head_only: false },
        "HEAD" => Route::Metrics { head_only: true },
        _ => Route::Status("405 Method Not Allowed"),
    }
}

struct Reply {
    status: &'static str,
    content_type: &'static str,
    body: String,
    head_only: bool,
}

impl Reply {
    fn status(status: &'static str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{status}\n"),
            head_only: false,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_metrics_are_answered() {
        let ok = |h: &str| matches!(route(h), Route::Metrics { .. });
        assert!(ok("GET /metrics HTTP/1.1\r\nHost: x"));
        assert!(ok("GET /metrics?x=1 HTTP/1.0"));
        assert!(matches!(
            route("HEAD /metrics HTTP/1.1"),
            Route::Metrics { head_only: true }
        ));
        let status = |h: &str| match route(h) {
            Route::Status(s) => s,
            Route::Metrics { .. } => "metrics",
        };
        assert_eq!(status("POST /metrics HTTP/1.1"), "405 Method Not Allowed");
        assert_eq!(status("GET / HTTP/1.1"), "404 Not Found");
        assert_eq!(status("GET /metrics/../x HTTP/1.1"), "404 Not Found");
        assert_eq!(status("GET /metrics"), "400 Bad Request");
        assert_eq!(
            status("GET /metrics SPDY/3"),
            "505 HTTP Version Not Supported"
        );
        assert_eq!(status(""), "400 Bad Request");
    }
}

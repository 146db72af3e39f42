//! How a failed command ends: one line on stderr and an exit code a
//! script can act on (`docs/config.md`, "Exit codes").

use dot_agent::api::ErrorKind;
use dot_agent::client::ClientError;

/// Any other failure.
pub const FAILURE: u8 = 1;
/// No such object, or not authorised.
pub const NOT_FOUND: u8 = 3;
/// No agent at the socket, or no source answered.
pub const UNREACHABLE: u8 = 4;
/// Bytes that did not verify, or a put file that changed.
pub const INTEGRITY: u8 = 5;

/// A command found damaged data (and said where): the integrity code.
#[derive(Debug)]
pub struct Damaged(pub String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

/// The exit code for `e`: the first kind its chain shows.
pub fn code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<Damaged>() {
            return INTEGRITY;
        }
        // The client's errors may come wrapped in an io::Error (a read).
        let client = cause.downcast_ref::<ClientError>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<ClientError>())
        });
        match client {
            Some(ClientError::NoAgent { .. }) => return UNREACHABLE,
            Some(ClientError::Agent {
                kind: Some(kind), ..
            }) => {
                return match kind {
                    ErrorKind::NotFound => NOT_FOUND,
                    ErrorKind::Unreachable => UNREACHABLE,
                    ErrorKind::Integrity => INTEGRITY,
                };
            }
            _ => {}
        }
    }
    FAILURE
}

/// `e` and its causes on one line, each said once: a cause whose text the
/// line already holds (an error that prints its source) is left out.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// `e` as one JSON object, for commands given `--json`:
/// `{"error": ONE_LINE, "kind": KIND, "exit": CODE}`, the kind one of
/// `failure`, `not-found`, `unreachable`, `integrity`.
pub fn json_line(e: &anyhow::Error) -> String {
    let code = code(e);
    let kind = match code {
        NOT_FOUND => "not-found",
        UNREACHABLE => "unreachable",
        INTEGRITY => "integrity",
        _ => "failure",
    };
    serde_json::json!({ "error": one_line(e), "kind": kind, "exit": code }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(ClientError::NoAgent {
            path: "/run/gtc.sock".into(),
            source: io,
        })
        .context("connecting");
        let line = one_line(&e);
        assert_eq!(
            line.matches("No such file or directory").count(),
            1,
            "{line}"
        );
        assert!(
            line.starts_with("connecting: no agent at /run/gtc.sock"),
            "{line}"
        );
        assert_eq!(code(&e), UNREACHABLE);
    }

    #[test]
    fn the_agent_s_kind_picks_the_code() {
        for (kind, want) in [
            (ErrorKind::NotFound, NOT_FOUND),
            (ErrorKind::Unreachable, UNREACHABLE),
            (ErrorKind::Integrity, INTEGRITY),
        ] {
            let e = anyhow::Error::new(ClientError::Agent {
                message: "x".into(),
                kind: Some(kind),
            });
            assert_eq!(code(&e), want);
        }
        assert_eq!(code(&anyhow::anyhow!("other")), FAILURE);
    }
}

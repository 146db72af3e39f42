//! What a get names: a ticket, or a bare OID, with where to fetch it.

use dot_store::{Access, Hint, Oid, Ticket};

/// What a get names: a ticket, or a bare OID.
#[derive(Debug, Clone)]
pub struct Target {
    /// The object.
    pub oid: Oid,
    /// Its access token (or, for a file of a tree, the tree's token and
    /// the tree), from the ticket.
    pub access: Option<Access>,
    /// Digest of its descriptor list, from the ticket.
    pub list_digest: Option<[u8; 32]>,
    /// Where to fetch it (each gtc hint naming the peer key it must
    /// prove, if the ticket names one).
    pub hints: Vec<Hint>,
}

impl From<&Ticket> for Target {
    fn from(t: &Ticket) -> Target {
        Target {
            oid: t.oid(),
            access: t.access(),
            list_digest: t.list_digest(),
            hints: t
                .hints()
                .iter()
                .map(|h| h.clone().with_key(t.key()))
                .collect(),
        }
    }
}

impl Target {
    /// A bare OID: no token, no list digest, no hints.
    pub fn bare(oid: Oid) -> Target {
        Target {
            oid,
            access: None,
            list_digest: None,
            hints: Vec::new(),
        }
    }

    /// Parses a ticket or OID; `hints`, if not empty, replace the ticket's
    /// (and name the ticket's peer key unless they name their own).
    ///
    /// # Errors
    /// A clear message for a malformed ticket, OID or hint.
    pub fn parse(text: &str, hints: &[String]) -> anyhow::Result<Target> {
        let text = text.trim();
        let (mut t, key) = if text.starts_with(dot_store::oid::OID_PREFIX) {
            (Target::bare(text.parse()?), None)
        } else {
            let ticket = text.parse::<Ticket>()?;
            (Target::from(&ticket), ticket.key())
        };
        if !hints.is_empty() {
            t.hints = hints
                .iter()
                .map(|h| Hint::from_address(h).map(|h| h.with_key(key)))
                .collect::<Result<_, _>>()?;
        }
        Ok(t)
    }

    /// A bare OID with nothing to fetch it by (no hints, no token): the
    /// agent fills in what it knows of it.
    pub fn is_bare(&self) -> bool {
        self.hints.is_empty() && self.access.is_none()
    }
}

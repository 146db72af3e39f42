//! Who may see what under the mount, on a machine with several users.
//!
//! The mount's owner (the agent's user) and root see everything. Any other
//! user reads an object only if it was *granted* to them: they looked it
//! up by a ticket (holding a ticket is the right to its object), or they
//! put it themselves through `put/`. They list only what was granted to
//! them, and a bare OID they were not granted is ENOENT to them. Object
//! names are never cached by the kernel (entry TTL 0), so each user's
//! lookup reaches this rule. `put/` is sticky (1777): each file there
//! belongs to who created it (mode 0600), only
//! they (or root) remove, rename or replace it, and only they read its
//! ticket. Drafts are bounded per user ([`MountOptions::put_limit`]).
//!
//! [`MountOptions::put_limit`]: crate::MountOptions::put_limit

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use dot_store::Oid;

use crate::state::lock;

/// Users whose grants are remembered (forgotten wholesale beyond).
const MAX_USERS: usize = 4096;
/// Grants remembered per user (forgotten wholesale beyond).
const MAX_GRANTS: usize = 100_000;

/// The mount's access rule.
pub(crate) struct Access {
    /// The mount's owner.
    owner: u32,
    grants: Mutex<HashMap<u32, HashSet<Oid>>>,
}

impl Access {
    pub(crate) fn new(owner: u32) -> Access {
        Access {
            owner,
            grants: Mutex::new(HashMap::new()),
        }
    }

    /// The owner and root: they see every object.
    pub(crate) fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.owner
    }

    /// Whether `uid` may read (and list, and look up by OID) `oid`.
    pub(crate) fn may_read(&self, uid: u32, oid: Oid) -> bool {
        self.privileged(uid)
            || lock(&self.grants)
                .get(&uid)
                .is_some_and(|g| g.contains(&oid))
    }

    /// `uid` holds a ticket for `oid`, or put it.
    pub(crate) fn grant(&self, uid: u32, oid: Oid) {
        if self.privileged(uid) {
            return;
        }
        let mut grants = lock(&self.grants);
        if grants.len() >= MAX_USERS && !grants.contains_key(&uid) {
            grants.clear();
        }
        let mine = grants.entry(uid).or_default();
        if mine.len() >= MAX_GRANTS {
            mine.clear();
        }
        mine.insert(oid);
    }
}

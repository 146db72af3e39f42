//! The registry of fuzz targets: one per decoder of outside input, one
//! file per family. Each target's `run` decodes its input, checks what
//! must hold of what was decoded (round trips, bounds), panics when it
//! does not, and says whether the decoder accepted the input.

mod access;
mod api;
mod config;
mod descriptor_file;
mod frames;
mod smtp;
mod text;
mod ticket;
mod tree;
mod udev;

/// One fuzz target.
pub struct Target {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it decodes and what it asserts beyond "no panic, no hang, no
    /// allocation past 256 MiB".
    pub asserts: &'static str,
    /// Valid encodings made by our own encoders, to mutate.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens of the format, spliced into cases.
    pub dict: &'static [&'static [u8]],
    /// Longest case.
    pub max_len: usize,
    /// Runs one case: panics if a property breaks; true if the decoder
    /// accepted the input.
    pub run: fn(&[u8]) -> bool,
}

/// Every target.
pub static TARGETS: &[Target] = &[
    frames::FRAME,
    frames::DESC_LIST,
    ticket::TICKET,
    ticket::TICKET_PAYLOAD,
    text::HINT,
    text::OID,
    text::DESCRIPTOR,
    descriptor_file::DESCRIPTOR_FILE,
    api::API,
    config::CONFIG,
    config::CHUNKER_SPEC,
    udev::UEVENT,
    udev::MOUNTINFO,
    access::IP_PREFIX,
    smtp::SMTP,
    tree::TREE,
];

/// The target named `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The input as text: the decoders of text take `&str`, so invalid UTF-8
/// is replaced rather than thrown away (every case reaches the parser).
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_is_accepted_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for t in TARGETS {
            assert!(names.insert(t.name), "{} twice", t.name);
            let seeds = (t.seeds)();
            assert!(!seeds.is_empty(), "{} has no seeds", t.name);
            for s in seeds {
                assert!(s.len() <= t.max_len, "{}: a seed over max_len", t.name);
                assert!(
                    (t.run)(&s),
                    "{}: seed {:?} refused",
                    t.name,
                    String::from_utf8_lossy(&s)
                );
            }
        }
    }
}

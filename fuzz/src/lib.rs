//! Fuzz targets for every decoder of outside input, and the harness that
//! runs them on the stable toolchain (docs/fuzzing.md).
//!
//! - [`targets`]: the [`Target`] registry, one target per decoder, one file
//!   per family: gtc frames and descriptor pages (`frames`), tickets
//!   (`ticket`), OIDs, chunk hashes, peer keys, descriptors and hints
//!   (`text`), descriptor files on keys (`descriptor_file`), local-API
//!   messages (`api`), the agent's config file (`config`), uevents and the
//!   mount table (`udev`), `open-to` prefixes (`access`). A target takes
//!   bytes, panics when a property breaks, and says whether the decoder
//!   accepted its input; each comes with seeds made by our own encoders
//!   and a dictionary of its format's tokens.
//! - [`mutate`]: the deterministic generator of cases: random bytes,
//!   dictionary words, and stacked mutations (bit flips, inserts,
//!   deletes, splices, length fields set to edge values) of seeds and of
//!   inputs the decoder accepted.
//! - [`alloc`]: the counting global allocator: a case that would take the
//!   live heap past 256 MiB aborts the process.
//! - [`worker`]: one target's loop in a child process; each case is
//!   written to a memory-mapped case file before it runs, so the case that
//!   killed the process is still there.
//! - [`supervise`]: the parent: runs each target in a worker for a time or
//!   a number of cases, calls a case that burns 1 s of CPU a hang, and
//!   keeps the failing case for `dot-fuzz replay`.
//!
//! `main.rs` is the `dot-fuzz` command; `bin/afl.rs` runs the same targets
//! under AFL++ (feature `afl`, built by `cargo afl`).

pub mod alloc;
pub mod mutate;
pub mod supervise;
pub mod targets;
pub mod worker;

pub use targets::{TARGETS, Target, find};

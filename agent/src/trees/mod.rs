//! Folders as objects, the client side (the format is
//! `dot_store::tree`; docs/trees.md):
//!
//! - `put`: a folder walked beneath a handle of its root, each file put by
//!   reference, the manifest put as the tree ([`put_tree`]);
//! - `get`: a tree's manifest fetched and checked, every entry made
//!   beneath a handle of the destination, files fetched by their own
//!   tickets several at once ([`get_tree`]).

mod get;
mod put;

pub use get::{GET_WORKERS, Progress, RESTORED_MODE, TreeGot, get_tree};
pub use put::{PUT_WORKERS, TreePut, put_tree};

//! Folders as objects, the client side (the format is
//! `dot_store::tree`; docs/trees.md):
//!
//! - `put`: a folder walked beneath a handle of its root, each file put by
//!   reference, the manifest put as the tree ([`put_tree`]);
//! - `get`: a tree's manifest fetched and checked, every entry made
//!   beneath a handle of the destination, files fetched by their own
//!   tickets several at once ([`get_tree`]);
//! - segments, for copies: a folder put as a series of trees, each handed
//!   on as soon as it is made ([`put_tree_segments`]), and fetched into
//!   one destination as they come ([`get_segments`]).

mod get;
mod put;

pub use get::{
    GET_WORKERS, Progress, RESTORED_MODE, SEGMENT_GETS, TreeGot, get_segments, get_tree,
};
pub use put::{PUT_WORKERS, SEGMENT_BYTES, Segmented, TreePut, put_tree, put_tree_segments};

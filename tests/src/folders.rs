//! Folders compared: what a copy of a tree must match of its source.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a tree holds, as compared between source and copy: each entry's
/// kind, permission bits, mtime and content (or link target).
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (String, u32, i64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(root).expect("beneath").to_path_buf();
            let (kind, data) = if m.file_type().is_symlink() {
                (
                    "link",
                    std::fs::read_link(&p)
                        .expect("readlink")
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if m.is_dir() {
                todo.push(p.clone());
                ("dir", Vec::new())
            } else {
                ("file", std::fs::read(&p).expect("read"))
            };
            let mode = if kind == "link" { 0 } else { m.mode() & 0o7777 };
            out.insert(
                rel,
                (kind.to_owned(), mode, m.mtime(), m.mtime_nsec(), data),
            );
        }
    }
    out
}

//! The mount table (`/proc/self/mountinfo`): where each filesystem is
//! mounted and from what, as the watcher reads it on every change.

use std::path::PathBuf;

/// One mount table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub(crate) point: PathBuf,
    pub(crate) source: String,
}

/// The mount table of this process's mount namespace (empty if it cannot
/// be read).
pub(crate) fn read_mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| parse_mountinfo(&s))
        .unwrap_or_default()
}

/// Parses `/proc/self/mountinfo`: field 5 is the mount point, and after
/// the `-` separator come the filesystem type and the source.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = unescape(fields.get(4)?);
            let sep = fields.iter().position(|f| *f == "-")?;
            let source = unescape(fields.get(sep + 2)?);
            Some(Mount {
                point: PathBuf::from(point),
                source,
            })
        })
        .collect()
}

/// Undoes the octal escapes (`\040` for a space) of the mount table; one
/// past a byte's range (`\777`) is kept as it stands.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_mount_point_and_source() {
        let text = "36 35 98:0 / /mnt/my\\040key rw,noatime master:1 - ext4 /dev/loop3 rw,errors=continue\n\
                    22 1 0:21 / /proc rw - proc proc rw\n\
                    garbage line\n";
        let m = parse_mountinfo(text);
        assert_eq!(
            m,
            vec![
                Mount {
                    point: PathBuf::from("/mnt/my key"),
                    source: "/dev/loop3".into()
                },
                Mount {
                    point: PathBuf::from("/proc"),
                    source: "proc".into()
                },
            ]
        );
    }

    #[test]
    fn an_escape_past_a_byte_is_kept_as_written() {
        // Found by the `mountinfo` fuzz target: `\777` overflowed the
        // byte it was decoded into (a panic with overflow checks).
        assert_eq!(
            unescape("/mnt/a\\777b\\040c\\377"),
            "/mnt/a\\777b c\u{fffd}"
        );
        assert_eq!(unescape("\\400\\0"), "\\400\\0");
        let m = parse_mountinfo("36 35 98:0 / /mnt/\\777 rw - ext4 /dev/sdb1 rw\n");
        assert_eq!(m[0].point, PathBuf::from("/mnt/\\777"));
    }
}

//! What the kernel hands the device watcher: uevent datagrams and the
//! mount table.

use dot_udev::fuzzing;

use super::{Target, text};

pub(super) const UEVENT: Target = Target {
    name: "uevent",
    asserts: "Uevent::parse: a device name is never absolute and never holds `..`",
    seeds: || {
        vec![
            b"add@/devices/virtual/block/loop3\0ACTION=add\0DEVPATH=/devices/virtual/block/loop3\0\
              SUBSYSTEM=block\0DEVNAME=loop3\0DEVTYPE=disk\0SEQNUM=4242\0"
                .to_vec(),
            b"remove@/devices/pci0000:00/usb1/1-1/block/sdb/sdb1\0ACTION=remove\0\
              SUBSYSTEM=block\0DEVNAME=/dev/sdb1\0"
                .to_vec(),
            b"change@/x\0ACTION=change\0SUBSYSTEM=block\0DEVNAME=sdc\0DISK_MEDIA_CHANGE=1\0"
                .to_vec(),
        ]
    },
    dict: &[
        b"\0",
        b"@",
        b"=",
        b"ACTION=",
        b"SUBSYSTEM=",
        b"DEVNAME=",
        b"block",
        b"..",
        b"/",
        b"libudev",
    ],
    max_len: 8192,
    run: uevent,
};

pub(super) const MOUNTINFO: Target = Target {
    name: "mountinfo",
    asserts: "parse_mountinfo: at most one mount per line",
    seeds: || {
        vec![
            b"36 35 98:0 / /mnt/my\\040key rw,noatime master:1 - ext4 /dev/loop3 rw,errors=continue\n\
              22 1 0:21 / /proc rw - proc proc rw\n\
              40 22 8:17 / /media/u/KEY rw,nosuid shared:5 - vfat /dev/sdb1 rw,fmask=0022\n"
                .to_vec(),
        ]
    },
    dict: &[
        b" ", b" - ", b"\\040", b"\\134", b"\\777", b"\\", b"\n", b"/dev/",
    ],
    max_len: 4096,
    run: mountinfo,
};

fn uevent(data: &[u8]) -> bool {
    let Some((_, _, devname)) = fuzzing::uevent(data) else {
        return false;
    };
    assert!(!devname.starts_with('/'), "{devname:?}");
    assert!(!devname.contains(".."), "{devname:?}");
    true
}

fn mountinfo(data: &[u8]) -> bool {
    let s = text(data);
    let mounts = fuzzing::mountinfo(&s);
    assert!(mounts.len() <= s.lines().count());
    !mounts.is_empty()
}

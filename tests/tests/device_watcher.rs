//! The device watcher (`dot-udev`) alone, against a real loop-device
//! filesystem standing in for a USB key: mounted, it appears within a
//! second; lazily unmounted and detached (yanked), it leaves; an unclaimed
//! key is mounted read-only (`nosuid,nodev,noexec,nosymfollow`) when
//! asked, and unmounted when the watcher stops.

use std::path::Path;
use std::time::{Duration, Instant};

use dot_tests::key::{Fs, Key};
use dot_tests::require_loop;
use dot_udev::{DeviceEvent, MARKER, Options, Watcher};

/// A key holding `.dot/`, not mounted.
fn dot_key() -> Key {
    let key = Key::new(Fs::Ext4, 16);
    let at = key.mount_point("prepare");
    key.mount(&at);
    std::fs::create_dir(at.join(MARKER)).expect(".dot");
    key.unmount();
    key
}

fn next_event(w: &Watcher) -> DeviceEvent {
    w.events()
        .recv_timeout(Duration::from_secs(5))
        .expect("an event within 5 s")
}

/// Tests here watch the same machine-wide events: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices: runs in CI, or as root"
)]
fn a_mounted_key_appears_within_a_second_and_a_yanked_one_leaves() {
    require_loop("a_mounted_key_appears_within_a_second_and_a_yanked_one_leaves");
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let key = dot_key();
    let w = Watcher::start(Options::default()).expect("watcher");
    let at = key.mount_point("mnt");
    let start = Instant::now();
    key.mount(&at);
    // Other tests may mount keys of their own: wait for this one.
    let seen = loop {
        match next_event(&w) {
            DeviceEvent::Appeared(p) if p == at => break start.elapsed(),
            _ => continue,
        }
    };
    assert!(seen < Duration::from_secs(1), "seen after {seen:?}");
    key.yank();
    loop {
        if next_event(&w) == DeviceEvent::Left(at.clone()) {
            break;
        }
    }
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices: runs in CI, or as root"
)]
fn an_unclaimed_key_is_mounted_read_only_when_asked_and_unmounted_at_the_end() {
    require_loop("an_unclaimed_key_is_mounted_read_only_when_asked_and_unmounted_at_the_end");
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let into = tempfile::tempdir().expect("tempdir");
    let w = Watcher::start(Options {
        folders: Vec::new(),
        mount_into: Some(into.path().to_owned()),
    })
    .expect("watcher");
    // Attached, never mounted by anyone: the watcher mounts it itself.
    let key = dot_key();
    let dev = key.device();
    let name = Path::new(&dev).file_name().expect("device name").to_owned();
    let at = into.path().join(&name);
    loop {
        if next_event(&w) == DeviceEvent::Appeared(at.clone()) {
            break;
        }
    }
    let ro = std::fs::write(at.join("probe"), b"x");
    assert!(ro.is_err(), "mounted writable");
    // A key is someone else's filesystem: no set-uid, no device nodes, no
    // programs, and (Linux 5.10+) no symbolic link followed on it.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let point = at.to_str().expect("utf-8 path");
    let options: Vec<&str> = mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&point))
        .and_then(|f| f.get(5).map(|o| o.split(',').collect()))
        .unwrap_or_else(|| panic!("{point} is not in the mount table"));
    for want in ["ro", "nosuid", "nodev", "noexec", "nosymfollow"] {
        assert!(
            options.contains(&want),
            "the watcher's mount has options {options:?}, without {want}"
        );
    }
    // (A loop device cannot be pulled while mounted, so the unmount on a
    // "remove" uevent is not exercised here.) A watcher that stops
    // unmounts what it mounted.
    drop(w);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&*at.to_string_lossy()),
        "still mounted at {}",
        at.display()
    );
}

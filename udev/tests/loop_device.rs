//! The watcher against a real loop-device filesystem standing in for a USB
//! key: mounted, it appears within a second; lazily unmounted and detached
//! (yanked), it leaves. Needs root and loop devices: run as root or under
//! CI, else ignored with the reason (see `build.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dot_udev::{DeviceEvent, MARKER, Options, Watcher};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Fails the test unless keys can be made here. Where it runs at all is
/// decided at build time (the `privileged` cfg of `build.rs`: root or CI);
/// elsewhere the tests are ignored with their reason.
fn require_loop() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["losetup", "mkfs.ext4", "mount", "umount"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        root && tools && Path::new("/dev/loop-control").exists(),
        "the loop-device tests need root, losetup, mkfs.ext4 and /dev/loop-control"
    );
}

/// A loop device with an ext4 filesystem holding `.dot/`; detached (and
/// unmounted) on drop.
struct Key {
    dev: String,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Key {
    fn new() -> Key {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("key.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
        let img = img.to_string_lossy().into_owned();
        run("mkfs.ext4", &["-q", "-F", &img]);
        let dev = run("losetup", &["-f", "--show", &img]);
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mnt");
        let key = Key {
            dev,
            mnt,
            _dir: dir,
        };
        key.mount();
        std::fs::create_dir(key.mnt.join(MARKER)).expect(".dot");
        key.unmount();
        key
    }

    fn mount(&self) {
        run("mount", &[&self.dev, &self.mnt.to_string_lossy()]);
    }

    fn unmount(&self) {
        run("umount", &["-l", &self.mnt.to_string_lossy()]);
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        let mnt = self.mnt.to_string_lossy().into_owned();
        // Either may be undone already (the test yanks the key).
        let quiet = |cmd: &str, args: &[&str]| {
            let _ = Command::new(cmd)
                .args(args)
                .stderr(std::process::Stdio::null())
                .status();
        };
        quiet("umount", &["-l", &mnt]);
        quiet("losetup", &["-d", &self.dev]);
    }
}

fn next_event(w: &Watcher) -> DeviceEvent {
    w.events()
        .recv_timeout(Duration::from_secs(5))
        .expect("an event within 5 s")
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices: runs in CI, or as root"
)]
fn a_mounted_key_appears_within_a_second_and_a_yanked_one_leaves() {
    require_loop();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let key = Key::new();
    let w = Watcher::start(Options::default()).expect("watcher");
    let start = Instant::now();
    key.mount();
    // Other tests may mount keys of their own: wait for this one.
    let ev = loop {
        match next_event(&w) {
            DeviceEvent::Appeared(p) if p == key.mnt => break start.elapsed(),
            _ => continue,
        }
    };
    assert!(ev < Duration::from_secs(1), "seen after {ev:?}");
    // Yank: lazy unmount and detach, as a pulled key.
    key.unmount();
    run("losetup", &["-d", &key.dev]);
    loop {
        if next_event(&w) == DeviceEvent::Left(key.mnt.clone()) {
            break;
        }
    }
}

/// Tests here watch the same machine-wide events: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and loop devices: runs in CI, or as root"
)]
fn an_unclaimed_key_is_mounted_read_only_when_asked_and_unmounted_at_the_end() {
    require_loop();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let into = tempfile::tempdir().expect("tempdir");
    let w = Watcher::start(Options {
        folders: Vec::new(),
        mount_into: Some(into.path().to_owned()),
    })
    .expect("watcher");
    // Attached, never mounted by anyone: the watcher mounts it itself.
    let key = Key::new();
    let name = Path::new(&key.dev)
        .file_name()
        .expect("device name")
        .to_owned();
    let at = into.path().join(&name);
    loop {
        if next_event(&w) == DeviceEvent::Appeared(at.clone()) {
            break;
        }
    }
    let ro = std::fs::write(at.join("probe"), b"x");
    assert!(ro.is_err(), "mounted writable");
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

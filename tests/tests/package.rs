//! The Debian package: `packaging/deb.sh` builds it from the binary under
//! test; it holds the binary, the unit, the default config, man pages and
//! completions; its config is one the agent starts with; and it installs
//! and purges cleanly with dpkg.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dot_tests::{COMMAND_LIMIT, find_tool, gtc_bin, output_within, require_with};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn run(what: &str, cmd: Command) -> String {
    let out = output_within(cmd, COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dpkg_deb(args: &[&str]) -> String {
    let mut c = Command::new("dpkg-deb");
    c.args(args);
    run(&format!("dpkg-deb {}", args.join(" ")), c)
}

/// Purges the package when the test ends, also when it fails.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "gtc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root, dpkg and cargo-deb (CI installs it): runs in CI, or as root"
)]
fn the_package_holds_binary_unit_config_man_pages_and_completions_and_installs() {
    let test = "the_package_holds_binary_unit_config_man_pages_and_completions_and_installs";
    let missing: Vec<&str> = ["dpkg", "dpkg-deb", "cargo-deb", "strip"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    require_with(test, "root, dpkg, strip and cargo-deb", &missing);
    let ws = workspace();
    let out = tempfile::tempdir().expect("tempdir");
    let mut build = Command::new("bash");
    build
        .arg(ws.join("packaging/deb.sh"))
        .env("OUT", out.path())
        .env("GTC", gtc_bin())
        .current_dir(&ws);
    run("packaging/deb.sh", build);
    let debs: Vec<PathBuf> = std::fs::read_dir(out.path())
        .expect("read output")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package: {debs:?}");
    let deb = debs[0].to_str().expect("utf-8");

    let files = dpkg_deb(&["--contents", deb]);
    for want in [
        "./usr/bin/gtc",
        "./usr/lib/systemd/system/gtc.service",
        "./etc/dot/gtc.toml",
        "./usr/share/man/man1/gtc.1.gz",
        "./usr/share/man/man1/gtc-agent.1.gz",
        "./usr/share/man/man1/gtc-get.1.gz",
        "./usr/share/man/man1/gtc-verify.1.gz",
        "./usr/share/bash-completion/completions/gtc",
        "./usr/share/zsh/vendor-completions/_gtc",
        "./usr/share/fish/vendor_completions.d/gtc.fish",
        "./usr/share/doc/gtc/copyright",
    ] {
        assert!(
            files.lines().any(|l| l.ends_with(&format!(" {want}"))),
            "{want} not in the package:\n{files}"
        );
    }
    assert_eq!(dpkg_deb(&["--field", deb, "Package"]).trim(), "gtc");
    let ctl = tempfile::tempdir().expect("tempdir");
    let ctl_dir = ctl.path().to_str().expect("utf-8");
    dpkg_deb(&["--control", deb, ctl_dir]);
    let conffiles = std::fs::read_to_string(ctl.path().join("conffiles")).expect("conffiles");
    assert!(
        conffiles.lines().any(|l| l == "/etc/dot/gtc.toml"),
        "{conffiles}"
    );

    // What is inside works: the binary runs, the shipped config is one the
    // agent starts with (every key commented out), the unit is ours.
    let root = tempfile::tempdir().expect("tempdir");
    let root_dir = root.path().to_str().expect("utf-8");
    dpkg_deb(&["--extract", deb, root_dir]);
    let gtc = root.path().join("usr/bin/gtc");
    let mut version = Command::new(&gtc);
    version.arg("--version");
    assert!(run("gtc --version", version).starts_with("gtc "));
    assert_eq!(
        std::fs::read(root.path().join("usr/lib/systemd/system/gtc.service")).expect("unit"),
        std::fs::read(workspace().join("packaging/gtc.service")).expect("our unit")
    );
    let data = tempfile::tempdir().expect("tempdir");
    let mut agent = Command::new(&gtc)
        .args(["agent", "--no-mount", "--listen", "127.0.0.1:0", "--config"])
        .arg(root.path().join("etc/dot/gtc.toml"))
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .arg("--socket")
        .arg(data.path().join("gtc.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the packaged agent");
    let stdout = agent.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let ready = rx.recv_timeout(Duration::from_secs(60));
    let _ = agent.kill();
    let _ = agent.wait();
    let ready = ready.expect("the packaged agent said nothing for 60 s");
    assert!(ready.starts_with("gtc agent: ready"), "{ready:?}");

    // dpkg installs it where the README says, and purges every file.
    let installed = Command::new("dpkg")
        .args(["-s", "gtc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("dpkg -s");
    assert!(
        !installed.success(),
        "a package gtc is installed on this machine already: not touching it"
    );
    let guard = Installed;
    let mut install = Command::new("dpkg");
    install
        .args(["-i", deb])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run("dpkg -i", install);
    let mut listed = Command::new("dpkg");
    listed.args(["-L", "gtc"]);
    let listed = run("dpkg -L gtc", listed);
    assert!(listed.lines().any(|l| l == "/usr/bin/gtc"), "{listed}");
    let mut version = Command::new("/usr/bin/gtc");
    version.arg("--version");
    run("/usr/bin/gtc --version", version);
    drop(guard);
    assert!(!Path::new("/usr/bin/gtc").exists(), "purged");
    assert!(
        !Path::new("/etc/dot/gtc.toml").exists(),
        "purged with its config"
    );
}

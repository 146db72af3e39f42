//! Other local users and the agent: its store is private, its socket is
//! the agent's user's (and root's, and a configured group's) alone, checked
//! by file modes and again by peer credentials; a client trusts only an
//! agent run by its own user or root. Each test makes the users it needs
//! (`useradd`) and removes them when it ends, also when it fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dot_tests::{Agent, COMMAND_LIMIT, gtc_bin, output_within, require_root};

/// A user (with a group of its own) made for one test; removed on drop.
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
}

fn run(args: &[&str]) {
    let out = output_within(
        {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        },
        COMMAND_LIMIT,
    );
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn id(flag: &str, name: &str) -> u32 {
    let out = Command::new("id").args([flag, name]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number from id")
}

impl TempUser {
    /// A system user without home or shell; `groups` are extra groups.
    fn new(tag: &str, groups: &[&TempGroup]) -> TempUser {
        let name = format!("dotu{}{tag}", std::process::id());
        let extra: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let mut args = vec![
            "useradd",
            "-r",
            "-M",
            "-U",
            "-s",
            "/usr/sbin/nologin",
            "-d",
            "/nonexistent",
        ];
        let list = extra.join(",");
        if !extra.is_empty() {
            args.extend(["-G", &list]);
        }
        args.push(&name);
        run(&args);
        TempUser {
            uid: id("-u", &name),
            gid: id("-g", &name),
            name,
        }
    }

    /// `gtc ARGS` run as this user (with its groups) against `socket`.
    fn gtc(&self, socket: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg(gtc_bin())
            .args(args)
            .env_clear()
            .env("GTC_SOCKET", socket)
            .env("PATH", "/usr/bin:/bin");
        output_within(cmd, COMMAND_LIMIT)
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .args(["-f", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A group made for one test; removed on drop.
struct TempGroup {
    name: String,
}

impl TempGroup {
    fn new(tag: &str) -> TempGroup {
        let name = format!("dotg{}{tag}", std::process::id());
        run(&["groupadd", "-r", &name]);
        TempGroup { name }
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root (makes users): runs in CI, or as root"
)]
fn a_second_local_user_cannot_read_the_store_or_use_the_socket() {
    require_root("a_second_local_user_cannot_read_the_store_or_use_the_socket");
    let a = Agent::start();
    let data = a.dir.join("obj");
    std::fs::write(&data, b"private bytes").expect("write");
    a.put_ticket(&data);
    let store = a.dir.join("data");
    assert_eq!(mode(&store), 0o700, "store folder");
    for f in ["index.sqlite", "token.key"] {
        assert_eq!(mode(&store.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&a.socket()) & 0o777, 0o600, "socket");
    let b = TempUser::new("b", &[]);
    // Let B reach the socket: only its own mode keeps B out.
    std::fs::set_permissions(&a.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = b.gtc(&a.socket(), &["status"]);
    assert!(!out.status.success(), "B used the agent");
    assert!(
        stderr(&out).contains("ermission denied"),
        "{}",
        stderr(&out)
    );
    // A socket left open to all by mistake: the agent still checks who
    // connects.
    std::fs::set_permissions(a.socket(), std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = b.gtc(&a.socket(), &["status"]);
    assert!(!out.status.success(), "B used the agent");
    assert!(
        stderr(&out).contains("may not use this agent"),
        "{}",
        stderr(&out)
    );
    // The agent's own user (root here) still can.
    a.gtc_ok(&["status"]);
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root (makes users): runs in CI, or as root"
)]
fn members_of_the_socket_group_use_the_agent_and_other_users_do_not() {
    require_root("members_of_the_socket_group_use_the_agent_and_other_users_do_not");
    let group = TempGroup::new("g");
    let member = TempUser::new("m", &[&group]);
    let other = TempUser::new("o", &[]);
    let conf = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(conf.path(), format!("socket-group = \"{}\"\n", group.name)).expect("write");
    let a = Agent::start_with(&["--config", conf.path().to_str().expect("utf-8")]);
    std::fs::set_permissions(&a.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let meta = std::fs::metadata(a.socket()).expect("socket");
    assert_eq!(meta.mode() & 0o777, 0o660);
    let out = member.gtc(&a.socket(), &["status", "--json"]);
    assert!(out.status.success(), "member refused: {}", stderr(&out));
    let out = other.gtc(&a.socket(), &["status"]);
    assert!(!out.status.success(), "a non-member used the agent");
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root (makes users): runs in CI, or as root"
)]
fn a_client_does_not_trust_an_agent_run_by_another_user() {
    require_root("a_client_does_not_trust_an_agent_run_by_another_user");
    let c = TempUser::new("c", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = dir.path().join("c");
    std::fs::create_dir(&home).expect("mkdir");
    std::os::unix::fs::chown(&home, Some(c.uid), Some(c.gid)).expect("chown");
    let socket = home.join("gtc.sock");
    // C's own agent, which a root client must not hand its puts to.
    let mut agent = Command::new(gtc_bin())
        .args([
            "agent",
            "--no-mount",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(home.join("data"))
        .arg("--socket")
        .arg(&socket)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .uid(c.uid)
        .gid(c.gid)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("C's agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "C's agent made no socket");
        assert!(
            agent.try_wait().expect("wait").is_none(),
            "C's agent exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut cmd = Command::new(gtc_bin());
    cmd.args(["status"]).env("GTC_SOCKET", &socket);
    let out = output_within(cmd, COMMAND_LIMIT);
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(!out.status.success(), "root used another user's agent");
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));
}

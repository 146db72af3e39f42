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

use dot_tests::{
    Agent, COMMAND_LIMIT, gtc_bin, output_within, random_bytes, require_fuse, require_root,
};

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
        let name = format!("dotu{}{tag}{}", std::process::id(), next());
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
        let mut cmd = self.command(gtc_bin().to_str().expect("utf-8"), args);
        cmd.env("GTC_SOCKET", socket);
        output_within(cmd, COMMAND_LIMIT)
    }

    /// `PROGRAM ARGS` as this user, with its groups and a bare environment.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        cmd
    }

    /// Runs a Python snippet as this user (`sys.argv[1:]` are `args`); its
    /// output.
    fn py(&self, code: &str, args: &[&str]) -> Output {
        let mut all = vec!["-c", code];
        all.extend(args);
        output_within(self.command("/usr/bin/python3", &all), COMMAND_LIMIT)
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
        let name = format!("dotg{}{tag}{}", std::process::id(), next());
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

/// A number no other user or group of this process has.
fn next() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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

/// What one user's Python says of trying `op` on `path` under the mount:
/// "ok", or the errno's name.
const TRY: &str = r#"
import errno, os, sys
op, path = sys.argv[1], sys.argv[2]
try:
    if op == "read":
        open(path, "rb").read()
    elif op == "list":
        print(" ".join(sorted(os.listdir(path))))
    elif op == "unlink":
        os.unlink(path)
    elif op == "rename":
        os.rename(path, sys.argv[3])
    elif op == "create":
        open(path, "wb").write(b"mine now")
    elif op == "ticket":
        os.getxattr(path, "user.dot.ticket")
    elif op == "write":
        with open(path, "wb") as f:
            f.write(b"x" * int(sys.argv[3]))
    elif op == "truncate":
        with open(path, "wb") as f:
            f.truncate(int(sys.argv[3]))
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

fn try_as(user: &TempUser, op: &str, path: &Path, extra: &[&str]) -> String {
    let mut args = vec![op, path.to_str().expect("utf-8")];
    args.extend(extra);
    let out = user.py(TRY, &args);
    assert!(out.status.success(), "python: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().last().unwrap_or("").to_owned()
}

fn list_as(user: &TempUser, dir: &Path) -> String {
    let out = user.py(TRY, &["list", dir.to_str().expect("utf-8")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse (makes users): runs in CI, or as root"
)]
fn through_the_mount_a_user_reads_only_what_a_ticket_or_a_put_gave_them() {
    require_fuse("through_the_mount_a_user_reads_only_what_a_ticket_or_a_put_gave_them");
    let a = Agent::start_mounted(&[]);
    std::fs::set_permissions(&a.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mnt = a.mnt().to_owned();
    let src = a.dir.join("secret");
    std::fs::write(&src, random_bytes(200_000, 120)).expect("write");
    let put = a.put(&src);
    let oid = put["oid"].as_str().expect("oid").to_owned();
    let ticket = put["ticket"].as_str().expect("ticket").to_owned();
    let b = TempUser::new("b", &[]);
    // B was given nothing: the object is not listed, not readable by OID.
    assert!(!list_as(&b, &mnt).contains(&oid), "listed to B");
    assert_eq!(try_as(&b, "read", &mnt.join(&oid), &[]), "ENOENT");
    // Root sees it (the agent's user and root see everything).
    assert!(
        std::fs::read_dir(&mnt)
            .expect("ls")
            .any(|e| e.expect("entry").file_name() == oid.as_str())
    );
    // With the ticket, B reads it, then also by OID, and lists it.
    assert_eq!(try_as(&b, "read", &mnt.join(&ticket), &[]), "ok");
    assert_eq!(try_as(&b, "read", &mnt.join(&oid), &[]), "ok");
    assert!(
        list_as(&b, &mnt).contains(&oid),
        "not listed to B after the ticket"
    );
    // But B never gets a ticket out of the mount for an object B did not put.
    assert_ne!(try_as(&b, "ticket", &mnt.join(&oid), &[]), "ok");
    // Another user still has nothing.
    let c = TempUser::new("c", &[]);
    assert_eq!(try_as(&c, "read", &mnt.join(&oid), &[]), "ENOENT");
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse (makes users): runs in CI, or as root"
)]
fn put_files_belong_to_who_made_them_and_drafts_have_a_per_user_limit() {
    require_fuse("put_files_belong_to_who_made_them_and_drafts_have_a_per_user_limit");
    let conf = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(conf.path(), "put-limit = 1048576\n").expect("write");
    let a = Agent::start_mounted(&["--config", conf.path().to_str().expect("utf-8")]);
    std::fs::set_permissions(&a.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let put = a.mnt().join("put");
    let (b, c) = (TempUser::new("b", &[]), TempUser::new("c", &[]));
    let mine = put.join("b-file");
    assert_eq!(try_as(&b, "create", &mine, &[]), "ok");
    // B's file, once put: B reads it and its ticket; C can do nothing to it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_as(&b, "ticket", &mine, &[]) != "ok" {
        assert!(
            Instant::now() < deadline,
            "B never got the ticket of B's put"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(try_as(&b, "read", &mine, &[]), "ok");
    assert_eq!(try_as(&c, "read", &mine, &[]), "EACCES");
    assert_ne!(try_as(&c, "ticket", &mine, &[]), "ok");
    assert_eq!(try_as(&c, "unlink", &mine, &[]), "EPERM");
    let theirs = put.join("c-name");
    assert_eq!(
        try_as(&c, "rename", &mine, &[theirs.to_str().expect("utf-8")]),
        "EPERM"
    );
    assert_ne!(
        try_as(&c, "create", &mine, &[]),
        "ok",
        "C replaced B's file"
    );
    assert_eq!(try_as(&b, "read", &mine, &[]), "ok", "B's file is gone");
    // The put object is B's to read by OID too, not C's.
    // A draft past B's limit (1 MiB here) is refused; B's own next one fits.
    assert_eq!(
        try_as(&b, "write", &put.join("big"), &["2000000"]),
        "EDQUOT"
    );
    assert_eq!(
        try_as(&b, "truncate", &put.join("sparse"), &["17592186044416"]),
        "EDQUOT"
    );
    assert_eq!(try_as(&b, "write", &put.join("small"), &["1000"]), "ok");
    assert_eq!(try_as(&b, "unlink", &mine, &[]), "ok");
}

#[test]
#[cfg_attr(
    not(privileged),
    ignore = "needs root and /dev/fuse: runs in CI, or as root"
)]
fn a_large_put_file_does_not_hold_up_the_mount() {
    require_fuse("a_large_put_file_does_not_hold_up_the_mount");
    let a = Agent::start_mounted(&[]);
    // Six files of 512 MiB of holes closed one after the other: each put
    // hashes and copies them for a while, and there are more of them than
    // the mount has threads; none of it may run on a FUSE thread.
    for i in 0..6 {
        let f =
            std::fs::File::create(a.mnt().join("put").join(format!("holes-{i}"))).expect("create");
        f.set_len(512 << 20).expect("truncate");
    }
    let started = Instant::now();
    for _ in 0..20 {
        std::fs::read_dir(a.mnt()).expect("ls").for_each(drop);
        std::fs::metadata(a.mnt().join("put")).expect("stat");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the mount answered slowly while a large file was put: {:?}",
        started.elapsed()
    );
}

//! The supervisor: runs one target in a worker process (this same binary,
//! `dot-fuzz worker`), watches its case count and its CPU time, and tells
//! how it ended. A case that takes more than 1 s of the worker's CPU (or
//! 30 s of wall time) is a hang: the worker is killed. A worker that dies
//! (a panic, an abort past the heap limit, a signal) or hangs leaves its
//! case in the case file, which is copied to `<out>/<target>-<what>-<hash>.bin`
//! for `dot-fuzz replay`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::worker::{CaseFile, Limits};
use crate::{Target, alloc};

/// CPU time after which a case is a hang.
pub const HANG_CPU: Duration = Duration::from_secs(1);
/// Wall time after which a case is a hang whatever its CPU.
pub const HANG_WALL: Duration = Duration::from_secs(30);

/// How one target's run went.
#[derive(Debug)]
pub struct Report {
    /// The target.
    pub name: &'static str,
    /// Cases run.
    pub cases: u64,
    /// Wall time of the run.
    pub wall: Duration,
    /// Highest live heap of the worker, in bytes (0 if it died).
    pub peak_heap: u64,
    /// Peak resident set of the worker, in KiB.
    pub max_rss_kib: i64,
    /// `None` if no case failed; else what failed and where the case is.
    pub failure: Option<(String, PathBuf)>,
}

/// Runs `target` in a worker started from `exe`, with the case file and
/// any failing case under `out`.
///
/// # Errors
/// If the worker cannot be started or waited for.
pub fn run_target(exe: &Path, target: &Target, limits: Limits, out: &Path) -> io::Result<Report> {
    std::fs::create_dir_all(out)?;
    let case_path = out.join(format!("{}.case", target.name));
    let file = CaseFile::create(&case_path)?;
    let start = Instant::now();
    let child = Command::new(exe)
        .arg("worker")
        .arg(target.name)
        .arg("--case-file")
        .arg(&case_path)
        .args(["--secs", &limits.secs.to_string()])
        .args(["--cases", &limits.cases.to_string()])
        .args(["--seed", &limits.seed.to_string()])
        .stdin(Stdio::null())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let hang_ticks = HANG_CPU.as_secs() * ticks_per_sec;
    let (mut last, mut mark_cpu, mut mark_wall) = (u64::MAX, 0, Instant::now());
    let mut hang = false;
    let (status, usage) = loop {
        if let Some(done) = wait(pid, false)? {
            break done;
        }
        let cases = file.cases();
        let cpu = cpu_ticks(pid).unwrap_or(mark_cpu);
        if cases != last {
            (last, mark_cpu, mark_wall) = (cases, cpu, Instant::now());
        } else if cpu.saturating_sub(mark_cpu) > hang_ticks || mark_wall.elapsed() > HANG_WALL {
            hang = true;
            // SAFETY: `pid` is our child, not yet waited for.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            match wait(pid, true)? {
                Some(done) => break done,
                None => continue,
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed();
    let failed = if hang {
        Some("hang (a case ran past 1 s of CPU)".to_owned())
    } else if file.status() == alloc::OVER_LIMIT {
        Some("allocation past 256 MiB".to_owned())
    } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        None
    } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 101 {
        Some("panic".to_owned())
    } else if libc::WIFSIGNALED(status) {
        Some(format!("killed by signal {}", libc::WTERMSIG(status)))
    } else {
        Some(format!("exit status {}", libc::WEXITSTATUS(status)))
    };
    let (cases, peak_heap) = (file.cases(), file.peak());
    let failure = match failed {
        None => {
            drop(file);
            let _ = std::fs::remove_file(&case_path);
            None
        }
        Some(what) => {
            let input = file.input();
            let kind = what.split([' ', '(']).next().unwrap_or("failure");
            let kept = out.join(format!("{}-{kind}-{:016x}.bin", target.name, fnv(&input)));
            std::fs::write(&kept, &input)?;
            Some((what, kept))
        }
    };
    Ok(Report {
        name: target.name,
        cases,
        wall,
        peak_heap,
        max_rss_kib: usage.ru_maxrss,
        failure,
    })
}

/// Waits for `pid` (blocking or not): its status and resource usage once
/// it has ended.
fn wait(pid: libc::pid_t, block: bool) -> io::Result<Option<(i32, libc::rusage)>> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: valid pointers to locals; `pid` is our child.
    let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    match r {
        r if r == pid => Ok(Some((status, usage))),
        0 => Ok(None),
        _ => Err(io::Error::last_os_error()),
    }
}

/// User + system CPU ticks of `pid` (from `/proc/PID/stat`).
fn cpu_ticks(pid: libc::pid_t) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    let mut fields = after.split(' ').skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// FNV-1a of a case, to name its file.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

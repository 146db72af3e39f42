//! `dot-fuzz`: runs the fuzz targets of this crate (see `lib.rs` for the
//! layout, docs/fuzzing.md for what each target asserts).
//!
//! - `dot-fuzz list`: the targets and what each asserts.
//! - `dot-fuzz run [TARGET...] [--secs S] [--cases N]`: each target in a
//!   worker process until S seconds or N cases, whichever comes first;
//!   prints the cases run, the peak live heap and resident set per target;
//!   exits 1 if a case failed (panic, hang, allocation past 256 MiB,
//!   crash), its input kept under `--out`.
//! - `dot-fuzz replay TARGET FILE...`: runs kept cases in this process.
//! - `dot-fuzz seeds TARGET DIR`: writes a target's seeds (an AFL++ input
//!   folder).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dot_fuzz::alloc::CountingAlloc;
use dot_fuzz::supervise::run_target;
use dot_fuzz::worker::{self, Limits};
use dot_fuzz::{TARGETS, Target, find};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[derive(Parser)]
#[command(
    name = "dot-fuzz",
    about = "Fuzz targets for every decoder of outside input"
)]
enum Cmd {
    /// Lists the targets and what each asserts.
    List,
    /// Runs targets (all if none is named), each for a time or a number of
    /// cases, whichever comes first.
    Run {
        /// Targets to run.
        targets: Vec<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 300.0)]
        secs: f64,
        /// Cases per target.
        #[arg(long, default_value_t = 10_000_000)]
        cases: u64,
        /// Seed of the case generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Folder for case files and failing cases.
        #[arg(long, default_value = "target/dot-fuzz")]
        out: PathBuf,
    },
    /// Runs the cases in FILEs through TARGET in this process.
    Replay {
        /// The target.
        target: String,
        /// Case files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Writes TARGET's seeds into DIR, one file each.
    Seeds {
        /// The target.
        target: String,
        /// Folder to write to.
        dir: PathBuf,
    },
    /// One target's loop (started by `run`).
    #[command(hide = true)]
    Worker {
        target: String,
        #[arg(long)]
        case_file: PathBuf,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        cases: u64,
        #[arg(long)]
        seed: u64,
    },
}

fn target(name: &str) -> Result<&'static Target, String> {
    find(name).ok_or_else(|| {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        format!("no target {name:?}; targets: {}", names.join(" "))
    })
}

fn main() -> ExitCode {
    match run(Cmd::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dot-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode, String> {
    match cmd {
        Cmd::List => {
            for t in TARGETS {
                println!("{:<16} {}", t.name, t.asserts);
            }
        }
        Cmd::Run {
            targets,
            secs,
            cases,
            seed,
            out,
        } => {
            let chosen: Vec<&Target> = if targets.is_empty() {
                TARGETS.iter().collect()
            } else {
                targets
                    .iter()
                    .map(|n| target(n))
                    .collect::<Result<_, _>>()?
            };
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let limits = Limits { secs, cases, seed };
            println!(
                "{:<16} {:>12} {:>8} {:>10} {:>10} {:>9}  result",
                "target", "cases", "secs", "cases/s", "peak-heap", "max-rss"
            );
            let (mut failed, mut total) = (0, 0);
            for t in chosen {
                let r =
                    run_target(&exe, t, limits, &out).map_err(|e| format!("{}: {e}", t.name))?;
                let secs = r.wall.as_secs_f64();
                let result = match &r.failure {
                    None => "ok".to_owned(),
                    Some((what, case)) => {
                        failed += 1;
                        format!(
                            "FAILED: {what}; replay: dot-fuzz replay {} {}",
                            r.name,
                            case.display()
                        )
                    }
                };
                println!(
                    "{:<16} {:>12} {:>8.1} {:>10.0} {:>9.1}M {:>8.1}M  {result}",
                    r.name,
                    r.cases,
                    secs,
                    r.cases as f64 / secs.max(1e-9),
                    r.peak_heap as f64 / 1048576.0,
                    r.max_rss_kib as f64 / 1024.0,
                );
                total += r.cases;
            }
            println!("total cases: {total}; failed targets: {failed}");
            if failed > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Replay {
            target: name,
            files,
        } => {
            let t = target(&name)?;
            for f in files {
                let data = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                let verdict = if (t.run)(&data) {
                    "accepted"
                } else {
                    "refused"
                };
                println!("{}: {verdict}, no failure", f.display());
            }
        }
        Cmd::Seeds { target: name, dir } => {
            let t = target(&name)?;
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (i, s) in (t.seeds)().iter().enumerate() {
                let p = dir.join(format!("seed-{i:03}"));
                std::fs::write(&p, s).map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        Cmd::Worker {
            target: name,
            case_file,
            secs,
            cases,
            seed,
        } => {
            let t = target(&name)?;
            worker::run(t, &case_file, Limits { secs, cases, seed })
                .map_err(|e| format!("{}: {e}", case_file.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

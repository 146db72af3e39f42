//! `gtc completions SHELL` and `gtc man DIR`: shell completions and man
//! pages made from the command line's own definitions (so they never
//! disagree with `--help`), for packages and for users.

use std::path::Path;

use anyhow::Context;

/// Prints the completion script for `shell` of the command `cmd`.
pub fn completions(shell: clap_complete::Shell, mut cmd: clap::Command) -> anyhow::Result<()> {
    use std::io::Write;
    let name = cmd.get_name().to_owned();
    // Into memory first: the generator panics on a failed write (a closed
    // pipe), where a command should say so and exit.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("writing the completion script")?;
    Ok(())
}

/// Writes `gtc.1` and a page per command (`gtc-get.1`, ...) into `dir`.
pub fn man(dir: &Path, cmd: clap::Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing into {}", dir.display()))?;
    Ok(())
}

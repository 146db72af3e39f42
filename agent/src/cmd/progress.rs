//! The progress bar `gtc get` and `gtc device export` draw on stderr.

use std::io::IsTerminal;

/// A progress bar on stderr when it is a terminal (and not `-q`).
pub fn bar(size: u64) -> Option<indicatif::ProgressBar> {
    if super::quiet() || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(size),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

/// A bar counting files (of a tree) on stderr when it is a terminal (and
/// not `-q`); its length is set as the count becomes known.
pub fn files_bar() -> Option<indicatif::ProgressBar> {
    let bar = bar(0)?;
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files {msg}") {
        bar.set_style(style);
    }
    Some(bar)
}

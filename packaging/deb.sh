#!/usr/bin/env bash
# Builds the Debian package target/debian/gtc_VERSION-1_ARCH.deb: the gtc
# binary, the systemd unit, /etc/dot/gtc.toml (every key commented out),
# man pages and shell completions generated from the binary's own clap
# definitions. Needs cargo-deb (`cargo install cargo-deb --locked`).
#
# What goes in is staged in packaging/out/ (not kept in git).
#
#   bash packaging/deb.sh                        # a release build, then the package
#   GTC=target/debug/gtc bash packaging/deb.sh   # package a binary already built
#   OUT=DIR bash packaging/deb.sh                # the .deb into DIR
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${GTC:-} ]]; then
  cargo build --locked --release -p dot-agent --bin gtc
  GTC=target/release/gtc
fi
out=packaging/out
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
# Debug symbols stay out of the package (binutils' strip, as dh_strip).
strip --strip-debug -o "$out/gtc" "$GTC"
"$GTC" man "$out/man"
"$GTC" completions bash >"$out/completions/gtc.bash"
"$GTC" completions zsh >"$out/completions/_gtc"
"$GTC" completions fish >"$out/completions/gtc.fish"
cargo deb --locked -p dot-agent --no-build -o "${OUT:-target/debian/}"

#!/usr/bin/env bash
# Fuzzes every decoder of outside input (docs/fuzzing.md): each target of
# fuzz/ (`dot-fuzz list`) runs for SECS seconds or CASES cases, whichever
# comes first, one target at a time, under `nice -n 19`. Prints per target
# the cases run, wall seconds, peak live heap and peak RSS; fails if a case
# panicked (a broken property), hung (1 s of CPU), allocated past 256 MiB
# or crashed, and names the kept case (`dot-fuzz replay TARGET FILE`).
#
#   bash bench/fuzz.sh                         # every target, 300 s or 10M cases
#   SECS=3 PROFILE=dev bash bench/fuzz.sh      # the short pass CI runs
#   bash bench/fuzz.sh ticket hint             # some targets
#   ENGINE=afl SECS=300 bash bench/fuzz.sh     # coverage-guided, AFL++
#
# ENGINE: `harness` (default; the stable-toolchain mutation harness of
# fuzz/) or `afl` (AFL++ through cargo-afl, installed from crates.io when
# missing: it builds AFL++ from source; CASES maps to afl-fuzz -E, SECS to
# -V, a hang is a case past 1 s). PROFILE: cargo profile of the build:
# `fuzz` by default (release with debug assertions and overflow checks),
# `dev` in CI (already built by the tests). SEED: the harness's generator seed (default 1; the
# same seed replays the same cases). OUT (default target/dot-fuzz): case
# files, failing cases, AFL++ state.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SECS=${SECS:-300}
CASES=${CASES:-10000000}
SEED=${SEED:-1}
ENGINE=${ENGINE:-harness}
PROFILE=${PROFILE:-fuzz}
tdir=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$tdir/dot-fuzz}
fail() { echo "fuzz.sh: $*" >&2; exit 1; }
case $PROFILE in
  dev) bindir=$tdir/debug ;;
  *) bindir=$tdir/$PROFILE ;;
esac

cargo build -q --profile "$PROFILE" -p dot-fuzz --bin dot-fuzz
fuzz=$bindir/dot-fuzz
if (($#)); then targets=("$@"); else mapfile -t targets < <("$fuzz" list | awk '{ print $1 }'); fi
t0=$(date +%s)

case $ENGINE in
  harness)
    rc=0
    nice -n 19 "$fuzz" run --secs "$SECS" --cases "$CASES" --seed "$SEED" --out "$OUT" \
      "${targets[@]}" || rc=$?
    echo "wall: $(($(date +%s) - t0)) s (SECS=$SECS CASES=$CASES SEED=$SEED PROFILE=$PROFILE)"
    exit "$rc"
    ;;
  afl) ;;
  *) fail "ENGINE must be harness or afl, not '$ENGINE'" ;;
esac

# --- AFL++ -------------------------------------------------------------------
if ! cargo afl --version > /dev/null 2>&1; then
  echo "installing cargo-afl (builds AFL++)" >&2
  cargo install -q cargo-afl
fi
afl_tdir=$tdir/afl   # instrumented builds apart from the normal ones
CARGO_TARGET_DIR=$afl_tdir cargo afl build -q --profile "$PROFILE" -p dot-fuzz --features afl \
  --bin dot-fuzz-afl
case $PROFILE in
  dev) afl_bin=$afl_tdir/debug/dot-fuzz-afl ;;
  *) afl_bin=$afl_tdir/$PROFILE/dot-fuzz-afl ;;
esac
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
stat_of() { awk -v k="$1" -F' *: *' '$1 == k { print $2 }' "$2"; }
# (AFL++ cannot see a persistent-mode target's RSS; the counting allocator
# still aborts a case past 256 MiB of live heap.)
printf '%-16s %12s %8s %10s %8s %6s %12s  %s\n' target execs secs execs/s corpus cover slowest-ms result
failed=0
for t in "${targets[@]}"; do
  dir=$OUT/afl/$t
  rm -rf "$dir"
  "$fuzz" seeds "$t" "$dir/in"
  nice -n 19 cargo afl fuzz -i "$dir/in" -o "$dir/out" -V "$SECS" -E "$CASES" -t 1000 \
    -- "$afl_bin" "$t" > "$dir/afl.log" 2>&1 || { tail -n 20 "$dir/afl.log" >&2; fail "$t: afl-fuzz failed"; }
  s=$dir/out/default/fuzzer_stats
  execs=$(stat_of execs_done "$s")
  secs=$(stat_of run_time "$s")
  crashes=$(stat_of saved_crashes "$s")
  hangs=$(stat_of saved_hangs "$s")
  result=ok
  if ((crashes + hangs)); then
    result="FAILED: $crashes crashes, $hangs hangs in $dir/out/default/{crashes,hangs}"
    failed=$((failed + 1))
  fi
  printf '%-16s %12s %8s %10s %8s %6s %12s  %s\n' "$t" "$execs" "$secs" \
    "$(stat_of execs_per_sec "$s")" "$(stat_of corpus_count "$s")" \
    "$(stat_of bitmap_cvg "$s")" "$(stat_of slowest_exec_ms "$s")" "$result"
done
echo "wall: $(($(date +%s) - t0)) s (ENGINE=afl SECS=$SECS CASES=$CASES); failed targets: $failed"
((failed == 0))

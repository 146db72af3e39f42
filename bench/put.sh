#!/usr/bin/env bash
# Put speed: `put` of a file (by reference, default FastCDC chunker) versus
# one SHA-256 pass over the same file by `openssl dgst -sha256` and by
# `sha256sum`, side by side, hot page cache, median of RUNS runs; then the
# time of a second put of the unchanged file (OID cache: no hashing).
#
#   bash bench/put.sh            # 1 GiB file, 5 runs
#   SIZE_MB=256 RUNS=3 bash bench/put.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-5}
work=$(mktemp -d /var/tmp/dot-bench-put.XXXXXX)
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p dot-store --example put
put=target/release/examples/put
file=$work/object.bin
head -c $((SIZE_MB << 20)) /dev/urandom > "$file"
cat "$file" > /dev/null   # hot page cache

now() { date +%s.%N; }
# time_cmd CMD...: prints wall seconds of one run.
time_cmd() { local t0 t1; t0=$(now); "$@" > /dev/null; t1=$(now); echo "$t1 - $t0" | bc -l; }
median() { sort -g | awk '{a[NR]=$1} END {m=int((NR+1)/2); if (NR%2) print a[m]; else print (a[m]+a[m+1])/2}'; }

declare -a put_t openssl_t sha_t again_t
for _ in $(seq "$RUNS"); do
  # Interleave the tools so drift on a noisy machine hits all of them.
  rm -rf "$work/store"
  put_t+=("$(time_cmd "$put" "$work/store" "$file")")
  again_t+=("$(time_cmd "$put" "$work/store" "$file")")
  openssl_t+=("$(time_cmd openssl dgst -sha256 "$file")")
  sha_t+=("$(time_cmd sha256sum "$file")")
done
# The second put must not have hashed.
"$put" "$work/store" "$file" | awk '$4 != "false" { print "second put hashed the file!"; exit 1 }'

p=$(printf '%s\n' "${put_t[@]}" | median)
o=$(printf '%s\n' "${openssl_t[@]}" | median)
s=$(printf '%s\n' "${sha_t[@]}" | median)
a=$(printf '%s\n' "${again_t[@]}" | median)
mbps() { echo "$SIZE_MB / $1" | bc -l; }
echo
echo "put of a ${SIZE_MB} MiB file, hot cache, median of $RUNS runs (whole processes, wall time)"
printf '%-34s %9s %10s %22s\n' "tool" "seconds" "MiB/s" "put speed / tool speed"
printf '%-34s %9.3f %10.0f %22s\n' "put (FastCDC 16/64/256K, by ref)" "$p" "$(mbps "$p")" "1.00"
printf '%-34s %9.3f %10.0f %22.2f\n' "openssl dgst -sha256" "$o" "$(mbps "$o")" "$(echo "$o / $p" | bc -l)"
printf '%-34s %9.3f %10.0f %22.2f\n' "sha256sum" "$s" "$(mbps "$s")" "$(echo "$s / $p" | bc -l)"
printf '%-34s %9.3f %10s %22s\n' "second put, unchanged file" "$a" "-" "(goal: < 0.050 s)"

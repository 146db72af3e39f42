#!/usr/bin/env bash
# Reads through the FUSE mount of an agent versus `gtc get` and a local file,
# all on 127.0.0.1, median of RUNS interleaved runs (whole processes, wall
# time). Agent A puts a SIZE_MB random file; receiver agent B (its mount on
# $work/mb) is restarted with an empty data dir before each cold measurement:
#   - cold `cat MOUNT_B/<ticket> > out` against cold `gtc get TICKET -o out`;
#   - warm `cat MOUNT_B/<ticket>` of the then complete object against `cat` of
#     the local source file (both to /dev/null, page cache hot for both);
#   - cold random 4 KiB preads (RANDOM_N per run, seeded) through the mount:
#     median and p99 latency, and the chunks A served for them;
#   - cold cat against cold get again with the sender S and receiver L in two
#     network namespaces joined by a veth link shaped to LINK_MBIT (tbf,
#     bench/netbed.sh; LINK_MBIT=0 skips it): the same comparison where the
#     link, not the shared CPU, is what limits the transfer.
#
#   bash bench/fuse.sh                                 # 1 GiB file, 3 runs
#   SIZE_MB=256 RUNS=5 RANDOM_N=500 LINK_MBIT=500 bash bench/fuse.sh
#   GTC=/path/to/gtc bash bench/fuse.sh                # skip the cargo build
#
# Needs root and /dev/fuse; installs bc from Debian when missing, and uses
# python3. It starts two agents on free loopback ports and stops exactly those
# (by PID) on exit, then lazily unmounts whichever of its mounts is left.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
RANDOM_N=${RANDOM_N:-200}
RANDOM_SEED=${RANDOM_SEED:-1}
LINK_MBIT=${LINK_MBIT:-1000}

# --- tools -------------------------------------------------------------------
if ! command -v bc > /dev/null; then
  echo "installing bc" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc > /dev/null
fi
command -v python3 > /dev/null || { echo "fuse.sh: python3 is missing" >&2; exit 1; }
[[ -c /dev/fuse ]] || { echo "fuse.sh: /dev/fuse is missing" >&2; exit 1; }

if [[ -z ${GTC:-} ]]; then
  cargo build --release -q -p dot-agent
  GTC=target/release/gtc
fi
GTC=$(realpath "$GTC")

# --- work dir, cleanup -------------------------------------------------------
work=$(mktemp -d /var/tmp/dot-bench-fuse.XXXXXX)
mounts=("$work/ma" "$work/mb" "$work/ms" "$work/ml")
bed=dotbench-$$
n=$((1 + $$ % 250))   # subnets 10.n.1.0/24 and 10.n.2.0/24
declare -A pids=()   # name -> PID of every process this script started
# alive and stop: bench/lib.sh
mounted() { awk -v d="$1" '$5 == d { f = 1 } END { exit !f }' /proc/self/mountinfo; }
unmount_left() {   # unmount_left DIR: lazily unmount DIR if its agent left it mounted
  if mounted "$1"; then
    echo "fuse.sh: $1 still mounted after its agent stopped: umount -l" >&2
    umount -l "$1" || true
  fi
}
cleanup() {
  local rc=$? name dir
  for name in "${!pids[@]}"; do stop "$name"; done
  for dir in "${mounts[@]}"; do unmount_left "$dir"; done
  bed_down
  if ((rc)); then   # the logs go with the work dir: show their ends first
    log_ends "$work"/*.log
  fi
  # Never descend into a mount that is somehow still there.
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "fuse.sh: $*" >&2; exit 1; }

# --- helpers -----------------------------------------------------------------
# shellcheck source=bench/lib.sh
source bench/lib.sh   # the cd above put us at the repository root
# shellcheck source=bench/netbed.sh
source bench/netbed.sh

# --- data ---------------------------------------------------------------------
file=$work/object.bin
out=$work/out.bin
head -c $((SIZE_MB << 20)) /dev/urandom > "$file"
cat "$file" > /dev/null   # hot page cache

a_port=$(free_port 17520)
b_port=$(free_port 17521)

# --- gtc agents -----------------------------------------------------------------
export RUST_LOG=warn
# start_agent NAME PORT [NAMESPACE [ADVERTISE]]: fresh start with a mount on
# $work/m<NAME>; in NAMESPACE (network only: nsenter keeps the mount
# namespace, so the mount is seen here) listening on all its addresses.
start_agent() {
  local name=$1 port=$2 ns=${3:-} listen=127.0.0.1 pre=() adv=()
  if [[ -n $ns ]]; then
    pre=(nsenter --net="/run/netns/$ns")
    listen=0.0.0.0
  fi
  [[ -z ${4:-} ]] || adv=(--advertise "$4")
  mkdir -p "$work/m$name"
  : > "$work/$name.out"
  "${pre[@]}" "$GTC" agent --data-dir "$work/$name" --socket "$work/$name.sock" \
    --listen "$listen:$port" "${adv[@]}" --mount "$work/m$name" \
    > "$work/$name.out" 2>> "$work/$name.log" &
  pids[$name]=$!
  agent_ready() {
    kill -0 "${pids[$name]}" 2> /dev/null || fail "agent $name exited"
    grep -q '^gtc agent: ready ' "$work/$name.out"
  }
  wait_for "agent $name" 1500 agent_ready
  mounted "$work/m$name" || fail "agent $name is ready but $work/m$name is not mounted"
}
restart_b_cold() {   # B with an empty store and a fresh mount
  stop b
  unmount_left "$work/mb"
  rm -rf --one-file-system "$work/b"
  start_agent b "$b_port"
}
start_agent a "$a_port"
start_agent b "$b_port"
ticket=$(GTC_SOCKET=$work/a.sock "$GTC" put "$file" 2>> "$work/put.log" | tail -n 1)
[[ $ticket == dot1.* ]] || fail "put printed no ticket: $ticket"
obj=$work/mb/$ticket   # the object under B's mount

# --- measurements -------------------------------------------------------------------
check() {   # check WHAT: the output must equal the source
  cmp -s "$out" "$file" || fail "$1: $out differs from $file"
  rm -f "$out"
}
b_idle() {
  GTC_SOCKET=$work/b.sock "$GTC" status --json | grep -q '"transfers":\[\]'
}
chunks_served() {   # chunks_served NAME: peers.chunks_served of that agent
  GTC_SOCKET=$work/$1.sock "$GTC" status --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["peers"]["chunks_served"])'
}
cat_to() { cat "$1" > "$2"; }

# Cold random reads: N preads of 4 KiB at seeded random 4 KiB-aligned
# offsets, each timed; latencies (s) appended to LATS, open time printed.
# The bytes are compared with the source afterwards, outside the timing.
cat > "$work/random_read.py" << 'EOF'
import os, random, sys, time
path, src, n, seed, lats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
size = os.path.getsize(src)
rng = random.Random(seed)
offsets = [rng.randrange(size // 4096) * 4096 for _ in range(n)]
t0 = time.perf_counter()
fd = os.open(path, os.O_RDONLY)
t_open = time.perf_counter() - t0
got, times = [], []
for off in offsets:
    t0 = time.perf_counter()
    b = os.pread(fd, 4096, off)
    times.append(time.perf_counter() - t0)
    got.append(b)
os.close(fd)
with open(src, "rb") as f:
    for off, b in zip(offsets, got):
        if b != os.pread(f.fileno(), 4096, off):
            sys.exit(f"random_read.py: bytes at offset {off} differ from the source")
with open(lats, "a") as f:
    f.writelines(f"{t:.9f}\n" for t in times)
print(f"{t_open:.9f}")
EOF
lats=$work/latencies.txt
: > "$lats"

declare -a cat_t get_t warm_t local_t open_t cat_cpu get_cpu
served=0
# cold CASE [untimed]: B restarted cold, then a cold `cat` through its
# mount (CASE cat) or a cold `gtc get` (CASE get), output checked. Unless
# "untimed", appends the seconds to cat_t / get_t and "B A READER" CPU
# seconds (B until its whole-object check is done) to cat_cpu / get_cpu.
cold() {
  local case=$1 t b0 a0 cmd
  restart_b_cold
  if [[ $case == cat ]]; then
    cmd=(cat_to "$obj" "$out")
  else
    cmd=(env GTC_SOCKET="$work/b.sock" "$GTC" get "$ticket" -o "$out")
  fi
  sync
  b0=$(cpu_secs "${pids[b]}")
  a0=$(cpu_secs "${pids[a]}")
  t=$(time_cpu "${cmd[@]}")
  # B checks the whole OID after handing out the verified chunks; let that
  # finish before the next step.
  wait_for "agent b idle" 3000 b_idle
  local cpu
  cpu="$(echo "$(cpu_secs "${pids[b]}") - $b0" | bc -l) $(echo "$(cpu_secs "${pids[a]}") - $a0" | bc -l) ${t##* }"
  check "cold $case"
  [[ ${2:-} == untimed ]] && return 0
  if [[ $case == cat ]]; then
    cat_t+=("${t%% *}")
    cat_cpu+=("$cpu")
  else
    get_t+=("${t%% *}")
    get_cpu+=("$cpu")
  fi
}
cold_cat() { cold cat "$@"; }
cold_get() { cold get "$@"; }
# One untimed pair first: the first transfers after the put run slower,
# whichever case comes first (seen up to 35%).
cold_cat untimed
cold_get untimed
for run in $(seq "$RUNS"); do
  # Interleave the cases, alternating their order, so drift on a noisy
  # machine hits all of them.
  if ((run % 2)); then
    cold_cat
    cold_get
  else
    cold_get
    cold_cat
  fi

  # Warm cat: B now holds the complete object. One untimed pass each first.
  cat "$obj" > /dev/null || fail "warm cat through the mount failed"
  cat "$file" > /dev/null
  warm_t+=("$(time_cmd cat "$obj")")
  local_t+=("$(time_cmd cat "$file")")

  # Cold random 4 KiB reads through the mount.
  restart_b_cold
  before=$(chunks_served a)
  open_t+=("$(python3 "$work/random_read.py" "$obj" "$file" "$RANDOM_N" \
    $((RANDOM_SEED + run)) "$lats")") || fail "random reads through the mount failed"
  after=$(chunks_served a)
  served=$((served + after - before))
done

# Over a shaped link: S in the sender namespace holds the object, L in the
# receiver namespace is restarted cold before each cat or get.
declare -a link_cat_t link_get_t
if ((LINK_MBIT > 0)); then
  bed_up "$bed" "$n"
  bed_shape "$bed" 1 $((LINK_MBIT * 1000))
  start_agent s 7420 "$bed-s" "10.$n.1.1:7420"
  link_ticket=$(GTC_SOCKET=$work/s.sock "$GTC" put "$file" 2>> "$work/put.log" | tail -n 1)
  [[ $link_ticket == dot1.* ]] || fail "put on S printed no ticket: $link_ticket"
  l_idle() {
    GTC_SOCKET=$work/l.sock "$GTC" status --json | grep -q '"transfers":\[\]'
  }
  restart_l_cold() {
    [[ -z ${pids[l]:-} ]] || stop l
    unmount_left "$work/ml"
    rm -rf --one-file-system "$work/l"
    start_agent l 7420 "$bed-r"
  }
  for run in $(seq "$RUNS"); do
    restart_l_cold
    link_cat_t+=("$(time_cmd cat_to "$work/ml/$link_ticket" "$out")")
    wait_for "agent l idle" 3000 l_idle
    check "cold cat over the link"
    restart_l_cold
    link_get_t+=("$(time_cmd env GTC_SOCKET="$work/l.sock" "$GTC" get "$link_ticket" -o "$out")")
    wait_for "agent l idle" 3000 l_idle
    check "cold gtc get over the link"
  done
fi

c=$(printf '%s\n' "${cat_t[@]}" | median)
g=$(printf '%s\n' "${get_t[@]}" | median)
w=$(printf '%s\n' "${warm_t[@]}" | median)
l=$(printf '%s\n' "${local_t[@]}" | median)
o=$(printf '%s\n' "${open_t[@]}" | median)
reads=$((RANDOM_N * RUNS))
read -r lat_med lat_p99 < <(python3 -c '
import sys
t = sorted(float(x) for x in open(sys.argv[1]))
med = (t[(len(t) - 1) // 2] + t[len(t) // 2]) / 2
p99 = t[min(len(t) - 1, -(-99 * len(t) // 100) - 1)]   # nearest rank
print(f"{med * 1000:.3f} {p99 * 1000:.3f}")' "$lats")

mbps() { echo "$SIZE_MB / $1" | bc -l; }
# cpu_col LINES N: median of column N of the "B A READER" lines, per GiB.
cpu_col() { printf '%s\n' "${@:2}" | awk -v c="$1" '{ print $c }' | median | awk -v s="$SIZE_MB" '{ printf "%.2f", $1 * 1024 / s }'; }
ratio() { echo "$1 / $2" | bc -l; }   # speed of the first / speed of the second = t2 / t1
echo
echo "reads of a ${SIZE_MB} MiB object through the FUSE mount of agent B, A on 127.0.0.1,"
echo "median of $RUNS runs (whole processes, wall time)"
printf '%-44s %9s %10s %24s\n' "case" "seconds" "MiB/s" "speed ratio"
printf '%-44s %9.3f %10.0f %24s\n' "cold cat through mount (B cold)" "$c" "$(mbps "$c")" \
  "$(printf '%.2f mount/get' "$(ratio "$g" "$c")")"
printf '%-44s %9.3f %10.0f %24s\n' "cold gtc get (B cold)" "$g" "$(mbps "$g")" "1.00"
printf '%-44s %9.3f %10.0f %24s\n' "warm cat of a complete object (mount)" "$w" "$(mbps "$w")" \
  "$(printf '%.2f mount/local' "$(ratio "$l" "$w")")"
printf '%-44s %9.3f %10.0f %24s\n' "cat of a local file (page cache)" "$l" "$(mbps "$l")" "1.00"
printf 'cold random 4 KiB reads through mount (B cold): %d reads, median %.3f ms, p99 %.3f ms,\n' \
  "$reads" "$lat_med" "$lat_p99"
printf '  open %.1f ms (median); A served %d chunks for them (%.2f per read)\n' \
  "$(echo "$o * 1000" | bc -l)" "$served" "$(echo "$served / $reads" | bc -l)"
if ((LINK_MBIT > 0)); then
  lc=$(printf '%s\n' "${link_cat_t[@]}" | median)
  lg=$(printf '%s\n' "${link_get_t[@]}" | median)
  printf '%-44s %9.3f %10.0f %24s\n' "cold cat, S to L over ${LINK_MBIT} Mbit/s" "$lc" "$(mbps "$lc")" \
    "$(printf '%.2f mount/get' "$(ratio "$lg" "$lc")")"
  printf '%-44s %9.3f %10.0f %24s\n' "cold gtc get, S to L over ${LINK_MBIT} Mbit/s" "$lg" \
    "$(mbps "$lg")" "1.00"
fi
echo "CPU seconds per GiB of the cold cases (median): receiving agent B (until its whole-object"
echo "check is done), sending agent A, reader (cat or the gtc get client)"
printf '  cold cat: B %s  A %s  cat %s\n' "$(cpu_col 1 "${cat_cpu[@]}")" "$(cpu_col 2 "${cat_cpu[@]}")" \
  "$(cpu_col 3 "${cat_cpu[@]}")"
printf '  cold get: B %s  A %s  get %s\n' "$(cpu_col 1 "${get_cpu[@]}")" "$(cpu_col 2 "${get_cpu[@]}")" \
  "$(cpu_col 3 "${get_cpu[@]}")"
printf 'goal: cold cat >= 0.90x gtc get (now %.2fx); warm cat >= 0.90x local cat (now %.2fx)\n' \
  "$(ratio "$g" "$c")" "$(ratio "$l" "$w")"

echo
echo "reproduce: SIZE_MB=$SIZE_MB RUNS=$RUNS RANDOM_N=$RANDOM_N RANDOM_SEED=$RANDOM_SEED LINK_MBIT=$LINK_MBIT bash bench/fuse.sh"

#!/usr/bin/env bash
# Multipath transfer over two shaped links: the bandwidth rows of Table 2 of
# the DOT paper (NSDI 2006). A sender and a receiver network namespace are
# joined by two veth links, each direction shaped with tbf (bench/netbed.sh,
# docs/testbed.md). For each pair of link rates, a SIZE_MB random object is
# fetched by a cold receiver (restarted on an empty store before every get):
#   - single: from a sender agent that advertises only the fastest link
#     (link 1), so the ticket carries one hint;
#   - multipath: from a sender agent that advertises both links;
#   - ideal: object bytes * 8 / (rate 1 + rate 2), payload only.
# Median of RUNS interleaved runs, whole `gtc get` processes, wall time.
#
#   bash bench/multipath.sh                      # 40 MiB object, 3 runs
#   SIZE_MB=8 RUNS=1 ROWS="100/100 10/1" bash bench/multipath.sh
#   GTC=/path/to/gtc bash bench/multipath.sh     # skip the cargo build
#
# ROWS: link pairs in Mbit/s (default: the paper's 100/100 100/10 10/10
# 10/1 10/0.1). Needs root, ip, tc and nsenter; installs bc from Debian when
# missing. It makes namespaces dotbench-PID-s/-r, starts three agents in
# them and stops exactly those (by PID) on exit, then deletes the
# namespaces (which removes the links).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-40}
RUNS=${RUNS:-3}
ROWS=${ROWS:-"100/100 100/10 10/10 10/1 10/0.1"}

# --- tools -------------------------------------------------------------------
if ! command -v bc > /dev/null; then
  echo "installing bc" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc > /dev/null
fi
for t in ip tc nsenter; do
  command -v "$t" > /dev/null || { echo "multipath.sh: $t is missing" >&2; exit 1; }
done
((EUID == 0)) || { echo "multipath.sh: needs root (network namespaces)" >&2; exit 1; }

if [[ -z ${GTC:-} ]]; then
  cargo build --release -q -p dot-agent
  GTC=${CARGO_TARGET_DIR:-target}/release/gtc
fi
GTC=$(realpath "$GTC")

# --- work dir, cleanup -------------------------------------------------------
work=$(mktemp -d /var/tmp/dot-bench-multipath.XXXXXX)
bed=dotbench-$$
n=$((1 + $$ % 250))   # subnets 10.n.1.0/24 and 10.n.2.0/24
declare -A pids=()   # name -> PID of every process this script started
# alive and stop: bench/lib.sh
cleanup() {
  local rc=$? name
  for name in "${!pids[@]}"; do stop "$name"; done
  bed_down
  if ((rc)); then   # the logs go with the work dir: show their ends first
    log_ends "$work"/*.log
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "multipath.sh: $*" >&2; exit 1; }

# --- helpers -----------------------------------------------------------------
# shellcheck source=bench/lib.sh
source bench/lib.sh   # the cd above put us at the repository root
# shellcheck source=bench/netbed.sh
source bench/netbed.sh

# --- data, bed ----------------------------------------------------------------
file=$work/object.bin
out=$work/out.bin
head -c $((SIZE_MB << 20)) /dev/urandom > "$file"
bytes=$(stat -c %s "$file")
cat "$file" > /dev/null   # hot page cache
bed_up "$bed" "$n"

# --- gtc agents -----------------------------------------------------------------
# In the sender namespace: agent "one" advertises link 1 only, agent "both"
# both links; each holds the object (a put by reference: no copy). In the
# receiver namespace: agent "r", restarted cold before every get. Ports are
# the namespaces' own.
export RUST_LOG=warn
start_agent() {   # start_agent NAME NAMESPACE PORT [ADVERTISE...]: fresh start; waits for the ready line
  local name=$1 ns=$2 port=$3 a
  shift 3
  local adv=()
  for a in "$@"; do adv+=(--advertise "$a"); done
  : > "$work/$name.out"
  # nsenter switches only the network namespace and execs gtc (same PID).
  nsenter --net="/run/netns/$ns" "$GTC" agent --no-mount --data-dir "$work/$name" \
    --socket "$work/$name.sock" --listen "0.0.0.0:$port" "${adv[@]}" \
    > "$work/$name.out" 2>> "$work/$name.log" &
  pids[$name]=$!
  agent_ready() {
    kill -0 "${pids[$name]}" 2> /dev/null || fail "agent $name exited"
    grep -q '^gtc agent: ready ' "$work/$name.out"
  }
  wait_for "agent $name" 1500 agent_ready
}
start_agent one "$bed-s" 7420 "10.$n.1.1:7420"
start_agent both "$bed-s" 7421 "10.$n.1.1:7421" "10.$n.2.1:7421"
start_agent r "$bed-r" 7420
put_ticket() {   # put_ticket NAME: ticket of the object put on agent NAME
  local t
  t=$(GTC_SOCKET=$work/$1.sock "$GTC" put "$file" 2>> "$work/put.log" | tail -n 1)
  [[ $t == dot1.* ]] || fail "put on $1 printed no ticket: $t"
  echo "$t"
}
ticket_one=$(put_ticket one)
ticket_both=$(put_ticket both)

# --- measurements -------------------------------------------------------------------
check() {   # check WHAT: the output must equal the source
  cmp -s "$out" "$file" || fail "$1: $out differs from $file"
  rm -f "$out"
}
r_idle() {
  GTC_SOCKET=$work/r.sock "$GTC" status --json | grep -q '"transfers":\[\]'
}
# cold_get TICKET WHAT: seconds of a get by a cold receiver, into $got. (Not
# run in $(...): it restarts agent r, whose PID this shell must keep.)
cold_get() {
  stop r
  rm -rf "$work/r"
  start_agent r "$bed-r" 7420
  got=$(time_cmd env GTC_SOCKET="$work/r.sock" "$GTC" get "$1" -o "$out")
  # r checks the whole OID after handing out the verified chunks; let that
  # finish before the next get.
  wait_for "agent r idle" 3000 r_idle
  check "$2"
}
kbit() { echo "$1 * 1000 / 1" | bc; }   # kbit MBIT: Mbit/s (maybe fractional) to kbit/s

declare -A single multi ideal
for row in $ROWS; do
  r1=${row%/*} r2=${row#*/}
  bed_shape "$bed" 1 "$(kbit "$r1")"
  bed_shape "$bed" 2 "$(kbit "$r2")"
  s_t=() m_t=()
  for _ in $(seq "$RUNS"); do
    # Interleaved, so drift on a noisy machine hits both.
    cold_get "$ticket_one" "single $row"
    s_t+=("$got")
    cold_get "$ticket_both" "multipath $row"
    m_t+=("$got")
  done
  single[$row]=$(printf '%s\n' "${s_t[@]}" | median)
  multi[$row]=$(printf '%s\n' "${m_t[@]}" | median)
  ideal[$row]=$(echo "$bytes * 8 / (($r1 + $r2) * 1000000)" | bc -l)
  printf 'row %-8s single %8.3f s  multipath %8.3f s  ideal %8.3f s\n' \
    "$row" "${single[$row]}" "${multi[$row]}" "${ideal[$row]}" >&2
done

paper() {   # the paper's figure for a row (Table 2), if it gives one
  case $1 in
    100/100) echo "1.90 s multipath, 3.59 s single" ;;
    10/0.1) echo "multipath no slower than single" ;;
    *) echo "-" ;;
  esac
}
echo
echo "cold gtc get of a ${SIZE_MB} MiB object ($bytes bytes; the paper's is 40 MB) over two shaped"
echo "links (tbf both ways), median of $RUNS runs (whole processes, wall time); single = the"
echo "sender advertises only link 1, multipath = both; ideal = bytes * 8 / (rate 1 + rate 2)"
printf '%-10s %9s %12s %9s %16s %17s   %s\n' "links" "single s" "multipath s" "ideal s" \
  "multipath/ideal" "multipath/single" "paper (Table 2)"
goal_ok=1
for row in $ROWS; do
  mi=$(echo "${multi[$row]} / ${ideal[$row]}" | bc -l)
  ms=$(echo "${multi[$row]} / ${single[$row]}" | bc -l)
  printf '%-10s %9.3f %12.3f %9.3f %16.2f %17.2f   %s\n' "$row" "${single[$row]}" \
    "${multi[$row]}" "${ideal[$row]}" "$mi" "$ms" "$(paper "$row")"
  if (($(echo "$mi > 1.1 || $ms > 1" | bc -l))); then goal_ok=0; fi
done
if ((goal_ok)); then verdict=met; else verdict="NOT met"; fi
echo "goal: multipath <= 1.1x ideal and <= single on every row ($verdict)"

echo
echo "reproduce: SIZE_MB=$SIZE_MB RUNS=$RUNS ROWS=\"$ROWS\" bash bench/multipath.sh"

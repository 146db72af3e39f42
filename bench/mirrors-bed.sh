#!/usr/bin/env bash
# Mirrors on the shaped test bed: every source behind a link of its own.
#
#   mb-m1 (nginx, mirror 1)  10.N.1.1 ==== RATE ====  10.N.1.2
#   mb-m2 (nginx, mirror 2)  10.N.2.1 ==== RATE ====  10.N.2.2   mb-r (receiver)
#   mb-s  (sending agent)    10.N.3.1 ==== RATE ====  10.N.3.2
#
# Each link is a veth pair shaped both ways by a token bucket (tbf, the
# parameters of bench/netbed.sh). The sender puts a SIZE_MB random object
# and publishes it to one folder both nginx serve (with the plain file
# beside it, for aria2c). Side by side, median of RUNS interleaved runs,
# each get by a fresh receiving agent:
#   - aria2c from the two mirrors (the plain file, split across both);
#   - gtc get from the two mirrors; from both and the sender;
#   - then mirror 1 slowed to a tenth of RATE: gtc get from all three,
#     against gtc get from mirror 2 and the sender (going without it), and
#     aria2c from both mirrors.
# Each against the ideal time: the object at the summed rate of its sources.
# Goals (issue "Beyond one sender"): three sources within 1.1x of the
# ideal and faster than aria2c from two; the slowed mirror costing at most
# 10% against going without it.
#
#   bash bench/mirrors-bed.sh                   # 256 MiB, 100 Mbit/s, 3 runs
#   SIZE_MB=64 RUNS=1 RATE=50 bash bench/mirrors-bed.sh
#   GTC=/path/to/gtc bash bench/mirrors-bed.sh  # skip the cargo build
#
# Installs nginx, aria2 and bc from Debian when missing; needs root, ip, tc
# and nsenter. Starts its own nginx and agents and stops exactly those (by
# PID) on exit, with the namespaces.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-256}
RUNS=${RUNS:-3}
RATE=${RATE:-100}
NET=${NET:-234}

fail() { echo "mirrors-bed.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || fail "needs root (namespaces)"
# shellcheck source=bench/lib.sh
source bench/lib.sh
# shellcheck source=bench/netbed.sh
source bench/netbed.sh

missing=()
[[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v aria2c > /dev/null || missing+=(aria2)
command -v bc > /dev/null || missing+=(bc)
apt_install "${missing[@]}"
gtc_binary

work=$(mktemp -d /var/tmp/dot-bench-mirrors-bed.XXXXXX)
declare -A pids=()
made=()
cleanup() {
  local rc=$? name ns
  for name in "${!pids[@]}"; do stop "$name"; done
  ((rc == 0)) || log_ends "$work"/*.log "$work"/nginx-*/error.log
  for ns in "${made[@]}"; do ip netns del "$ns" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export TIME_LOG=$work/tools.log RUST_LOG=warn

# --- the bed: three sources, each on its own link to the receiver -------------
R=mb-r
ip netns add "$R" && made+=("$R")
ip -n "$R" link set lo up
sources=(m1 m2 s)
for i in 1 2 3; do
  ns=mb-${sources[i - 1]}
  ip netns add "$ns" && made+=("$ns")
  ip -n "$ns" link set lo up
  ip link add name "x$i" netns "$ns" type veth peer name "y$i" netns "$R"
  ip -n "$ns" addr add "10.$NET.$i.1/24" dev "x$i"
  ip -n "$R" addr add "10.$NET.$i.2/24" dev "y$i"
  ip -n "$ns" link set "x$i" up
  ip -n "$R" link set "y$i" up
done
shape() {   # shape LINK MBIT: both ends of link LINK (1-3)
  local burst limit ns=mb-${sources[$1 - 1]}
  read -r burst limit < <(tbf_params $(($2 * 1000)))
  tc -n "$ns" qdisc replace dev "x$1" root tbf rate "$2mbit" burst "$burst" limit "$limit"
  tc -n "$R" qdisc replace dev "y$1" root tbf rate "$2mbit" burst "$burst" limit "$limit"
}
for i in 1 2 3; do shape "$i" "$RATE"; done

# --- the object, put and published; two nginx serve the folder ----------------
www=$work/www
mkdir -p "$www"
file=$www/object.bin
out=$work/out.bin
head -c $((SIZE_MB << 20)) /dev/urandom > "$file"
for i in 1 2; do
  d=$work/nginx-$i
  nginx_conf "$d" "10.$NET.$i.1:80" "$www"
  nsenter --net="/run/netns/mb-m$i" /usr/sbin/nginx -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" > "$work/nginx-$i.log" 2>&1 &
  pids[nginx$i]=$!
  up() { nsenter --net="/run/netns/$R" bash -c "(exec 3<> /dev/tcp/10.$NET.$1.1/80)" 2> /dev/null; }
  wait_for "nginx $i" 1500 up "$i"
done
m1=http://10.$NET.1.1/
m2=http://10.$NET.2.1/
sender=10.$NET.3.1:7420

start_agent() {   # start_agent NAME NS ADDR: a fresh agent, no mount
  local name=$1 ns=$2 addr=$3
  rm -rf "${work:?}/$name"
  : > "$work/$name.out"
  nsenter --net="/run/netns/$ns" "$GTC" agent --no-mount --data-dir "$work/$name" --socket "$work/$name.sock" \
    --listen "$addr" --advertise "$addr" > "$work/$name.out" 2>> "$work/$name.log" &
  pids[$name]=$!
  agent_ready() {
    alive "${pids[$name]}" || fail "agent $name exited"
    grep -q '^gtc agent: ready ' "$work/$name.out"
  }
  wait_for "agent $name" 1500 agent_ready
}
idle() { GTC_SOCKET=$work/$1.sock "$GTC" status --json | grep -q '"transfers":\[\]'; }

start_agent a mb-s "$sender"
ticket=$(GTC_SOCKET=$work/a.sock "$GTC" put "$file" | tail -n 1)
GTC_SOCKET=$work/a.sock "$GTC" -q publish "$ticket" "$www" --url "$m1" > /dev/null
cat "$file" "$www"/.dot/chunks/*/* > /dev/null   # in the page cache

# --- one measurement --------------------------------------------------------------
# gtc_get KEY HINT...: a fresh receiver gets the object from exactly HINTs.
gtc_get() {
  local key=$1 h args=()
  shift
  for h in "$@"; do args+=(--hint "$h"); done
  stop b 2> /dev/null || true
  start_agent b "$R" "10.$NET.1.2:7420"
  t=$(time_cpu env GTC_SOCKET="$work/b.sock" "$GTC" get "$ticket" "${args[@]}" -o "$out")
  wait_for "agent b idle" 3000 idle b
  cmp -s "$out" "$file" || fail "$key: the copy differs"
  rm -f "$out"
  echo "${t%% *}" >> "$work/$key.txt"
}
aria() {   # aria KEY URL...: aria2c splits the plain file across the URLs
  local key=$1
  shift
  t=$(time_cpu nsenter --net="/run/netns/$R" aria2c -q --allow-overwrite=true --file-allocation=none \
    -x 4 -s 8 -k 1M -d "$work" -o out.bin "${@/%//object.bin}")
  cmp -s "$out" "$file" || fail "$key: the copy differs"
  rm -f "$out"
  echo "${t%% *}" >> "$work/$key.txt"
}

for run in $(seq 1 "$RUNS"); do
  echo "run $run of $RUNS at $RATE Mbit/s a link ..." >&2
  aria aria-2 "${m1%/}" "${m2%/}"
  gtc_get gtc-2 "$m1" "$m2"
  gtc_get gtc-3 "$m1" "$m2" "$sender"
done
slow=$((RATE / 10))
shape 1 "$slow"
for run in $(seq 1 "$RUNS"); do
  echo "run $run of $RUNS, mirror 1 at $slow Mbit/s ..." >&2
  aria aria-slow "${m1%/}" "${m2%/}"
  gtc_get gtc-slow "$m1" "$m2" "$sender"
  gtc_get gtc-without "$m2" "$sender"
done

# --- report ----------------------------------------------------------------------------
ideal() { echo "$SIZE_MB * 1048576 * 8 / ($1 * 1000000)" | bc -l; }
med() { median < "$work/$1.txt"; }
row() {   # row LABEL KEY IDEAL_MBIT
  local w i
  w=$(med "$2")
  i=$(ideal "$3")
  printf '%-46s %8.2f %8.2f %8.3f\n' "$1" "$w" "$i" "$(echo "$w / $i" | bc -l)"
}
echo
echo "mirrors on the test bed, $(date +%F): a $SIZE_MB MiB object, each source behind its own $RATE Mbit/s link; medians of $RUNS runs"
printf '%-46s %8s %8s %8s\n' case seconds ideal "x ideal"
row "aria2c from two mirrors" aria-2 $((2 * RATE))
row "gtc get from two mirrors" gtc-2 $((2 * RATE))
row "gtc get from two mirrors and the sender" gtc-3 $((3 * RATE))
row "mirror 1 at $slow Mbit/s: aria2c from two" aria-slow $((RATE + slow))
row "mirror 1 at $slow Mbit/s: gtc get from three" gtc-slow $((2 * RATE + slow))
row "gtc get from mirror 2 and the sender" gtc-without $((2 * RATE))
echo
echo "gtc from three against aria2c from two: $(echo "$(med gtc-3) / $(med aria-2)" | bc -l | cut -c1-5)x the time"
echo "the slowed mirror against going without it: $(echo "$(med gtc-slow) / $(med gtc-without)" | bc -l | cut -c1-5)x the time"
echo "reproduce: SIZE_MB=$SIZE_MB RUNS=$RUNS RATE=$RATE bash bench/mirrors-bed.sh"

#!/usr/bin/env bash
# Mail through DOT: the paper's Tables 3 (bytes on the wire) and 4 (time)
# on this machine. A sending Postfix in namespace mail-s relays to a
# receiving Postfix in namespace mail-r over one veth link; the corpus
# (the SpamAssassin public corpus, 6,046 messages, in arrival order) is
# replayed through each mode, side by side in one run:
#
#   plain      Postfix to Postfix, plain SMTP over the link
#   body-T     outbound gateway -> inbound gateway (docs/mail.md): headers
#              inline, the body by ticket when it is at least T bytes
#   whole-T    the whole message by ticket when it is at least T bytes
#
# Bytes on the wire are the link's counters (both directions, every byte:
# SMTP, the agents' TLS link, TCP/IP headers), so they include all of DOT's
# overhead. Every delivery is checked (tests/mail/corpus.py verify: every
# message exactly once, as Postfix alone would deliver it). Then the
# workload that made the paper's point: one real 2 MiB attachment carried
# by ATTACH_N otherwise different messages.
#
# Each mode runs RUNS times (interleaved, medians reported: this machine is
# noisy), with the CPU seconds the whole machine spent meanwhile.
#
#   bash bench/mail.sh
#   N=500 MODES="plain body-0" bash bench/mail.sh     # fewer messages, modes
#   RUNS=1 bash bench/mail.sh                         # one run of each
#   RATE_MBIT=100 bash bench/mail.sh                  # shape the link (tbf)
#   GTC=/path/to/gtc bash bench/mail.sh               # skip the cargo build
#
# Installs postfix, npm, python3 and bc from Debian when missing; needs
# root, ip, tc and nsenter. Starts its own Postfix instances, gateways and
# agents, and stops exactly those on exit, with the namespaces.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
N=${N:-6046}
RUNS=${RUNS:-3}
MODES=${MODES:-"plain body-0 body-4096 body-8192 body-16384 whole-0"}
ATTACH_N=${ATTACH_N:-20}
ATTACH_MODES=${ATTACH_MODES:-"plain body-8192 whole-8192"}
RATE_MBIT=${RATE_MBIT:-}
BED=${BED:-mail}
NET=${NET:-231}

fail() { echo "mail.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || fail "needs root (Postfix, network namespaces)"
# shellcheck source=bench/lib.sh
source bench/lib.sh
# shellcheck source=bench/netbed.sh
source bench/netbed.sh

# --- tools -------------------------------------------------------------------
missing=()
[[ -x /usr/sbin/postfix ]] || missing+=(postfix)
command -v npm > /dev/null || missing+=(npm)
command -v python3 > /dev/null || missing+=(python3)
command -v bc > /dev/null || missing+=(bc)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  # "No configuration": no system Postfix is set up or started.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
fi
if [[ -z ${GTC:-} ]]; then
  cargo build --release -q -p dot-agent
  GTC=target/release/gtc
fi
GTC=$(realpath "$GTC")
PF=$(realpath tests/mail/postfix-instance.sh)
corpus=$(bash tests/mail/fetch-corpus.sh)

# --- work dir, namespaces, cleanup ---------------------------------------------
work=$(mktemp -d /var/tmp/dot-bench-mail.XXXXXX)
chmod 755 "$work"   # virtual(8) delivers as nobody: every parent o+x
declare -A pids=()
instances=()
cleanup() {
  local rc=$? name d
  for name in "${!pids[@]}"; do stop "$name"; done
  for d in "${instances[@]}"; do bash "$PF" stop "$d" > /dev/null 2>&1 || true; done
  bed_down
  if ((rc)); then log_ends "$work"/*/*.log "$work"/*/*/maillog; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
S=$BED-s
R=$BED-r
SIP=10.$NET.1.1
RIP=10.$NET.1.2
bed_up "$BED" "$NET"
bed_link "$BED" 2 down   # one link
if [[ -n $RATE_MBIT ]]; then bed_shape "$BED" 1 $((RATE_MBIT * 1000)); fi
in_s() { nsenter --net="/run/netns/$S" "$@"; }
in_r() { nsenter --net="/run/netns/$R" "$@"; }
busy_ticks() {   # CPU ticks the whole machine was busy (user, nice, system, irq, softirq)
  awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}
wire_bytes() {   # both directions of the link, at the sender's end
  ip netns exec "$S" sh -c 'echo $(( $(cat /sys/class/net/s1/statistics/tx_bytes) + $(cat /sys/class/net/s1/statistics/rx_bytes) ))'
}

# poll WHAT SECONDS CMD...: CMD every 0.2 s until it succeeds (counting a
# Maildir of thousands of files is too dear for wait_for's 20 ms).
poll() {
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" && return 0
    sleep 0.2
  done
  fail "$what: not after $secs s"
}

# --- one case ------------------------------------------------------------------
start_agent() {   # start_agent DIR NAME NS IP: an agent listening on IP:7420
  local d=$1 name=$2 ns=$3 ip=$4
  nsenter --net="/run/netns/$ns" "$GTC" agent --no-mount --data-dir "$d/$name" \
    --socket "$d/$name.sock" --listen "$ip:7420" --advertise "$ip:7420" \
    > "$d/$name.out" 2>> "$d/$name.log" &
  pids[$name]=$!
  agent_ready() {
    alive "${pids[$name]}" || fail "agent $name exited"
    grep -q '^gtc agent: ready ' "$d/$name.out"
  }
  wait_for "agent $name" 1500 agent_ready
}
start_gateway() {   # start_gateway DIR NAME NS SIDE LISTEN TO SOCKET FLAGS...
  local d=$1 name=$2 ns=$3 side=$4 listen=$5 to=$6 socket=$7
  shift 7
  nsenter --net="/run/netns/$ns" "$GTC" smtp "$side" --listen "$listen" --to "$to" \
    --socket "$socket" --name "$name.$BED.test" "$@" 2>> "$d/$name.log" &
  pids[$name]=$!
  gw_ready() {
    alive "${pids[$name]}" || fail "gateway $name exited"
    grep -q 'smtp gateway ready' "$d/$name.log"
  }
  wait_for "gateway $name" 1500 gw_ready
}
stop_case() {
  local name
  for name in "${!pids[@]}"; do stop "$name"; done
  for d in "${instances[@]}"; do bash "$PF" stop "$d" > /dev/null 2>&1 || true; done
  instances=()
}
# run_case NAME MODE SENT_DIR: replays SENT_DIR/*.eml; sets case_wall,
# case_bytes, case_tickets.
run_case() {
  local name=$1 mode=$2 sent=$3 d n t0 t1 b0 b1 flags=() above
  d=$work/$name
  mkdir -p "$d"
  n=$(find "$sent" -maxdepth 1 -name '*.eml' | wc -l)
  if [[ $mode == plain ]]; then
    PF_LISTEN=$RIP PF_INET_INTERFACES=all in_r bash "$PF" start "$d/rcv" 25 > /dev/null
    instances+=("$d/rcv")
    PF_INET_INTERFACES=all in_s bash "$PF" start "$d/snd" 2526 "$RIP:25" > /dev/null
    instances+=("$d/snd")
  else
    above=${mode#*-}
    flags=(--dot-above "$above")
    [[ $mode == whole-* ]] && flags+=(--whole)
    start_agent "$d" a "$S" "$SIP"
    start_agent "$d" b "$R" "$RIP"
    in_r bash "$PF" start "$d/rcv" 2525 > /dev/null
    instances+=("$d/rcv")
    start_gateway "$d" inbound "$R" inbound "$RIP:25" 127.0.0.1:2525 "$d/b.sock"
    start_gateway "$d" outbound "$S" outbound 127.0.0.1:10025 "$RIP:25" "$d/a.sock" "${flags[@]}"
    in_s bash "$PF" start "$d/snd" 2526 127.0.0.1:10025 > /dev/null
    instances+=("$d/snd")
  fi
  b0=$(wire_bytes)
  c0=$(busy_ticks)
  t0=$(now)
  find "$sent" -maxdepth 1 -name '*.eml' | sort \
    | xargs -r nsenter --net="/run/netns/$S" bash "$PF" send "$d/snd" a@snd.test user@rcv.test > /dev/null \
    || fail "$name: the sending Postfix refused a message"
  # Counted without a process (a glob): the polling must not load the
  # machine it measures.
  delivered() {
    local f
    shopt -s nullglob
    f=("$d/rcv/mail/rcv/new/"* "$d/rcv/mail/rcv/cur/"*)
    shopt -u nullglob
    ((${#f[@]} >= n))
  }
  poll "$name: $n deliveries" 900 delivered
  t1=$(now)
  c1=$(busy_ticks)
  queue_empty() { [[ $(bash "$PF" queued "$d/snd") == 0 ]]; }
  poll "$name: the sender's queue to empty" 60 queue_empty
  b1=$(wire_bytes)
  python3 tests/mail/corpus.py verify "$sent" "$d/rcv/mail/rcv" > "$d/verify.txt" \
    || { cat "$d/verify.txt" >&2; fail "$name: not every message arrived exactly once"; }
  case_wall=$(echo "$t1 - $t0" | bc -l)
  case_cpu=$(echo "($c1 - $c0) / $CLK_TCK" | bc -l)
  case_bytes=$((b1 - b0))
  case_tickets=0
  [[ -f $d/outbound.log ]] && case_tickets=$(grep -c 'message sent by ticket' "$d/outbound.log" || true)
  stop_case
}

# --- the corpus ------------------------------------------------------------------
sent=$work/corpus
mkdir -p "$sent"
for i in $(seq 1 "$N"); do ln -s "$corpus/$(printf %05d "$i").eml" "$sent/"; done
corpus_bytes=$(cat "$sent"/*.eml | wc -c)
declare -A wall bytes tickets cpu
# runs MODES SENT PREFIX: RUNS interleaved runs of each mode; medians into
# the arrays named PREFIX{wall,bytes,tickets,cpu}.
runs() {
  local modes=$1 src=$2 p=$3 r m
  local -n W=${p}wall B=${p}bytes T=${p}tickets C=${p}cpu
  declare -A ws=() bs=() cs=()
  for ((r = 1; r <= RUNS; r++)); do
    for m in $modes; do
      echo "$p$m, run $r of $RUNS ..." >&2
      run_case "$p$m-$r" "$m" "$src"
      ws[$m]+="$case_wall " bs[$m]+="$case_bytes " cs[$m]+="$case_cpu "
      T[$m]=$case_tickets
    done
  done
  for m in $modes; do
    W[$m]=$(printf '%s\n' ${ws[$m]} | median)
    B[$m]=$(printf '%s\n' ${bs[$m]} | median)
    C[$m]=$(printf '%s\n' ${cs[$m]} | median)
  done
}
runs "$MODES" "$sent" ""

# --- one attachment, many messages ---------------------------------------------------
att=$work/attach
python3 - "$corpus" "$att" "$ATTACH_N" << 'PY'
# ATTACH_N messages: each its own headers and text (a corpus message's
# body), all carrying the same real 2 MiB attachment (1.5 MiB of a shared
# library of this machine, base64 as a mail client sends it).
import email.message, email.policy, glob, os, sys
corpus, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(out, exist_ok=True)
lib = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/libcrypto.so.*") + glob.glob("/usr/lib/*/libc.so.6"))[0]
data = open(lib, "rb").read()[: 3 << 19]
for i in range(n):
    text = open(os.path.join(corpus, "%05d.eml" % (i + 1)), "rb").read()
    body = text.split(b"\n\n", 1)[-1].decode("latin-1")[:4000]
    m = email.message.EmailMessage(policy=email.policy.SMTP)
    m["From"] = "sender%d@snd.test" % i
    m["To"] = "user@rcv.test"
    m["Subject"] = "report, copy %d" % i
    m["Message-ID"] = "<att-%d@snd.test>" % i
    m.set_content(body)
    m.add_attachment(data, maintype="application", subtype="octet-stream", filename="report.bin")
    open(os.path.join(out, "%05d.eml" % (i + 1)), "wb").write(m.as_bytes())
PY
attach_bytes=$(cat "$att"/*.eml | wc -c)
declare -A awall abytes atickets acpu
runs "$ATTACH_MODES" "$att" a

# --- report ------------------------------------------------------------------------------
table() {   # table TITLE MESSAGES SIZE MODES PREFIX (of the arrays runs filled)
  local title=$1 msgs=$2 size=$3 modes=$4 m
  local -n w=${5}wall b=${5}bytes tk=${5}tickets c=${5}cpu
  printf '\n%s: %s messages, %s bytes of messages\n' "$title" "$msgs" "$size"
  printf '%-12s %10s %12s %10s %10s %10s %10s\n' mode seconds "wire bytes" "bytes x" "time x" "CPU s" "by ticket"
  for m in $modes; do
    local bx=- tx=-
    if [[ -n ${b[plain]:-} ]]; then
      bx=$(printf '%.3f' "$(echo "${b[$m]} / ${b[plain]}" | bc -l)")
      tx=$(printf '%.3f' "$(echo "${w[$m]} / ${w[plain]}" | bc -l)")
    fi
    printf '%-12s %10.2f %12.0f %10s %10s %10.1f %10s\n' "$m" "${w[$m]}" "${b[$m]}" "$bx" "$tx" "${c[$m]}" "${tk[$m]}"
  done
}
echo
echo "mail through DOT, $(date -u +%Y-%m-%d), link: ${RATE_MBIT:+$RATE_MBIT Mbit/s tbf}${RATE_MBIT:-veth, unshaped}"
echo "(medians of $RUNS runs; bytes x, time x: against plain SMTP; CPU s: the whole machine,"
echo " busy while the messages went through; every message verified delivered exactly once)"
table "corpus (SpamAssassin, arrival order)" "$N" "$corpus_bytes" "$MODES" ""
table "one 2 MiB attachment in $ATTACH_N messages" "$ATTACH_N" "$attach_bytes" "$ATTACH_MODES" a
echo
echo "reproduce: N=$N RUNS=$RUNS MODES=\"$MODES\" ATTACH_N=$ATTACH_N ATTACH_MODES=\"$ATTACH_MODES\"${RATE_MBIT:+ RATE_MBIT=$RATE_MBIT} bash bench/mail.sh"

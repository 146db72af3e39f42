#!/usr/bin/env bash
# Where the CPU of a received GiB goes: a cold `gtc get` of a SIZE_MB random
# file against curl from nginx (sendfile), side by side, median of RUNS
# interleaved runs, `sync` before each tool, the outputs and both agents'
# stores in one work dir (one filesystem). For each tool: wall seconds and
# the CPU seconds per GiB (user + system, from /proc/PID/stat and the
# shell's rusage) of every process taking part:
#   - gtc: the receiving agent B (restarted with an empty store before each
#     run; counted from the get's start until its whole-object check is
#     done), the sending agent A, and the `gtc get` client;
#   - curl: curl itself and nginx (master and worker).
# Then the same comparison over a veth link between two network namespaces
# shaped to LINK_MBIT (tbf, bench/netbed.sh; LINK_MBIT=0 skips it): agent S
# and nginx in the sender namespace, agent L and the clients in the
# receiver namespace.
#
# DURABLE says how the receiving agent's store runs: `on` (the agent's
# default: received chunks flushed to disk before they are recorded), `off`
# (started with a config file holding `durable = false`), or `both` (the
# default: a cold get of each kind in every run, interleaved, each reported
# on its own lines). The sender holds the file by reference either way.
#
#   bash bench/cpu.sh                              # 1 GiB, 7 runs, 1000 Mbit/s
#   SIZE_MB=256 RUNS=3 LINK_MBIT=0 bash bench/cpu.sh
#   GTC=/path/to/gtc bash bench/cpu.sh             # skip the cargo build
#   DURABLE=off bash bench/cpu.sh                  # only a non-durable receiver
#
# Needs root for the link part; installs nginx, curl and bc from Debian when
# missing. It starts its own nginx and agents and stops exactly those (by
# PID) on exit.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-7}
LINK_MBIT=${LINK_MBIT:-1000}
DURABLE=${DURABLE:-both}
case $DURABLE in
  on) modes=(durable) ;;
  off) modes=(not-durable) ;;
  both) modes=(durable not-durable) ;;
  *) echo "cpu.sh: DURABLE must be on, off or both, not '$DURABLE'" >&2; exit 2 ;;
esac

# --- tools -------------------------------------------------------------------
missing=()
command -v nginx > /dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v curl > /dev/null || missing+=(curl)
command -v bc > /dev/null || missing+=(bc)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  policy_added=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # keep nginx from starting on :80
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
  if [[ -n $policy_added ]]; then rm -f /usr/sbin/policy-rc.d; fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [[ -z ${GTC:-} ]]; then
  cargo build --release -q -p dot-agent
  GTC=target/release/gtc
fi
GTC=$(realpath "$GTC")

# --- work dir, cleanup -------------------------------------------------------
work=$(mktemp -d /var/tmp/dot-bench-cpu.XXXXXX)
bed=dotcpu-$$
n=$((1 + $$ % 250))   # subnets 10.n.1.0/24 and 10.n.2.0/24
declare -A pids=()   # name -> PID of every process this script started
cleanup() {
  local rc=$? name
  for name in "${!pids[@]}"; do stop "$name"; done
  bed_down
  if ((rc)); then   # the logs go with the work dir: show their ends first
    log_ends "$work"/*.log "$work"/nginx*/error.log
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "cpu.sh: $*" >&2; exit 1; }

# shellcheck source=bench/lib.sh
source bench/lib.sh   # the cd above put us at the repository root
# shellcheck source=bench/netbed.sh
source bench/netbed.sh
export TIME_LOG=$work/tools.log

# --- data ---------------------------------------------------------------------
www=$work/www
mkdir -p "$www"
file=$www/object.bin
out=$work/out.bin
head -c $((SIZE_MB << 20)) /dev/urandom > "$file"
cat "$file" > /dev/null   # hot page cache

# --- servers -------------------------------------------------------------------
# start_nginx NAME ADDR:PORT [NAMESPACE]: nginx serving $www, sendfile on.
start_nginx() {
  local name=$1 listen=$2 ns=${3:-} pre=()
  [[ -z $ns ]] || pre=(nsenter --net="/run/netns/$ns")
  mkdir -p "$work/$name"
  cat > "$work/$name/nginx.conf" << EOF
user root;
daemon off;
worker_processes 1;
pid $work/$name/nginx.pid;
error_log $work/$name/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path $work/$name/body;
  proxy_temp_path $work/$name/proxy;
  fastcgi_temp_path $work/$name/fastcgi;
  uwsgi_temp_path $work/$name/uwsgi;
  scgi_temp_path $work/$name/scgi;
  server {
    listen $listen;
    root $www;
  }
}
EOF
  "${pre[@]}" "$NGINX" -p "$work/$name/" -e "$work/$name/error.log" -c "$work/$name/nginx.conf" \
    > "$work/$name.log" 2>&1 &
  pids[$name]=$!
}

export RUST_LOG=warn
printf 'durable = false\n' > "$work/not-durable.toml"
# start_agent NAME PORT [NAMESPACE [ADVERTISE [MODE]]]: fresh start, no
# mount; MODE `not-durable` gives it the config file with `durable = false`.
start_agent() {
  local name=$1 port=$2 ns=${3:-} listen=127.0.0.1 pre=() adv=() conf=()
  if [[ -n $ns ]]; then
    pre=(nsenter --net="/run/netns/$ns")
    listen=0.0.0.0
  fi
  [[ -z ${4:-} ]] || adv=(--advertise "$4")
  [[ ${5:-durable} == durable ]] || conf=(--config "$work/not-durable.toml")
  : > "$work/$name.out"
  "${pre[@]}" "$GTC" agent --no-mount --data-dir "$work/$name" --socket "$work/$name.sock" \
    --listen "$listen:$port" "${adv[@]}" "${conf[@]}" > "$work/$name.out" 2>> "$work/$name.log" &
  pids[$name]=$!
  agent_ready() {
    kill -0 "${pids[$name]}" 2> /dev/null || fail "agent $name exited"
    grep -q '^gtc agent: ready ' "$work/$name.out"
  }
  wait_for "agent $name" 1500 agent_ready
}
idle() {   # idle NAME: the agent has no transfer in flight
  GTC_SOCKET=$work/$1.sock "$GTC" status --json | grep -q '"transfers":\[\]'
}
check() {   # check TOOL: the output must equal the source
  cmp -s "$out" "$file" || fail "$1: $out differs from $file"
  rm -f "$out"
}

# measure SENDER RECEIVER NGINX URL TICKET [NAMESPACE]: RUNS interleaved
# rounds of a cold gtc get per receiver mode (DURABLE) and a curl; appends
# "wall recv send client" and "wall curl nginx" lines (seconds) to
# $work/gtc-MODE.txt and $work/curl.txt.
measure() {
  local snd=$1 rcv=$2 ngx=$3 url=$4 ticket=$5 ns=${6:-} pre=() run port mode
  [[ -z $ns ]] || pre=(nsenter --net="/run/netns/$ns")
  port=${rcv_port[$rcv]}
  for mode in "${modes[@]}"; do : > "$work/gtc-$mode.txt"; done
  : > "$work/curl.txt"
  for run in $(seq 0 "$RUNS"); do   # run 0: untimed warm-up round
    local r0 s0 r1 s1 t n0 n1 c
    for mode in "${modes[@]}"; do
      stop "$rcv"
      rm -rf "$work/$rcv"
      start_agent "$rcv" "$port" "$ns" "" "$mode"
      sync
      r0=$(cpu_secs "${pids[$rcv]}")
      s0=$(cpu_secs "${pids[$snd]}")
      t=$(time_cpu env GTC_SOCKET="$work/$rcv.sock" "${pre[@]}" "$GTC" get "$ticket" -o "$out")
      # B checks the whole OID after handing out the verified chunks: its
      # CPU counts until that is done.
      wait_for "agent $rcv idle" 3000 idle "$rcv"
      r1=$(cpu_secs "${pids[$rcv]}")
      s1=$(cpu_secs "${pids[$snd]}")
      check "gtc get ($mode)"
      ((run == 0)) || echo "${t%% *} $(echo "$r1 - $r0" | bc -l) $(echo "$s1 - $s0" | bc -l) ${t##* }" \
        >> "$work/gtc-$mode.txt"
    done
    n0=$(cpu_secs "${pids[$ngx]}")
    c=$(time_cpu "${pre[@]}" curl -sf -o "$out" "$url")
    n1=$(cpu_secs "${pids[$ngx]}")
    check curl
    ((run == 0)) || echo "${c%% *} ${c##* } $(echo "$n1 - $n0" | bc -l)" >> "$work/curl.txt"
  done
}
col() { awk -v c="$2" '{ print $c }' "$1" | median; }
per_gib() { echo "$1 * 1024 / $SIZE_MB" | bc -l; }
# report TITLE: the table of the last measure.
report() {
  local gw gr gs gc cw cc cn mode
  cw=$(col "$work/curl.txt" 1) cc=$(col "$work/curl.txt" 2) cn=$(col "$work/curl.txt" 3)
  echo
  echo "$1: ${SIZE_MB} MiB, median of $RUNS runs (each column its own median)"
  printf '%-38s %8s %8s %14s\n' "process" "wall s" "MiB/s" "CPU s per GiB"
  for mode in "${modes[@]}"; do
    gw=$(col "$work/gtc-$mode.txt" 1) gr=$(col "$work/gtc-$mode.txt" 2)
    gs=$(col "$work/gtc-$mode.txt" 3) gc=$(col "$work/gtc-$mode.txt" 4)
    printf '%-38s %8.3f %8.0f %14s\n' "gtc get (cold receiver, $mode)" "$gw" "$(echo "$SIZE_MB / $gw" | bc -l)" ""
    printf '%-38s %8s %8s %14.2f\n' "  receiving agent" "" "" "$(per_gib "$gr")"
    printf '%-38s %8s %8s %14.2f\n' "  sending agent" "" "" "$(per_gib "$gs")"
    printf '%-38s %8s %8s %14.2f\n' "  gtc get client" "" "" "$(per_gib "$gc")"
  done
  printf '%-38s %8.3f %8.0f %14s\n' "curl (nginx, sendfile)" "$cw" "$(echo "$SIZE_MB / $cw" | bc -l)" ""
  printf '%-38s %8s %8s %14.2f\n' "  curl" "" "" "$(per_gib "$cc")"
  printf '%-38s %8s %8s %14.2f\n' "  nginx" "" "" "$(per_gib "$cn")"
  for mode in "${modes[@]}"; do
    gw=$(col "$work/gtc-$mode.txt" 1)
    printf 'gtc speed / curl speed (%s): %.2fx\n' "$mode" "$(echo "$cw / $gw" | bc -l)"
  done
}

# --- loopback -------------------------------------------------------------------
declare -A rcv_port=()
http_port=$(free_port 18180)
rcv_port[b]=$(free_port 17621)
start_nginx nginx "127.0.0.1:$http_port"
wait_for nginx 500 curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$http_port/object.bin"
start_agent a "$(free_port 17620)"
start_agent b "${rcv_port[b]}"
ticket=$(GTC_SOCKET=$work/a.sock "$GTC" put "$file" 2>> "$work/put.log" | tail -n 1)
[[ $ticket == dot1.* ]] || fail "put printed no ticket: $ticket"
measure a b nginx "http://127.0.0.1:$http_port/object.bin" "$ticket"
report "cold get over 127.0.0.1"
stop b
stop a
stop nginx

# --- shaped link ------------------------------------------------------------------
if ((LINK_MBIT > 0)); then
  bed_up "$bed" "$n"
  bed_shape "$bed" 1 $((LINK_MBIT * 1000))
  rcv_port[l]=7420
  start_nginx nginx_s "10.$n.1.1:8080" "$bed-s"
  link_up() { nsenter --net="/run/netns/$bed-r" curl -sf -o /dev/null -r 0-0 "http://10.$n.1.1:8080/object.bin"; }
  wait_for "nginx in $bed-s" 500 link_up
  start_agent s 7420 "$bed-s" "10.$n.1.1:7420"
  link_ticket=$(GTC_SOCKET=$work/s.sock "$GTC" put "$file" 2>> "$work/put.log" | tail -n 1)
  [[ $link_ticket == dot1.* ]] || fail "put on S printed no ticket: $link_ticket"
  measure s l nginx_s "http://10.$n.1.1:8080/object.bin" "$link_ticket" "$bed-r"
  report "cold get over a ${LINK_MBIT} Mbit/s link (tbf) between two namespaces"
fi

echo
echo "reproduce: SIZE_MB=$SIZE_MB RUNS=$RUNS LINK_MBIT=$LINK_MBIT DURABLE=$DURABLE bash bench/cpu.sh"

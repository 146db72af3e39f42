#!/usr/bin/env bash
# Loopback transfer: `gtc get` of a ticket from a second agent, over the
# encrypted peer link (TLS 1.3, the default) and over plain TCP (agents with
# `plain-peers`), versus curl over HTTPS (nginx, TLS 1.3) and over HTTP
# (nginx, sendfile), scp and rsync (sshd) of the same file, all on
# 127.0.0.1, hot page cache for the source, the receiver writing into the
# work dir, median of RUNS interleaved runs (whole processes, wall time),
# and the CPU seconds per GiB of every process of each transfer (client and
# server ends: on 2 shared cores CPU is what decides). Before each gtc get
# the receiving agent B is restarted with an empty data dir (cold
# receiver). Then a small-object test: put + get pairs of fresh 4 KiB
# objects per second, against curl of 4 KiB files from nginx.
#
#   bash bench/loopback.sh                       # 1 GiB file, 3 runs
#   SIZE_MB=256 RUNS=5 OPS_N=500 OPS_SECONDS=10 bash bench/loopback.sh
#   GTC=/path/to/gtc bash bench/loopback.sh      # skip the cargo build
#   GTC_BEFORE=/path/to/old/gtc bash bench/loopback.sh
#                      # and a row for an older build's get (a pair of its
#                      # own agents, default settings), measured alongside
#   TOOLS="gtc https scp" bash bench/loopback.sh
#                      # only these rows (of: gtc plain https http scp
#                      # rsync, and before with GTC_BEFORE); ratios need gtc
#
# It installs nginx, openssh-server/-client, rsync, curl, openssl and bc
# from Debian when missing; it starts its own nginx, sshd and three agents
# on free loopback ports and stops exactly those (by PID) on exit.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
OPS_N=${OPS_N:-200}
OPS_SECONDS=${OPS_SECONDS:-5}

# --- tools -------------------------------------------------------------------
missing=()
command -v nginx > /dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
command -v ssh > /dev/null && command -v scp > /dev/null && command -v ssh-keygen > /dev/null \
  || missing+=(openssh-client)
command -v rsync > /dev/null || missing+=(rsync)
command -v curl > /dev/null || missing+=(curl)
command -v bc > /dev/null || missing+=(bc)
command -v openssl > /dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  # Keep the packages' own services from starting (nginx on :80, sshd on :22).
  policy_added=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
  if [[ -n $policy_added ]]; then rm -f /usr/sbin/policy-rc.d; fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
SSHD=/usr/sbin/sshd   # sshd wants an absolute path

if [[ -z ${GTC:-} ]]; then
  cargo build --release -q -p dot-agent
  GTC=target/release/gtc
fi
GTC=$(realpath "$GTC")

# --- work dir, cleanup -------------------------------------------------------
work=$(mktemp -d /var/tmp/dot-bench-loopback.XXXXXX)
declare -A pids=()   # name -> PID of every process this script started
stop() {   # stop NAME: end that process by its PID and wait for it
  local pid=${pids[$1]:-}
  [[ -n $pid ]] || return 0
  kill "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  unset "pids[$1]"
}
cleanup() {
  local rc=$? name
  for name in "${!pids[@]}"; do stop "$name"; done
  if ((rc)); then   # the logs go with the work dir: show their ends first
    log_ends "$work"/*.log "$work/nginx/error.log" "$work/ssh/sshd.log"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "loopback.sh: $*" >&2; exit 1; }

# --- helpers -----------------------------------------------------------------
# shellcheck source=bench/lib.sh
source bench/lib.sh   # the cd above put us at the repository root

# --- data ---------------------------------------------------------------------
www=$work/www
mkdir -p "$www/small" "$work/small"
file=$www/object.bin
out=$work/out.bin
head -c $((SIZE_MB << 20)) /dev/urandom > "$file"
# Small objects: a different content for each iteration, made before timing.
for i in $(seq "$((OPS_N > 0 ? OPS_N : 1))"); do head -c 4096 /dev/urandom > "$www/small/$i.bin"; done
cat "$file" > /dev/null   # hot page cache

http_port=$(free_port 18080)
https_port=$(free_port 18443)
ssh_port=$(free_port 12222)
a_port=$(free_port 17420)
b_port=$(free_port 17421)
p_port=$(free_port 17422)

# --- nginx ----------------------------------------------------------------------
mkdir -p "$work/nginx"
# A P-256 certificate for 127.0.0.1, which curl checks (--cacert).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$work/nginx/tls.key" -out "$work/nginx/tls.crt" 2> /dev/null
cat > "$work/nginx/nginx.conf" << EOF
user root;
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$http_port;
    root $www;
  }
  server {
    listen 127.0.0.1:$https_port ssl;
    ssl_certificate $work/nginx/tls.crt;
    ssl_certificate_key $work/nginx/tls.key;
    ssl_protocols TLSv1.3;
    root $www;
  }
}
EOF
"$NGINX" -p "$work/nginx/" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" \
  > "$work/nginx/stdout.log" 2>&1 &
pids[nginx]=$!
url=http://127.0.0.1:$http_port
https_url=https://127.0.0.1:$https_port
curl_tls=(curl -sf --cacert "$work/nginx/tls.crt")
wait_for nginx 500 curl -sf -o /dev/null "$url/small/1.bin"
wait_for "nginx TLS" 500 "${curl_tls[@]}" -o /dev/null "$https_url/small/1.bin"

# --- sshd -----------------------------------------------------------------------
ssh_setup "$work/ssh" 127.0.0.1 "$ssh_port"
"$SSHD" -D -f "$work/ssh/sshd_config" -E "$work/ssh/sshd.log" &
pids[sshd]=$!
ssh_up() { ssh "${key_opts[@]}" -p "$ssh_port" root@127.0.0.1 true 2> /dev/null; }
wait_for sshd 500 ssh_up
rsync_rsh="ssh ${key_opts[*]} -p $ssh_port"   # no spaces in the work dir path (mktemp)

# --- gtc agents -----------------------------------------------------------------
# Warnings, and the cipher suite of each TLS link B opens.
export RUST_LOG=warn,dot_plugins::gtc::link=debug
start_agent() {   # start_agent NAME PORT [FLAGS...]: fresh start ($BIN, else $GTC); waits for the ready line
  local name=$1 port=$2
  shift 2
  : > "$work/$name.out"
  "${BIN:-$GTC}" agent --no-mount --data-dir "$work/$name" --socket "$work/$name.sock" --listen "127.0.0.1:$port" \
    "$@" > "$work/$name.out" 2>> "$work/$name.log" &
  pids[$name]=$!
  agent_ready() {
    kill -0 "${pids[$name]}" 2> /dev/null || fail "agent $name exited"
    grep -q '^gtc agent: ready ' "$work/$name.out"
  }
  wait_for "agent $name" 1500 agent_ready
}
put_ticket() {   # put_ticket AGENT FILE: the ticket of a put by reference (by $GTC)
  local t
  t=$(GTC_SOCKET=$work/$1.sock "$GTC" put "$2" 2>> "$work/put.log" | tail -n 1)
  [[ $t == dot1.* ]] || fail "put into $1 printed no ticket: $t"
  echo "$t"
}
printf 'plain-peers = true\n' > "$work/plain.toml"
start_agent a "$a_port"                                 # TLS only (the default)
start_agent p "$p_port" --config "$work/plain.toml"     # plain TCP offered
start_agent b "$b_port"
ticket=$(put_ticket a "$file")
plain_ticket=$(put_ticket p "$file")
read -r -a tools <<< "${TOOLS:-gtc plain https http scp rsync}"
[[ ${tools[0]} == gtc ]] || fail "TOOLS must start with gtc (the ratios are against it)"
if [[ -n ${GTC_BEFORE:-} ]]; then
  GTC_BEFORE=$(realpath "$GTC_BEFORE")
  BIN=$GTC_BEFORE start_agent oa "$(free_port 17423)"
  ob_port=$(free_port 17424)
  BIN=$GTC_BEFORE start_agent ob "$ob_port"
  before_ticket=$(GTC=$GTC_BEFORE put_ticket oa "$file")
  tools+=(before)
fi

# --- large object -------------------------------------------------------------------
check() {   # check TOOL: the output must equal the source
  cmp -s "$out" "$file" || fail "$1: $out differs from $file"
  rm -f "$out"
}
rcv_idle() {   # rcv_idle AGENT BIN: no transfer in flight
  GTC_SOCKET=$work/$1.sock "$2" status --json | grep -q '"transfers":\[\]'
}
# measure NAME SERVER CMD...: one run of CMD with SERVER (a name in pids)
# as the other end; appends its wall seconds to NAME_t and the CPU
# seconds of CMD and SERVER (and their children) to NAME_c.
measure() {
  local name=$1 server=$2 s0 s1 wc
  shift 2
  s0=$(cpu_secs "${pids[$server]}")
  wc=$(time_cpu "$@")
  s1=$(cpu_secs "${pids[$server]}")
  eval "${name}_t+=(${wc% *})"
  eval "${name}_c+=($(echo "${wc#* } + $s1 - $s0" | bc -l))"
}
# gtc_get NAME SENDER TICKET [RECEIVER PORT BIN]: a cold get by RECEIVER
# (default B, by $GTC); its CPU counts too, through the check of the whole
# OID it makes after handing out the chunks.
gtc_get() {
  local name=$1 sender=$2 t=$3 rcv=${4:-b} port=${5:-$b_port} bin=${6:-$GTC} b0 b1
  stop "$rcv"
  rm -rf "${work:?}/$rcv"
  BIN=$bin start_agent "$rcv" "$port"   # cold receiver: empty store
  b0=$(cpu_secs "${pids[$rcv]}")
  measure "$name" "$sender" env GTC_SOCKET="$work/$rcv.sock" "$bin" get "$t" -o "$out"
  wait_for "agent $rcv idle" 3000 rcv_idle "$rcv" "$bin"
  b1=$(cpu_secs "${pids[$rcv]}")
  local last
  eval "last=\${${name}_c[-1]}"
  eval "${name}_c[-1]=$(echo "$last + $b1 - $b0" | bc -l)"
  check "$name"
}
declare -a gtc_t gtc_c plain_t plain_c https_t https_c http_t http_c scp_t scp_c rsync_t rsync_c
declare -a before_t before_c
for _ in $(seq "$RUNS"); do
  # Interleave the tools so drift on a noisy machine hits all of them.
  for t in "${tools[@]}"; do
    case $t in
      gtc) gtc_get gtc a "$ticket" ;;
      plain) gtc_get plain p "$plain_ticket" ;;
      before) gtc_get before oa "$before_ticket" ob "$ob_port" "$GTC_BEFORE" ;;
      https) measure https nginx "${curl_tls[@]}" -o "$out" "$https_url/object.bin" && check https ;;
      http) measure http nginx curl -sf -o "$out" "$url/object.bin" && check http ;;
      scp) measure scp sshd scp -q "${key_opts[@]}" -P "$ssh_port" "root@127.0.0.1:$file" "$out" && check scp ;;
      rsync) measure rsync sshd rsync -e "$rsync_rsh" "root@127.0.0.1:$file" "$out" && check rsync ;;
      *) fail "unknown tool $t" ;;
    esac
  done
done

declare -A wall cpu
for t in "${tools[@]}"; do
  eval "wall[$t]=\$(printf '%s\n' \"\${${t}_t[@]}\" | median)"
  eval "cpu[$t]=\$(printf '%s\n' \"\${${t}_c[@]}\" | median)"
done
g=${wall[gtc]}
gib=$(echo "$SIZE_MB / 1024" | bc -l)
mbps() { echo "$SIZE_MB / $1" | bc -l; }
row() {   # row LABEL TOOL (nothing for a tool left out of TOOLS)
  [[ -n ${wall[$2]:-} ]] || return 0
  printf '%-44s %8.3f %7.0f %12.2f %12.2f\n' "$1" "${wall[$2]}" "$(mbps "${wall[$2]}")" \
    "$(echo "${wall[$2]} / $g" | bc -l)" "$(echo "${cpu[$2]} / $gib" | bc -l)"
}
# The ciphers each encrypted tool agreed on.
tls_cipher=$(grep -o 'cipher=[A-Z0-9_]*' "$work/b.log" | tail -n 1 || true)
curl_cipher=$("${curl_tls[@]}" -v -o /dev/null "$https_url/small/1.bin" 2>&1 \
  | sed -n 's/.*SSL connection using \(.*\)$/\1/p' | head -n 1)
ssh_cipher=$(ssh -v "${key_opts[@]}" -p "$ssh_port" root@127.0.0.1 true 2>&1 \
  | sed -n 's/.*kex: server->client cipher: \([^ ]*\).*/\1/p' | head -n 1)
echo
echo "get of a ${SIZE_MB} MiB file over 127.0.0.1, hot source cache, median of $RUNS runs (whole processes, wall time;"
echo "CPU: user+system of every process of the transfer, both ends, per GiB)"
printf '%-44s %8s %7s %12s %12s\n' "tool" "seconds" "MiB/s" "gtc TLS x" "CPU s/GiB"
row "gtc get, TLS 1.3 (agent B cold, from A)" gtc
row "gtc get, plain TCP (plain-peers)" plain
row "curl HTTPS (nginx, TLS 1.3)" https
row "curl HTTP (nginx, sendfile)" http
row "scp (sshd)" scp
row "rsync -e ssh (no delta)" rsync
if [[ -n ${GTC_BEFORE:-} ]]; then row "gtc get, GTC_BEFORE build" before; fi
echo "ciphers: gtc ${tls_cipher#cipher=}; curl/nginx $curl_cipher; scp/ssh $ssh_cipher"
if [[ -n ${wall[https]:-} && -n ${wall[scp]:-} ]]; then
  printf 'goals: gtc TLS >= 0.80x curl HTTPS (now %.2fx), >= 2x scp (now %.2fx)\n' \
    "$(echo "${wall[https]} / $g" | bc -l)" "$(echo "${wall[scp]} / $g" | bc -l)"
fi
if [[ -n ${wall[before]:-} && -n ${wall[plain]:-} ]]; then
  printf 'plain TCP vs the GTC_BEFORE build: %.2fx its speed (goal >= 0.90x)\n' \
    "$(echo "${wall[before]} / ${wall[plain]}" | bc -l)"
fi

reproduce="SIZE_MB=$SIZE_MB RUNS=$RUNS OPS_N=$OPS_N OPS_SECONDS=$OPS_SECONDS${TOOLS:+ TOOLS=\"$TOOLS\"} bash bench/loopback.sh"
if ((OPS_N == 0)); then
  echo
  echo "reproduce: $reproduce"
  exit 0
fi

# --- small objects --------------------------------------------------------------------
# put + get pairs of fresh 4 KiB objects, at most OPS_N of them or for
# OPS_SECONDS; then curl of as many 4 KiB files. Clock: $EPOCHREALTIME in
# microseconds, bash arithmetic: no fork besides the tools'.
put_us=0 get_us=0 n=0
t_start=${EPOCHREALTIME/[.,]/}
while ((n < OPS_N)); do
  i=$((n + 1))
  t0=${EPOCHREALTIME/[.,]/}
  small_ticket=$(GTC_SOCKET=$work/a.sock "$GTC" put "$www/small/$i.bin" 2>> "$work/ops.log")
  small_ticket=${small_ticket##*$'\n'}
  t1=${EPOCHREALTIME/[.,]/}
  GTC_SOCKET=$work/b.sock "$GTC" get "$small_ticket" -o "$work/small/$i.gtc" 2>> "$work/ops.log"
  t2=${EPOCHREALTIME/[.,]/}
  put_us=$((put_us + t1 - t0))
  get_us=$((get_us + t2 - t1))
  n=$i
  ((t2 - t_start < OPS_SECONDS * 1000000)) || break
done
t_end=${EPOCHREALTIME/[.,]/}
pair_us=$((t_end - t_start))
t_start=${EPOCHREALTIME/[.,]/}
for ((i = 1; i <= n; i++)); do
  curl -sf -o "$work/small/$i.curl" "$url/small/$i.bin"
done
t_end=${EPOCHREALTIME/[.,]/}
curl_us=$((t_end - t_start))
for ((i = 1; i <= n; i++)); do
  cmp -s "$www/small/$i.bin" "$work/small/$i.gtc" || fail "gtc: small object $i differs"
  cmp -s "$www/small/$i.bin" "$work/small/$i.curl" || fail "curl: small file $i differs"
done
secs() { echo "$1 / 1000000" | bc -l; }
ops() { echo "$n * 1000000 / $1" | bc -l; }
echo
echo "small objects: $n fresh 4 KiB objects, one process per operation (wall time)"
printf '%-40s %9s %10s\n' "operation" "seconds" "ops/s"
printf '%-40s %9.3f %10.0f\n' "gtc put (A) + get (B), pairs" "$(secs "$pair_us")" "$(ops "$pair_us")"
printf '%-40s %9.3f %10.0f\n' "  gtc put alone" "$(secs "$put_us")" "$(ops "$put_us")"
printf '%-40s %9.3f %10.0f\n' "  gtc get alone" "$(secs "$get_us")" "$(ops "$get_us")"
printf '%-40s %9.3f %10.0f\n' "curl of a 4 KiB file (nginx)" "$(secs "$curl_us")" "$(ops "$curl_us")"

echo
echo "reproduce: $reproduce"

# Helpers shared by the benchmark scripts (sourced; each script defines
# `fail`).

now() { date +%s.%N; }
# time_cmd CMD...: prints wall seconds of one run; fails if CMD fails.
time_cmd() {
  local t0 t1
  sync   # start every tool with no write-back pending from the last one
  t0=$(now)
  "$@" > /dev/null || fail "failed: $*"
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {m=int((NR+1)/2); if (NR%2) print a[m]; else print (a[m]+a[m+1])/2}'; }
# wait_for WHAT TRIES CMD...: polls CMD every 20 ms, at most TRIES times.
wait_for() {
  local what=$1 tries=$2 i
  shift 2
  for ((i = 0; i < tries; i++)); do
    "$@" && return 0
    sleep 0.02
  done
  fail "$what not ready after $((tries / 50)) s"
}
listening() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }
taken=" "
free_port() {   # free_port FROM: first port from FROM up nobody listens on
  local p=$1
  while listening "$p" || [[ $taken == *" $p "* ]]; do p=$((p + 1)); done
  taken+="$p "
  echo "$p"
}

# Processes a script started, by name; each script declares `pids`:
#   declare -A pids=()   # name -> PID
alive() {   # alive PID: the process exists and is no zombie
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2> /dev/null) || return 1
  [[ -n $st && ${st:0:1} != Z ]]
}
stop() {   # stop NAME: end that process by its PID (TERM, KILL after 20 s), wait for it
  local pid=${pids[$1]:-} i
  [[ -n $pid ]] || return 0
  kill "$pid" 2> /dev/null || true
  for ((i = 0; i < 1000; i++)); do
    alive "$pid" || break
    sleep 0.02
  done
  if alive "$pid"; then
    echo "${0##*/}: $1 (PID $pid) still running 20 s after SIGTERM: SIGKILL" >&2
    kill -KILL "$pid" 2> /dev/null || true
  fi
  wait "$pid" 2> /dev/null || true
  unset "pids[$1]"
}
# log_ends FILE...: the last lines of each non-empty log, on stderr (a
# failed run shows them before its work dir goes).
log_ends() {
  local log
  for log in "$@"; do
    [[ -s $log ]] && { echo "--- ${log#"$work"/} (end)"; tail -n 5 "$log"; } >&2
  done
  return 0
}

# CPU accounting (docs/benchmarks.md: CPU seconds per GiB beside wall time).
CLK_TCK=$(getconf CLK_TCK)
# proc_tree PID: PID and every live descendant.
proc_tree() {
  local p
  echo "$1"
  for p in $(cat /proc/"$1"/task/*/children 2> /dev/null); do proc_tree "$p"; done
}
# cpu_secs PID: user+system CPU seconds of PID and its live descendants,
# with the children they have waited for.
cpu_secs() {
  local p ticks=0 t
  for p in $(proc_tree "$1"); do
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2> /dev/null | awk '{ print $12 + $13 + $14 + $15 }') || t=0
    ticks=$((ticks + ${t:-0}))
  done
  echo "$ticks / $CLK_TCK" | bc -l
}
# time_cpu CMD...: prints "WALL CPU" seconds of one run of CMD (CPU: user +
# system of CMD and its children); fails if CMD fails. CMD's stderr goes
# to $TIME_LOG (default /dev/null).
time_cpu() {
  local TIMEFORMAT='%R %U %S' tf rc=0
  tf=$(mktemp)
  sync   # start every tool with no write-back pending from the last one
  { time "$@" > /dev/null 2>> "${TIME_LOG:-/dev/null}"; } 2> "$tf" || rc=$?
  if ((rc)); then
    rm -f "$tf"
    fail "failed: $*"
  fi
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$tf"
  rm -f "$tf"
}

# ssh_setup DIR ADDR PORT: host and client keys in DIR, and DIR/sshd_config
# for an sshd on ADDR:PORT that lets the client key in as root (run it with
# `sshd -D -f DIR/sshd_config -E DIR/sshd.log`); sets key_opts, the ssh
# options that use the client key.
ssh_setup() {
  local dir=$1 addr=$2 port=$3
  mkdir -p "$dir" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key"
  cp "$dir/client_key.pub" "$dir/authorized_keys"
  cat > "$dir/sshd_config" << END
Port $port
ListenAddress $addr
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
END
  key_opts=(-i "$dir/client_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o LogLevel=ERROR -o BatchMode=yes)
}

# apt_install PKG...: installs the Debian packages named, if any (quietly,
# no service started: RUNLEVEL=1).
apt_install() {
  (($#)) || return 0
  echo "installing $*" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "$@" > /dev/null
}

# gtc_binary: sets GTC to the absolute path of $GTC if given, else of a
# release build made now.
gtc_binary() {
  if [[ -z ${GTC:-} ]]; then
    cargo build --release -q -p dot-agent
    GTC=target/release/gtc
  fi
  GTC=$(realpath "$GTC")
}

# nginx_conf DIR LISTEN ROOT: writes DIR/nginx.conf for a foreground nginx
# (run it with `nginx -p DIR/ -e DIR/error.log -c DIR/nginx.conf`) serving
# ROOT on LISTEN (addr:port), sendfile on, no access log.
nginx_conf() {
  local d=$1 listen=$2 root=$3
  mkdir -p "$d"
  cat > "$d/nginx.conf" << EOF
user root;
daemon off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  default_type application/octet-stream;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  server {
    listen $listen;
    root $root;
  }
}
EOF
}

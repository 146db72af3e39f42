#!/usr/bin/env bash
# Folders as objects: a real tree of this machine (default /usr/share/man,
# ~21,000 files) copied from namespace tree-s to namespace tree-r over one
# veth link, unshaped (as fast as loopback) and shaped (tbf), side by side
# in one run:
#
#   first copy    gtc cp -r (put on the sender through --rsh, get on the
#                 receiver), rsync -a over ssh, scp -r, tar | ssh | tar
#   second copy   after changing 1% of the files: gtc cp -r (into a new
#                 folder: the receiver's store holds the old version) and
#                 rsync -a (into the first copy, its delta algorithm on)
#   the mount     a cold `tar c` of MOUNT/<tree ticket> against a cold
#                 gtc get of the same tree
#
# Wall time (median of RUNS), bytes on the link (both directions, every
# byte: ssh or TLS, TCP/IP headers), and the CPU seconds of both ends
# (the tools, sshd and its children, both agents). Every copy is checked
# against the source (names, kinds, sizes, contents, link targets).
#
#   bash bench/tree.sh
#   TREE=/usr/include RUNS=1 bash bench/tree.sh
#   LINKS="0 100 1000" bash bench/tree.sh     # Mbit/s of each case, 0: unshaped
#   GTC=/path/to/gtc bash bench/tree.sh       # skip the cargo build
#
# Installs openssh-server/-client, rsync and bc from Debian when missing;
# needs root, ip, tc and nsenter. Starts its own sshd, agents and mount and
# stops exactly those on exit, with the namespaces.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
TREE=${TREE:-/usr/share/man}
RUNS=${RUNS:-3}
LINKS=${LINKS:-"0 100"}
CHANGED_PERCENT=${CHANGED_PERCENT:-1}
BED=${BED:-tree}
NET=${NET:-232}

fail() { echo "tree.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || fail "needs root (namespaces, the mount)"
[[ -d $TREE ]] || fail "no folder $TREE (set TREE)"
# shellcheck source=bench/lib.sh
source bench/lib.sh
# shellcheck source=bench/netbed.sh
source bench/netbed.sh

missing=()
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
command -v scp > /dev/null || missing+=(openssh-client)
command -v rsync > /dev/null || missing+=(rsync)
command -v bc > /dev/null || missing+=(bc)
apt_install "${missing[@]}"
gtc_binary

# --- work dir, namespaces, cleanup ---------------------------------------------
# Everything (the tree, every copy, the agents' stores) on a fresh ext4 with
# a journal, on a loop device: what users' disks are. (An ext4 without a
# journal, as this machine's root may be, makes every new inode scan past
# the ones deleted in the last minutes: the tool that runs after a delete
# would pay for it.)
work=$(mktemp -d /var/tmp/dot-bench-tree.XXXXXX)
img=$work.img
declare -A pids=()
mnt=$work/mnt
cleanup() {
  local rc=$? name
  for name in "${!pids[@]}"; do stop "$name"; done
  mountpoint -q "$mnt" 2> /dev/null && umount -l "$mnt"
  bed_down
  if ((rc)); then log_ends "$work"/*.log "$work/ssh/sshd.log"; fi
  mountpoint -q "$work" 2> /dev/null && umount -l "$work"
  rm -rf "$work" "$img"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
truncate -s "${WORK_GIB:-16}G" "$img"
mkfs.ext4 -q -F -N 2000000 "$img"
mount -o loop "$img" "$work"
S=$BED-s
R=$BED-r
SIP=10.$NET.1.1
bed_up "$BED" "$NET"
bed_link "$BED" 2 down   # one link
in_s() { nsenter --net="/run/netns/$S" "$@"; }
in_r() { nsenter --net="/run/netns/$R" "$@"; }
wire_bytes() {
  ip netns exec "$S" sh -c 'echo $(( $(cat /sys/class/net/s1/statistics/tx_bytes) + $(cat /sys/class/net/s1/statistics/rx_bytes) ))'
}

# --- the tree: a private copy (the second copy changes it) -------------------------
src=$work/src
mkdir -p "$src"
cp -a "$TREE/." "$src/"
files=$(find "$src" -type f | wc -l)
tree_bytes=$(du -sb --apparent-size "$src" | cut -f1)
echo "tree: $TREE, $files files, $tree_bytes bytes" >&2
same_tree() {   # same_tree A B: names, kinds, sizes, contents and link targets agree
  diff -r --no-dereference -q "$1" "$2" > /dev/null || fail "$2 differs from $1"
}

# --- sshd in the sender's namespace ---------------------------------------------------
ssh_setup "$work/ssh" "$SIP" 22
nsenter --net="/run/netns/$S" /usr/sbin/sshd -D -f "$work/ssh/sshd_config" -E "$work/ssh/sshd.log" &
pids[sshd]=$!
ssh_up() { in_r ssh "${key_opts[@]}" "root@$SIP" true 2> /dev/null; }
wait_for sshd 500 ssh_up
rsh="ssh ${key_opts[*]}"

# --- agents -------------------------------------------------------------------------------
export RUST_LOG=warn
start_agent() {   # start_agent NAME NS IP FLAGS...: a fresh agent in NS on IP:7420
  local name=$1 ns=$2 ip=$3
  shift 3
  rm -rf "${work:?}/$name"
  : > "$work/$name.out"
  nsenter --net="/run/netns/$ns" "$GTC" agent --data-dir "$work/$name" --socket "$work/$name.sock" \
    --listen "$ip:7420" --advertise "$ip:7420" "$@" > "$work/$name.out" 2>> "$work/$name.log" &
  pids[$name]=$!
  agent_ready() {
    alive "${pids[$name]}" || fail "agent $name exited"
    grep -q '^gtc agent: ready ' "$work/$name.out"
  }
  wait_for "agent $name" 1500 agent_ready
}
# The sender's side of gtc cp: --rsh runs the remote gtc against agent a.
cat > "$work/rsh-a" << EOF
#!/bin/sh
shift
exec nsenter --net=/run/netns/$S env GTC_SOCKET=$work/a.sock sh -c "\$*"
EOF
chmod +x "$work/rsh-a"

# --- one measurement -------------------------------------------------------------------
# measure NAME CMD...: one run of CMD in the receiver's namespace; sets
# m_wall, m_cpu (CMD and its children, sshd and its sessions, both agents
# when running) and m_bytes (on the link).
measure() {
  local c0 c1 b0 b1 wc p
  c0=0
  for p in sshd a b; do [[ -n ${pids[$p]:-} ]] && c0=$(echo "$c0 + $(cpu_secs "${pids[$p]}")" | bc -l); done
  b0=$(wire_bytes)
  wc=$(TIME_LOG=$work/$1.log time_cpu in_r "${@:2}")
  b1=$(wire_bytes)
  c1=0
  for p in sshd a b; do [[ -n ${pids[$p]:-} ]] && c1=$(echo "$c1 + $(cpu_secs "${pids[$p]}")" | bc -l); done
  m_wall=${wc% *}
  m_cpu=$(echo "${wc#* } + $c1 - $c0" | bc -l)
  m_bytes=$((b1 - b0))
}
declare -A wall cpu bytes
record() {   # record KEY: appends the last measurement under KEY
  wall[$1]+="$m_wall " cpu[$1]+="$m_cpu " bytes[$1]+="$m_bytes "
}
# change_files: CHANGED_PERCENT% of the files (every Nth), a line appended.
change_files() {
  local every=$((100 / CHANGED_PERCENT)) i=0 f
  while IFS= read -r -d '' f; do
    if ((i++ % every == 0)); then printf 'changed %s\n' "$RANDOM" >> "$f"; fi
  done < <(find "$src" -type f -print0 | sort -z)
}
restore_files() { rm -rf "$src" && mkdir -p "$src" && cp -a "$TREE/." "$src/"; }

one_run() {   # one_run LINK: every tool once at LINK Mbit/s (0: unshaped)
  local link=$1 d=$work/dst t
  rm -rf "$d" && mkdir -p "$d"
  # First copies.
  start_agent a "$S" "$SIP" --no-mount
  start_agent b "$R" "10.$NET.1.2" --no-mount
  measure gtc "$GTC" cp -r --socket "$work/b.sock" --rsh "$work/rsh-a" --remote-gtc "$GTC" "s:$src" "$d/gtc"
  same_tree "$src" "$d/gtc"
  record "$link first gtc"
  measure rsync rsync -a -e "$rsh" "root@$SIP:$src/" "$d/rsync/"
  same_tree "$src" "$d/rsync"
  record "$link first rsync"
  # scp -r copies what links point to (over sftp it refuses links to
  # folders; the legacy protocol, -O, follows them): checked by content.
  measure scp scp -O -q -r "${key_opts[@]}" "root@$SIP:$src" "$d/scp"
  diff -r -q "$src" "$d/scp" > /dev/null || fail "$d/scp differs from $src"
  record "$link first scp"
  mkdir -p "$d/tar"
  measure tar sh -c "ssh ${key_opts[*]} root@$SIP tar cf - -C '$src' . | tar xf - -C '$d/tar'"
  same_tree "$src" "$d/tar"
  record "$link first tar"
  # Second copies, after 1% of the files changed.
  change_files
  measure gtc2 "$GTC" cp -r --socket "$work/b.sock" --rsh "$work/rsh-a" --remote-gtc "$GTC" "s:$src" "$d/gtc2"
  same_tree "$src" "$d/gtc2"
  record "$link second gtc"
  measure rsync2 rsync -a -e "$rsh" "root@$SIP:$src/" "$d/rsync/"
  same_tree "$src" "$d/rsync"
  record "$link second rsync"
  # The mount, cold: a fresh receiver with its mount; the tree put again.
  t=$(GTC_SOCKET=$work/a.sock "$GTC" put "$src" 2> /dev/null | tail -n 1)
  [[ $t == dot1.* ]] || fail "the put of the tree printed no ticket"
  stop b
  start_agent b "$R" "10.$NET.1.2" --mount "$mnt"
  mkdir -p "$d/mnt"
  measure mount sh -c "tar cf - -C '$mnt/$t' . | tar xf - -C '$d/mnt'"
  same_tree "$src" "$d/mnt"
  record "$link cold-tar-through-mount gtc"
  stop b
  mountpoint -q "$mnt" 2> /dev/null && umount -l "$mnt"
  start_agent b "$R" "10.$NET.1.2" --no-mount
  measure get env GTC_SOCKET="$work/b.sock" "$GTC" get "$t" -o "$d/get"
  same_tree "$src" "$d/get"
  record "$link cold-get gtc"
  stop a
  stop b
  restore_files
  rm -rf "$d"
}

for link in $LINKS; do
  if ((link > 0)); then bed_shape "$BED" 1 $((link * 1000)); else tc -n "$S" qdisc del dev s1 root 2> /dev/null || true; tc -n "$R" qdisc del dev r1 root 2> /dev/null || true; fi
  for ((r = 1; r <= RUNS; r++)); do
    echo "link ${link:-unshaped} Mbit/s, run $r of $RUNS ..." >&2
    one_run "$link"
  done
done

# --- report --------------------------------------------------------------------------------
med() { printf '%s\n' $1 | median; }
echo
echo "folders through DOT, $(date -u +%Y-%m-%d): $TREE ($files files, $tree_bytes bytes), ${CHANGED_PERCENT}% changed for the second copy"
echo "(medians of $RUNS runs; bytes: both directions on the link; CPU s: both ends; x: against rsync -a)"
for link in $LINKS; do
  name="link $link Mbit/s (tbf)"
  ((link > 0)) || name="link unshaped (veth, as loopback)"
  printf '\n%s\n%-34s %9s %7s %12s %7s %9s\n' "$name" case seconds "time x" "wire bytes" "bytes x" "CPU s"
  for step in first second; do
    rs_w=$(med "${wall[$link $step rsync]}")
    rs_b=$(med "${bytes[$link $step rsync]}")
    for tool in gtc rsync scp tar; do
      key="$link $step $tool"
      [[ -n ${wall[$key]:-} ]] || continue
      w=$(med "${wall[$key]}")
      b=$(med "${bytes[$key]}")
      printf '%-34s %9.2f %7.3f %12.0f %7.3f %9.1f\n' "$step copy: $tool" "$w" "$(echo "$w / $rs_w" | bc -l)" \
        "$b" "$(echo "$b / $rs_b" | bc -l)" "$(med "${cpu[$key]}")"
    done
  done
  for key in cold-tar-through-mount cold-get; do
    w=$(med "${wall[$link $key gtc]}")
    printf '%-34s %9.2f %7s %12.0f %7s %9.1f\n' "$key" "$w" - "$(med "${bytes[$link $key gtc]}")" - "$(med "${cpu[$link $key gtc]}")"
  done
done
echo
echo "reproduce: TREE=$TREE RUNS=$RUNS LINKS=\"$LINKS\" CHANGED_PERCENT=$CHANGED_PERCENT bash bench/tree.sh"

# The two-path network test bed of tests/src/netbed.rs for the benchmark
# scripts (sourced; needs root, ip, tc, and the caller's `fail`):
#
#   sender namespace BED-s                 receiver namespace BED-r
#   s1 10.N.1.1/24 ==== link 1 (tbf) ====  r1 10.N.1.2/24
#   s2 10.N.2.1/24 ==== link 2 (tbf) ====  r2 10.N.2.2/24
#
# Both ends of each link shape their egress with the same token bucket (data
# flows sender to receiver, requests and ACKs back). docs/testbed.md explains
# the parameters. Deleting the namespaces (bed_down) removes the veths and
# their qdiscs; processes started in them must be stopped first.

bed_made=()   # namespaces created, for bed_down

# bed_up BED N: namespaces BED-s and BED-r, two veth links on 10.N.1.0/24
# and 10.N.2.0/24 (sender .1, receiver .2), unshaped until bed_shape.
bed_up() {
  local bed=$1 n=$2 ns link
  for ns in "$bed-s" "$bed-r"; do
    ip netns add "$ns" || fail "ip netns add $ns failed"
    bed_made+=("$ns")
    ip -n "$ns" link set lo up
  done
  for link in 1 2; do
    # Created inside the namespaces: no name ever exists in the root one.
    ip link add name "s$link" netns "$bed-s" type veth peer name "r$link" netns "$bed-r" \
      || fail "ip link add s$link failed"
    ip -n "$bed-s" addr add "10.$n.$link.1/24" dev "s$link"
    ip -n "$bed-r" addr add "10.$n.$link.2/24" dev "r$link"
    ip -n "$bed-s" link set "s$link" up
    ip -n "$bed-r" link set "r$link" up
  done
}

# bed_down: deletes every namespace bed_up made (with its links).
bed_down() {
  local ns
  for ns in "${bed_made[@]}"; do
    ip netns del "$ns" 2> /dev/null || echo "netbed.sh: could not delete namespace $ns" >&2
  done
  bed_made=()
}

# tbf_params KBIT: prints "BURST LIMIT" in bytes. burst: 4 ms of the rate,
# at least two full frames (1514 B); limit: burst + 100 ms of the rate, at
# least four full frames. Same as shaping() in tests/src/netbed.rs.
tbf_params() {
  local bps=$(($1 * 1000 / 8)) burst queue
  burst=$((bps / 250))
  ((burst >= 2 * 1514)) || burst=$((2 * 1514))
  queue=$((bps / 10))
  ((queue >= 4 * 1514)) || queue=$((4 * 1514))
  echo "$burst $((burst + queue))"
}

# bed_shape BED LINK KBIT: both directions of LINK at KBIT kbit/s.
bed_shape() {
  local bed=$1 link=$2 kbit=$3 burst limit
  read -r burst limit < <(tbf_params "$kbit")
  tc -n "$bed-s" qdisc replace dev "s$link" root tbf rate "${kbit}kbit" burst "$burst" limit "$limit" \
    || fail "tc on s$link failed"
  tc -n "$bed-r" qdisc replace dev "r$link" root tbf rate "${kbit}kbit" burst "$burst" limit "$limit" \
    || fail "tc on r$link failed"
}

# bed_link BED LINK up|down: both ends of LINK.
bed_link() {
  ip -n "$1-s" link set "s$2" "$3"
  ip -n "$1-r" link set "r$2" "$3"
}

# bed_tx_bytes BED LINK: bytes the sender's end of LINK has sent.
bed_tx_bytes() {
  # `ip netns exec` mounts the namespace's own /sys for the command.
  ip netns exec "$1-s" cat "/sys/class/net/s$2/statistics/tx_bytes"
}

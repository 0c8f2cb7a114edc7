#!/usr/bin/env bash
# vipd demo: three nodes and a client in network namespaces on one bridge, a
# real etcd, vipd on every node. It shows who holds the VIP, crashes the
# holder (SIGKILL), shows the failover, and removes everything it made, also
# on Ctrl-C. Documentation addresses only (192.0.2.0/24); the host's own
# interfaces are never touched.
set -euo pipefail
cd "$(dirname "$0")"

[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
VIPD=./vipd
ETCD=test/etcd/bin/etcd
[ -x "$VIPD" ] && [ -x "$ETCD" ] || { echo "demo: run 'make demo' (builds vipd and etcd first)" >&2; exit 1; }

P="vipd-demo-$$"
VIP=192.0.2.100
NODES=(n1 n2 n3)
TMP=$(mktemp -d)
pids=()

cleanup() {
	trap - EXIT INT TERM
	set +e # remove everything, whatever has already gone
	for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for ns in lan client "${NODES[@]}"; do ip netns delete "$P-$ns" 2>/dev/null || true; done
	rm -rf "$TMP"
	echo "demo: cleaned up (namespaces $P-*, processes, $TMP)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$P-lan"
ip -n "$P-lan" link set lo up
ip -n "$P-lan" link add br0 address 02:00:5e:00:53:fe type bridge
ip -n "$P-lan" addr add 192.0.2.1/24 dev br0
ip -n "$P-lan" link set br0 up

join() { # namespace, mac, ip
	ip netns add "$P-$1"
	ip -n "$P-$1" link set lo up
	ip -n "$P-lan" link add "v$1" type veth peer name eth0 netns "$P-$1"
	ip -n "$P-lan" link set "v$1" master br0 up
	ip -n "$P-$1" link set eth0 address "$2" up
	ip -n "$P-$1" addr add "$3/24" dev eth0
}
i=0
for n in "${NODES[@]}"; do i=$((i + 1)); join "$n" "02:00:5e:00:53:0$i" "192.0.2.1$i"; done
join client 02:00:5e:00:53:c0 192.0.2.50

echo "demo: starting etcd on 192.0.2.1:2379"
ip netns exec "$P-lan" "$ETCD" --name demo --data-dir "$TMP/etcd" \
	--listen-client-urls http://192.0.2.1:2379 --advertise-client-urls http://192.0.2.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster demo=http://127.0.0.1:2380 --log-level error >"$TMP/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	ip netns exec "$P-client" bash -c "exec 3<>/dev/tcp/192.0.2.1/2379" 2>/dev/null && break
	sleep 0.1
done

declare -A pid
for n in "${NODES[@]}"; do
	ip netns exec "$P-$n" "$VIPD" -cmdline none vip.address=$VIP vip.interface=eth0 \
		vip.etcd=http://192.0.2.1:2379 vip.name="$n" vip.ttl=2 vip.log=stderr 2> >(sed -u "s/^/  [$n] /" >&2) &
	pid[$n]=$!
	pids+=($!)
done

holder() {
	for n in "${NODES[@]}"; do
		ip -n "$P-$n" -4 addr show dev eth0 | grep -q " $VIP/" && { echo "$n"; return; }
	done
	echo none
}
now() { date +%s.%N; }
# One UDP datagram from the client makes its kernel resolve the VIP's MAC.
touch_vip() { ip netns exec "$P-client" bash -c "echo hi >/dev/udp/$VIP/9" 2>/dev/null || true; sleep 0.2; }

echo "demo: waiting for an election"
for _ in $(seq 150); do h=$(holder); [ "$h" != none ] && break; sleep 0.1; done
echo
echo "demo: $VIP is held by $h"
touch_vip
echo "demo: the client sees $VIP at $(ip -n "$P-client" neigh show $VIP dev eth0 | grep -o 'lladdr [0-9a-f:]*')"
sleep 3

echo
echo "demo: crashing $h (SIGKILL)"
t0=$(now)
kill -KILL "${pid[$h]}"
new=none
for _ in $(seq 1000); do
	new=$(holder)
	[ "$new" != none ] && [ "$new" != "$h" ] && break
	sleep 0.01
done
t1=$(now)
echo "demo: $VIP moved from $h to $new in $(awk "BEGIN{printf \"%.2f\", $t1-$t0}") s"
sleep 1
touch_vip
echo "demo: the client now sees $VIP at $(ip -n "$P-client" neigh show $VIP dev eth0 | grep -o 'lladdr [0-9a-f:]*')"
echo

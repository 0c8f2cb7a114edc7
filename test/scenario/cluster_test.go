package scenario

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fault scenarios: three nodes, each with vipd and one member of a
// three-member etcd cluster (as on control-plane nodes), a client probing
// the VIP every 10 ms. Every scenario checks that there were never two
// holders at once.


func TestClusterColdStart(t *testing.T) {
	_, p, h := clusterLab(t)
	p.waitAnsweredBy(t, h.name, time.Now(), 5*time.Second)
}

func TestClusterGracefulStop(t *testing.T) {
	l, p, old := clusterLab(t)
	l.touchVIP()
	l.waitClientNeighbour(old.mac, 5*time.Second)

	t0 := time.Now()
	l.signal(old, syscall.SIGTERM)
	if err := l.wait(old, 5*time.Second); err != nil {
		t.Fatalf("vipd on %s exited with %v after SIGTERM, want status 0", old.name, err)
	}
	if l.hasVIP(old) {
		t.Fatalf("%s still has %s after vipd stopped", old.name, labVIP)
	}
	next := l.holderOtherThan(old, moveBound)
	p.waitAnsweredBy(t, next.name, t0, 5*time.Second)
	l.waitClientNeighbour(next.mac, 5*time.Second)
}

func TestClusterCrash(t *testing.T) {
	l, p, old := clusterLab(t)
	t0 := time.Now()
	l.signal(old, syscall.SIGKILL)
	l.wait(old, 5*time.Second)
	l.waitGone(old, 5*time.Second) // by its lifetime: nobody removes it
	next := l.holderOtherThan(old, moveBound)
	p.waitAnsweredBy(t, next.name, t0, 5*time.Second)
}

func TestClusterFreeze(t *testing.T) {
	l, p, old := clusterLab(t)
	t0 := time.Now()
	l.signal(old, syscall.SIGSTOP)
	next := l.holderOtherThan(old, moveBound)
	if l.hasVIP(old) {
		t.Fatalf("frozen %s still has %s while %s holds it", old.name, labVIP, next.name)
	}
	p.waitAnsweredBy(t, next.name, t0, 5*time.Second)
	time.Sleep(3*labTTL - time.Since(t0))
	l.signal(old, syscall.SIGCONT)
	// The resumed node must find its deadline passed and step down, not
	// take the address back.
	time.Sleep(2 * labTTL)
	if h := l.holder(moveBound, 0); h == old {
		t.Fatalf("%s took the address back after SIGCONT", old.name)
	}
	if l.hasVIP(old) {
		t.Fatalf("%s has %s after SIGCONT", old.name, labVIP)
	}
	if !strings.Contains(old.log.String(), "leader -> candidate") {
		t.Errorf("the resumed node did not log stepping down:\n%s", old.log.String())
	}
}

// The holder's node is lost while it hosts etcd's raft leader. etcd's new
// leader extends every lease by a TTL and its election timeout, so the dead
// holder's lease outlives it; the handover must come from its heartbeat
// standing still instead.
func TestClusterNodeLossWithEtcdLeader(t *testing.T) {
	l, p, _ := clusterLab(t)
	old := l.holderWithEtcdLeader()
	t0 := time.Now()
	l.partition(old)
	l.signal(old, syscall.SIGKILL)
	l.wait(old, 5*time.Second)
	next := l.holderOtherThan(old, moveBound)
	p.waitAnsweredBy(t, next.name, t0, 5*time.Second)
	removed := fmt.Sprintf("of holder %q: its heartbeat stood still", old.name)
	if !slices.ContainsFunc(l.nodes, func(nd *labNode) bool { return nd != old && strings.Contains(nd.log.String(), removed) }) {
		t.Errorf("no survivor removed the election key of %s (want a log line containing %q)", old.name, removed)
	}
	l.heal(old)
}

// Nodes may run with different TTLs. A candidate must let the holder's
// heartbeat stand still for the holder's TTL, not its own: a cut-off holder
// with vip.ttl=6 keeps the address up to 4.5 s, and candidates with
// vip.ttl=2 that went by their own TTL would take it after 2 s.
func TestClusterMixedTTL(t *testing.T) {
	l := newLabWith(t, labOptions{nodes: 3, cluster: true})
	p := l.startProber()
	l.start(l.nodes[0], "vip.ttl=6")
	old := l.holder(electBound, time.Second)
	for _, nd := range l.nodes[1:] {
		l.start(nd, "vip.ttl=2")
	}
	time.Sleep(2 * time.Second)
	t0 := time.Now()
	l.partition(old)
	next := l.holderOtherThan(old, moveBound)
	p.waitAnsweredBy(t, next.name, t0, 5*time.Second)
	l.assertNoOverlap()
	l.heal(old)
}


func TestClusterPartition(t *testing.T) {
	l, p, old := clusterLab(t)
	t0 := time.Now()
	l.partition(old)
	// It must drop the address by its own deadline, before the others'
	// election can hand it on; the monitor's no-overlap check covers the
	// order.
	l.waitGone(old, 5*time.Second)
	next := l.holderOtherThan(old, moveBound)
	p.waitAnsweredBy(t, next.name, t0, 5*time.Second)
	if log := old.log.String(); !strings.Contains(log, "leader -> candidate") {
		t.Errorf("the cut-off holder did not log stepping down:\n%s", log)
	}

	// Healing may disturb etcd (the rejoining member can force a raft
	// election), so the holder may change once more; what must hold is one
	// holder, no overlap, and a cleanly rejoined node.
	l.heal(old)
	time.Sleep(3 * labTTL)
	h := l.holder(moveBound, labTTL)
	p.waitAnsweredBy(t, h.name, time.Now(), 5*time.Second)
	if strings.Count(old.log.String(), "campaigning for") < 2 {
		t.Errorf("the healed node did not campaign again:\n%s", old.log.String())
	}
}

func TestClusterEtcdMembers(t *testing.T) {
	l, _, h := clusterLab(t)
	gained := l.mon.gainedAt(indexOf(l.nodes, h))

	// One member down (neither the holder's own nor etcd's leader): quorum
	// stays, and so does the holder.
	leader := l.etcdLeader()
	var victim *etcdMember
	for _, m := range l.etcd {
		if m.name != h.name && m != leader {
			victim = m
			break
		}
	}
	l.stopMember(victim)
	time.Sleep(3 * labTTL)
	if now := l.holder(moveBound, 0); now != h || !l.mon.gainedAt(indexOf(l.nodes, h)).Equal(gained) {
		t.Fatalf("holder changed (now %s) after etcd member %s went down; quorum was kept", now.name, victim.name)
	}

	// Two down: no quorum, no renewals, so every node must give up the
	// address, and nobody may take it.
	var second *etcdMember
	for _, m := range l.etcd {
		if m != victim {
			second = m
			break
		}
	}
	l.stopMember(second)
	waitFor(t, 5*time.Second, "every node to drop the VIP", func() bool {
		held, _ := l.mon.current()
		return len(held) == 0
	})
	time.Sleep(2 * labTTL)
	if held, _ := l.mon.current(); len(held) != 0 {
		t.Fatalf("%v hold %s without an etcd quorum", l.names(held), labVIP)
	}
	for _, nd := range l.nodes {
		select {
		case err := <-nd.exit:
			t.Fatalf("vipd on %s exited (%v) while etcd had no quorum", nd.name, err)
		default:
		}
		if n := strings.Count(nd.log.String(), "etcd unreachable"); n > 3 {
			t.Errorf("%s logged the outage %d times; once per change is enough:\n%s", nd.name, n, nd.log.String())
		}
	}

	l.startEtcd(victim, second)
	l.holder(3*electBound, time.Second)
}

func TestClusterReconcile(t *testing.T) {
	l, p, h := clusterLab(t)
	capture := captureARP(t, l.client)

	// Removed by hand on the holder: put back and announced again.
	t0 := time.Now()
	h.ns.ip(t, "addr", "del", labVIP+"/32", "dev", "eth0")
	waitFor(t, 5*time.Second, "the re-add to be logged", func() bool { return strings.Contains(h.log.String(), "re-added") })
	if !l.hasVIP(h) {
		t.Fatalf("%s logged the re-add but does not have %s", h.name, labVIP)
	}
	waitFor(t, 5*time.Second, "an announcement after the re-add", func() bool { return !capture.first(h.mac, t0).IsZero() })
	p.waitAnsweredBy(t, h.name, time.Now(), 5*time.Second)

	// Link down on the holder: it steps down, another node takes over and
	// announces.
	t1 := time.Now()
	h.ns.ip(t, "link", "set", "eth0", "down")
	l.waitGone(h, 5*time.Second)
	next := l.holderOtherThan(h, moveBound)
	waitFor(t, 5*time.Second, "the new holder's announcement", func() bool { return !capture.first(next.mac, t1).IsZero() })
	p.waitAnsweredBy(t, next.name, t1, 5*time.Second)
	h.ns.ip(t, "link", "set", "eth0", "up")
	time.Sleep(2 * labTTL)
	if got := l.holder(moveBound, 0); got != next {
		t.Fatalf("holder after link up is %s, want %s to keep it", got.name, next.name)
	}
	if log := h.log.String(); !strings.Contains(log, "-> waiting: eth0 is down") {
		t.Errorf("link down not logged as a step-down:\n%s", log)
	}
}

func TestClusterRestartLoop(t *testing.T) {
	l, _, _ := clusterLab(t)
	for i := 0; i < 20; i++ {
		nd := l.nodes[i%len(l.nodes)]
		l.signal(nd, syscall.SIGTERM)
		if err := l.wait(nd, 5*time.Second); err != nil {
			t.Fatalf("restart %d: vipd on %s exited with %v", i, nd.name, err)
		}
		if l.hasVIP(nd) {
			t.Fatalf("restart %d: %s kept %s after vipd stopped", i, nd.name, labVIP)
		}
		l.start(nd)
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	}
	l.holder(moveBound, time.Second)
}


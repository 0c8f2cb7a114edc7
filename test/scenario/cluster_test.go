package scenario

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// The fault scenarios: three nodes, each with vipd and one member of a
// three-member etcd cluster (as on control-plane nodes), a client probing
// the VIP every 10 ms. Every scenario checks that there were never two
// holders at once.

func TestClusterColdStart(t *testing.T) {
	_, p, h := lab.ClusterLab(t)
	p.WaitAnsweredBy(t, h.Name, time.Now(), 5*time.Second)
}

func TestClusterGracefulStop(t *testing.T) {
	l, p, old := lab.ClusterLab(t)
	l.TouchVIP()
	l.WaitClientNeighbour(old.MAC, 5*time.Second)

	t0 := time.Now()
	l.Signal(old, syscall.SIGTERM)
	if err := l.Wait(old, 5*time.Second); err != nil {
		t.Fatalf("vipd on %s exited with %v after SIGTERM, want status 0", old.Name, err)
	}
	if l.HasVIP(old) {
		t.Fatalf("%s still has %s after vipd stopped", old.Name, lab.VIP)
	}
	next := l.HolderOtherThan(old, lab.MoveBound)
	p.WaitAnsweredBy(t, next.Name, t0, 5*time.Second)
	l.WaitClientNeighbour(next.MAC, 5*time.Second)
}

func TestClusterCrash(t *testing.T) {
	l, p, old := lab.ClusterLab(t)
	t0 := time.Now()
	l.Signal(old, syscall.SIGKILL)
	l.Wait(old, 5*time.Second)
	l.WaitGone(old, 5*time.Second) // by its lifetime: nobody removes it
	next := l.HolderOtherThan(old, lab.MoveBound)
	p.WaitAnsweredBy(t, next.Name, t0, 5*time.Second)
}

func TestClusterFreeze(t *testing.T) {
	l, p, old := lab.ClusterLab(t)
	t0 := time.Now()
	l.Signal(old, syscall.SIGSTOP)
	next := l.HolderOtherThan(old, lab.MoveBound)
	// With the kernel fence the frozen node may keep a silent copy of the
	// address for a second or two (its filter drops every frame for the
	// VIP); without it, or once its lifetime ends, the copy is gone.
	if held, _ := l.Mon.Current(); slices.Contains(held, lab.IndexOf(l.Nodes, old)) {
		t.Fatalf("frozen %s still speaks for %s while %s holds it", old.Name, lab.VIP, next.Name)
	}
	l.WaitGone(old, 5*time.Second) // by its lifetime: nobody removes it
	p.WaitAnsweredBy(t, next.Name, t0, 5*time.Second)
	time.Sleep(3*lab.TTL - time.Since(t0))
	l.Signal(old, syscall.SIGCONT)
	// The resumed node must find its deadline passed and step down, not
	// take the address back.
	time.Sleep(2 * lab.TTL)
	if h := l.Holder(lab.MoveBound, 0); h == old {
		t.Fatalf("%s took the address back after SIGCONT", old.Name)
	}
	if l.HasVIP(old) {
		t.Fatalf("%s has %s after SIGCONT", old.Name, lab.VIP)
	}
	if !strings.Contains(old.Log.String(), "leader -> candidate") {
		t.Errorf("the resumed node did not log stepping down:\n%s", old.Log.String())
	}
}

// The holder's node is lost while it hosts etcd's raft leader. etcd's new
// leader extends every lease by a TTL and its election timeout, so the dead
// holder's lease outlives it; the handover must come from its heartbeat
// standing still instead.
func TestClusterNodeLossWithEtcdLeader(t *testing.T) {
	l, p, _ := lab.ClusterLab(t)
	old := l.HolderWithEtcdLeader()
	t0 := time.Now()
	l.Partition(old)
	l.Signal(old, syscall.SIGKILL)
	l.Wait(old, 5*time.Second)
	next := l.HolderOtherThan(old, lab.MoveBound)
	p.WaitAnsweredBy(t, next.Name, t0, 5*time.Second)
	removed := fmt.Sprintf("of holder %q: its heartbeat stood still", old.Name)
	if !slices.ContainsFunc(l.Nodes, func(nd *lab.Node) bool { return nd != old && strings.Contains(nd.Log.String(), removed) }) {
		t.Errorf("no survivor removed the election key of %s (want a log line containing %q)", old.Name, removed)
	}
	l.Heal(old)
}

// Nodes may run with different TTLs. A candidate must let the holder's
// heartbeat stand still for the holder's TTL, not its own: a cut-off holder
// with vip.ttl=6 keeps the address up to 4.5 s, and candidates with
// vip.ttl=2 that went by their own TTL would take it after 2 s.
func TestClusterMixedTTL(t *testing.T) {
	l := lab.NewWith(t, lab.Options{Nodes: 3, Cluster: true})
	p := l.StartProber()
	l.Start(l.Nodes[0], "vip.ttl=6")
	old := l.Holder(lab.ElectBound, time.Second)
	for _, nd := range l.Nodes[1:] {
		l.Start(nd, "vip.ttl=2")
	}
	time.Sleep(2 * time.Second)
	t0 := time.Now()
	l.Partition(old)
	next := l.HolderOtherThan(old, lab.MoveBound)
	p.WaitAnsweredBy(t, next.Name, t0, 5*time.Second)
	l.AssertNoOverlap()
	l.Heal(old)
}

func TestClusterPartition(t *testing.T) {
	l, p, old := lab.ClusterLab(t)
	t0 := time.Now()
	l.Partition(old)
	// It must drop the address by its own deadline, before the others'
	// election can hand it on; the monitor's no-overlap check covers the
	// order.
	l.WaitGone(old, 5*time.Second)
	next := l.HolderOtherThan(old, lab.MoveBound)
	p.WaitAnsweredBy(t, next.Name, t0, 5*time.Second)
	if log := old.Log.String(); !strings.Contains(log, "leader -> candidate") {
		t.Errorf("the cut-off holder did not log stepping down:\n%s", log)
	}

	// Healing may disturb etcd (the rejoining member can force a raft
	// election), so the holder may change once more; what must hold is one
	// holder, no overlap, and a cleanly rejoined node.
	l.Heal(old)
	time.Sleep(3 * lab.TTL)
	h := l.Holder(lab.MoveBound, lab.TTL)
	p.WaitAnsweredBy(t, h.Name, time.Now(), 5*time.Second)
	if strings.Count(old.Log.String(), "campaigning for") < 2 {
		t.Errorf("the healed node did not campaign again:\n%s", old.Log.String())
	}
}

func TestClusterEtcdMembers(t *testing.T) {
	l, _, h := lab.ClusterLab(t)
	gained := l.Mon.GainedAt(lab.IndexOf(l.Nodes, h))

	// One member down (neither the holder's own nor etcd's leader): quorum
	// stays, and so does the holder.
	leader := l.EtcdLeader()
	var victim *lab.EtcdMember
	for _, m := range l.Etcd {
		if m.Name != h.Name && m != leader {
			victim = m
			break
		}
	}
	l.StopMember(victim)
	time.Sleep(3 * lab.TTL)
	if now := l.Holder(lab.MoveBound, 0); now != h || !l.Mon.GainedAt(lab.IndexOf(l.Nodes, h)).Equal(gained) {
		t.Fatalf("holder changed (now %s) after etcd member %s went down; quorum was kept", now.Name, victim.Name)
	}

	// Two down: no quorum, no renewals, so every node must give up the
	// address, and nobody may take it.
	var second *lab.EtcdMember
	for _, m := range l.Etcd {
		if m != victim {
			second = m
			break
		}
	}
	l.StopMember(second)
	lab.WaitFor(t, 5*time.Second, "every node to drop the VIP", func() bool {
		held := l.Mon.WithAddress()
		return len(held) == 0
	})
	time.Sleep(2 * lab.TTL)
	if held := l.Mon.WithAddress(); len(held) != 0 {
		t.Fatalf("%v hold %s without an etcd quorum", l.Names(held), lab.VIP)
	}
	for _, nd := range l.Nodes {
		select {
		case err := <-nd.Exit:
			t.Fatalf("vipd on %s exited (%v) while etcd had no quorum", nd.Name, err)
		default:
		}
		if n := strings.Count(nd.Log.String(), "etcd unreachable"); n > 3 {
			t.Errorf("%s logged the outage %d times; once per change is enough:\n%s", nd.Name, n, nd.Log.String())
		}
	}

	l.StartEtcd(victim, second)
	l.Holder(3*lab.ElectBound, time.Second)
}

func TestClusterReconcile(t *testing.T) {
	l, p, h := lab.ClusterLab(t)
	capture := lab.CaptureARP(t, l.Client)

	// Removed by hand on the holder: put back and announced again.
	t0 := time.Now()
	h.NS.IP(t, "addr", "del", lab.VIP+"/32", "dev", "eth0")
	lab.WaitFor(t, 5*time.Second, "the re-add to be logged", func() bool { return strings.Contains(h.Log.String(), "re-added") })
	if !l.HasVIP(h) {
		t.Fatalf("%s logged the re-add but does not have %s", h.Name, lab.VIP)
	}
	lab.WaitFor(t, 5*time.Second, "an announcement after the re-add", func() bool { return !capture.First(h.MAC, t0).IsZero() })
	p.WaitAnsweredBy(t, h.Name, time.Now(), 5*time.Second)

	// Link down on the holder: it steps down, another node takes over and
	// announces.
	t1 := time.Now()
	h.NS.IP(t, "link", "set", "eth0", "down")
	l.WaitGone(h, 5*time.Second)
	next := l.HolderOtherThan(h, lab.MoveBound)
	lab.WaitFor(t, 5*time.Second, "the new holder's announcement", func() bool { return !capture.First(next.MAC, t1).IsZero() })
	p.WaitAnsweredBy(t, next.Name, t1, 5*time.Second)
	h.NS.IP(t, "link", "set", "eth0", "up")
	time.Sleep(2 * lab.TTL)
	if got := l.Holder(lab.MoveBound, 0); got != next {
		t.Fatalf("holder after link up is %s, want %s to keep it", got.Name, next.Name)
	}
	if log := h.Log.String(); !strings.Contains(log, "-> waiting: eth0 is down") {
		t.Errorf("link down not logged as a step-down:\n%s", log)
	}
}

func TestClusterRestartLoop(t *testing.T) {
	l, _, _ := lab.ClusterLab(t)
	for i := 0; i < 20; i++ {
		nd := l.Nodes[i%len(l.Nodes)]
		l.Signal(nd, syscall.SIGTERM)
		if err := l.Wait(nd, 5*time.Second); err != nil {
			t.Fatalf("restart %d: vipd on %s exited with %v", i, nd.Name, err)
		}
		if l.HasVIP(nd) {
			t.Fatalf("restart %d: %s kept %s after vipd stopped", i, nd.Name, lab.VIP)
		}
		l.Start(nd)
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	}
	l.Holder(lab.MoveBound, time.Second)
}

package main

import (
	"syscall"
	"testing"
	"time"
)

// Rank tests in the lab (DESIGN.md 2b): real vipd processes, a real etcd,
// the VIP followed by the rtnetlink monitor. Each move of the VIP is one
// "gained" event; the tests count them.

const labPreempt = 2 * time.Second // vip.preempt.delay in these tests

// waitHolder waits (bounded) for nd to be the only holder, settled.
func (l *lab) waitHolder(nd *labNode, timeout time.Duration) {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if h, since := l.mon.current(); len(h) == 1 && l.nodes[h[0]] == nd && time.Since(since) >= 500*time.Millisecond {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h, _ := l.mon.current()
	l.t.Fatalf("%s does not hold %s within %v (holders now: %v)", nd.name, labVIP, timeout, l.names(h))
}

// wantGains checks how often the VIP has moved (been gained) so far.
func (l *lab) wantGains(want int, what string) {
	l.t.Helper()
	if got := l.mon.gains(); got != want {
		l.t.Fatalf("%s: the VIP was gained %d times, want %d\n%s", what, got, want, l.mon.history())
	}
}

// TestPriorityPreemption: started in the order n1 (0), n2 (0), n3 (10),
// the VIP goes from n1 to n3 once, after vip.preempt.delay, without
// passing through n2. Stopping n3 moves it away once; n3 back moves it
// back once.
func TestPriorityPreemption(t *testing.T) {
	l := newLab(t, 3, "vip.ttl=2", "vip.preempt.delay="+labPreempt.String())
	n1, n2, n3 := l.nodes[0], l.nodes[1], l.nodes[2]
	l.start(n1, "vip.priority=0")
	l.waitHolder(n1, electBound)
	l.start(n2, "vip.priority=0")
	time.Sleep(time.Second) // n2 is a candidate behind n1
	l.start(n3, "vip.priority=10")
	t0 := time.Now()
	l.waitHolder(n3, labPreempt+moveBound)
	if waited := l.mon.gainedAt(2).Sub(t0); waited < labPreempt {
		t.Fatalf("n3 took the VIP %v after it started, before vip.preempt.delay (%v)", waited, labPreempt)
	}
	time.Sleep(settleAfter)
	l.wantGains(2, "n1, then one handover to n3")
	l.touchVIP()
	l.waitClientNeighbour(n3.mac, 5*time.Second)

	l.signal(n3, syscall.SIGTERM)
	l.wait(n3, 10*time.Second)
	l.holderOtherThan(n3, moveBound)
	time.Sleep(settleAfter)
	l.wantGains(3, "n3 stopped: one handover away")
	l.start(n3, "vip.priority=10")
	l.waitHolder(n3, labPreempt+moveBound)
	time.Sleep(settleAfter)
	l.wantGains(4, "n3 back: one handover back")
	l.assertNoOverlap()
}

// TestEqualPriorityNoPreemption: a later node with the same priority never
// takes the VIP from the holder.
func TestEqualPriorityNoPreemption(t *testing.T) {
	l := newLab(t, 2, "vip.ttl=2", "vip.preempt.delay=1s", "vip.priority=5")
	l.start(l.nodes[0])
	l.waitHolder(l.nodes[0], electBound)
	l.start(l.nodes[1])
	time.Sleep(3 * time.Second)
	l.wantGains(1, "equal priorities")
	l.waitHolder(l.nodes[0], time.Second)
	l.assertNoOverlap()
}


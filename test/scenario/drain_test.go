package scenario

import (
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestDrain: `vipd -drain` on the holder's node (no settings: the running
// vipd does it) moves the VIP once, gracefully, to another node; -status
// shows the node drained. Draining every node leaves the VIP where it is,
// and the holder's log and -status say why. The mark outlives a restart
// of the node. Undraining one node moves the VIP to it from a drained
// holder; undraining the rest moves nothing.
func TestDrain(t *testing.T) {
	l := lab.New(t, 3, "vip.ttl=2")
	p := l.StartProber()
	l.StartAll()
	h := l.Holder(lab.ElectBound, lab.SettleAfter)
	l.WaitClientNeighbour(h.MAC, 5*time.Second)
	gains := l.Mon.Gains()

	t0 := time.Now()
	r := l.VipdOn(h, "-drain")
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "drained "+h.Name+": ") {
		t.Fatalf("vipd -drain on %s: exit %d\n%s%s", h.Name, r.Code, r.Stdout, r.Stderr)
	}
	next := l.HolderOtherThan(h, lab.MoveBound)
	if !strings.Contains(r.Stdout, next.Name+" holds the VIP") {
		t.Errorf("vipd -drain said %q; %s took the VIP", r.Stdout, next.Name)
	}
	l.WaitHolder(next, lab.MoveBound)
	l.WaitClientNeighbour(next.MAC, 5*time.Second)
	l.AssertNoOverlap()
	l.WantGains(gains+1, "draining the holder") // one move
	if !strings.Contains(h.Log.String(), "handing over to "+next.Name) {
		t.Errorf("%s did not hand over gracefully:\n%s", h.Name, h.Log.String())
	}
	gap, _ := p.MaxGap(t0, time.Now())
	t.Logf("drained %s: the VIP went to %s; the client's largest probe gap %v, %d probes lost", h.Name, next.Name, gap.Round(time.Millisecond), p.Lost(t0, time.Now()))
	lab.WaitFor(t, 5*time.Second, "-status showing "+h.Name+" drained", func() bool {
		return regexp.MustCompile(`(?m)^next \d +` + h.Name + ` +drained, healthy, priority 0 `).MatchString(l.StatusOn(next).Stdout)
	})

	// The mark outlives a restart: the node comes back drained.
	l.Signal(h, syscall.SIGTERM)
	if err := l.Wait(h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Start(h)
	lab.WaitLogCount(t, h, "drained by an operator", 1, 10*time.Second) // its new log

	// Every node drained, the holder last: the VIP stays, and the holder
	// says why.
	gains = l.Mon.Gains()
	for _, nd := range append(lab.OtherNodes(l, h, next), next) {
		if r := l.VipdOn(h, "-drain", nd.Name); r.Code != 0 {
			t.Fatalf("vipd -drain %s: exit %d\n%s%s", nd.Name, r.Code, r.Stdout, r.Stderr)
		}
	}
	lab.WaitLogCount(t, next, "drained, but keeping the VIP: no undrained candidate", 1, 5*time.Second)
	time.Sleep(lab.SettleAfter)
	l.WantGains(gains, "draining every node")
	l.WaitHolder(next, time.Second)
	st := l.StatusOn(next).Stdout
	if n := strings.Count(st, "drained, healthy"); n != 3 || !strings.Contains(st, "\ndrained    n1, n2, n3 (vipd -undrain NAME)\n") {
		t.Errorf("-status shows %d drained nodes, want 3, and the marks:\n%s", n, st)
	}
	if rep, _ := l.StatusJSON(next); len(rep.Drained) != 3 || !rep.Holder.Drained || rep.Holder.Name != next.Name {
		t.Errorf("-status -json with every node drained: %+v", rep)
	}

	// Undrain h: the drained holder hands over to it at once.
	if r := l.VipdOn(next, "-undrain", h.Name); r.Code != 0 || !strings.HasPrefix(r.Stdout, "undrained "+h.Name) {
		t.Fatalf("vipd -undrain %s: exit %d\n%s%s", h.Name, r.Code, r.Stdout, r.Stderr)
	}
	l.WaitHolder(h, lab.MoveBound)
	l.AssertNoOverlap()
	l.WantGains(gains+1, "undraining one node under a drained holder")

	// Undrain the rest: equal ranks, nothing moves.
	gains = l.Mon.Gains()
	for _, nd := range l.Nodes {
		if nd != h {
			if r := l.VipdOn(h, "-undrain", nd.Name); r.Code != 0 {
				t.Fatalf("vipd -undrain %s: exit %d\n%s%s", nd.Name, r.Code, r.Stdout, r.Stderr)
			}
		}
	}
	time.Sleep(lab.SettleAfter)
	l.WantGains(gains, "undraining the candidates")
	l.WaitHolder(h, time.Second)
	if st := l.StatusOn(h).Stdout; strings.Contains(st, "drained") {
		t.Errorf("-status after every undrain:\n%s", st)
	}
	if r := l.VipdOn(h, "-undrain", "nosuch"); r.Code != 0 || !strings.Contains(r.Stdout, "nosuch was not drained") {
		t.Errorf("vipd -undrain nosuch: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

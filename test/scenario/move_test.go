package scenario

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestMove: `vipd -move NAME` from any node hands the VIP over to NAME,
// once and gracefully, and says so; the move holds, though the old holder
// has the higher priority, past vip.preempt.delay. `vipd -move` alone
// moves it to the next node in takeover order. A name that is no
// candidate, the holder itself, and a drained node are refused with one
// line and exit 1, and nothing moves.
func TestMove(t *testing.T) {
	l := lab.New(t, 3, "vip.ttl=2", "vip.preempt.delay="+lab.Preempt.String())
	l.StartProber()
	n1, n2, n3 := l.Nodes[0], l.Nodes[1], l.Nodes[2]
	l.Start(n1, "vip.priority=10")
	l.WaitHolder(n1, lab.ElectBound)
	l.Start(n2)
	l.Start(n3)
	l.Holder(lab.ElectBound, lab.SettleAfter)
	gains := l.Mon.Gains()

	r := l.VipdOn(n3, "-move", n2.Name) // from a third node, no settings
	if r.Code != 0 || !regexp.MustCompile(`^moved the VIP from n1 to n2 in \d+(\.\d+)?m?s\n$`).MatchString(r.Stdout) {
		t.Fatalf("vipd -move n2: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	l.WaitHolder(n2, lab.MoveBound)
	l.WaitClientNeighbour(n2.MAC, 5*time.Second)
	l.WantGains(gains+1, "-move n2")
	if !strings.Contains(n1.Log.String(), "handing over to n2") {
		t.Errorf("n1 did not hand over gracefully:\n%s", n1.Log.String())
	}
	// It holds: n1's priority 10 does not pull it back.
	time.Sleep(lab.Preempt + lab.SettleAfter)
	l.WaitHolder(n2, time.Second)
	l.WantGains(gains+1, "after the preempt delay")
	if st := l.StatusOn(n1).Stdout; !regexp.MustCompile(`(?m)^holder +n2 +healthy, moved here, priority 0 `).MatchString(st) {
		t.Errorf("-status after the move:\n%s", st)
	}

	// Refused, one line each, exit 1, nothing moves.
	for _, c := range []struct{ name, why string }{
		{"nosuch", "no such candidate"},
		{n2.Name, "holds the VIP already"},
	} {
		r := l.VipdOn(n1, "-move", c.name)
		if lines := strings.Split(strings.TrimSpace(r.Stderr), "\n"); r.Code != 1 || len(lines) != 1 || !strings.Contains(lines[0], c.why) || r.Stdout != "" {
			t.Errorf("vipd -move %s: exit %d, stdout %q, stderr %q; want 1 and one line saying %q", c.name, r.Code, r.Stdout, r.Stderr, c.why)
		}
	}
	if r := l.VipdOn(n3, "-drain"); r.Code != 0 {
		t.Fatalf("vipd -drain on n3: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	lab.WaitFor(t, 5*time.Second, "n3's entry drained", func() bool { return strings.Contains(l.StatusOn(n1).Stdout, "n3    drained") })
	if r := l.VipdOn(n1, "-move", "n3"); r.Code != 1 || !strings.Contains(r.Stderr, "it is drained") {
		t.Errorf("vipd -move n3 (drained): exit %d, stderr %q", r.Code, r.Stderr)
	}
	l.WantGains(gains+1, "refused moves")

	// No name: the next in takeover order, n1 (priority 10; n3 is drained).
	r = l.VipdOn(n2, "-move")
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "moved the VIP from n2 to n1 in ") {
		t.Fatalf("vipd -move: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	l.WaitHolder(n1, lab.MoveBound)
	l.WantGains(gains+2, "-move to the next")
	l.AssertNoOverlap()
}

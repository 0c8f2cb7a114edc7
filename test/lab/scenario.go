package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ClusterLab starts the three-node cluster with a dual-stack VIP, the
// prober and vipd everywhere, and waits for the first holder.
func ClusterLab(t *testing.T) (*Lab, *Prober, *Node) {
	l := NewWith(t, Options{Nodes: 3, Cluster: true, DualStack: true, Args: []string{"vip.ttl=2"}})
	p := l.StartProber()
	l.StartAll()
	h := l.Holder(ElectBound, time.Second)
	t.Cleanup(func() {
		if o := l.Overlaps(); len(o) > 0 {
			t.Errorf("two holders at once: %v", o)
		}
		// Both addresses move as one unit: whoever holds one holds both
		// (the two events may arrive a moment apart).
		var h4, h6 []int
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			h4, _ = l.Mon.Current()
			h6, _ = l.Mon6.Current()
			if fmt.Sprint(h4) == fmt.Sprint(h6) {
				return
			}
		}
		t.Errorf("IPv4 VIP held by %v, IPv6 VIP by %v", l.Names(h4), l.Names(h6))
	})
	return l, p, h
}

// Partition cuts the node off the LAN behind the switch: its link stays up
// (so vipd sees no link event) but nothing gets through, etcd included.
func (l *Lab) Partition(nd *Node) { l.Lan.IP(l.T, "link", "set", "v"+nd.Name, "nomaster") }

// Heal puts the node back on the LAN.
func (l *Lab) Heal(nd *Node) { l.Lan.IP(l.T, "link", "set", "v"+nd.Name, "master", "br0") }

// IndexOf is nd's place in nodes (-1 if absent).
func IndexOf(nodes []*Node, nd *Node) int {
	for i, n := range nodes {
		if n == nd {
			return i
		}
	}
	return -1
}

// Bounds of the scenarios: the TTL most labs run with (vip.ttl=2), the
// first election after a start, a handover after a fault, and a stretch of
// several renewals.
const (
	TTL         = 2 * time.Second
	ElectBound  = 15 * time.Second // first election after start
	MoveBound   = 10 * time.Second // a handover after a fault
	SettleAfter = 3 * time.Second  // several renewals: the holder keeps the address
)

const Preempt = 2 * time.Second // vip.preempt.delay in these tests

// WaitHolder waits (bounded) for nd to be the only holder, settled.
func (l *Lab) WaitHolder(nd *Node, timeout time.Duration) {
	l.T.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if h, since := l.Mon.Current(); len(h) == 1 && l.Nodes[h[0]] == nd && time.Since(since) >= 500*time.Millisecond {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h, _ := l.Mon.Current()
	l.T.Fatalf("%s does not hold %s within %v (holders now: %v)", nd.Name, VIP, timeout, l.Names(h))
}

// WantGains checks how often the VIP has moved (been gained) so far.
func (l *Lab) WantGains(want int, what string) {
	l.T.Helper()
	if got := l.Mon.Gains(); got != want {
		l.T.Fatalf("%s: the VIP was gained %d times, want %d\n%s", what, got, want, l.Mon.History())
	}
}

// Health tests: every node's vip.check asks its own lab service
// (service.go), which the test takes down and up.
const (
	CheckInterval = 500 * time.Millisecond
	CheckFall     = 3
)

func CheckWords() []string {
	return []string{"vip.ttl=2", "vip.check=" + CheckURL, "vip.check.interval=" + CheckInterval.String(),
		"vip.check.timeout=" + CheckInterval.String(), "vip.check.rise=2", "vip.check.fall=3"}
}

// WaitLogCount waits (bounded) until the node's log has at least n lines
// containing s.
func WaitLogCount(t testing.TB, nd *Node, s string, n int, timeout time.Duration) {
	t.Helper()
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if strings.Count(nd.Log.String(), s) >= n {
			return
		}
	}
	t.Fatalf("%s: %d lines with %q after %v, want %d", nd.Name, strings.Count(nd.Log.String(), s), s, timeout, n)
}

// MaxGap is the longest stretch between two answered probes sent in
// [from, to], and how many were answered there.
func (p *Prober) MaxGap(from, to time.Time) (time.Duration, int) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	var gap time.Duration
	var last time.Time
	n := 0
	for _, a := range p.Answers {
		if a.Sent.Before(from) || a.Sent.After(to) {
			continue
		}
		if !last.IsZero() && a.Sent.Sub(last) > gap {
			gap = a.Sent.Sub(last)
		}
		last = a.Sent
		n++
	}
	return gap, n
}

// Lost is how many probes sent in [from, to] were never answered.
func (p *Prober) Lost(from, to time.Time) int {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	n := 0
	for _, at := range p.Sent {
		if !at.Before(from) && !at.After(to) {
			n++
		}
	}
	return n
}

// AssertKept checks that h is the only node that ever gained the VIP
// after gains, and that it never lost it.
func AssertKept(t testing.TB, l *Lab, h *Node, gains int) {
	t.Helper()
	if g := l.Mon.Gains(); g != gains {
		t.Errorf("the VIP moved: %d gains, want %d\n%s", g, gains, l.Mon.History())
	}
	if holders, _ := l.Mon.Current(); len(holders) != 1 || l.Nodes[holders[0]] != h {
		t.Errorf("holders now %v, want only %s", l.Names(holders), h.Name)
	}
	for _, nd := range l.Nodes {
		if nd != h && strings.Contains(nd.Log.String(), "-> leader") {
			t.Errorf("%s became leader", nd.Name)
		}
	}
}

// CmdlineLab starts n nodes whose VIP comes from a kernel command line
// file (-cmdline), which a test may rewrite before a SIGHUP.
func CmdlineLab(t *testing.T, n int) *Lab {
	l := New(t, n)
	bin, _ := Binaries(t)
	for _, nd := range l.Nodes {
		WriteCmdline(t, nd, "vip.address="+VIP+" vip.ttl=2")
		l.Run(nd, []string{bin, "-cmdline", cmdlineFile(nd), "vip.interface=eth0", "vip.etcd=" + l.EtcdURLs(), "vip.name=" + nd.Name, "vip.log=stderr"})
	}
	return l
}

func cmdlineFile(nd *Node) string { return filepath.Join(nd.RunDir, "..", "cmdline") }

func WriteCmdline(t testing.TB, nd *Node, words string) {
	t.Helper()
	if err := os.WriteFile(cmdlineFile(nd), []byte(words+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

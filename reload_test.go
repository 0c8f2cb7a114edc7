package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Restart without failover (issue 11): a SIGHUP re-executes vipd in place
// and a crashed vipd started again at once resumes its lease; in neither
// case may the VIP move.

// waitLogCount waits (bounded) until the node's log has at least n lines
// containing s.
func waitLogCount(t testing.TB, nd *labNode, s string, n int, timeout time.Duration) {
	t.Helper()
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if strings.Count(nd.log.String(), s) >= n {
			return
		}
	}
	t.Fatalf("%s: %d lines with %q after %v, want %d", nd.name, strings.Count(nd.log.String(), s), s, timeout, n)
}

// maxGap is the longest stretch between two answered probes sent in
// [from, to], and how many were answered there.
func (p *prober) maxGap(from, to time.Time) (time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var gap time.Duration
	var last time.Time
	n := 0
	for _, a := range p.answers {
		if a.sent.Before(from) || a.sent.After(to) {
			continue
		}
		if !last.IsZero() && a.sent.Sub(last) > gap {
			gap = a.sent.Sub(last)
		}
		last = a.sent
		n++
	}
	return gap, n
}

// lost is how many probes sent in [from, to] were never answered.
func (p *prober) lost(from, to time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, at := range p.sent {
		if !at.Before(from) && !at.After(to) {
			n++
		}
	}
	return n
}

// assertKept checks that h is the only node that ever gained the VIP
// after gains, and that it never lost it.
func assertKept(t testing.TB, l *lab, h *labNode, gains int) {
	t.Helper()
	if g := l.mon.gains(); g != gains {
		t.Errorf("the VIP moved: %d gains, want %d\n%s", g, gains, l.mon.history())
	}
	if holders, _ := l.mon.current(); len(holders) != 1 || l.nodes[holders[0]] != h {
		t.Errorf("holders now %v, want only %s", l.names(holders), h.name)
	}
	for _, nd := range l.nodes {
		if nd != h && strings.Contains(nd.log.String(), "-> leader") {
			t.Errorf("%s became leader", nd.name)
		}
	}
}

// TestReloadKeepsVIP: ten SIGHUPs of the holder's vipd. Same PID, the
// holder never changes (netlink monitor), and the client misses no probe
// beyond one 10 ms interval.
func TestReloadKeepsVIP(t *testing.T) {
	l, p, h := clusterLab(t)
	pid := h.cmd.Process.Pid
	gains := l.mon.gains()
	from := time.Now()
	for i := 1; i <= 10; i++ {
		l.signal(h, syscall.SIGHUP)
		waitLogCount(t, h, "resumed the earlier run's lease", i, 10*time.Second)
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(time.Second)
	to := time.Now()
	select {
	case err := <-h.exit:
		t.Fatalf("vipd on %s exited: %v", h.name, err)
	default:
	}
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err != nil || !strings.HasSuffix(exe, "/vipd") {
		t.Errorf("PID %d is %q (%v), want the same vipd", pid, exe, err)
	}
	if n := strings.Count(h.log.String(), "starting "); n != 11 {
		t.Errorf("%d starts in the log, want 11 (one per SIGHUP)", n)
	}
	assertKept(t, l, h, gains)
	gap, n := p.maxGap(from, to)
	lost := p.lost(from, to)
	t.Logf("%d probes answered, %d lost; longest gap between answers %v", n, lost, gap)
	if lost > 1 {
		t.Errorf("the client lost %d probes (interval %v) over the ten re-executions", lost, probeInterval)
	}
}

// TestCrashResume: ten times, the holder's vipd is killed (SIGKILL) and
// started again at once. It resumes its lease; no other node adds the
// VIP. The client's outage, if any, is reported.
func TestCrashResume(t *testing.T) {
	l, p, h := clusterLab(t)
	gains := l.mon.gains()
	for i := 1; i <= 10; i++ {
		t0 := time.Now()
		l.kill(h)
		l.start(h)
		waitLogCount(t, h, "resumed the earlier run's lease", 1, 10*time.Second)
		time.Sleep(500 * time.Millisecond)
		gap, n := p.maxGap(t0.Add(-100*time.Millisecond), time.Now())
		t.Logf("kill %d: %d probes answered, %d lost, longest gap %v", i, n, p.lost(t0, time.Now().Add(-100*time.Millisecond)), gap)
	}
	assertKept(t, l, h, gains)
}

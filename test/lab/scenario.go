package lab

// clusterLab starts the three-node cluster with a dual-stack VIP, the
// prober and vipd everywhere, and waits for the first holder.
func clusterLab(t *testing.T) (*lab, *prober, *labNode) {
	l := newLabWith(t, labOptions{nodes: 3, cluster: true, dualStack: true, args: []string{"vip.ttl=2"}})
	p := l.startProber()
	l.startAll()
	h := l.holder(electBound, time.Second)
	t.Cleanup(func() {
		if o := l.overlaps(); len(o) > 0 {
			t.Errorf("two holders at once: %v", o)
		}
		// Both addresses move as one unit: whoever holds one holds both
		// (the two events may arrive a moment apart).
		var h4, h6 []int
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			h4, _ = l.mon.current()
			h6, _ = l.mon6.current()
			if fmt.Sprint(h4) == fmt.Sprint(h6) {
				return
			}
		}
		t.Errorf("IPv4 VIP held by %v, IPv6 VIP by %v", l.names(h4), l.names(h6))
	})
	return l, p, h
}

// partition cuts the node off the LAN behind the switch: its link stays up
// (so vipd sees no link event) but nothing gets through, etcd included.
func (l *lab) partition(nd *labNode) { l.lan.ip(l.t, "link", "set", "v"+nd.name, "nomaster") }

func (l *lab) heal(nd *labNode)      { l.lan.ip(l.t, "link", "set", "v"+nd.name, "master", "br0") }

func indexOf(nodes []*labNode, nd *labNode) int {
	for i, n := range nodes {
		if n == nd {
			return i
		}
	}
	return -1
}

const (
	labTTL      = 2 * time.Second
	electBound  = 15 * time.Second // first election after start
	moveBound   = 10 * time.Second // a handover after a fault
	settleAfter = 3 * time.Second  // several renewals: the holder keeps the address
)

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

// Health tests: every node's vip.check asks its own lab service
// (service_test.go), which the test takes down and up.
const (
	labCheckInterval = 500 * time.Millisecond
	labCheckFall     = 3
)

func labCheckWords() []string {
	return []string{"vip.ttl=2", "vip.check=" + labCheckURL, "vip.check.interval=" + labCheckInterval.String(),
		"vip.check.timeout=" + labCheckInterval.String(), "vip.check.rise=2", "vip.check.fall=3"}
}

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

// cmdlineLab starts n nodes whose VIP comes from a kernel command line
// file (-cmdline), which a test may rewrite before a SIGHUP.
func cmdlineLab(t *testing.T, n int) *lab {
	l := newLab(t, n)
	bin, _ := binaries(t)
	for _, nd := range l.nodes {
		writeCmdline(t, nd, "vip.address="+labVIP+" vip.ttl=2")
		l.run(nd, []string{bin, "-cmdline", cmdlineFile(nd), "vip.interface=eth0", "vip.etcd=" + l.etcdURLs(), "vip.name=" + nd.name, "vip.log=stderr"})
	}
	return l
}

func cmdlineFile(nd *labNode) string { return filepath.Join(nd.runDir, "..", "cmdline") }

func writeCmdline(t testing.TB, nd *labNode, words string) {
	t.Helper()
	if err := os.WriteFile(cmdlineFile(nd), []byte(words+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

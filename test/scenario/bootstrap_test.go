package scenario

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestBootstrap: with etcd absent, n1 (vip.bootstrap=n1) holds the VIP
// without an election and the client reaches it; the others do not. etcd
// starts: the election takes over with one handover at most, never two
// holders, whether n1 wins it (and keeps the address) or, ranked lower,
// does not (and lets go). Then every node restarts with etcd present: none
// holds without an election again (n1 remembers under its /run that etcd
// answered).
func TestBootstrap(t *testing.T) {
	t.Run("n1 elected", func(t *testing.T) { testBootstrap(t) })
	t.Run("n1 ranked lower", func(t *testing.T) { testBootstrap(t, "vip.priority=-5", "vip.preempt.delay=0") })
	t.Run("n1 cut off from etcd", testBootstrapYield)
}

// testBootstrapYield: n1 holds without etcd; etcd starts where n1 cannot
// reach it, so n2 or n3 is elected: its probe is the first sign n1 sees,
// and n1 lets go at once; one move, never two holders.
func testBootstrapYield(t *testing.T) {
	l := lab.New(t, 3, "vip.ttl=2", "vip.bootstrap=n1")
	p := l.StartProber()
	m := l.Etcd[0]
	l.StopMember(m)
	n1 := l.Nodes[0]
	l.StartAll()
	l.WaitHolder(n1, 10*time.Second)
	n1.NS.IP(t, "route", "add", "blackhole", lab.EtcdIP+"/32")
	t1 := time.Now()
	l.StartEtcd(m)
	h := l.HolderOtherThan(n1, lab.MoveBound)
	l.WaitHolder(h, lab.MoveBound)
	l.AssertNoOverlap()
	l.WantGains(2, "etcd started out of n1's reach")
	lab.WaitLogCount(t, n1, "(an elected holder's probe or announcement): letting go", 1, time.Second)
	out, _ := p.Outage(t1, n1.Name)
	t.Logf("%s was elected; n1 let go at its probe; the client's outage %v", h.Name, out.Round(time.Millisecond))
}

func testBootstrap(t *testing.T, n1Words ...string) {
	l := lab.New(t, 3, "vip.ttl=2", "vip.bootstrap=n1")
	p := l.StartProber()
	m := l.Etcd[0]
	l.StopMember(m)
	n1 := l.Nodes[0]
	t0 := time.Now()
	l.Start(n1, n1Words...)
	for _, nd := range l.Nodes[1:] {
		l.Start(nd)
	}
	l.WaitHolder(n1, 10*time.Second)
	l.WaitClientNeighbour(n1.MAC, 5*time.Second)
	p.WaitAnsweredBy(t, n1.Name, t0, 5*time.Second)
	t.Logf("n1 holds the VIP without etcd %v after the start", l.Mon.GainedAt(0).Sub(t0).Round(time.Millisecond))
	time.Sleep(lab.SettleAfter)
	l.WantGains(1, "bootstrap, etcd absent")
	if r := l.StatusOn(n1); !strings.Contains(r.Stdout, "state      bootstrap since") {
		t.Errorf("-status on n1 does not say bootstrap:\n%s", r.Stdout)
	}

	t1 := time.Now()
	l.StartEtcd(m)
	// The election's holder, as etcd has it (the monitor may still see the
	// bootstrap hold).
	var h *lab.Node
	lab.WaitFor(t, lab.ElectBound, "-status naming a holder", func() bool {
		rep, r := l.StatusJSON(l.Nodes[1])
		if r.Code != 0 || rep.Holder == nil {
			return false
		}
		for _, nd := range l.Nodes {
			if nd.Name == rep.Holder.Name {
				h = nd
			}
		}
		return h != nil
	})
	l.WaitHolder(h, lab.MoveBound)
	time.Sleep(lab.SettleAfter)
	l.WaitHolder(h, time.Second)
	l.AssertNoOverlap()
	if g := l.Mon.Gains(); g > 2 {
		t.Fatalf("the VIP moved %d times once etcd started, want one handover at most\n%s", g-1, l.Mon.History())
	}
	out, _ := p.Outage(t1, n1.Name)
	gap, _ := p.MaxGap(t1, time.Now())
	t.Logf("etcd started: %s holds the VIP through the election; the client's outage %v, largest probe gap %v",
		h.Name, out.Round(time.Millisecond), gap.Round(time.Millisecond))

	for _, line := range strings.Split(n1.Log.String(), "\n") {
		if strings.Contains(line, "bootstrap ->") || strings.Contains(line, "etcd answers") {
			t.Logf("n1: %s", line)
		}
	}
	if len(n1Words) > 0 && h == n1 {
		t.Errorf("n1, ranked lower, holds the VIP:\n%s", n1.Log.String())
	}
	for _, nd := range l.Nodes {
		l.Signal(nd, syscall.SIGTERM)
		if err := l.Wait(nd, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if nd == n1 {
			l.Start(nd, n1Words...)
		} else {
			l.Start(nd)
		}
	}
	l.Holder(lab.ElectBound, lab.SettleAfter)
	l.AssertNoOverlap()
	for _, nd := range l.Nodes {
		if strings.Contains(nd.Log.String(), "bootstrap") {
			t.Errorf("%s entered bootstrap again with etcd present:\n%s", nd.Name, nd.Log.String())
		}
	}

	// etcd goes away, and n1 restarts: it heard from etcd since boot, so
	// it waits for etcd like everyone else.
	l.StopMember(m)
	l.Signal(n1, syscall.SIGTERM)
	if err := l.Wait(n1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Start(n1, n1Words...)
	time.Sleep(3 * lab.TTL)
	if strings.Contains(n1.Log.String(), "bootstrap") || l.HasVIP(n1) {
		t.Errorf("n1, restarted during an etcd outage, holds the VIP without an election:\n%s", n1.Log.String())
	}
}

// TestBootstrapCutOff: n2 holds the VIP through etcd; n1, named by
// vip.bootstrap, starts cut off from etcd (it never heard from it since
// boot): its probe sees n2 answer, so bootstrap is over and it never takes
// the VIP; restarted after a SIGKILL, it remembers that and does not even
// probe.
func TestBootstrapCutOff(t *testing.T) {
	l := lab.New(t, 3, "vip.ttl=2", "vip.bootstrap=n1")
	l.StartProber()
	n1, n2, n3 := l.Nodes[0], l.Nodes[1], l.Nodes[2]
	l.Start(n2)
	l.WaitHolder(n2, lab.ElectBound)
	l.Start(n3)
	n1.NS.IP(t, "route", "add", "blackhole", lab.EtcdIP+"/32")
	l.Start(n1)
	lab.WaitLogCount(t, n1, "answers the bootstrap probe", 1, 10*time.Second)
	time.Sleep(2 * lab.TTL)
	l.Kill(n1)
	l.Start(n1)
	time.Sleep(2 * lab.TTL)
	if strings.Contains(n1.Log.String(), "bootstrap") {
		t.Errorf("n1, restarted, went into bootstrap again:\n%s", n1.Log.String())
	}
	l.WaitHolder(n2, time.Second)
	l.WantGains(1, "n1 started cut off from etcd, twice")
	l.AssertNoOverlap()
}

package skew

import (
	"fmt"
	"testing"
	"time"

	"vipd/test/lab"
)

// testCrashRestart: the holder's vipd is killed (SIGKILL) and at once
// started again on the same node with the other version, which finds the
// killed run's state file under the node's /run (crash resume, resume.go):
// first an old holder restarted as new (n1; n2 and n3 run the new one),
// then the new holder restarted as old. The lease is still alive and its
// key still leads, so the current vipd must resume it: the VIP stays on
// the node, and the monitor sees no loss. Whether the old vipd resumes the
// new one's record is reported, not asserted (it is N-1's behaviour); in
// every case there is never more than one holder, one holder within
// TTL + 3 s of the kill, and -status of both versions names it.
func testCrashRestart(t *testing.T) {
	s := newSkewLab(t, [3]bool{false, true, true})
	s.startAll()
	rows := [][]string{s.crashRestart(s.cur), s.crashRestart(s.old)}
	var r lab.Report
	r.Table("crash (SIGKILL) and restart with the other version, "+t.Name(),
		[]string{"killed", "restarted as", "outcome", "time to holder", "restarted run leads after", "largest probe gap", "probes lost"}, rows)
}

// crashRestart kills the holder, starts it again at once with bin (the
// other version) and judges the outcome; it returns the table row.
func (s *skewLab) crashRestart(bin string) []string {
	t := s.T
	t.Helper()
	nd := s.Holder(lab.MoveBound, time.Second)
	if s.ver(nd) == s.verOf(bin) {
		t.Fatalf("holder %s already runs the %s vipd", nd.Name, s.verOf(bin))
	}
	killed := nd.Name + " (" + s.ver(nd) + ")"
	gains := s.Mon.Gains()
	t0 := time.Now()
	s.Kill(nd)
	if bin == s.old && s.ver(nd) == "new" {
		// The killed vipd's kernel fence stays on the link with its
		// last deadline (that is its point), and the old vipd knows
		// nothing of it: a downgrade after a crash removes it first, as
		// docs/operating.md says.
		s.unfence(nd)
	}
	nd.Bin = bin
	s.Start(nd)
	leads := s.waitLeads(nd, t0)
	// By now a lease that was not carried on has shown: the killed run's
	// address outlives it by about a TTL, then another node (or this one,
	// afresh) takes the VIP.
	h := s.Holder(lab.MoveBound, time.Second)
	kept := h == nd && s.Mon.Gains() == gains
	outcome, took := "resumed: kept the VIP", "never left"
	if !kept {
		d := s.Mon.GainedAt(lab.IndexOf(s.Nodes, h)).Sub(t0)
		outcome, took = fmt.Sprintf("%s (%s) took the VIP", h.Name, s.ver(h)), d.Round(time.Millisecond).String()
		if d <= 0 || d > newHolderBound {
			t.Errorf("%s killed, restarted as %s: %s held the VIP %v after the kill, want within %v\n%s",
				killed, s.verOf(bin), h.Name, d, newHolderBound, s.Mon.History())
		}
	}
	for _, l := range logLines(nd, 0, "earlier run", "resum", "-> leader", "lease") {
		t.Logf("%s (%s, restarted): %s", nd.Name, s.ver(nd), l)
	}
	t.Logf("%s killed, restarted at once as %s: %s", killed, s.ver(nd), outcome)
	if !kept && bin == s.cur {
		t.Errorf("the current vipd, restarted on %s, did not resume the live lease of the old one's state file: %s\n%s", nd.Name, outcome, s.Mon.History())
	}
	s.WaitClientNeighbour(h.MAC, 5*time.Second)
	s.P.WaitAnsweredBy(t, h.Name, t0, 5*time.Second)
	s.AssertNoOverlap()
	t1 := time.Now()
	s.waitNamed(h)
	gap, _ := s.P.MaxGap(t0.Add(-time.Second), t1)
	return []string{killed, s.ver(nd), outcome, took, leads, gap.Round(time.Millisecond).String(), fmt.Sprint(s.P.Lost(t0, t1))}
}

// unfence removes the kernel fence's filters from nd's interface, as the
// downgrade procedure does with tc.
func (s *skewLab) unfence(nd *lab.Node) {
	s.T.Helper()
	if out, err := nd.NS.Command("tc", "filter", "del", "dev", "eth0", "egress", "pref", "48879").CombinedOutput(); err != nil {
		s.T.Fatalf("tc filter del on %s: %v: %s", nd.Name, err, out)
	}
}

// waitLeads watches nd's state file until TTL + 3 s after the kill at t0
// and says how long after it the restarted run (its pid, its version)
// first wrote that it leads; "no" if it did not by then.
func (s *skewLab) waitLeads(nd *lab.Node, t0 time.Time) string {
	pid, want := nd.Cmd.Process.Pid, release(s.T, nd.Bin)
	leads := "no"
	for time.Since(t0) < newHolderBound {
		st, err := stateOf(nd)
		if leads == "no" && err == nil && st.PID == pid && st.Version == want && st.State == "leader" {
			leads = time.Since(t0).Round(time.Millisecond).String()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return leads
}

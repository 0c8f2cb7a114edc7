package skew

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// testInPlace: an upgrade in place and its rollback, as a package manager
// does them. n1 runs the old vipd from a file of its own and holds the
// VIP (n2 runs the old one too, n3 the new one). The file is replaced by
// the new binary (renamed over) and n1's vipd gets a SIGHUP: it
// re-executes its own path, now the new binary, and hands its term over
// in VIPD_HANDOFF. Then the same with the old binary again. Each time: the
// same process (pid) runs on, now the other version (its state file and
// /proc/<pid>/exe), n1 still holds the VIP, the monitor saw no loss and no
// other holder, the client's neighbour entry still names n1 and n1
// answers the client, and -status of both versions names n1.
func testInPlace(t *testing.T) {
	s := newSkewLab(t, [3]bool{false, false, true})
	n1 := s.Nodes[0]
	n1.Bin = filepath.Join(t.TempDir(), "vipd")
	install(t, s.old, n1.Bin)
	s.startAll()
	oldRel, newRel := release(t, s.old), release(t, s.cur)
	if oldRel == newRel {
		t.Fatalf("both binaries say they are %q: the test would prove nothing", oldRel)
	}
	s.waitSwapped(n1, oldRel, n1.Cmd.Process.Pid) // the state file's version before any swap
	rows := [][]string{
		s.swapInPlace(n1, s.cur, "old -> new (upgrade)", newRel),
		s.swapInPlace(n1, s.old, "new -> old (rollback)", oldRel),
	}
	var r lab.Report
	r.Table("upgrade in place (binary renamed over, SIGHUP), "+t.Name(),
		[]string{"step", "pid", "state file's version", "VIP gains during the step", "largest probe gap", "probes lost"}, rows)
}

// swapInPlace installs bin over nd's binary file, sends SIGHUP and checks
// that nothing moved; it returns the table row.
func (s *skewLab) swapInPlace(nd *lab.Node, bin, step, want string) []string {
	t := s.T
	t.Helper()
	if h := s.Holder(lab.MoveBound, time.Second); h != nd {
		t.Fatalf("holder %s, want %s", h.Name, nd.Name)
	}
	pid, gains, off := nd.Cmd.Process.Pid, s.Mon.Gains(), len(nd.Log.String())
	install(t, bin, nd.Bin)
	t0 := time.Now()
	s.Signal(nd, syscall.SIGHUP)
	s.waitSwapped(nd, want, pid)
	// A few renewals under the new image: a lease it failed to carry on
	// would show by now (the old address's lifetime is about a TTL).
	time.Sleep(lab.SettleAfter)
	select {
	case err := <-nd.Exit:
		t.Fatalf("%s: vipd on %s exited (%v)\n%s", step, nd.Name, err, nd.Log.String())
	default:
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != nd.Bin {
		t.Errorf("%s: pid %d runs %q (%v), want %s", step, pid, exe, err, nd.Bin)
	}
	lab.AssertKept(t, s.Lab, nd, gains)
	if mac := s.ClientNeighbour(); mac != nd.MAC {
		t.Errorf("%s: the client's neighbour entry names %q, want %s's %s", step, mac, nd.Name, nd.MAC)
	}
	s.P.WaitAnsweredBy(t, nd.Name, t0, 5*time.Second)
	s.AssertNoOverlap()
	t1 := time.Now()
	s.waitNamed(nd)
	gap, _ := s.P.MaxGap(t0.Add(-time.Second), t1) // a gap may begin just before the SIGHUP
	for _, l := range logLines(nd, off, "SIGHUP", "re-execut", "earlier run", "resum") {
		t.Logf("%s: %s", nd.Name, l)
	}
	t.Logf("%s on %s: pid %d, now %s; the VIP never left", step, nd.Name, pid, want)
	return []string{step, fmt.Sprint(pid), want, fmt.Sprint(s.Mon.Gains() - gains),
		gap.Round(time.Millisecond).String(), fmt.Sprint(s.P.Lost(t0, t1))}
}

// waitSwapped waits (bounded) until nd's state file, written by pid, says
// it leads and runs version want.
func (s *skewLab) waitSwapped(nd *lab.Node, want string, pid int) {
	s.T.Helper()
	var st nodeState
	var err error
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if st, err = stateOf(nd); err == nil && st.Version == want && st.PID == pid && st.State == "leader" {
			return
		}
	}
	s.T.Fatalf("%s's state file: %+v (%v), want version %q, pid %d, state leader\n%s", nd.Name, st, err, want, pid, nd.Log.String())
}

// testInPlaceFenced: the rollback in place of a holder that runs the new
// vipd with its kernel fence. The old binary could not take the fence
// over (it would hold the VIP unfenced under an entry that advertises the
// fenced window, or silence it for good under the filter it does not
// know), so the SIGHUP is refused: the same process goes on, still the new
// version, still holding, and says so in one line. The way that remains,
// a graceful stop, removes the filter, and the old binary then runs on
// that node by the TTL rule.
func testInPlaceFenced(t *testing.T) {
	s := newSkewLab(t, [3]bool{true, false, false})
	n1 := s.Nodes[0]
	n1.Bin = filepath.Join(t.TempDir(), "vipd")
	install(t, s.cur, n1.Bin)
	// n1 at the default window, the TTL: the old binary refuses
	// vip.window (the settings trap of a rollback, which its -check
	// catches first), and this is about the fence.
	s.Lab.Start(n1)
	s.WaitHolder(n1, lab.ElectBound)
	for _, nd := range s.Nodes[1:] {
		s.Start(nd)
	}
	s.WaitClientNeighbour(n1.MAC, 5*time.Second)
	oldRel, newRel := release(t, s.old), release(t, s.cur)
	pid := n1.Cmd.Process.Pid
	s.waitSwapped(n1, newRel, pid)
	if strings.Contains(n1.Log.String(), "no kernel fence") {
		t.Fatalf("n1 runs without its kernel fence: the test would prove nothing\n%s", n1.Log.String())
	}
	gains := s.Mon.Gains()
	install(t, s.old, n1.Bin)
	s.Signal(n1, syscall.SIGHUP)
	lab.WaitLogCount(t, n1, "cannot take over the kernel fence", 1, 10*time.Second)
	time.Sleep(lab.SettleAfter)
	s.waitSwapped(n1, newRel, pid)
	lab.AssertKept(t, s.Lab, n1, gains)
	if mac := s.ClientNeighbour(); mac != n1.MAC {
		t.Errorf("after the refused SIGHUP the client's neighbour entry names %q, want n1's %s", mac, n1.MAC)
	}
	s.stop(n1)
	s.HolderOtherThan(n1, lab.MoveBound)
	if out, err := n1.NS.Command("tc", "filter", "show", "dev", "eth0", "egress").CombinedOutput(); err != nil || strings.Contains(string(out), "vipd_fence") {
		t.Errorf("after a graceful stop n1's egress filters are %q (%v), want no vipd_fence", out, err)
	}
	s.Start(n1)
	s.waitState(n1, oldRel, "candidate")
	s.AssertNoOverlap()
	t.Logf("n1's SIGHUP into %s was refused while it held the VIP with the kernel fence; stopped and started again it runs %s", oldRel, oldRel)
}

// waitState waits (bounded) until nd's state file says version want runs
// in state.
func (s *skewLab) waitState(nd *lab.Node, want, state string) {
	s.T.Helper()
	var st nodeState
	var err error
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if st, err = stateOf(nd); err == nil && st.Version == want && st.State == state {
			return
		}
	}
	s.T.Fatalf("%s's state file: %+v (%v), want version %q in state %s\n%s", nd.Name, st, err, want, state, nd.Log.String())
}

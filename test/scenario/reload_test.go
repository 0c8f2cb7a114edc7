package scenario

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"vipd/test/lab"
)

// Restart without failover (issue 11): a SIGHUP re-executes vipd in place
// and a crashed vipd started again at once resumes its lease; in neither
// case may the VIP move.

// TestReloadKeepsVIP: ten SIGHUPs of the holder's vipd. Same PID, the
// holder never changes (netlink monitor), and the client misses no probe
// beyond one 10 ms interval.
func TestReloadKeepsVIP(t *testing.T) {
	l, p, h := lab.ClusterLab(t)
	pid := h.Cmd.Process.Pid
	gains := l.Mon.Gains()
	from := time.Now()
	for i := 1; i <= 10; i++ {
		l.Signal(h, syscall.SIGHUP)
		lab.WaitLogCount(t, h, "resumed the earlier run's lease", i, 10*time.Second)
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(time.Second)
	to := time.Now()
	select {
	case err := <-h.Exit:
		t.Fatalf("vipd on %s exited: %v", h.Name, err)
	default:
	}
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err != nil || !strings.HasSuffix(exe, "/vipd") {
		t.Errorf("PID %d is %q (%v), want the same vipd", pid, exe, err)
	}
	if n := strings.Count(h.Log.String(), "starting "); n != 11 {
		t.Errorf("%d starts in the log, want 11 (one per SIGHUP)", n)
	}
	lab.AssertKept(t, l, h, gains)
	gap, n := p.MaxGap(from, to)
	lost := p.Lost(from, to)
	t.Logf("%d probes answered, %d lost; longest gap between answers %v", n, lost, gap)
	if lost > 1 {
		t.Errorf("the client lost %d probes (interval %v) over the ten re-executions", lost, lab.ProbeInterval)
	}
}

// TestCrashResume: ten times, the holder's vipd is killed (SIGKILL) and
// started again at once. It resumes its lease; no other node adds the
// VIP. The client's outage, if any, is reported.
func TestCrashResume(t *testing.T) {
	l, p, h := lab.ClusterLab(t)
	gains := l.Mon.Gains()
	for i := 1; i <= 10; i++ {
		t0 := time.Now()
		l.Kill(h)
		l.Start(h)
		lab.WaitLogCount(t, h, "resumed the earlier run's lease", 1, 10*time.Second)
		time.Sleep(500 * time.Millisecond)
		gap, n := p.MaxGap(t0.Add(-100*time.Millisecond), time.Now())
		t.Logf("kill %d: %d probes answered, %d lost, longest gap %v", i, n, p.Lost(t0, time.Now().Add(-100*time.Millisecond)), gap)
	}
	lab.AssertKept(t, l, h, gains)
}

// TestStateFile: each node's state file says what it does; the holder's
// names its lease and key; a graceful stop leaves no file behind.
func TestStateFile(t *testing.T) {
	l := lab.New(t, 2, "vip.ttl=2")
	l.StartAll()
	h, other := l.HolderAndOther()
	var hr, or lab.StateRecord
	lab.WaitFor(t, 5*time.Second, "both state files", func() bool {
		var err1, err2 error
		hr, err1 = lab.ReadState(h.StatePath())
		or, err2 = lab.ReadState(other.StatePath())
		return err1 == nil && err2 == nil && hr.State == "leader" && or.State == "candidate"
	})
	if hr.Holder != h.Name || !hr.Leading || hr.Lease == "" || !strings.HasPrefix(hr.ElectionKey, "/vipd/"+lab.VIP+"/") ||
		hr.CreateRevision == 0 || hr.HeldSince.IsZero() || hr.LastAnnounced.IsZero() || time.Until(hr.Deadline) <= 0 {
		t.Errorf("holder's record is incomplete: %+v", hr)
	}
	if or.Leading || or.Lease == "" || or.Name != other.Name {
		t.Errorf("candidate's record: %+v", or)
	}
	if hr.PID != h.Cmd.Process.Pid {
		t.Errorf("record's pid %d, vipd's %d", hr.PID, h.Cmd.Process.Pid)
	}
	l.Signal(h, syscall.SIGTERM)
	if err := l.Wait(h, 10*time.Second); err != nil {
		t.Fatalf("vipd on %s: %v", h.Name, err)
	}
	if _, err := os.Stat(h.StatePath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left after a graceful stop: %v", err)
	}
}

// TestStateFileReadOnlyRun: a /run vipd cannot write gets one warning and
// no file; vipd holds the VIP all the same.
func TestStateFileReadOnlyRun(t *testing.T) {
	l := lab.New(t, 1, "vip.ttl=2")
	nd := l.Nodes[0]
	if err := os.Chmod(nd.RunDir, 0o555); err != nil { // vipd keeps no CAP_DAC_OVERRIDE (privs.go)
		t.Fatal(err)
	}
	l.Start(nd)
	if h := l.Holder(lab.ElectBound, 2*time.Second); h != nd {
		t.Fatalf("holder %s", h.Name)
	}
	if n := strings.Count(nd.Log.String(), "no state file"); n != 1 {
		t.Errorf("%d warnings about the state file, want 1:\n%s", n, nd.Log.String())
	}
	if _, err := os.Stat(filepath.Dir(nd.StatePath())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists: %v", filepath.Dir(nd.StatePath()), err)
	}
}

// TestRestartRevokesCandidateLease: a candidate's vipd killed and started
// again revokes the lease it left behind at once, so that the dead lease
// holds no place in the queue.
func TestRestartRevokesCandidateLease(t *testing.T) {
	l := lab.New(t, 2, "vip.ttl=5")
	l.StartAll()
	h, c := l.HolderAndOther()
	var rec lab.StateRecord
	lab.WaitFor(t, 5*time.Second, "the candidate's record", func() bool {
		var err error
		rec, err = lab.ReadState(c.StatePath())
		return err == nil && rec.Lease != ""
	})
	id, _ := rec.LeaseID()
	l.Kill(c)
	l.Start(c)
	lab.WaitLogCount(t, c, "revoked the earlier run's lease", 1, 5*time.Second)
	cli := l.EtcdClient()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.TimeToLive(ctx, clientv3.LeaseID(id))
	if err != nil {
		t.Fatal(err)
	}
	if resp.TTL > 0 {
		t.Errorf("the killed candidate's lease %x is still alive (TTL %d s)", int64(id), resp.TTL)
	}
	if got, _ := l.Mon.Current(); len(got) != 1 || l.Nodes[got[0]] != h {
		t.Errorf("holders %v, want %s", l.Names(got), h.Name)
	}
}

// TestReloadNewGroup: a SIGHUP after the configuration moved the node to
// another VIP hands the old one over first: the address goes, the key goes
// with the release mark, and another node takes it at once; the node then
// serves the new VIP.
func TestReloadNewGroup(t *testing.T) {
	const newVIP = "192.0.2.101"
	l := lab.CmdlineLab(t, 3)
	h := l.Holder(lab.ElectBound, time.Second)
	gains := l.Mon.Gains()
	lab.WriteCmdline(t, h, "vip.address="+newVIP+" vip.ttl=2")
	t0 := time.Now()
	l.Signal(h, syscall.SIGHUP)
	next := l.HolderOtherThan(h, lab.MoveBound)
	moved := time.Since(t0)
	lab.WaitLogCount(t, h, "handing the old one over", 1, time.Second)
	if strings.Contains(next.Log.String(), "no release mark") {
		t.Errorf("%s found no release mark: the old group was not handed over gracefully", next.Name)
	}
	lab.WaitFor(t, lab.ElectBound, h.Name+" to hold "+newVIP, func() bool {
		return strings.Contains(h.NS.IP(t, "-br", "addr", "show", "dev", "eth0"), newVIP+"/32")
	})
	if g := l.Mon.Gains(); g != gains+1 {
		t.Errorf("%d gains of %s, want one move\n%s", g-gains, lab.VIP, l.Mon.History())
	}
	l.AssertNoOverlap()
	t.Logf("%s moved to %s %v after the SIGHUP", lab.VIP, next.Name, moved.Round(time.Millisecond))
}

// TestReloadRefusesBadConfig: a SIGHUP after a typo in the configuration
// leaves vipd running as it was (same process image, VIP kept), with one
// error line naming the key; once the typo is fixed, the next SIGHUP
// re-executes.
func TestReloadRefusesBadConfig(t *testing.T) {
	l := lab.CmdlineLab(t, 2)
	h := l.Holder(lab.ElectBound, time.Second)
	gains := l.Mon.Gains()
	lab.WriteCmdline(t, h, "vip.address="+lab.VIP+" vip.ttl=bogus")
	l.Signal(h, syscall.SIGHUP)
	lab.WaitLogCount(t, h, "configuration refused", 1, 5*time.Second)
	if log := h.Log.String(); !strings.Contains(log, `vip.ttl=\"bogus\"`) && !strings.Contains(log, `vip.ttl="bogus"`) {
		t.Errorf("the refusal does not name the key and value:\n%s", log)
	}
	time.Sleep(3 * time.Second) // longer than a TTL: nothing may have moved
	select {
	case err := <-h.Exit:
		t.Fatalf("vipd on %s exited after a bad reload: %v", h.Name, err)
	default:
	}
	if n := strings.Count(h.Log.String(), "starting "); n != 1 {
		t.Errorf("%d starts, want 1: a refused configuration must not re-execute", n)
	}
	lab.WriteCmdline(t, h, "vip.address="+lab.VIP+" vip.ttl=2")
	l.Signal(h, syscall.SIGHUP)
	lab.WaitLogCount(t, h, "resumed the earlier run's lease", 1, 10*time.Second)
	lab.AssertKept(t, l, h, gains)
}

// TestRestartsWithCheck: with a health check, a re-executed or restarted
// vipd starts from its earlier verdict instead of "unhealthy until rise
// checks pass", which would hand the VIP over at once.
func TestRestartsWithCheck(t *testing.T) {
	l := lab.New(t, 3, append([]string{"vip.ttl=2"}, lab.ServiceCheckWords...)...)
	l.StartServices()
	l.StartAll()
	l.WaitServicesUp(lab.ServiceCheckSettle)
	h := l.Holder(lab.ElectBound, lab.ServiceCheckSettle)
	gains := l.Mon.Gains()
	for i := 1; i <= 3; i++ {
		l.Signal(h, syscall.SIGHUP)
		lab.WaitLogCount(t, h, "resumed the earlier run's lease", i, 10*time.Second)
		time.Sleep(time.Second)
	}
	for i := 1; i <= 3; i++ {
		l.Kill(h)
		l.Start(h)
		lab.WaitLogCount(t, h, "resumed the earlier run's lease", 1, 10*time.Second)
		time.Sleep(time.Second)
	}
	time.Sleep(lab.ServiceCheckSettle) // the restarted checks have run a few times
	lab.AssertKept(t, l, h, gains)
}

// TestRestartWhileWaiting (issue 19, defect 1): a node that won the
// election but waits because another host answers for the VIP (the
// client squats on it, as a frozen holder's kernel copy would) goes on
// waiting after a SIGHUP and after a SIGKILL + restart: it resumes as
// holder only if it held the address. Before, the new image added the VIP
// within 3 s while the other host still answered.
func TestRestartWhileWaiting(t *testing.T) {
	l := lab.New(t, 1, "vip.ttl=2")
	nd := l.Nodes[0]
	l.Client.IP(t, "addr", "add", lab.VIP+"/32", "dev", "eth0")
	l.Start(nd)
	lab.WaitLogCount(t, nd, "waiting for it to go quiet", 1, 10*time.Second)

	l.Signal(nd, syscall.SIGHUP)
	lab.WaitLogCount(t, nd, "starting ", 2, 5*time.Second)
	lab.WaitLogCount(t, nd, "waiting for it to go quiet", 2, 10*time.Second)
	time.Sleep(3 * time.Second)
	if g := l.Mon.Gains(); g != 0 {
		t.Fatalf("after SIGHUP, %s added the VIP while another host answered for it:\n%s\n%s", nd.Name, l.Mon.History(), nd.Log.String())
	}
	if rec, err := lab.ReadState(nd.StatePath()); err != nil || rec.Leading {
		t.Errorf("the waiting node's record says leading=%v (%v), want false", rec.Leading, err)
	}

	l.Kill(nd)
	l.Start(nd)
	lab.WaitLogCount(t, nd, "waiting for it to go quiet", 1, 10*time.Second)
	time.Sleep(3 * time.Second)
	if g := l.Mon.Gains(); g != 0 {
		t.Fatalf("after SIGKILL and a restart, %s added the VIP while another host answered for it:\n%s\n%s", nd.Name, l.Mon.History(), nd.Log.String())
	}

	// The squatter goes: the node takes the VIP the ordinary way.
	l.Client.IP(t, "addr", "del", lab.VIP+"/32", "dev", "eth0")
	if h := l.Holder(10*time.Second, 0); h != nd {
		t.Fatalf("holder %s, want %s", h.Name, nd.Name)
	}
}

// TestSecondInstance (issue 19, defect 2): a second vipd for the same
// group on the holder's node exits 1 with one line naming the first one's
// pid, and touches nothing; the lock survives the first one's SIGHUP
// re-exec. Before, the second resumed the first's lease from the state
// file and both acted as its holder.
func TestSecondInstance(t *testing.T) {
	l := lab.New(t, 2, "vip.ttl=2")
	l.StartAll()
	h, _ := l.HolderAndOther()
	gains := l.Mon.Gains()
	bin, _ := lab.Binaries(t)
	second := func() {
		t.Helper()
		out, code, ran, err := h.RunBounded([]string{bin, "-cmdline", "none", "vip.address=" + l.VIPWord(), "vip.interface=eth0",
			"vip.etcd=" + l.EtcdURLs(), "vip.name=" + h.Name, "vip.log=stderr", "vip.ttl=2"}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := lab.SecondRefused(out, code, ran, h.Cmd.Process.Pid); err != nil {
			t.Error(err)
		}
	}
	second()
	l.Signal(h, syscall.SIGHUP)
	lab.WaitLogCount(t, h, "resumed the earlier run's lease", 1, 10*time.Second)
	second()
	time.Sleep(lab.TTL + time.Second)
	lab.AssertKept(t, l, h, gains)
	if strings.Contains(h.Log.String(), "no lock") {
		t.Errorf("the first vipd ran without its lock:\n%s", h.Log.String())
	}
}

// TestReloadAfterHandover (issue 19, defect 5): a SIGHUP right after a
// graceful handover re-executes only once the handover's release mark is
// written, so the next holder adds the VIP at once. etcd is frozen across
// that moment (as a loaded etcd would be slow), so that the release is
// still pending when the SIGHUP comes. Before, the exec cut the release
// short: the next holder found no release mark and waited for the old key
// to go.
func TestReloadAfterHandover(t *testing.T) {
	l := lab.New(t, 2, "vip.ttl=2", "vip.preempt.delay=2s")
	n1, n2 := l.Nodes[0], l.Nodes[1]
	l.Start(n1)
	l.WaitHolder(n1, lab.ElectBound)
	l.Start(n2, "vip.priority=10")
	lab.WaitLogCount(t, n1, "handing over in 2s", 1, 10*time.Second)
	seen := time.Now()
	etcd := l.Etcd[0].Cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(etcd, syscall.SIGCONT) })
	// The handover comes vip.preempt.delay after n1 first saw n2's rank
	// (when it logged it); n1's renewals (every 0.5 s) leave it 1.5 s of
	// deadline, so a 400 ms freeze costs it nothing.
	time.Sleep(time.Until(seen.Add(1800 * time.Millisecond)))
	syscall.Kill(etcd, syscall.SIGSTOP)
	stopped := time.Now()
	lab.WaitLogCount(t, n1, "handing over to n2", 1, 3*time.Second)
	l.Signal(n1, syscall.SIGHUP)
	time.Sleep(time.Until(stopped.Add(400 * time.Millisecond)))
	syscall.Kill(etcd, syscall.SIGCONT)
	l.WaitHolder(n2, 10*time.Second)
	if strings.Contains(n2.Log.String(), "no release mark") {
		t.Errorf("n2 found no release mark: n1's re-exec cut its release short\n--- n1:\n%s--- n2:\n%s", n1.Log.String(), n2.Log.String())
	}
	lab.WaitLogCount(t, n1, "starting ", 2, 5*time.Second) // the re-exec did happen
}

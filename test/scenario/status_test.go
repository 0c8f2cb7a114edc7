package scenario

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestStatusLab: -status on every node names the holder the kernel shows
// and the others as candidates, before and after a failover; with etcd
// down it says so and exits 1, in bounded time.
func TestStatusLab(t *testing.T) {
	l := lab.New(t, 3, "vip.ttl=2")
	l.StartAll()
	old := l.Holder(lab.ElectBound, time.Second)
	l.WaitStatus(old, lab.Others(l, old), 5*time.Second)
	t.Logf("-status on %s:\n%s", l.Nodes[0].Name, l.StatusOn(l.Nodes[0]).Stdout)
	bareStatus(t, l, old)

	// The tenure stays put across heartbeats; the heartbeat moves.
	a, _ := l.StatusJSON(l.Nodes[0])
	time.Sleep(time.Second)
	b, _ := l.StatusJSON(l.Nodes[0])
	if !a.Holder.Since.Equal(b.Holder.Since) || !b.Holder.Beat.After(a.Holder.Beat) {
		t.Fatalf("holder's since/heartbeat one second apart: %v/%v, then %v/%v; want the same since and a later heartbeat",
			a.Holder.Since, a.Holder.Beat, b.Holder.Since, b.Holder.Beat)
	}

	// A SIGHUP re-executes the holder's vipd: its tenure goes on.
	l.Signal(old, syscall.SIGHUP)
	lab.WaitLogCount(t, old, "resumed the earlier run's lease", 1, 10*time.Second)
	l.WaitStatus(old, lab.Others(l, old), 5*time.Second)
	// The state file carries the claim's time, which the resumed run
	// writes into its entry again.
	c, _ := l.StatusJSON(l.Nodes[0])
	if !c.Holder.Since.Equal(a.Holder.Since) {
		t.Fatalf("holder's tenure began at %v, and after a SIGHUP at %v", a.Holder.Since, c.Holder.Since)
	}
	bareStatus(t, l, old) // the new image opened the socket again

	killed := time.Now()
	l.Kill(old)
	next := l.HolderOtherThan(old, lab.MoveBound)
	// Every node, the one whose vipd was killed too: -status needs no
	// daemon.
	l.WaitStatus(next, lab.Others(l, old, next), 5*time.Second)
	rep, _ := l.StatusJSON(next)
	if rep.Holder.Since.Before(killed) {
		t.Fatalf("new holder %s's tenure starts %v, before the old holder was killed at %v", next.Name, rep.Holder.Since, killed)
	}
	// The killed vipd left its socket: nobody answers there, and without
	// settings -status says so, then that it has no configuration.
	r := l.StatusBare(old)
	if lines := strings.Split(strings.TrimSpace(r.Stderr), "\n"); r.Code != 2 || len(lines) != 2 ||
		!strings.Contains(lines[0], ".sock") || !strings.Contains(lines[1], "no vipd answers in /run/vipd, and no configuration: vip.address") {
		t.Fatalf("bare -status on %s, whose vipd was killed: exit %d, stderr %q", old.Name, r.Code, r.Stderr)
	}

	for _, m := range l.Etcd {
		l.StopMember(m)
	}
	for _, nd := range l.Nodes {
		r := l.StatusOn(nd)
		lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
		if r.Code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "vipd: etcd unreachable at "+l.EtcdURLs()+": ") {
			t.Fatalf("-status on %s with etcd down: exit %d, stderr %q; want 1 and one line saying etcd is unreachable", nd.Name, r.Code, r.Stderr)
		}
		if r.Took > 5*time.Second {
			t.Fatalf("-status on %s with etcd down took %v", nd.Name, r.Took)
		}
		if nd == next {
			t.Logf("-status on %s with etcd down (%v):\n%s%s", nd.Name, r.Took.Round(time.Millisecond), r.Stdout, r.Stderr)
		}
	}
	rep, jr := l.StatusJSON(next)
	if jr.Code != 1 || rep.Error == "" || rep.Holder != nil || jr.Took > 5*time.Second {
		t.Fatalf("-status -json on %s with etcd down: exit %d after %v, %+v", next.Name, jr.Code, jr.Took, rep)
	}
	// Asked through the socket, the daemon says the same.
	if r := l.StatusBare(next); r.Code != 1 || !strings.HasPrefix(r.Stderr, "vipd: etcd unreachable at "+l.EtcdURLs()+": ") || r.Took > 6*time.Second {
		t.Fatalf("bare -status on %s with etcd down: exit %d after %v, stderr %q", next.Name, r.Code, r.Took, r.Stderr)
	}
}

// bareStatus: `vipd -status` with no settings on every node asks the vipd
// running there and gets the same view as with the whole configuration:
// the holder, the others, the node itself marked, each one's version.
func bareStatus(t *testing.T, l *lab.Lab, holder *lab.Node) {
	t.Helper()
	for _, nd := range l.Nodes {
		r := l.StatusBare(nd, "-json")
		rep, err := lab.ParseStatus([]byte(r.Stdout))
		if err != nil || r.Code != 0 || rep.Holder == nil || rep.Holder.Name != holder.Name || len(rep.Candidates) != 2 || rep.Local == nil {
			t.Fatalf("bare -status -json on %s: exit %d, %v: %+v\nstderr: %s", nd.Name, r.Code, err, rep, r.Stderr)
		}
		marked := 0
		for _, c := range append([]lab.StatusCandidate{rep.Holder.StatusCandidate}, rep.Candidates...) {
			if c.Self != (c.Name == nd.Name) || c.Version == "" {
				t.Fatalf("bare -status -json on %s: %+v", nd.Name, c)
			}
			if c.Self {
				marked++
			}
		}
		if marked != 1 || rep.Local.Name != nd.Name || rep.Local.PID != nd.Cmd.Process.Pid {
			t.Fatalf("bare -status -json on %s: this node not marked once, or local view %+v", nd.Name, rep.Local)
		}
	}
	t.Logf("bare -status on %s:\n%s", holder.Name, l.StatusBare(holder).Stdout)
}

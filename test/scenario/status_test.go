package scenario

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)







// TestStatusLab: -status on every node names the holder the kernel shows
// and the others as candidates, before and after a failover; with etcd
// down it says so and exits 1, in bounded time.
func TestStatusLab(t *testing.T) {
	l := newLab(t, 3, "vip.ttl=2")
	l.startAll()
	old := l.holder(electBound, time.Second)
	l.waitStatus(old, others(l, old), 5*time.Second)
	t.Logf("-status on %s:\n%s", l.nodes[0].name, l.statusOn(l.nodes[0]).stdout)

	// The tenure stays put across heartbeats; the heartbeat moves.
	a, _ := l.statusJSON(l.nodes[0])
	time.Sleep(time.Second)
	b, _ := l.statusJSON(l.nodes[0])
	if !a.Holder.Since.Equal(b.Holder.Since) || !b.Holder.Beat.After(a.Holder.Beat) {
		t.Fatalf("holder's since/heartbeat one second apart: %v/%v, then %v/%v; want the same since and a later heartbeat",
			a.Holder.Since, a.Holder.Beat, b.Holder.Since, b.Holder.Beat)
	}

	// A SIGHUP re-executes the holder's vipd: its tenure goes on.
	l.signal(old, syscall.SIGHUP)
	waitLogCount(t, old, "resumed the earlier run's lease", 1, 10*time.Second)
	l.waitStatus(old, others(l, old), 5*time.Second)
	// The state file carries the claim's time, which the resumed run
	// writes into its entry again.
	c, _ := l.statusJSON(l.nodes[0])
	if !c.Holder.Since.Equal(a.Holder.Since) {
		t.Fatalf("holder's tenure began at %v, and after a SIGHUP at %v", a.Holder.Since, c.Holder.Since)
	}

	killed := time.Now()
	l.kill(old)
	next := l.holderOtherThan(old, moveBound)
	// Every node, the one whose vipd was killed too: -status needs no
	// daemon.
	l.waitStatus(next, others(l, old, next), 5*time.Second)
	rep, _ := l.statusJSON(next)
	if rep.Holder.Since.Before(killed) {
		t.Fatalf("new holder %s's tenure starts %v, before the old holder was killed at %v", next.name, rep.Holder.Since, killed)
	}

	for _, m := range l.etcd {
		l.stopMember(m)
	}
	for _, nd := range l.nodes {
		r := l.statusOn(nd)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "vipd: etcd unreachable at "+l.etcdURLs()+": ") {
			t.Fatalf("-status on %s with etcd down: exit %d, stderr %q; want 1 and one line saying etcd is unreachable", nd.name, r.code, r.stderr)
		}
		if r.took > 5*time.Second {
			t.Fatalf("-status on %s with etcd down took %v", nd.name, r.took)
		}
		if nd == next {
			t.Logf("-status on %s with etcd down (%v):\n%s%s", nd.name, r.took.Round(time.Millisecond), r.stdout, r.stderr)
		}
	}
	rep, jr := l.statusJSON(next)
	if jr.code != 1 || rep.Error == "" || rep.Holder != nil || jr.took > 5*time.Second {
		t.Fatalf("-status -json on %s with etcd down: exit %d after %v, %+v", next.name, jr.code, jr.took, rep)
	}
}

package main

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// listingKernel is the fake kernel with an address list: the copies of the
// VIP it holds, as rtnetlink would list them.
type listingKernel struct{ *fakeKernel }

func (k listingKernel) addrs(uint8) ([]addrMessage, error) {
	var list []addrMessage
	for p := range k.held {
		list = append(list, addrMessage{Index: k.link.Index, PrefixLen: uint8(p.Bits()), Local: p.Addr(), Address: p.Addr()})
	}
	return list, nil
}

// resumingNodeLab is a node started after an earlier run that held the VIP
// and left its copies on the link.
func resumingNodeLab(t *testing.T) *nodeLab {
	return newNodeLabWith(t, 2*time.Second, func(nl *nodeLab) {
		nl.kern.held[fakeVIP4], nl.kern.held[fakeVIP6] = time.Second, time.Second
		nl.n.view.kern = listingKernel{nl.kern} // the view lists; the hold writes to nl.kern as before
		nl.n.rs.resume = &resumeLease{id: 0x1234, key: "/vipd/192.0.2.100/1234", createRev: 7, ttl: 2 * time.Second,
			held: nl.now().Add(-time.Hour), name: "n1", healthy: true}
		nl.n.rs.resuming = true
	})
}

// resumedEvents are what a term that resumed the lease reports.
func (nl *nodeLab) resumedEvents(sent time.Time) {
	ttl := nl.n.cfg.TTL
	nl.handle(termEvent{t: nl.term(), kind: evGranted, ttl: ttl, deadline: deadlineAfter(sent, ttl), lease: 0x1234, key: "/vipd/192.0.2.100/1234", resumed: true})
	nl.handle(termEvent{t: nl.term(), kind: evElected, beat: deadlineAfter(sent, ttl), released: true, resumed: true, lease: 0x1234, key: "/vipd/192.0.2.100/1234", createRev: 7,
		held: nl.now().Add(-time.Hour), took: nl.now().Add(-time.Hour)})
}

// TestNodeResume: the earlier run's copies stay while the lease is being
// resumed; once it is, the node leads at once (no probe, no wait), keeps
// the earlier tenure, and announces once per address instead of a burst.
func TestNodeResume(t *testing.T) {
	nl := resumingNodeLab(t)
	if nl.kern.dels != 0 {
		t.Fatalf("%d copies removed while the lease may still be resumed", nl.kern.dels)
	}
	if !strings.Contains(nl.log.String(), "resuming the earlier run's term") {
		t.Fatalf("the first term is not a resume:\n%s", nl.log.String())
	}
	nl.resumedEvents(nl.now())
	if !nl.n.hold.holding || nl.n.state != stateLeader || nl.n.take.cancel != nil {
		t.Fatalf("after the resume: state %v, holding %v, probing %v", nl.n.state, nl.n.hold.holding, nl.n.take.cancel != nil)
	}
	if len(nl.frames.sent) != 2 || nl.n.hold.burstLeft != 0 {
		t.Errorf("%d announcements and %d more to come, want one per address and no burst", len(nl.frames.sent), nl.n.hold.burstLeft)
	}
	if nl.now().Sub(nl.n.stand.ho.tookAt) < 59*time.Minute {
		t.Errorf("tenure restarted at the resume (took at %v)", nl.n.stand.ho.tookAt)
	}
	if nl.kern.dels != 0 || len(nl.kern.held) != 2 {
		t.Errorf("the addresses were not kept: %d removals, held %v", nl.kern.dels, nl.kern.held)
	}
}

// TestNodeResumeGivenUp: when the term goes on with a new lease instead,
// the earlier run's copies are stale and go before anything else.
func TestNodeResumeGivenUp(t *testing.T) {
	nl := resumingNodeLab(t)
	nl.event(evGranted, nl.now(), false)
	if nl.kern.dels != 2 || len(nl.kern.held) != 0 || nl.n.rs.resuming {
		t.Fatalf("after a new lease: %d removals, held %v, resuming %v", nl.kern.dels, nl.kern.held, nl.n.rs.resuming)
	}
}

// TestNodeReload: SIGHUP on a leader checks the configuration, renews,
// and re-executes with a record that names the lease; a refused
// configuration re-executes nothing; a SIGHUP while resuming waits for it.
func TestNodeReload(t *testing.T) {
	var execs []stateRecord
	checkErr := errors.New(`vip.ttl="bogus": not a duration`)
	setup := func(check *error) func(*nodeLab) {
		return func(nl *nodeLab) {
			nl.n.deps.reexec = func(r stateRecord) error { execs = append(execs, r); return nil }
			nl.n.deps.checkConfig = func() error { return *check }
		}
	}
	var bad error = checkErr
	nl := newNodeLabWith(t, 2*time.Second, setup(&bad))
	nl.lead()
	nl.handle(syscall.SIGHUP)
	nl.handle(configChecked{<-nl.n.in.checked})
	if len(execs) != 0 || nl.n.rs.reloading || !strings.Contains(nl.log.String(), "configuration refused") {
		t.Fatalf("a refused configuration: %d re-execs, reloading %v\n%s", len(execs), nl.n.rs.reloading, nl.log.String())
	}

	var good error
	nl = newNodeLabWith(t, 2*time.Second, setup(&good))
	nl.lead()
	nl.n.rs.rec.Lease = "1234" // as evGranted records it in a real term
	pokes := nl.term().pokes
	nl.handle(syscall.SIGHUP)
	nl.handle(configChecked{<-nl.n.in.checked})
	if nl.term().pokes != pokes+1 || len(execs) != 0 {
		t.Fatalf("a leader re-executed before renewing (%d pokes, %d re-execs)", nl.term().pokes-pokes, len(execs))
	}
	nl.event(evRenewed, nl.now(), false)
	if len(execs) != 1 || !execs[0].Leading || execs[0].Lease != "1234" || execs[0].State != "leader" {
		t.Fatalf("re-execs %+v, want one with the leading record", execs)
	}

	nl = resumingNodeLab(t)
	nl.n.deps.reexec = func(r stateRecord) error { execs = append(execs, r); return nil }
	execs = nil
	nl.handle(syscall.SIGHUP)
	if len(execs) != 0 || !nl.n.rs.hupLater {
		t.Fatalf("a SIGHUP while resuming re-executed at once")
	}
	nl.resumedEvents(nl.now())
	nl.event(evRenewed, nl.now(), false)
	if len(execs) != 1 || execs[0].Lease != "1234" {
		t.Fatalf("after the resume: re-execs %+v, want one naming the resumed lease", execs)
	}
}

// TestStateFileWrite: the file is replaced whole, readable back, and a
// directory that cannot be written costs one warning and no more tries.
func TestStateFileWrite(t *testing.T) {
	dir := t.TempDir()
	var log lab.SyncBuffer
	f := &stateFile{path: filepath.Join(dir, "vipd", "g.json"), log: &logger{w: &log}}
	f.write(stateRecord{recordGroup: recordGroup{Name: "n1"}, recordHolding: recordHolding{State: "leader"}, recordTerm: recordTerm{Lease: "abc"}})
	r, err := readState(f.path)
	if err != nil || r.Name != "n1" || r.Lease != "abc" || r.PID != os.Getpid() || r.Written.IsZero() {
		t.Fatalf("read back %+v, %v", r, err)
	}
	if id, ok := r.leaseID(); !ok || id != 0xabc {
		t.Errorf("lease id %x %v", id, ok)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "vipd", "*.tmp")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	f.remove()
	if _, err := os.Stat(f.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after remove: %v", err)
	}

	ro := &stateFile{path: filepath.Join(dir, "file", "vipd", "g.json"), log: &logger{w: &log}}
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644) // a file where the directory should be
	ro.write(stateRecord{})
	ro.write(stateRecord{})
	if n := strings.Count(log.String(), "no state file"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, log.String())
	}
}

// TestSameGroup: a record resumes only for the same key, addresses,
// interface and name.
func TestSameGroup(t *testing.T) {
	cfg := Config{groupConfig: groupConfig{Key: "/vipd/192.0.2.100", Addresses: []netip.Prefix{fakeVIP4}, Interface: "eth0", Name: "n1"}}
	base := stateRecord{recordGroup: recordGroup{Key: cfg.Key, Addresses: []string{"192.0.2.100/32"}, Interface: "eth0", Name: "n1"}}
	if !sameGroup(base, cfg) {
		t.Fatal("the same group is not recognised")
	}
	for name, change := range map[string]func(*stateRecord){
		"key":       func(r *stateRecord) { r.Key = "/vipd/other" },
		"addresses": func(r *stateRecord) { r.Addresses = []string{"192.0.2.101/32"} },
		"interface": func(r *stateRecord) { r.Interface = "eth1" },
		"name":      func(r *stateRecord) { r.Name = "n2" },
	} {
		r := base
		change(&r)
		if sameGroup(r, cfg) {
			t.Errorf("another %s is taken for the same group", name)
		}
	}
}

// TestReexecAwaitsRelease (issue 19, defect 5): a SIGHUP right after a
// step-down re-executes only once the ended term has released its key and
// revoked its lease, or after releaseWait if that never finishes. Before,
// the exec cut the release short and the key lingered for about a TTL.
func TestReexecAwaitsRelease(t *testing.T) {
	for _, finishes := range []bool{true, false} {
		var execAt time.Time
		nl := newNodeLabWith(t, 2*time.Second, func(nl *nodeLab) {
			nl.n.deps.reexec = func(stateRecord) error { execAt = nl.now(); return nil }
		})
		nl.lead()
		old := nl.term()
		old.releasing = make(chan struct{})
		nl.handle(termEvent{t: old, kind: evLost, err: fmt.Errorf("eth0 is %w", errLinkDown)})
		if nl.term() == old || !old.stopped {
			t.Fatalf("the step-down did not stop the term")
		}
		t0, timers := nl.now(), nl.clk.timers()
		done := make(chan struct{})
		go func() { // the loop, blocked in the re-exec's wait
			defer close(done)
			nl.handle(syscall.SIGHUP) // no configuration check in this lab: straight to the re-exec
		}()
		for nl.clk.timers() == timers { // until the wait has set its bound
			runtime.Gosched()
		}
		if finishes {
			nl.clk.add(300 * time.Millisecond)
			close(old.releasing)
		} else {
			for nl.clk.fireNext(t0.Add(releaseWait)) { // its alarms queue up meanwhile
			}
		}
		<-done
		took := execAt.Sub(t0)
		switch {
		case execAt.IsZero():
			t.Fatalf("no re-exec")
		case finishes && took != 300*time.Millisecond:
			t.Errorf("re-executed %v after the SIGHUP; the release ended after 300ms", took)
		case !finishes && took != releaseWait:
			t.Errorf("re-executed %v after the SIGHUP with the release never ending; want after %v", took, releaseWait)
		case !finishes && !strings.Contains(nl.log.String(), "still pending"):
			t.Errorf("no warning about the pending release:\n%s", nl.log.String())
		}
	}
}

// TestTenureStart: a resumed tenure's start comes from CLOCK_BOOTTIME
// within the same boot, and from nowhere otherwise.
func TestTenureStart(t *testing.T) {
	r := stateRecord{recordHolding: recordHolding{BootID: "b1", HeldBoottimeMS: 5000}}
	if took := tenureStart(r, "b1", 15*time.Second); took.IsZero() || absDuration(time.Since(took)-10*time.Second) > 100*time.Millisecond {
		t.Errorf("same boot, held at 5 s of boot time, now 15 s: tenure began %v ago, want 10s", time.Since(took))
	}
	for _, tt := range []struct {
		what string
		r    stateRecord
		boot string
		now  time.Duration
	}{
		{"another boot", r, "b2", 15 * time.Second},
		{"no reading", stateRecord{recordHolding: recordHolding{BootID: "b1"}}, "b1", 15 * time.Second},
		{"boot id unknown here", r, "", 15 * time.Second},
		{"a reading from the future", r, "b1", time.Second},
	} {
		if took := tenureStart(tt.r, tt.boot, tt.now); !took.IsZero() {
			t.Errorf("%s: tenure began %v, want none", tt.what, took)
		}
	}
	if boottime() <= 0 || bootID() == "" {
		t.Errorf("boottime %v, boot id %q: this kernel should have both", boottime(), bootID())
	}
}

// TestResumeTenureClock (issue 19, defect 4): a resumed leader's handover
// clock counts from the monotonic tenure start, not from held_since: the
// wall clock stepped back an hour after the claim, so held_since lies an
// hour ahead. Before, the leader was shielded from handing over for that
// hour.
func TestResumeTenureClock(t *testing.T) {
	for _, known := range []bool{true, false} {
		nl := resumingNodeLab(t)
		ttl, sent := nl.n.cfg.TTL, nl.now()
		var took time.Time
		if known {
			took = nl.now().Add(-10 * time.Second)
		}
		nl.handle(termEvent{t: nl.term(), kind: evGranted, ttl: ttl, deadline: deadlineAfter(sent, ttl), lease: 0x1234, key: "/vipd/192.0.2.100/1234", resumed: true})
		nl.handle(termEvent{t: nl.term(), kind: evElected, beat: deadlineAfter(sent, ttl), released: true, resumed: true, lease: 0x1234,
			key: "/vipd/192.0.2.100/1234", createRev: 7, held: nl.now().Add(time.Hour), took: took})
		if !nl.n.hold.holding {
			t.Fatalf("not holding after the resume:\n%s", nl.log.String())
		}
		want := cmp.Or(took, nl.now())
		if !nl.n.stand.ho.tookAt.Equal(want) {
			t.Errorf("tenure known=%v: the handover clock starts %v from %v (held_since an hour ahead)", known, nl.n.stand.ho.tookAt.Sub(want), want)
		}
		if rec := nl.n.rs.rec; rec.BootID != bootID() || absDuration(boottime()-time.Duration(rec.HeldBoottimeMS)*time.Millisecond-nl.now().Sub(want)) > 100*time.Millisecond {
			t.Errorf("record's boot-time tenure %d ms (boot %q), want the handover clock's start", rec.HeldBoottimeMS, rec.BootID)
		}
	}
}

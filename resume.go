package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// Resume: a vipd that starts while the lease of an earlier vipd on this
// node still leads the election carries that lease on instead of letting
// the VIP move. Two ways lead here:
//   - SIGHUP: vipd re-executes itself in place (same PID) to read its
//     configuration again or to run an upgraded binary; the record of the
//     term travels in the environment (handoffEnv), so it works with a
//     read-only /run too.
//   - a crash (SIGKILL, OOM) and an immediate restart: the record is the
//     state file under /run/vipd (statefile.go).
//
// Nothing of the earlier run is trusted but the lease and key it names:
// one transaction checks that the key still exists with the same create
// revision and lease and still leads, together with a renewal, and the
// deadlines rest on the send time of those two as after any claim. The
// address, still on the link under the kernel's lifetime (the fence of
// the earlier run), is then refreshed and announced. Other nodes did not
// move in between: the key was there, and its heartbeat had not yet stood
// still for a TTL (elect.go holderView), which the confirmation's write
// restarts.

// handoffEnv carries the state record across a SIGHUP re-exec.
const handoffEnv = "VIPD_HANDOFF"

// resumeLease is what a term needs to carry on an earlier run's lease.
type resumeLease struct {
	id        clientv3.LeaseID
	key       string // the election key
	createRev int64
	ttl       time.Duration
	held      time.Time // the earlier run's tenure began here (wall clock: the entry's since=)
	took      time.Time // the same on this process's monotonic clock; zero if unknown
	name      string    // the earlier run's name in the election
	healthy   bool      // the earlier run's health verdict, which the resumed rank starts from
}

// resumed is where a resumed term's lead starts (keep).
type resumed struct {
	createRev int64
	rev       int64     // the confirmation's revision: watches start after it
	sent      time.Time // when the confirmation and the renewal were sent
}

// resumeLead tries to carry on r. It reports true when the term is over
// (it was resumed and has ended, or the term was stopped meanwhile), false
// when the lease cannot be resumed and the term goes on with a new one.
// It tries for at most a TTL: by then the lease has either expired or been
// renewed.
func (t *term) resumeLead(r resumeLease) (over bool) {
	t.ttl = r.ttl
	// The tenure goes on, and the confirmation, a heartbeat, says since
	// when (-status); a term that campaigns afresh starts a new one.
	t.held = r.held
	defer func() {
		if !over {
			t.held = time.Time{}
		}
	}()
	give := time.Now().Add(r.ttl)
	for {
		sent := time.Now()
		var renewErr, confirmErr error
		var rev int64
		var leads bool
		both(func() { renewErr = t.renewOnce(r.id, claimAttempt) },
			func() { rev, leads, confirmErr = t.confirm(r) })
		switch {
		case t.ctx.Err() != nil:
			t.revoke(r.id)
			return true
		case errors.Is(renewErr, rpctypes.ErrLeaseNotFound):
			t.log.infof("the lease %x of the earlier run has expired; campaigning with a new one", r.id)
			return false
		case renewErr == nil && confirmErr == nil && !leads:
			t.log.infof("the earlier run's key %s no longer leads (gone, or behind another); revoking its lease %x and campaigning afresh", r.key, r.id)
			t.revoke(r.id)
			return false
		case renewErr == nil && confirmErr == nil:
			t.carryOn(r, rev, sent)
			return true
		case time.Now().After(give):
			t.log.warnf("could not confirm the earlier run's lease %x within its TTL (renew: %v; confirm: %v); campaigning afresh", r.id, renewErr, confirmErr)
			t.revoke(r.id)
			return false
		}
		if !t.sleep(backoffMin) {
			t.revoke(r.id)
			return true
		}
	}
}

// confirm checks, in one transaction, that the earlier run's key is still
// there as it was and leads the election, and rewrites it (a heartbeat,
// with our entry) if it is there. It returns the transaction's revision
// and whether the key leads.
func (t *term) confirm(r resumeLease) (int64, bool, error) {
	ctx, cancel := context.WithTimeout(t.ctx, claimAttempt)
	defer cancel()
	resp, err := t.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(r.key), "=", r.createRev),
		clientv3.Compare(clientv3.LeaseValue(r.key), "=", r.id)).
		Then(beatOp(r.key, t.heartbeat(time.Now())),
			clientv3.OpGet(t.cfg.prefix+"/", clientv3.WithFirstCreate()...)).Commit()
	if err != nil {
		t.failed(t.ctx, opClaim, err)
		return 0, false, err
	}
	if !resp.Succeeded {
		return resp.Header.Revision, false, nil
	}
	first := resp.Responses[1].GetResponseRange().GetKvs()
	return resp.Header.Revision, len(first) > 0 && string(first[0].Key) == r.key, nil
}

// carryOn is the rest of a resumed term: the node is told it leads, and
// the term keeps the lease and the heartbeat from the confirmation on,
// as after a claim.
func (t *term) carryOn(r resumeLease, rev int64, sent time.Time) {
	defer t.revoke(r.id)
	t.log.infof("resumed the earlier run's lease %x and election key %s (TTL %v)", r.id, r.key, r.ttl)
	if !t.send(termEvent{kind: evGranted, ttl: r.ttl, deadline: deadlineAfter(sent, r.ttl), vouched: sent, lease: r.id, key: r.key, resumed: true}) {
		return
	}
	if !t.send(termEvent{kind: evElected, beat: deadlineAfter(sent, r.ttl), released: true, resumed: true, lease: r.id, key: r.key, createRev: r.createRev, held: r.held, took: r.took}) {
		return
	}
	go t.publishRank(r.key, r.id)
	createRev, ok := t.keep(r.id, r.key, nil, func() {}, &resumed{createRev: r.createRev, rev: rev, sent: sent})
	if ok && t.released.Load() {
		t.releaseKey(r.key, createRev)
	}
}

// earlierRecord is the record of an earlier run of this node for the
// group: the one handed over by a SIGHUP re-exec, else the state file.
// The handoff is taken out of the environment so that nothing started
// later inherits it.
func earlierRecord(key string) (stateRecord, string, bool) {
	if v, ok := os.LookupEnv(handoffEnv); ok {
		os.Unsetenv(handoffEnv)
		var r stateRecord
		if err := json.Unmarshal([]byte(v), &r); err == nil {
			return r, "the vipd before the re-exec", true
		}
	}
	path := statePath(key)
	r, err := readState(path)
	if err != nil {
		return r, "", false
	}
	return r, path, true
}

// sameGroup says whether a record speaks of the group that cfg configures,
// on the same interface, under the same name (when the name is
// configured; a MAC-derived one is compared once the link is known).
func sameGroup(r stateRecord, cfg Config) bool {
	want := make([]string, len(cfg.Addresses))
	for i, p := range cfg.Addresses {
		want[i] = p.String()
	}
	return r.Key == cfg.Key && slices.Equal(r.Addresses, want) && r.Interface == cfg.Interface &&
		(cfg.Name == "" || r.Name == cfg.Name)
}

// resumeFrom turns a leader's record into what the term needs; ok is
// false for a record that never led, or a broken one.
func resumeFrom(r stateRecord) (resumeLease, bool) {
	id, ok := r.leaseID()
	if !ok || !r.Leading || r.ElectionKey == "" || r.CreateRevision == 0 || r.TTLMillis <= 0 {
		return resumeLease{}, false
	}
	return resumeLease{id: id, key: r.ElectionKey, createRev: r.CreateRevision,
		ttl: time.Duration(r.TTLMillis) * time.Millisecond, held: r.HeldSince, took: tenureStart(r, bootID(), boottime()),
		name: r.Name, healthy: r.Healthy}, true
}

// tenureStart is when the record's tenure began, on this process's
// monotonic clock, from the clock that does not step (CLOCK_BOOTTIME, now
// at bootNow): the wall clock in held_since may have stepped since, and a
// step back would shield a leader from handing over for the step's size.
// A record of another boot, or of a vipd that did not keep that reading,
// carries no tenure (zero).
func tenureStart(r stateRecord, boot string, bootNow time.Duration) time.Time {
	if boot == "" || r.BootID != boot || r.HeldBoottimeMS <= 0 {
		return time.Time{}
	}
	ago := bootNow - time.Duration(r.HeldBoottimeMS)*time.Millisecond
	if ago < 0 {
		return time.Time{}
	}
	return time.Now().Add(-ago)
}

// bootID names this boot of the machine ("" if unknown): CLOCK_BOOTTIME
// readings compare only within one.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// boottime reads CLOCK_BOOTTIME: it never steps and counts suspend too.
func boottime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// settleEarlier deals with an earlier run's record before the node starts:
// a leader of this same group is resumed by the node's first term (the
// returned lease); anything else is given up now. A leader of another
// group (the configuration changed under a SIGHUP) hands over gracefully:
// its addresses go first, then its key with the release mark, then its
// lease. A candidate's lease is revoked at once, so that it holds no place
// in the queue. Every step is bounded; etcd trouble leaves the lease to
// expire by itself.
func settleEarlier(cfg Config, kern kernel, cli *clientv3.Client, log *logger) *resumeLease {
	r, from, ok := earlierRecord(cfg.Key)
	if !ok {
		return nil
	}
	id, hasLease := r.leaseID()
	if !hasLease {
		return nil
	}
	if sameGroup(r, cfg) {
		if lease, ok := resumeFrom(r); ok {
			log.infof("found the lease %x of an earlier run (from %s), leading since %s; resuming it if it still leads",
				id, from, r.HeldSince.Format(time.RFC3339))
			return &lease
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*revokeTimeout)
	defer cancel()
	if r.Leading && !sameGroup(r, cfg) {
		log.infof("the configuration changed the VIP group (was %s %v on %s as %q); handing the old one over", r.Key, r.Addresses, r.Interface, r.Name)
		// The release mark tells the next holder that no kernel keeps a
		// copy: it is written only once every old address is gone.
		if removeRecorded(r, kern, log) {
			resp, err := releaseTxn(ctx, cli, r.Key, r.Name, r.ElectionKey, r.CreateRevision)
			if err != nil || !resp.Succeeded {
				log.warnf("could not release the old election key %s (%v); its lease goes next", r.ElectionKey, err)
			}
		} else {
			log.warnf("not all of the old group's addresses could be removed; no release mark, so the next holder waits out their lifetime")
		}
	}
	if _, err := cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		log.warnf("revoke the earlier run's lease %x: %v (etcd will expire it)", id, err)
	} else {
		log.infof("revoked the earlier run's lease %x (from %s): it did not hold this group", id, from)
	}
	return nil
}

// removeRecorded removes a record's addresses from its link. It reports
// whether all of them are known to be gone.
func removeRecorded(r stateRecord, kern kernel, log *logger) bool {
	if r.LinkIndex == 0 {
		return false
	}
	gone := true
	for _, a := range r.Addresses {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			log.errorf("the earlier run's record names %q, not an address: cannot remove it", a)
			gone = false
			continue
		}
		if _, err := kern.delAddr(r.LinkIndex, p); err != nil {
			log.errorf("%v", err)
			gone = false
		}
	}
	return gone
}

// checkReload runs this binary with -check and the same arguments: the
// configuration a re-exec would read, read by the binary that would run
// it. It returns the child's first line on stderr when it refuses.
func checkReload() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	p, err := os.StartProcess(exe, append([]string{os.Args[0], "-check"}, os.Args[1:]...), &os.ProcAttr{Files: []*os.File{null, null, w}})
	w.Close()
	if err != nil {
		return fmt.Errorf("run %s -check: %w", exe, err)
	}
	out, _ := io.ReadAll(io.LimitReader(r, 4096))
	st, err := p.Wait()
	if err != nil {
		return fmt.Errorf("%s -check: %w", exe, err)
	}
	if !st.Success() {
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return fmt.Errorf("%s -check: %v: %s", exe, st, line)
	}
	return nil
}

// handedOver is a descriptor that a re-exec hands to the new image: the
// group's lock (lock.go), the vip.metrics socket (metrics.go). inherit
// clears its close-on-exec and names it in an environment word; undo
// puts things back when the exec fails. A nil one hands nothing over.
type handedOver interface {
	inherit() (env string, undo func(), err error)
}

// reexec replaces this process with the binary at its own path (an
// upgrade installed there runs now), same PID and arguments, handing it
// the record and the descriptors in keep. It returns only on failure.
func reexec(r stateRecord, keep ...handedOver) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("re-exec: find own binary: %w", err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("re-exec: %w", err)
	}
	env := append(slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, handoffEnv+"=") || strings.HasPrefix(e, lockFDEnv+"=") || strings.HasPrefix(e, metricsFDEnv+"=")
	}), handoffEnv+"="+string(b))
	var undos []func()
	undo := func() {
		for _, u := range undos {
			u()
		}
	}
	for _, h := range keep {
		word, u, err := h.inherit()
		if err != nil {
			undo()
			return fmt.Errorf("re-exec: %w", err)
		}
		undos = append(undos, u)
		if word != "" {
			env = append(env, word)
		}
	}
	if err := syscall.Exec(exe, os.Args, env); err != nil {
		undo()
		return fmt.Errorf("re-exec %s: %w", exe, err)
	}
	return nil
}

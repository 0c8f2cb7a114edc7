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
// still for a TTL (candidate.go holderView), which the confirmation's write
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
// it. It returns the child's first line when it refuses, and whether the
// child can take over the kernel fence (its -check names it: a vipd
// before 0.2.0 cannot).
func checkReload() (bool, error) {
	exe, err := os.Executable()
	if err != nil {
		return false, fmt.Errorf("find own binary: %w", err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return false, err
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return false, err
	}
	defer r.Close()
	// stdout too: a refusal writes only stderr, so its first line is
	// still the reason.
	p, err := os.StartProcess(exe, append([]string{os.Args[0], "-check"}, os.Args[1:]...), &os.ProcAttr{Files: []*os.File{null, w, w}})
	w.Close()
	if err != nil {
		return false, fmt.Errorf("run %s -check: %w", exe, err)
	}
	out, _ := io.ReadAll(io.LimitReader(r, 16<<10))
	st, err := p.Wait()
	if err != nil {
		return false, fmt.Errorf("%s -check: %w", exe, err)
	}
	if !st.Success() {
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return false, fmt.Errorf("%s -check: %v: %s", exe, st, line)
	}
	return strings.Contains(string(out), "\n"+checkFenceLine), nil
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
		return strings.HasPrefix(e, handoffEnv+"=") || strings.HasPrefix(e, lockFDEnv+"=") || strings.HasPrefix(e, metricsFDEnv+"=") ||
			strings.HasPrefix(e, fenceFDEnv+"=")
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

package main

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// restart is the node's side of a resume and of a SIGHUP re-exec
// (resume.go): the state file and the record it holds (written by
// node.save), the earlier run's lease the first term carries on, and a
// reload in progress.
type restart struct {
	log      *logger
	sf       *stateFile
	rec      stateRecord  // what the state file says (statefile.go)
	resume   *resumeLease // the first term carries on this earlier lease
	resuming bool         // until that is settled, a copy of the VIP on the link is the earlier run's: left alone
	resumed  bool         // this term carries on an earlier run's lease: no probe, no takeover burst
	tenure   time.Time    // once elected: the tenure's start (the claim; a resumed term's earlier claim)
	// resumedTook: a resumed term's tenure start on the monotonic clock
	// (zero: unknown); the handover clock counts from it.
	resumedTook time.Time
	// A SIGHUP on a leader first renews, so that the address's lifetime
	// covers the re-exec; reexecAt bounds that wait.
	reloading bool
	reexecAt  alarm
	hupLater  bool         // a SIGHUP came while resuming: it waits for the resume to settle
	ending    []campaigner // stopped terms whose release and revocation may still run: a re-exec waits for them
}

// reloadWait bounds how long a leader waits for the renewal before a
// re-exec: past it, the lifetime the address has is what the new process
// gets to confirm the lease in.
const reloadWait = 300 * time.Millisecond

// releaseWait bounds how long a re-exec waits for stopped terms to finish
// their release mark and revocation (each bounded by revokeTimeout).
const releaseWait = 2 * revokeTimeout

// termEnded says whether a stopped term has finished.
func termEnded(c campaigner) bool {
	select {
	case <-c.ended():
		return true
	default:
		return false
	}
}

// awaitEnded waits, at most releaseWait after, for the stopped terms: a
// term that stepped down just before a SIGHUP is still releasing its key
// and revoking its lease in the background, and the exec would cut that
// short (the key would linger until it is seen as stale, about a TTL
// without a holder). A holder does not wait: its own deadline comes
// first. It reports false when it gave up waiting.
func (r *restart) awaitEnded(holding bool, after func(time.Duration, func()) *time.Timer) bool {
	r.ending = slices.DeleteFunc(r.ending, termEnded)
	if holding || len(r.ending) == 0 {
		return true
	}
	bound := make(chan struct{})
	t := after(releaseWait, func() { close(bound) })
	for _, c := range r.ending {
		select {
		case <-c.ended():
		case <-bound:
			return false
		}
	}
	t.Stop()
	r.ending = nil
	return true
}

// reload is SIGHUP: vipd re-executes itself, keeping its lease (resume.go).
// The configuration is checked first, by the binary that would run
// (check, nodeDeps.checkConfig), in a child (`vipd -check`, off the loop;
// the result comes back on out, then to checked): a SIGHUP after a typo
// must not end the daemon, so a refused configuration leaves this process
// running as it was. Without a check it goes on at once; it reports
// whether to re-execute now (checked).
func (r *restart) reload(check func() error, out chan<- error, holding bool, term campaigner) bool {
	if !r.start() {
		return false
	}
	if check == nil {
		return r.checked(nil, holding, term)
	}
	r.log.infof("SIGHUP: checking the configuration before re-executing")
	go func() { out <- check() }()
	return false
}

// checked goes on with a SIGHUP once the configuration is checked (err).
// A leader (term, holding the VIP) first renews, so that the address's
// lifetime and the heartbeat cover the gap; at most reloadWait. It
// reports whether to re-execute now.
func (r *restart) checked(err error, holding bool, term campaigner) bool {
	switch {
	case err != nil:
		r.reloading = false
		r.log.errorf("SIGHUP: configuration refused, running on with the current one: %v", err)
	case holding && term != nil:
		r.log.infof("SIGHUP: renewing, then re-executing with the lease kept")
		term.renewNow()
		r.reexecAt.set(reloadWait)
	default:
		return true
	}
	return false
}

// start begins a reload, unless one is under way or it must wait.
func (r *restart) start() bool {
	if r.reloading {
		return false
	}
	if r.resuming {
		// The record names no lease until the resume settles: a re-exec
		// now would lose the one being resumed.
		r.hupLater = true
		r.log.infof("SIGHUP: re-executing once the earlier run's lease is resumed or given up")
		return false
	}
	r.reloading = true
	return true
}

// hupDue says whether a SIGHUP that came while resuming may go on now.
func (r *restart) hupDue() bool {
	if r.hupLater && !r.resuming {
		r.hupLater = false
		return true
	}
	return false
}

// renewed says whether a renewal was the one a reload waited for.
func (r *restart) renewed(holding bool) bool {
	return r.reloading && holding && r.reexecAt.stop()
}

// prepare ends the reload's wait before a re-exec (awaitEnded).
func (r *restart) prepare(holding bool, after func(time.Duration, func()) *time.Timer) {
	r.reloading = false
	r.reexecAt.stop()
	if !r.awaitEnded(holding, after) {
		r.log.warnf("re-executing with the release of an earlier term still pending after %v (etcd will expire its lease)", releaseWait)
	}
}

// exec hands the record, saved just before, to a new process image
// (nodeDeps.reexec, resume.go). A failure leaves this one running as it
// was.
func (r *restart) exec(why string, reexec func(stateRecord) error) {
	r.log.infof("re-executing (%s); lease %s kept", why, cmp.Or(r.rec.Lease, "none"))
	if reexec == nil {
		return
	}
	if err := reexec(r.rec); err != nil {
		r.log.errorf("%v; running on as before", err)
	}
}

// carry is the earlier run's lease for the first term of this node,
// campaigning as name (named: vip.name is set); nil once it is used, or if
// the node's name changed (a MAC-named node on a new interface).
func (r *restart) carry(name string, named bool) *resumeLease {
	l := r.resume
	r.resume = nil
	if l != nil && !named && name != l.name {
		r.log.infof("not resuming the earlier run's lease: it campaigned as %q, this node is %q now", l.name, name)
		return nil
	}
	return l
}

// granted records a term's lease. A new one ends the wait for a resume
// that did not happen: it reports whether one was awaited (a copy of the
// VIP left on the link by the earlier run is stale now).
func (r *restart) granted(ev termEvent) bool {
	r.rec.Lease, r.rec.ElectionKey, r.rec.TTLMillis = fmt.Sprintf("%x", int64(ev.lease)), ev.key, ev.ttl.Milliseconds()
	if ev.resumed {
		return false
	}
	r.log.infof("lease granted (TTL %v)", ev.ttl)
	was := r.resuming
	r.resuming = false
	return was
}

// how says how a term took the address, for the log.
func (r *restart) how() string {
	if r.resumed {
		return "resumed; refreshed"
	}
	return "elected; added"
}

// elected records a won campaign; it reports whether the term carries on
// an earlier run's (no probe, no takeover wait: the address is ours
// already).
func (r *restart) elected(ev termEvent) bool {
	r.tenure, r.resumedTook = ev.held, ev.took
	if ev.resumed {
		r.resuming, r.resumed = false, true
	}
	return ev.resumed
}

// tookAt is when the tenure began on the monotonic clock: now, or a
// resumed term's earlier start when it is known.
func (r *restart) tookAt(now time.Time) time.Time {
	if r.resumed && !r.resumedTook.IsZero() {
		return r.resumedTook // the tenure goes on, on the monotonic clock
	}
	return now
}

// endTerm forgets the term's resume and tenure; the record its lease.
func (r *restart) endTerm() {
	r.resuming, r.resumed, r.tenure, r.resumedTook = false, false, time.Time{}, time.Time{}
	r.rec.Lease, r.rec.ElectionKey, r.rec.CreateRevision, r.rec.TTLMillis = "", "", 0, 0
}

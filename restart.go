package main

import (
	"cmp"
	"slices"
	"time"
)

// restart is the node's side of a resume and of a SIGHUP re-exec
// (resume.go): the state file, the earlier run's lease the first term
// carries on, and a reload in progress.
type restart struct {
	sf       *stateFile
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
// A leader first renews, so that the address's lifetime and the heartbeat
// cover the gap; at most reloadWait.
//
// The configuration is checked first, by the binary that would run, in a
// child (`vipd -check`, off the loop): a SIGHUP after a typo must not end
// the daemon, so a refused configuration leaves this process running as
// it was.
func (n *node) reload() {
	if n.rs.reloading {
		return
	}
	if n.rs.resuming {
		// The record names no lease until the resume settles: a re-exec
		// now would lose the one being resumed.
		n.rs.hupLater = true
		n.log.infof("SIGHUP: re-executing once the earlier run's lease is resumed or given up")
		return
	}
	n.rs.reloading = true
	if n.deps.checkConfig == nil {
		n.reloadChecked(nil)
		return
	}
	n.log.infof("SIGHUP: checking the configuration before re-executing")
	check, out := n.deps.checkConfig, n.in.checked
	go func() { out <- check() }()
}

// hupAfterResume acts on a SIGHUP that came while resuming.
func (n *node) hupAfterResume() {
	if n.rs.hupLater && !n.rs.resuming {
		n.rs.hupLater = false
		n.reload()
	}
}

// reloadChecked goes on with a SIGHUP once the configuration is checked.
func (n *node) reloadChecked(err error) {
	switch {
	case err != nil:
		n.rs.reloading = false
		n.log.errorf("SIGHUP: configuration refused, running on with the current one: %v", err)
	case n.hold.holding && n.term != nil:
		n.log.infof("SIGHUP: renewing, then re-executing with the lease kept")
		n.term.renewNow()
		n.rs.reexecAt.set(reloadWait)
	default:
		n.reexec("not holding the VIP")
	}
}

// reexec hands the term's record to a new process image (resume.go). A
// failure leaves this one running as it was.
func (n *node) reexec(why string) {
	n.rs.reloading = false
	n.rs.reexecAt.stop()
	if !n.rs.awaitEnded(n.hold.holding, n.deps.afterFunc) {
		n.log.warnf("re-executing with the release of an earlier term still pending after %v (etcd will expire its lease)", releaseWait)
	}
	n.save()
	n.log.infof("re-executing (%s); lease %s kept", why, cmp.Or(n.rec.Lease, "none"))
	if n.deps.reexec == nil {
		return
	}
	if err := n.deps.reexec(n.rec); err != nil {
		n.log.errorf("%v; running on as before", err)
	}
}

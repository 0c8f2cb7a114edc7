package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// This file is the per-node state machine: when the address is added, when
// it is refreshed, and when the node steps down. One goroutine (run) owns all
// of the state below; the lease, the kernel and the prober report to it
// through channels.

type nodeState int

const (
	stateWaiting   nodeState = iota // interface missing or down
	stateCandidate                  // campaigning (or waiting for a lease)
	stateLeader                     // holding the address
)

func (s nodeState) String() string {
	return [...]string{"waiting", "candidate", "leader"}[s]
}

// probeResult reports one round of probe-before-take.
type probeResult struct {
	seq     int
	foreign net.HardwareAddr // another host answered for the VIP
	err     error            // the probe itself failed
}

// kernel is the node's view of rtnetlink (rtnl.go); tests replace it.
type kernel interface {
	links() ([]linkMessage, error)
	addrs(family uint8) ([]addrMessage, error)
	setAddr(index uint32, p netip.Prefix, lifetime time.Duration) error
	delAddr(index uint32, p netip.Prefix) (bool, error)
}

// linkFrames sends announcements and probes on the link (garp.go, ndp.go);
// tests replace it.
type linkFrames interface {
	announce(ip netip.Addr) error
	probe(ctx context.Context, ip netip.Addr, window time.Duration) (net.HardwareAddr, error)
	Close() error
}

// nodeDeps are the node's outside parts: the kernel, the link's frames
// and etcd.
type nodeDeps struct {
	kern        kernel
	openFrames  func(l linkMessage, ipv6 bool) (linkFrames, error)
	newTerm     func(cfg electConfig, events chan<- termEvent) campaigner
	reexec      func(stateRecord) error // SIGHUP (resume.go, with the group's lock); returns only on failure
	checkConfig func() error            // SIGHUP: vipd -check with the same arguments (resume.go)
}

// realDeps are the parts vipd runs with.
func realDeps(rt *rtnl, cli *clientv3.Client, log *logger) nodeDeps {
	return nodeDeps{
		kern: rt,
		openFrames: func(l linkMessage, ipv6 bool) (linkFrames, error) {
			a, err := openAnnouncer(int(l.Index), l.Name, l.HardwareAddr, ipv6)
			if err != nil {
				return nil, err // not a nil *announcer in a non-nil interface
			}
			return a, nil
		},
		newTerm: func(cfg electConfig, events chan<- termEvent) campaigner {
			return startTerm(cli, cfg, log, events)
		},
		checkConfig: checkReload,
	}
}

// The reasons the node steps down by itself (the term's own are in
// elect.go); wrapped with details, checked with errors.Is.
var (
	errDeadline  = errors.New("deadline passed")
	errLinkDown  = errors.New("down")              // "eth0 is down"
	errLinkGone  = errors.New("no such interface") // "eth0: no such interface"
	errAddFailed = errors.New("cannot add the address")
	errStalled   = errors.New("stalled while setting the address")
	errForeign   = errors.New("another host answers for the address")
)

type node struct {
	cfg  Config
	tls  *tls.Config // etcd client TLS, nil for plain http
	log  *logger
	deps nodeDeps
	met  *metrics

	rtEvents   chan rtnlEvent
	termEvents chan termEvent
	probes     chan probeResult
	health     chan healthEvent // from the checker (check.go), if there is one

	link     linkMessage
	haveLink bool
	frames   linkFrames // open while the link is usable; nil if it could not be opened

	state    nodeState
	term     campaigner
	ttl      time.Duration // the term's effective lease TTL
	deadline time.Time     // the lease's deadline; zero without a lease
	beat     time.Time     // once elected, the heartbeat's deadline (elect.go)
	timer    *time.Timer   // fires at holdUntil
	elected  bool          // this term won the campaign
	holding  bool          // the address is on the link because we put it there
	missing  bool          // while holding, the kernel lost it; put back after a prompt renewal
	stepped  error         // why the node last stepped down
	retried  bool          // a refresh found no lifetime allowed and asked for a renewal at once

	// Rank (rank.go): this node's health, and, while elected, the best
	// other candidate and the handover rules.
	healthy bool
	rival   rival
	ho      handover
	preempt *time.Timer // fires when ho says to look again

	probeSeq    int
	probeCancel context.CancelFunc
	probeFailed bool          // the last probe failed (logged once per spell)
	squatStart  time.Time     // when another host first answered for the VIP, in this term
	squatLimit  time.Duration // how long a term waits for it before stepping aside (squatBound)
	waitingFor  string        // what the last "waiting" line said

	// The takeover burst is sent from the loop, like every frame that
	// claims the VIP, so that the deadline is checked right before each.
	burst     *time.Timer
	burstLeft int
	refresh   *time.Ticker
	// Pauses no clock sees (a VM stopped by its hypervisor): every
	// announcement after a term's first goes out only once etcd has
	// acknowledged a renewal sent after the announcement became due
	// (requestAnnounce). vouched is the latest such send time; pending
	// names the announcement waiting for one, due since pendingSince.
	vouched      time.Time
	pending      string
	pendingSince time.Time

	// After a local failure (the address cannot be added) the next term
	// waits, so that a persistent fault does not spin through elections.
	holdOff time.Time
	// A node that failed to hold ranks itself unable (rank.go) until
	// unableUntil, or until a link or address change on its interface;
	// the back-off doubles with each failure (unableFirst to unableMax)
	// and starts over once it has held the VIP.
	unableUntil   time.Time
	unableBackoff time.Duration
	ableTimer     *time.Timer // fires at unableUntil
	wake          chan struct{}
	wakeTimer     *time.Timer // sends on wake when holdOff ends; one at a time

	// The state file (statefile.go) and what it says; resume.go.
	sf       *stateFile
	rec      stateRecord
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
	ending    []campaigner // stopped terms whose release and revocation may still run: a re-exec waits for them
	hupLater  bool         // a SIGHUP came while resuming: it waits for the resume to settle
	checked   chan error   // the configuration check of a SIGHUP
	reexecAt  *time.Timer
}

func newNode(cfg Config, tlsCfg *tls.Config, log *logger, deps nodeDeps) *node {
	stopped := func() *time.Timer {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	return &node{
		cfg: cfg, tls: tlsCfg, log: log, deps: deps, met: &metrics{},
		rtEvents:   make(chan rtnlEvent, 256),
		termEvents: make(chan termEvent, 16),
		probes:     make(chan probeResult, 1),
		health:     make(chan healthEvent, 1),
		wake:       make(chan struct{}, 1),
		timer:      stopped(),
		burst:      stopped(),
		preempt:    stopped(),
		reexecAt:   stopped(),
		ableTimer:  stopped(),
		checked:    make(chan error, 1),
		healthy:    cfg.Check == "", // with a check: unhealthy until it has passed vip.check.rise times
		ho:         handover{delay: cfg.PreemptDelay},
		squatLimit: squatBound(cfg.TTL),
		rec:        newRecord(cfg),
	}
}

// newRecord is the state file's content before anything has happened.
func newRecord(cfg Config) stateRecord {
	addrs := make([]string, len(cfg.Addresses))
	for i, p := range cfg.Addresses {
		addrs[i] = p.String()
	}
	return stateRecord{Name: cfg.Name, Key: cfg.Key, Addresses: addrs, Interface: cfg.Interface,
		State: stateWaiting.String(), StateSince: time.Now()}
}

// save rewrites the state file with the node as it stands.
func (n *node) save() {
	n.record()
	n.sf.write(n.rec)
}

// record brings the record's derived fields up to date.
func (n *node) record() {
	n.rec.State = n.state.String()
	n.rec.Link, n.rec.LinkIndex = "", 0
	if n.haveLink {
		n.rec.Link, n.rec.LinkIndex = n.link.Name, n.link.Index
	}
	n.rec.Deadline = time.Time{}
	if n.term != nil && !n.deadline.IsZero() {
		n.rec.Deadline, _ = n.holdUntil()
	}
	// Only a node that put the address on its link resumes as holder: one
	// that won the election but still waits (takeover wait, probe, a
	// squatter) must go through that wait again after a restart.
	n.rec.Leading = n.holding
	n.rec.Healthy = n.healthy
}

// run is the event loop. It returns after a graceful stop on a signal.
// Every wake-up checks the deadline first: after a freeze (SIGSTOP, a
// stalled VM) stale events, the deadline timer and overdue announcement
// ticks arrive together, and none of them may act on the old leadership.
func (n *node) run(signals <-chan os.Signal) {
	n.log.infof("starting %s for %s on %s, etcd %s", version, prefixList(n.cfg.Addresses), n.cfg.Interface, strings.Join(n.cfg.Etcd, ","))
	n.resync()
	for {
		var refresh <-chan time.Time
		if n.refresh != nil {
			refresh = n.refresh.C
		}
		select {
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				n.reload()
				continue
			}
			n.stop(sig)
			return
		case err := <-n.checked:
			n.reloadChecked(err)
		case <-n.reexecAt.C:
			n.reexec("the renewal before it did not come back in time")
		case ev := <-n.rtEvents:
			n.checkDeadline()
			n.onRTNL(ev)
		case ev := <-n.termEvents:
			n.checkDeadline()
			n.onTerm(ev)
		case r := <-n.probes:
			n.checkDeadline()
			n.onProbe(r)
		case <-n.timer.C:
			n.checkDeadline()
		case <-n.burst.C:
			n.burstTick()
		case ev := <-n.health:
			n.checkDeadline()
			n.onHealth(ev)
		case <-n.preempt.C:
			n.checkDeadline()
			n.considerHandover()
		case <-n.wake:
			if n.term == nil && n.usable() {
				n.campaign()
			}
		case <-n.ableTimer.C:
			n.ableAgain(fmt.Sprintf("its %v back-off is over", n.unableBackoff))
		case <-refresh:
			n.requestAnnounce("periodic refresh")
		}
	}
}

func (n *node) setState(s nodeState, reason string) {
	if s == n.state {
		return
	}
	n.log.infof("%s -> %s: %s", n.state, s, reason)
	n.met.transition(n.state, s)
	n.state = s
	n.rec.StateSince = time.Now()
	n.rec.Holder, n.rec.HeldSince, n.rec.HeldBoottimeMS, n.rec.BootID = "", time.Time{}, 0, ""
	if s == stateLeader {
		// The claim's time, as the election entry says it (-status), and
		// the handover clock's start on a clock that does not step, for a
		// resume (resume.go tenureStart).
		n.rec.Holder, n.rec.HeldSince = n.rec.Name, cmp.Or(n.tenure, n.ho.tookAt)
		n.rec.HeldBoottimeMS = (boottime() - time.Since(n.ho.tookAt)).Milliseconds()
		n.rec.BootID = bootID()
	}
	n.save()
}

// usable says whether the link can carry the VIP.
func (n *node) usable() bool { return n.haveLink && n.link.up() }

// checkDeadline steps a leader down once the deadline has passed. A
// candidate holds nothing to fence: it keeps its lease and its place in
// the election (a lease that did expire ends the term through the
// renewal's "not found"), and take() will not add the address without a
// second of lifetime before the deadline.
func (n *node) checkDeadline() {
	if !n.elected || n.deadline.IsZero() {
		return
	}
	until, what := n.holdUntil()
	if time.Now().Before(until) {
		return
	}
	late := time.Since(until).Round(time.Millisecond)
	n.stepDown(fmt.Errorf("%w: %s not acknowledged in time (deadline passed %v ago)", errDeadline, what, late))
}

// holdUntil is when the address must be gone at the latest: the lease's
// deadline and, once elected, the heartbeat's, whichever comes first. Other
// nodes may remove the election key of a holder whose heartbeat they have
// seen standing still for a TTL (elect.go), so both bind.
func (n *node) holdUntil() (time.Time, string) {
	if n.elected && n.beat.Before(n.deadline) {
		return n.beat, "heartbeat"
	}
	return n.deadline, "lease renewal"
}

// The kernel fence. The address is given a lifetime, so that the kernel
// removes it by itself from a node that is frozen or dead. Lifetimes are
// whole seconds, and the kernel's lifetime check runs at once whenever any
// address in the namespace changes and then no sooner than a second
// later: an address whose lifetime ends just after such a check stays up
// to a second longer (docs/design.md, section 2; pinned by kernel_test.go). So an
// address given lifetime L at time r may still be there at r + L +
// kernelSlack.
//
// Another node can add the address at the earliest when the holder's last
// acknowledged send time S plus the TTL has passed (lease expiry, or a
// heartbeat that stood still for a TTL: elect.go), and, unless the holder
// released the address and said so, takeoverWait later. Hence the lifetime
// must end by S + TTL + takeoverWait - kernelSlack (fenceEnd), which is
// also never after the step-down deadline S + TTL - margin. At vip.ttl=2
// that leaves a lifetime of 1 s only to a refresh whose acknowledgement
// came back within takeoverWait - (kernelSlack - 1 s) of its send time; a
// later one is skipped, and the older, shorter lifetime stays.
//
// kernelSlack's 100 ms beyond the second are the kernel worker's own
// delay: kernel_test.go measured the removal at most 30 ms late at the
// 95th percentile, 155 ms at worst on a loaded machine, and up to 300 ms
// with the CPUs saturated on purpose. A refresh acknowledged promptly (a
// few ms) leaves about 190 ms for it, since the lifetime is rounded down;
// one acknowledged after 100 ms, the 100 ms counted here. The probe is the
// second line for the rest.
const (
	kernelSlack  = time.Second + 100*time.Millisecond
	takeoverWait = 200 * time.Millisecond
)

// fenceEnd is when the address's kernel lifetime must end at the latest.
func (n *node) fenceEnd() time.Time {
	until, _ := n.holdUntil()
	fence := until.Add(margin(n.ttl) + takeoverWait - kernelSlack)
	if fence.Before(until) {
		return fence
	}
	return until
}

// lifetime is the whole-second lifetime the address may be given now
// (below a second: none).
func (n *node) lifetime() time.Duration {
	return time.Until(n.fenceEnd()).Truncate(time.Second)
}

// setAddrs adds or refreshes every VIP with lifetime life. The clock is
// read again before every call and after the last: a process stalled
// (SIGSTOP, a frozen VM) before or inside a call may otherwise set a
// lifetime that outlasts the fence. A pending SIGSTOP takes effect when a
// call returns, so the check right before the next call is what keeps a
// resumed process from adding an address that the kernel expired
// meanwhile, while another node holds it (NLM_F_REPLACE without
// NLM_F_CREATE still creates: the kernel does not insist on the flag).
// On errStalled the caller steps down, which removes what was set.
func (n *node) setAddrs(life time.Duration) error {
	for _, p := range n.cfg.Addresses {
		if err := n.fits(life); err != nil {
			return err
		}
		if err := n.deps.kern.setAddr(n.link.Index, p, life); err != nil {
			return fmt.Errorf("%w: %w", errAddFailed, err)
		}
	}
	return n.fits(life)
}

// fits says whether a lifetime set now still ends by the fence.
func (n *node) fits(life time.Duration) error {
	if over := time.Now().Add(life).Sub(n.fenceEnd()); over > 0 {
		return fmt.Errorf("%w: its %d s lifetime would outlast the fence by %v", errStalled, int(life/time.Second), over.Round(time.Millisecond))
	}
	return nil
}

// stepDown gives up the address and the term, then campaigns again with a
// new lease if the link allows it. Its triggers, each a named error:
//   - errDeadline: the lease renewal or the heartbeat was not acknowledged
//     in time (checkDeadline, on every wake-up of the loop);
//   - errLeaseExpired, errKeyGone, errClaim, errSession: the term ended in
//     etcd (elect.go);
//   - errLinkDown, errLinkGone: the interface can no longer carry the
//     address;
//   - errAddFailed: the address could not be added or put back (the next
//     term then waits localRetry);
//   - errStalled: setting the address returned too late to trust the
//     lifetime it set;
//   - errOutranked: the campaign was won, but a candidate behind us has a
//     better rank and should hold the VIP (elect.go claimRanked).
//
// A signal is not a step-down: see stop. Handing over to a better-ranked
// candidate is not one either: see handOver.
func (n *node) stepDown(reason error) {
	n.stepped = reason
	n.rec.LastStepDown, n.rec.SteppedDownAt = reason.Error(), time.Now()
	if n.elected || n.holding || errors.Is(reason, errOutranked) { // a candidate's term ending is no step-down
		n.met.steppedDown(stepReasonOf(reason))
	}
	next := stateCandidate
	if !n.usable() {
		next = stateWaiting
	}
	if next == n.state {
		n.log.infof("%s: %v; starting over", n.state, reason)
	}
	n.setState(next, reason.Error())
	n.endTerm(false)
	if next == stateCandidate {
		n.campaign()
	}
}

// endTerm removes the address (if we hold it) and ends the term. A
// graceful end that removed the address says so to the next holder
// (resign), which then adds it without waiting.
func (n *node) endTerm(graceful bool) {
	held := n.holding
	clean := n.release()
	if n.term != nil {
		if graceful && held && clean {
			n.term.resign(0)
		} else {
			n.term.stop(0)
		}
		n.ending = append(slices.DeleteFunc(n.ending, termEnded), n.term)
		n.term = nil
	}
	n.deadline, n.beat = time.Time{}, time.Time{}
	n.timer.Stop()
	n.elected = false
	n.resuming, n.resumed, n.tenure, n.resumedTook = false, false, time.Time{}, time.Time{}
	n.squatStart = time.Time{} // each term waits its full squatLimit
	n.vouched = time.Time{}    // a new lease is vouched for afresh
	n.rec.Lease, n.rec.ElectionKey, n.rec.CreateRevision, n.rec.TTLMillis = "", "", 0, 0
	n.rival = rival{}
	n.ho.aboveSince, n.ho.said = time.Time{}, ""
	n.preempt.Stop()
	n.save() // a crash from here on has no lease to resume
}

// rank is this node's rank as it stands (rank.go).
func (n *node) rank() rank {
	return rank{unable: !n.unableUntil.IsZero(), healthy: n.healthy, priority: n.cfg.Priority}
}

// The back-off of a node that failed to hold the VIP.
const (
	unableFirst = 10 * time.Second
	unableMax   = 10 * time.Minute
)

// markUnable ranks the node below every able one after it failed to hold
// the VIP: a preferred node that cannot add the address (IPv6 off on its
// link, say) would otherwise attract a handover, fail, and lose the VIP
// to the old holder again and again. It tries again after the back-off,
// or when its link or addresses change (ableAgain).
func (n *node) markUnable(err error) {
	n.unableBackoff = min(max(2*n.unableBackoff, unableFirst), unableMax)
	n.unableUntil = time.Now().Add(n.unableBackoff)
	n.ableTimer.Reset(n.unableBackoff)
	n.log.errorf("cannot hold %s: %v; ranking this node unable (below every able node) for %v, or until %s or its addresses change",
		prefixList(n.cfg.Addresses), err, n.unableBackoff, n.cfg.Interface)
}

// ableAgain ends an unable spell, publishing the node's rank again.
func (n *node) ableAgain(why string) {
	if n.unableUntil.IsZero() {
		return
	}
	n.unableUntil = time.Time{}
	n.ableTimer.Stop()
	n.log.infof("rank: %s again (%s); the next failure to hold waits %v", n.rank(), why, min(2*n.unableBackoff, unableMax))
	if n.term != nil {
		n.term.setRank(n.rank())
	}
}

// onHealth applies a change of the check's verdict: the rank is published
// in the election entry, and a leader that is now outranked may hand over.
func (n *node) onHealth(ev healthEvent) {
	if ev.healthy == n.healthy {
		if !ev.healthy {
			n.log.infof("rank: %s (%s)", n.rank(), ev.reason) // the first verdict of a node that started unhealthy
		}
		return
	}
	old := n.rank()
	n.healthy = ev.healthy
	n.log.infof("rank: %s -> %s (%s)", old, n.rank(), ev.reason)
	if n.term != nil {
		n.term.setRank(n.rank())
	}
	n.considerHandover()
}

// considerHandover is when a leader hands over: to a strictly
// better-ranked candidate, at the time handover.decide says (rank.go).
func (n *node) considerHandover() {
	n.preempt.Stop()
	if n.state != stateLeader || !n.holding {
		return
	}
	now := time.Now()
	yes, again := n.ho.decide(now, n.rank(), n.rival)
	switch {
	case yes:
		n.handOver(n.rival.entry)
	case again.IsZero():
		n.ho.said = ""
	default:
		n.preempt.Reset(again.Sub(now))
		why := "a higher priority must stand for vip.preempt.delay"
		if again.Equal(n.ho.tookAt.Add(n.ho.delay)) {
			why = "a new leader keeps the VIP for vip.preempt.delay"
		}
		msg := fmt.Sprintf("%s (%s) outranks this node (%s); handing over in %v (%s) unless that changes",
			n.rival.name, n.rival.rank, n.rank(), again.Sub(now).Round(time.Millisecond), why)
		if key := n.rival.name + n.rival.rank.String() + n.rank().String(); key != n.ho.said {
			n.ho.said = key
			n.log.infof("%s", msg)
		}
	}
}

// handOver is the graceful path to a better-ranked candidate: the address
// goes first, then our election key, with the release mark that lets the
// next holder add the address at once; then this node campaigns again, at
// the end of the queue. The candidates ahead of the better one step aside
// (elect.go claimRanked), so the VIP moves once.
func (n *node) handOver(to entry) {
	n.met.steppedDown(handoverReason(n.rank(), to.rank))
	n.setState(stateCandidate, fmt.Sprintf("handing over to %s (%s > %s)", to.name, to.rank, n.rank()))
	n.endTerm(true)
	n.campaign()
}

// localRetry is how long a node that could not add the address waits
// before it campaigns again.
const localRetry = 5 * time.Second

// campaign starts a new term, unless a local failure asks to wait.
func (n *node) campaign() {
	if wait := time.Until(n.holdOff); wait > 0 {
		if n.wakeTimer == nil {
			n.wakeTimer = time.AfterFunc(wait, func() {
				select {
				case n.wake <- struct{}{}:
				default:
				}
			})
		} else {
			n.wakeTimer.Reset(wait)
		}
		return
	}
	name := n.cfg.Name
	if name == "" {
		name = n.link.HardwareAddr.String()
	}
	n.rec.Name = name
	ec := electConfig{prefix: n.cfg.Key, name: name, ttl: n.cfg.TTL, rank: n.rank(), endpoints: n.cfg.Etcd, tls: n.tls, met: n.met}
	if n.resume != nil && n.cfg.Name == "" && name != n.resume.name {
		n.log.infof("not resuming the earlier run's lease: it campaigned as %q, this node is %q now", n.resume.name, name)
		n.resume = nil
	}
	if n.resume != nil {
		ec.resume, n.resume = n.resume, nil
		n.log.infof("resuming the earlier run's term for %s as %q (%s)", n.cfg.Key, name, n.rank())
	} else {
		n.log.infof("campaigning for %s as %q (%s)", n.cfg.Key, name, n.rank())
	}
	n.term = n.deps.newTerm(ec, n.termEvents)
}

func (n *node) onTerm(ev termEvent) {
	if ev.t != n.term {
		return // a term that has already ended
	}
	if ev.vouched.After(n.vouched) {
		n.vouched = ev.vouched
	}
	switch ev.kind {
	case evGranted:
		n.ttl = ev.ttl
		n.setDeadlines(ev)
		n.rec.Lease, n.rec.ElectionKey, n.rec.TTLMillis = fmt.Sprintf("%x", int64(ev.lease)), ev.key, ev.ttl.Milliseconds()
		if !ev.resumed {
			n.log.infof("lease granted (TTL %v)", ev.ttl)
			n.settleResume()
		}
		n.save()
		n.hupAfterResume()
	case evRenewed:
		n.setDeadlines(ev)
		n.extended()
		n.announcePending()
		n.save()
		if n.reloading && n.holding && n.reexecAt.Stop() {
			n.reexec("renewed first")
		}
	case evElected:
		n.elected = true
		n.setDeadlines(ev)
		n.rec.CreateRevision = ev.createRev
		n.tenure, n.resumedTook = ev.held, ev.took
		if ev.resumed {
			n.resuming, n.resumed = false, true
			n.take()
			n.hupAfterResume()
			return
		}
		wait := time.Duration(0)
		if !ev.released {
			// The previous holder did not say that it removed the
			// address: its kernel may keep it until kernelSlack after
			// its lifetime (see fenceEnd). The probe's own window
			// counts towards the wait.
			wait = max(0, takeoverWait-n.cfg.Probe)
			n.log.infof("elected; no release mark from the previous holder, so the address is added after %v (the kernel's lifetime slack)", takeoverWait)
		}
		n.startProbe(wait)
	case evLost:
		n.stepDown(ev.err)
	case evRival:
		n.rival = ev.rival
		n.considerHandover()
	case evTrouble:
		if ev.err != nil {
			n.log.warnf("etcd unreachable: %v (retrying)", ev.err)
		} else {
			n.log.infof("etcd reachable again")
		}
	}
}

// setDeadlines moves the deadlines an event carries forward (never back).
func (n *node) setDeadlines(ev termEvent) {
	if ev.deadline.After(n.deadline) {
		n.deadline = ev.deadline
	}
	if ev.beat.After(n.beat) {
		n.beat = ev.beat
	}
	until, _ := n.holdUntil()
	n.timer.Reset(time.Until(until))
}

// extended acts on a deadline that moved: the address's lifetime follows it,
// and an elected node that had too little time left takes the address now.
func (n *node) extended() {
	if n.holding {
		n.refreshAddrs()
	} else if n.elected && n.probeCancel == nil {
		n.take()
	}
}

// startProbe checks, after delay, that nobody else answers for the VIP
// before we take it: a frozen or dead former holder's kernel answers ARP
// until the address lifetime runs out. Without a probe (vip.probe=0, or
// no socket) the result comes after delay alone.
func (n *node) startProbe(delay time.Duration) {
	n.stopProbe()
	ctx, cancel := context.WithCancel(context.Background())
	n.probeCancel = cancel
	n.probeSeq++
	seq, frames, window, vips := n.probeSeq, n.frames, n.cfg.Probe, n.cfg.Addresses
	go func() {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
		var r probeResult
		if window > 0 && frames != nil {
			r = probeAll(ctx, frames, vips, window)
		}
		r.seq = seq
		select {
		case n.probes <- r:
		case <-ctx.Done():
		}
	}()
}

func (n *node) stopProbe() {
	if n.probeCancel != nil {
		n.probeCancel()
		n.probeCancel = nil
		n.probeSeq++
	}
}

// probeAll probes every VIP; the IPv4 and IPv6 ones in parallel (they use
// separate sockets), so that a dual-stack takeover waits one window, not two.
// Another host's answer for any VIP outranks a failed probe of another: it
// is the one result that must keep us from taking the address.
func probeAll(ctx context.Context, frames linkFrames, vips []netip.Prefix, window time.Duration) probeResult {
	var results [2]probeResult
	var wg sync.WaitGroup
	for i, v6 := range []bool{false, true} {
		wg.Go(func() {
			for _, p := range vips {
				if p.Addr().Is6() != v6 {
					continue
				}
				r := &results[i]
				if r.foreign, r.err = frames.probe(ctx, p.Addr(), window); r.foreign != nil || r.err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	for _, r := range results {
		if r.foreign != nil {
			return probeResult{foreign: r.foreign}
		}
	}
	if results[0].err != nil {
		return results[0]
	}
	return results[1]
}

// probeRetry is how soon a VIP is probed again after another host answered
// for it or the probe failed.
const probeRetry = 200 * time.Millisecond

// onProbe takes the address only after a probe that nobody answered. A
// probe that failed (its socket was closed by a MAC change, say) says
// nothing about the VIP: it is tried again, with the link's current
// sockets.
func (n *node) onProbe(r probeResult) {
	if r.seq != n.probeSeq || n.probeCancel == nil {
		return // a probe of an earlier election
	}
	n.probeCancel = nil
	switch {
	case r.foreign != nil:
		if n.onSquatter(r.foreign) {
			n.startProbe(probeRetry)
		}
	case r.err != nil:
		if !n.probeFailed {
			n.log.warnf("probe before take failed: %v; probing again every %v", r.err, probeRetry)
			n.probeFailed = true
		}
		n.startProbe(probeRetry)
	default:
		n.squatStart, n.probeFailed = time.Time{}, false
		n.take()
	}
}

// squatBound is how long an elected node waits while another host
// answers for the VIP: TTL + 2 s, longer than any copy that a frozen or
// dead vipd's kernel can keep (its lifetime ends by the fence, plus the
// kernel's second of slack). An answer that outlasts it comes from a host
// that configured the VIP by hand or by another tool.
func squatBound(ttl time.Duration) time.Duration { return ttl + 2*time.Second }

// onSquatter deals with another host answering for the VIP. Briefly that
// is expected: a frozen former holder's address has not expired yet. Past
// squatLimit it is a foreign host: the node says so loudly, counts it
// (vipd_stepdowns_total{reason="foreign"}) and steps aside, so that
// another candidate, which may see the LAN differently, can try; it
// campaigns again at the end of the queue, so with one node, or a squatter
// every node sees, the alarm is raised again each squatLimit and nobody
// adds the address. It reports whether the node goes on waiting.
func (n *node) onSquatter(mac net.HardwareAddr) bool {
	if n.squatStart.IsZero() {
		n.squatStart = time.Now()
		n.log.warnf("%s still answered by %s; waiting for it to go quiet before taking it", prefixList(n.cfg.Addresses), mac)
		return true
	}
	if time.Since(n.squatStart) < n.squatLimit {
		return true
	}
	n.log.errorf("a foreign host (MAC %s) has answered for %s for more than %v: someone else has configured it; not taking the address while it answers",
		mac, prefixList(n.cfg.Addresses), n.squatLimit)
	n.stepDown(fmt.Errorf("%w: %s for more than %v; stepping aside so that another node may try", errForeign, mac, n.squatLimit))
	return false
}

// take adds the addresses with a lifetime that ends before the fence (see
// fenceEnd), then announces them.
func (n *node) take() {
	life := n.lifetime()
	if life < time.Second {
		// The last renewal was sent too long ago for a lifetime that
		// ends by the fence (after the takeover wait, at vip.ttl=2, it
		// always is): ask for one now rather than wait for the next.
		left, _ := n.holdUntil()
		n.log.infof("elected with %v before the deadline; renewing before taking the address", time.Until(left).Round(time.Millisecond))
		n.term.renewNow()
		return
	}
	n.holding = true // from here on, release() removes what was added
	if err := n.setAddrs(life); err != nil {
		if errors.Is(err, errAddFailed) {
			// Both families or none: stepDown removes what was added.
			n.markUnable(err)
			n.holdOff = time.Now().Add(localRetry)
			err = fmt.Errorf("%w (campaigning again in %v)", err, localRetry)
		}
		n.stepDown(err)
		return
	}
	n.unableBackoff = 0 // it held: a later failure starts the back-off afresh
	how := "elected; added"
	if n.resumed {
		how = "resumed; refreshed"
	}
	n.ho.tookAt = time.Now()
	if !n.resumedTook.IsZero() && n.resumed {
		n.ho.tookAt = n.resumedTook // the tenure goes on, on the monotonic clock
	}
	// The first announcement goes out before anything slower (the log
	// line, the state file): the neighbours learn the new MAC at once.
	if !n.resumed {
		n.startBurst(true)
	} else {
		// The neighbours still point here: one announcement, no burst.
		n.announceAll("resume")
	}
	if !n.holding {
		return // the deadline passed before the announcement: stepped down
	}
	n.setState(stateLeader, fmt.Sprintf("%s %s on %s (lifetime %d s)", how, prefixList(n.cfg.Addresses), n.link.Name, int(life/time.Second)))
	if n.cfg.GarpRefresh > 0 {
		n.refresh = time.NewTicker(n.cfg.GarpRefresh)
	}
	n.considerHandover()
}

// refreshAddrs extends the addresses' lifetimes after a renewal, never past
// the fence. With less than a second allowed (the acknowledgement came back
// late) the older, shorter lifetime stays, and the next renewal is asked
// for at once, so that the address gets its lifetime before the old one
// runs out; once per late acknowledgement, so that a slow etcd is not
// pressed harder.
func (n *node) refreshAddrs() {
	life := n.lifetime()
	if life < time.Second {
		if !n.retried {
			n.retried = true
			n.term.renewNow()
		}
		return
	}
	n.retried = false
	err := n.setAddrs(life)
	switch {
	case errors.Is(err, errStalled):
		n.stepDown(err)
	case err != nil && n.missing:
		n.stepDown(fmt.Errorf("put back %s: %w", prefixList(n.cfg.Addresses), err))
	case err != nil:
		n.log.warnf("refresh lifetime: %v", err)
	case n.missing:
		n.missing = false
		n.log.warnf("%s re-added on %s and announced (lifetime %d s)", prefixList(n.cfg.Addresses), n.link.Name, int(life/time.Second))
		n.requestAnnounce("re-add")
	}
}

// release removes the addresses (if we hold them) and stops everything that
// belongs to holding them. It reports whether nothing of ours is left on
// the link.
func (n *node) release() bool {
	n.stopProbe()
	n.stopBurst()
	if n.refresh != nil {
		n.refresh.Stop()
		n.refresh = nil
	}
	if !n.holding {
		return true
	}
	n.holding, n.missing = false, false
	clean := true
	for _, p := range n.cfg.Addresses {
		if _, err := n.deps.kern.delAddr(n.link.Index, p); err != nil {
			n.log.errorf("%v", err)
			clean = false
		}
	}
	return clean
}

// startBurst announces, then vip.garp-1 more times, from the loop: the
// first frame at once when it is a takeover's (the claim, or the renewal
// take() waited for, has just been acknowledged), after a renewal
// otherwise (requestAnnounce).
func (n *node) startBurst(takeover bool) {
	n.stopBurst()
	if n.cfg.Garp < 1 {
		return
	}
	n.burstLeft = n.cfg.Garp - 1
	if takeover {
		n.announceAll("takeover")
	} else {
		n.requestAnnounce("new MAC")
	}
	if n.burstLeft > 0 && n.holding {
		n.burst.Reset(n.cfg.GarpInterval)
	}
}

func (n *node) burstTick() {
	if n.burstLeft <= 0 {
		return
	}
	n.burstLeft--
	n.requestAnnounce("takeover")
	if n.burstLeft > 0 && n.holding {
		n.burst.Reset(n.cfg.GarpInterval)
	}
}

// requestAnnounce sends an announcement once etcd has acknowledged a
// renewal sent after now: it asks for one at once. A VM that its
// hypervisor paused past its lease resumes with a monotonic clock that
// saw nothing, and its timers (burst, refresh) fire as if no time had
// passed; etcd then answers "lease not found" and the node steps down
// before anything goes out. In the ordinary case it costs one round trip
// to etcd per announcement.
func (n *node) requestAnnounce(why string) {
	n.checkDeadline()
	if !n.holding || n.term == nil {
		return
	}
	n.pending, n.pendingSince = why, time.Now()
	n.term.renewNow()
}

// announcePending sends the pending announcement if a renewal sent after
// it became due has been acknowledged, and otherwise asks for another
// (one already in flight when it became due does not count).
func (n *node) announcePending() {
	if n.pending == "" {
		return
	}
	if !n.vouched.After(n.pendingSince) {
		n.term.renewNow()
		return
	}
	why := n.pending
	n.pending = ""
	n.announceAll(why)
}

// stopBurst cancels a running announcement burst: after a step-down (or a
// new MAC) its frames would announce the wrong thing.
func (n *node) stopBurst() {
	n.burstLeft = 0
	n.pending = ""
	n.burst.Stop()
}

// announceAll announces every VIP once, only while the node holds them and
// its deadline has not passed: it checks the deadline first, in the
// goroutine that owns the state, so that a process resumed after a freeze
// steps down before it can send anything.
func (n *node) announceAll(why string) {
	n.checkDeadline()
	if n.frames == nil || !n.holding {
		return
	}
	for _, p := range n.cfg.Addresses {
		if err := n.frames.announce(p.Addr()); err != nil {
			n.log.warnf("%s announcement: %v", why, err)
		} else {
			n.met.announced(p.Addr())
		}
	}
	n.rec.LastAnnounced = time.Now()
	if n.state == stateLeader { // a takeover's first one: take() saves right after
		n.save()
	}
}

// onRTNL follows the link and guards the address against others.
func (n *node) onRTNL(ev rtnlEvent) {
	switch {
	case ev.err != nil:
		n.log.errorf("%v", ev.err)
	case ev.resync:
		n.log.warnf("rtnetlink events were lost; listing links and addresses again")
		n.resync()
	case ev.link != nil:
		n.onLink(*ev.link, ev.deleted)
	case ev.addr != nil:
		n.onAddr(*ev.addr, ev.deleted)
	}
}

func (n *node) onLink(l linkMessage, deleted bool) {
	if n.haveLink && l.Index == n.link.Index {
		if deleted {
			n.setLink(linkMessage{}, false, "interface removed")
		} else {
			n.setLink(l, true, "link change")
		}
		return
	}
	if !n.haveLink && !deleted && (n.cfg.Interface == "auto" || l.Name == n.cfg.Interface) {
		n.resync()
	}
}

func (n *node) onAddr(a addrMessage, deleted bool) {
	if !n.haveLink {
		if !deleted && n.cfg.Interface == "auto" {
			n.resync() // the address that makes a link "auto" may have arrived
		}
		return
	}
	if a.Index != n.link.Index {
		return
	}
	if !n.isVIP(a.prefix()) {
		n.ableAgain("an address of " + n.link.Name + " changed: " + a.prefix().String())
		return
	}
	switch {
	case deleted && n.holding:
		// Removed by hand, or by the kernel after late renewals: put it
		// back under the same fence as any refresh. The fence usually
		// allows no lifetime between renewals, so the term is asked for
		// one at once; if it is not acknowledged in time, the deadline
		// ends the leadership.
		n.missing = true
		if n.lifetime() < time.Second {
			n.log.warnf("%s was removed from %s while leader; renewing at once to put it back", a.prefix(), n.link.Name)
			n.term.renewNow()
			return
		}
		n.refreshAddrs()
	case !deleted && !n.holding && !n.resuming:
		n.removeStale(a.prefix())
	}
}

func (n *node) hasIPv6() bool {
	for _, v := range n.cfg.Addresses {
		if v.Addr().Is6() {
			return true
		}
	}
	return false
}

func (n *node) isVIP(p netip.Prefix) bool {
	for _, v := range n.cfg.Addresses {
		if v == p {
			return true
		}
	}
	return false
}

// removeStale removes a copy of the VIP that we do not hold, such as one a
// crashed earlier run left behind.
func (n *node) removeStale(p netip.Prefix) {
	removed, err := n.deps.kern.delAddr(n.link.Index, p)
	if err != nil {
		n.log.errorf("%v", err)
	} else if removed {
		n.log.warnf("removed a stale copy of %s from %s (this node is %s)", p, n.link.Name, n.state)
	}
}

// resync lists links and addresses, picks the link and removes stale VIPs.
func (n *node) resync() {
	links, err := n.deps.kern.links()
	if err != nil {
		n.log.errorf("%v", err)
		return
	}
	addrs, err := n.deps.kern.addrs(unix.AF_UNSPEC)
	if err != nil {
		n.log.errorf("%v", err)
		return
	}
	l, ok := findLink(links, addrs, n.cfg.Interface, n.cfg.Addresses[0].Addr())
	n.setLink(l, ok, "interface "+n.cfg.Interface)
	if !ok {
		return
	}
	n.removeStaleCopies(addrs)
}

// removeStaleCopies removes the VIPs that are on our link while we do not
// hold them, unless an earlier run's lease may still be resumed.
func (n *node) removeStaleCopies(addrs []addrMessage) {
	if n.holding || n.resuming {
		return
	}
	for _, a := range addrs {
		if a.Index == n.link.Index && n.isVIP(a.prefix()) {
			n.removeStale(a.prefix())
		}
	}
}

// settleResume ends the wait for a resume that did not happen: a copy of
// the VIP left on the link by the earlier run is stale now.
func (n *node) settleResume() {
	if !n.resuming {
		return
	}
	n.resuming = false
	if !n.haveLink {
		return
	}
	addrs, err := n.deps.kern.addrs(unix.AF_UNSPEC)
	if err != nil {
		n.log.errorf("%v", err)
		return
	}
	n.removeStaleCopies(addrs)
}

// setLink applies a new view of the link: the state follows whether it can
// carry the address, and a new MAC means a new announcer and a fresh
// announcement.
func (n *node) setLink(l linkMessage, ok bool, why string) {
	wasUsable, oldMAC := n.usable(), n.link.HardwareAddr.String()
	n.link, n.haveLink = l, ok
	usable := n.usable()
	macChanged := ok && l.HardwareAddr.String() != oldMAC

	if wasUsable && (!usable || macChanged) {
		n.closeFrames()
	}
	if usable && n.frames == nil {
		frames, err := n.deps.openFrames(l, n.hasIPv6())
		if err != nil {
			n.log.errorf("%v", err) // announcements and probes are skipped until the next link change
		}
		n.frames = frames
	}

	if ok && (usable != wasUsable || macChanged) {
		n.ableAgain(fmt.Sprintf("%s changed", l.Name))
	}
	switch {
	case wasUsable && !usable:
		reason := fmt.Errorf("%s is %w", n.cfg.Interface, errLinkDown)
		if !ok {
			reason = fmt.Errorf("%s: %w (%s)", n.cfg.Interface, errLinkGone, why)
		}
		n.stepDown(reason)
	case !wasUsable && usable:
		n.setState(stateCandidate, fmt.Sprintf("%s (index %d, %s) is up", l.Name, l.Index, l.HardwareAddr))
		if n.term == nil {
			n.campaign()
		}
	case !usable && n.state == stateWaiting:
		n.logWaiting(ok)
	case macChanged && n.holding:
		n.log.infof("%s changed its MAC from %s to %s; announcing again", l.Name, oldMAC, l.HardwareAddr)
		n.startBurst(false)
	}
}

// logWaiting says once why the node cannot campaign yet.
func (n *node) logWaiting(haveLink bool) {
	msg := fmt.Sprintf("waiting for interface %s to appear", n.cfg.Interface)
	if n.cfg.Interface == "auto" {
		msg = fmt.Sprintf("waiting for an interface with an address in the subnet of %s", n.cfg.Addresses[0].Addr())
	}
	if haveLink {
		msg = fmt.Sprintf("waiting for %s to come up (it has no carrier or is down)", n.link.Name)
	}
	if msg != n.waitingFor {
		n.waitingFor = msg
		n.log.infof("%s", msg)
	}
}

func (n *node) closeFrames() {
	n.stopBurst()
	if n.frames != nil {
		n.frames.Close()
		n.frames = nil
	}
}

// stop is the graceful stop: the address goes first so that the next node
// can take it at once, then the lease (which deletes our election key).
// Only a node that held the address and removed it says so to the next
// holder (resign), which then adds it without waiting.
func (n *node) stop(sig os.Signal) {
	n.log.infof("stopping on %v: removing the address and resigning", sig)
	held := n.holding
	if held {
		n.met.steppedDown(stepStop)
	}
	clean := n.release()
	if n.term != nil {
		if held && clean {
			n.term.resign(2 * revokeTimeout)
		} else {
			n.term.stop(2 * revokeTimeout)
		}
		n.term = nil
	}
	n.closeFrames()
	n.setState(stateWaiting, "stopped")
	n.sf.remove()
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
	if n.reloading {
		return
	}
	if n.resuming {
		// The record names no lease until the resume settles: a re-exec
		// now would lose the one being resumed.
		n.hupLater = true
		n.log.infof("SIGHUP: re-executing once the earlier run's lease is resumed or given up")
		return
	}
	n.reloading = true
	if n.deps.checkConfig == nil {
		n.reloadChecked(nil)
		return
	}
	n.log.infof("SIGHUP: checking the configuration before re-executing")
	go func() { n.checked <- n.deps.checkConfig() }()
}

// hupAfterResume acts on a SIGHUP that came while resuming.
func (n *node) hupAfterResume() {
	if n.hupLater && !n.resuming {
		n.hupLater = false
		n.reload()
	}
}

// reloadChecked goes on with a SIGHUP once the configuration is checked.
func (n *node) reloadChecked(err error) {
	switch {
	case err != nil:
		n.reloading = false
		n.log.errorf("SIGHUP: configuration refused, running on with the current one: %v", err)
	case n.holding && n.term != nil:
		n.log.infof("SIGHUP: renewing, then re-executing with the lease kept")
		n.term.renewNow()
		n.reexecAt.Reset(reloadWait)
	default:
		n.reexec("not holding the VIP")
	}
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

// awaitEnded waits, at most releaseWait, for the stopped terms: a term
// that stepped down just before a SIGHUP is still releasing its key and
// revoking its lease in the background, and the exec would cut that short
// (the key would linger until it is seen as stale, about a TTL without a
// holder). A holder does not wait: its own deadline comes first.
func (n *node) awaitEnded() {
	n.ending = slices.DeleteFunc(n.ending, termEnded)
	if n.holding || len(n.ending) == 0 {
		return
	}
	bound := time.NewTimer(releaseWait)
	defer bound.Stop()
	for _, c := range n.ending {
		select {
		case <-c.ended():
		case <-bound.C:
			n.log.warnf("re-executing with the release of an earlier term still pending after %v (etcd will expire its lease)", releaseWait)
			return
		}
	}
	n.ending = nil
}

// reexec hands the term's record to a new process image (resume.go). A
// failure leaves this one running as it was.
func (n *node) reexec(why string) {
	n.reloading = false
	n.reexecAt.Stop()
	n.awaitEnded()
	n.save()
	n.log.infof("re-executing (%s); lease %s kept", why, cmp.Or(n.rec.Lease, "none"))
	if n.deps.reexec == nil {
		return
	}
	if err := n.deps.reexec(n.rec); err != nil {
		n.log.errorf("%v; running on as before", err)
	}
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

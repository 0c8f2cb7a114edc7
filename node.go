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
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file is the per-node state machine's wiring and loop: when the
// address is added, when it is refreshed, and when the node steps down.
// One goroutine (run) owns all of the state; the lease, the kernel, the
// prober and the alarms report to it through channels, and it hands each
// event to handle. The state is split by concern: the fence (fence.go),
// the address and its announcements (hold.go), the takeover
// (takeover.go), the link (linkview.go), the resume and reload
// (restart.go), the rank and handover (standing.go).

type nodeState int

const (
	stateWaiting   nodeState = iota // interface missing or down
	stateCandidate                  // campaigning (or waiting for a lease)
	stateLeader                     // holding the address
)

func (s nodeState) String() string {
	return [...]string{"waiting", "candidate", "leader"}[s]
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

// nodeDeps are the node's outside parts: the clock (clock.go), the
// kernel, the link's frames and etcd.
type nodeDeps struct {
	now         func() time.Time
	afterFunc   func(d time.Duration, f func()) *time.Timer
	kern        kernel
	openFrames  func(l linkMessage, ipv6 bool) (linkFrames, error)
	newTerm     func(cfg electConfig, events chan<- termEvent) campaigner
	reexec      func(stateRecord) error // SIGHUP (resume.go, with the group's lock); returns only on failure
	checkConfig func() error            // SIGHUP: vipd -check with the same arguments (resume.go)
}

// realDeps are the parts vipd runs with.
func realDeps(rt *rtnl, cli *clientv3.Client, log *logger) nodeDeps {
	return nodeDeps{
		now:       time.Now,
		afterFunc: time.AfterFunc,
		kern:      rt,
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

// inbox is where the node's event sources report to the loop.
type inbox struct {
	rtnl    chan rtnlEvent
	term    chan termEvent
	probes  chan probeResult
	health  chan healthEvent // from the checker (check.go), if there is one
	checked chan error       // the configuration check of a SIGHUP
	ticks   chan *alarm      // the node's alarms, as they go off
}

type node struct {
	cfg  Config
	tls  *tls.Config // etcd client TLS, nil for plain http
	log  *logger
	deps nodeDeps
	met  *metrics
	in   inbox

	state   nodeState
	term    campaigner
	stepped error       // why the node last stepped down
	rec     stateRecord // what the state file says (statefile.go)

	fence  fence
	expiry alarm // goes off at fence.holdUntil
	hold   addrHold
	take   takeover
	view   linkView
	rs     restart
	stand  standing
}

func newNode(cfg Config, tlsCfg *tls.Config, log *logger, deps nodeDeps) *node {
	n := &node{
		cfg: cfg, tls: tlsCfg, log: log, deps: deps, met: &metrics{},
		in: inbox{
			rtnl:    make(chan rtnlEvent, 256),
			term:    make(chan termEvent, 16),
			probes:  make(chan probeResult, 1),
			health:  make(chan healthEvent, 1),
			checked: make(chan error, 1),
			ticks:   make(chan *alarm, 16),
		},
		rec:  newRecord(cfg, deps.now()),
		hold: addrHold{kern: deps.kern, vips: cfg.Addresses},
		take: takeover{squatLimit: squatBound(cfg.TTL)},
		view: linkView{iface: cfg.Interface},
		stand: standing{priority: cfg.Priority,
			healthy: cfg.Check == "", // with a check: unhealthy until it has passed vip.check.rise times
			ho:      handover{delay: cfg.PreemptDelay}},
	}
	// The node's timers, each owned by the part that sets and stops it.
	for _, a := range []*alarm{&n.expiry, &n.hold.burst, &n.hold.refresh, &n.take.wait, &n.take.wake, &n.stand.preempt, &n.stand.able, &n.rs.reexecAt} {
		a.after, a.out = deps.afterFunc, n.in.ticks
	}
	return n
}

// newRecord is the state file's content before anything has happened.
func newRecord(cfg Config, now time.Time) stateRecord {
	addrs := make([]string, len(cfg.Addresses))
	for i, p := range cfg.Addresses {
		addrs[i] = p.String()
	}
	return stateRecord{
		recordGroup:   recordGroup{Name: cfg.Name, Key: cfg.Key, Addresses: addrs, Interface: cfg.Interface},
		recordHolding: recordHolding{State: stateWaiting.String(), StateSince: now},
	}
}

// save rewrites the state file with the node as it stands.
func (n *node) save() {
	n.record()
	n.rs.sf.write(n.rec)
}

// record brings the record's derived fields up to date.
func (n *node) record() {
	n.rec.State = n.state.String()
	n.rec.Link, n.rec.LinkIndex = "", 0
	if n.view.have {
		n.rec.Link, n.rec.LinkIndex = n.view.link.Name, n.view.link.Index
	}
	n.rec.Deadline = time.Time{}
	if n.term != nil && !n.fence.deadline.IsZero() {
		n.rec.Deadline, _ = n.fence.holdUntil()
	}
	// Only a node that put the address on its link resumes as holder: one
	// that won the election but still waits (takeover wait, probe, a
	// squatter) must go through that wait again after a restart.
	n.rec.Leading = n.hold.holding
	n.rec.Healthy = n.stand.healthy
}

// event is what handle acts on: an rtnlEvent, a termEvent, a probeResult,
// a healthEvent, an *alarm, a configChecked or a syscall.Signal.
type event = any

// configChecked is the result of a SIGHUP's configuration check.
type configChecked struct{ err error }

// run is the event loop: it waits for the next event, reads the clock
// and hands both to handle. It returns after a graceful stop on a signal.
func (n *node) run(signals <-chan os.Signal) {
	n.log.infof("starting %s for %s on %s, etcd %s", version, prefixList(n.cfg.Addresses), n.cfg.Interface, strings.Join(n.cfg.Etcd, ","))
	n.resync()
	for {
		var ev event
		select {
		case sig := <-signals:
			ev = sig
		case err := <-n.in.checked:
			ev = configChecked{err}
		case e := <-n.in.rtnl:
			ev = e
		case e := <-n.in.term:
			ev = e
		case e := <-n.in.probes:
			ev = e
		case e := <-n.in.health:
			ev = e
		case e := <-n.in.ticks:
			ev = e
		}
		if !n.handle(n.deps.now(), ev) {
			return
		}
	}
}

// handle acts on one event that arrived at now; it reports false once the
// node has stopped. The deadline is checked first, on every wake-up:
// after a freeze (SIGSTOP, a stalled VM) stale events, the deadline alarm
// and overdue announcement ticks arrive together, and none of them may
// act on the old leadership.
func (n *node) handle(now time.Time, ev event) bool {
	n.checkDeadline(now)
	switch ev := ev.(type) {
	case rtnlEvent:
		n.onRTNL(ev)
	case termEvent:
		n.onTerm(ev)
	case probeResult:
		n.onProbe(ev)
	case healthEvent:
		n.onHealth(ev)
	case *alarm:
		if !ev.take() {
			return true // stale
		}
		switch ev {
		case &n.expiry: // handle has checked the deadline
		case &n.take.wait:
			n.take.probe(n.view.frames, n.cfg.Addresses, n.cfg.Probe, n.in.probes)
		case &n.hold.burst:
			n.burstTick()
		case &n.hold.refresh:
			n.hold.refresh.set(n.cfg.GarpRefresh) // a time.Ticker's period, counted from this tick
			n.requestAnnounce("periodic refresh")
		case &n.stand.preempt:
			n.considerHandover()
		case &n.stand.able:
			n.ableAgain(fmt.Sprintf("its %v back-off is over", n.stand.unableBackoff))
		case &n.take.wake:
			if n.term == nil && n.view.usable() {
				n.campaign()
			}
		case &n.rs.reexecAt:
			n.reexec("the renewal before it did not come back in time")
		}
	case configChecked:
		n.reloadChecked(ev.err)
	case syscall.Signal: // what signal.Notify sends
		if ev == syscall.SIGHUP {
			n.reload()
			return true
		}
		n.stop(ev)
		return false
	}
	return true
}

func (n *node) setState(s nodeState, reason string) {
	if s == n.state {
		return
	}
	n.log.infof("%s -> %s: %s", n.state, s, reason)
	n.met.transition(n.state, s)
	n.state = s
	now := n.deps.now()
	n.rec.StateSince = now
	n.rec.Holder, n.rec.HeldSince, n.rec.HeldBoottimeMS, n.rec.BootID = "", time.Time{}, 0, ""
	if s == stateLeader {
		// The claim's time, as the election entry says it (-status), and
		// the handover clock's start on a clock that does not step, for a
		// resume (resume.go tenureStart).
		n.rec.Holder, n.rec.HeldSince = n.rec.Name, cmp.Or(n.rs.tenure, n.stand.ho.tookAt)
		n.rec.HeldBoottimeMS = (boottime() - now.Sub(n.stand.ho.tookAt)).Milliseconds()
		n.rec.BootID = bootID()
	}
	n.save()
}

// checkDeadline steps a leader down once its deadline has passed at now
// (fence.overdue).
func (n *node) checkDeadline(now time.Time) {
	if err := n.fence.overdue(now); err != nil {
		n.stepDown(err)
	}
}

// mayClaim is the gate every frame that claims the VIP goes through, right
// before it is sent: it reads the clock again and steps down if the
// deadline has passed, and says whether the node still holds the VIP.
// handle's check on wake-up is not enough: between it and the send the
// process may have been frozen (SIGSTOP, a paused VM) or held up by
// address writes, and after SIGCONT an overdue ticker fires before the
// loop can step down; a frozen holder once re-announced the VIP after
// another node had taken it (docs/design.md, section 2).
func (n *node) mayClaim() bool {
	n.checkDeadline(n.deps.now())
	return n.hold.holding
}

// setAddrs adds or refreshes every VIP with lifetime life, reading the
// clock again before every write and after the last (addrHold.set).
func (n *node) setAddrs(life time.Duration) error {
	return n.hold.set(n.view.link.Index, life, &n.fence, n.deps.now)
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
	n.rec.LastStepDown, n.rec.SteppedDownAt = reason.Error(), n.deps.now()
	if n.fence.elected || n.hold.holding || errors.Is(reason, errOutranked) { // a candidate's term ending is no step-down
		n.met.steppedDown(stepReasonOf(reason))
	}
	next := stateCandidate
	if !n.view.usable() {
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
	held := n.hold.holding
	clean := n.release()
	if n.term != nil {
		if graceful && held && clean {
			n.term.resign(0)
		} else {
			n.term.stop(0)
		}
		n.rs.ending = append(slices.DeleteFunc(n.rs.ending, termEnded), n.term)
		n.term = nil
	}
	n.fence = fence{ttl: n.fence.ttl}
	n.expiry.stop()
	n.rs.resuming, n.rs.resumed, n.rs.tenure, n.rs.resumedTook = false, false, time.Time{}, time.Time{}
	n.take.squatStart = time.Time{} // each term waits its full squatLimit
	n.hold.vouched = time.Time{}    // a new lease is vouched for afresh
	n.rec.Lease, n.rec.ElectionKey, n.rec.CreateRevision, n.rec.TTLMillis = "", "", 0, 0
	n.stand.rival = rival{}
	n.stand.ho.aboveSince, n.stand.ho.said = time.Time{}, ""
	n.stand.preempt.stop()
	n.save() // a crash from here on has no lease to resume
}

// release removes the addresses (if we hold them) and stops everything that
// belongs to holding them. It reports whether nothing of ours is left on
// the link.
func (n *node) release() bool {
	n.take.stop()
	n.hold.stopBurst()
	n.hold.refresh.stop()
	if !n.hold.holding {
		return true
	}
	n.hold.holding, n.hold.missing = false, false
	clean := true
	for _, p := range n.cfg.Addresses {
		if _, err := n.deps.kern.delAddr(n.view.link.Index, p); err != nil {
			n.log.errorf("%v", err)
			clean = false
		}
	}
	return clean
}

// localRetry is how long a node that could not add the address waits
// before it campaigns again.
const localRetry = 5 * time.Second

// campaign starts a new term, unless a local failure asks to wait.
func (n *node) campaign() {
	if wait := n.take.holdOff.Sub(n.deps.now()); wait > 0 {
		n.take.wake.set(wait)
		return
	}
	name := n.cfg.Name
	if name == "" {
		name = n.view.link.HardwareAddr.String()
	}
	n.rec.Name = name
	ec := electConfig{prefix: n.cfg.Key, name: name, ttl: n.cfg.TTL, rank: n.stand.rank(), endpoints: n.cfg.Etcd, tls: n.tls, met: n.met}
	if r := n.rs.resume; r != nil && n.cfg.Name == "" && name != r.name {
		n.log.infof("not resuming the earlier run's lease: it campaigned as %q, this node is %q now", r.name, name)
		n.rs.resume = nil
	}
	what := "campaigning for"
	if n.rs.resume != nil {
		ec.resume, n.rs.resume = n.rs.resume, nil
		what = "resuming the earlier run's term for"
	}
	n.log.infof("%s %s as %q (%s)", what, n.cfg.Key, name, n.stand.rank())
	n.term = n.deps.newTerm(ec, n.in.term)
}

func (n *node) onTerm(ev termEvent) {
	if ev.t != n.term {
		return // a term that has already ended
	}
	if ev.vouched.After(n.hold.vouched) {
		n.hold.vouched = ev.vouched
	}
	switch ev.kind {
	case evGranted:
		n.fence.ttl = ev.ttl
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
		if n.rs.reloading && n.hold.holding && n.rs.reexecAt.stop() {
			n.reexec("renewed first")
		}
	case evElected:
		n.fence.elected = true
		n.setDeadlines(ev)
		n.rec.CreateRevision = ev.createRev
		n.rs.tenure, n.rs.resumedTook = ev.held, ev.took
		if ev.resumed {
			// No probe, no takeover wait: the address is ours already.
			n.rs.resuming, n.rs.resumed = false, true
			n.takeAddress()
			n.hupAfterResume()
			return
		}
		if !ev.released {
			n.log.infof("elected; no release mark from the previous holder, so the address is added after %v (the kernel's lifetime slack)", takeoverWait)
		}
		n.take.begin(takeoverDelay(ev.released, n.cfg.Probe))
	case evLost:
		n.stepDown(ev.err)
	case evRival:
		n.stand.rival = ev.rival
		n.considerHandover()
	case evTrouble:
		if ev.err != nil {
			n.log.warnf("etcd unreachable: %v (retrying)", ev.err)
		} else {
			n.log.infof("etcd reachable again")
		}
	}
}

// setDeadlines moves the deadlines an event carries forward (never back),
// and the alarm with them.
func (n *node) setDeadlines(ev termEvent) {
	n.fence.deadline, n.fence.beat = later(ev.deadline, n.fence.deadline), later(ev.beat, n.fence.beat)
	until, _ := n.fence.holdUntil()
	n.expiry.set(until.Sub(n.deps.now()))
}

// extended acts on a deadline that moved: the address's lifetime follows it,
// and an elected node that had too little time left takes the address now.
func (n *node) extended() {
	if n.hold.holding {
		n.refreshAddrs()
	} else if n.fence.elected && n.take.cancel == nil { // not waiting for a probe
		n.takeAddress()
	}
}

// takeAddress adds the addresses with a lifetime that ends before the
// fence (see fence.end), then announces them.
func (n *node) takeAddress() {
	life := n.fence.lifetime(n.deps.now())
	if life < time.Second {
		// The last renewal was sent too long ago for a lifetime that
		// ends by the fence (after the takeover wait, at vip.ttl=2, it
		// always is): ask for one now rather than wait for the next.
		left, _ := n.fence.holdUntil()
		n.log.infof("elected with %v before the deadline; renewing before taking the address", left.Sub(n.deps.now()).Round(time.Millisecond))
		n.term.renewNow()
		return
	}
	n.hold.holding = true // from here on, release() removes what was added
	if err := n.setAddrs(life); err != nil {
		if errors.Is(err, errAddFailed) {
			// Both families or none: stepDown removes what was added.
			n.markUnable(err)
			n.take.holdOff = n.deps.now().Add(localRetry)
			err = fmt.Errorf("%w (campaigning again in %v)", err, localRetry)
		}
		n.stepDown(err)
		return
	}
	n.stand.unableBackoff = 0 // it held: a later failure starts the back-off afresh
	how := "elected; added"
	if n.rs.resumed {
		how = "resumed; refreshed"
	}
	n.stand.ho.tookAt = n.deps.now()
	if !n.rs.resumedTook.IsZero() && n.rs.resumed {
		n.stand.ho.tookAt = n.rs.resumedTook // the tenure goes on, on the monotonic clock
	}
	// The first announcement goes out before anything slower (the log
	// line, the state file): the neighbours learn the new MAC at once.
	if !n.rs.resumed {
		n.startBurst(true)
	} else {
		// The neighbours still point here: one announcement, no burst.
		n.announceAll("resume")
	}
	if !n.hold.holding {
		return // the deadline passed before the announcement: stepped down
	}
	n.setState(stateLeader, fmt.Sprintf("%s %s on %s (lifetime %d s)", how, prefixList(n.cfg.Addresses), n.view.link.Name, int(life/time.Second)))
	if n.cfg.GarpRefresh > 0 {
		n.hold.refresh.set(n.cfg.GarpRefresh)
	}
	n.considerHandover()
}

// refreshAddrs extends the addresses' lifetimes after a renewal, never past
// the fence (refreshPlan).
func (n *node) refreshAddrs() {
	life := n.fence.lifetime(n.deps.now())
	switch refreshPlan(life, n.hold.retried) {
	case refreshKeep:
		return
	case refreshRenewNow:
		n.hold.retried = true
		n.term.renewNow()
		return
	}
	n.hold.retried = false
	err := n.setAddrs(life)
	switch {
	case errors.Is(err, errStalled):
		n.stepDown(err)
	case err != nil && n.hold.missing:
		n.stepDown(fmt.Errorf("put back %s: %w", prefixList(n.cfg.Addresses), err))
	case err != nil:
		n.log.warnf("refresh lifetime: %v", err)
	case n.hold.missing:
		n.hold.missing = false
		n.log.warnf("%s re-added on %s and announced (lifetime %d s)", prefixList(n.cfg.Addresses), n.view.link.Name, int(life/time.Second))
		n.requestAnnounce("re-add")
	}
}

// stop is the graceful stop: the address goes first so that the next node
// can take it at once, then the lease (which deletes our election key).
// Only a node that held the address and removed it says so to the next
// holder (resign), which then adds it without waiting.
func (n *node) stop(sig os.Signal) {
	n.log.infof("stopping on %v: removing the address and resigning", sig)
	held := n.hold.holding
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
	n.rs.sf.remove()
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

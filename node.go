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
// event to handle. Each concern owns its state and decides its part of an
// event: the fence (fence.go), the address, its writes and announcements
// (hold.go), the takeover (takeover.go), the link (linkview.go), the
// resume, reload and state record (restart.go), the rank and handover
// (standing.go). The node dispatches to them and does what crosses
// concerns: it changes state, steps down, ends terms and campaigns, and
// saves the record; every frame that claims the VIP goes through its
// mayClaim (the gate the hold is handed: claim).

type nodeState int

const (
	stateWaiting   nodeState = iota // interface missing or down
	stateCandidate                  // campaigning (or waiting for a lease)
	stateLeader                     // holding the address
	stateBootstrap                  // holding it, or taking it, without an election: no etcd yet (bootstrap.go)
)

func (s nodeState) String() string {
	return [...]string{"waiting", "candidate", "leader", "bootstrap"}[s]
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
	watch(ctx context.Context, ip netip.Addr, window time.Duration) (net.HardwareAddr, error)
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
	// kfence is the kernel fence (bpffence.go); nil: none (the node tests).
	kfence fenceSink
	// beforeSend runs right before each claiming frame is sent, after the
	// deadline check: a test hook (VIPD_TEST_STOP_BEFORE_SEND); nil in use.
	beforeSend func()
}

// realDeps are the parts vipd runs with; tlsCfg is the etcd client's, for
// the terms' diagnoses.
func realDeps(rt *rtnl, cli *clientv3.Client, tlsCfg *tls.Config, log *logger) nodeDeps {
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
			cfg.tls = tlsCfg
			return startTerm(cli, cfg, log, events)
		},
		checkConfig: func() error { _, err := checkReload(); return err },
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
	// errFenceLost: the kernel fence could not follow the link (a new
	// interface under the same name): the term advertised a window that
	// only the fence makes safe. Counted as link_down.
	errFenceLost = errors.New("kernel fence lost")
)

// inbox is where the node's event sources report to the loop.
type inbox struct {
	rtnl    chan rtnlEvent
	term    chan termEvent
	probes  chan probeResult
	health  chan healthEvent // from the checker (check.go), if there is one
	drain   chan drainMarks  // the group's drain marks (drain.go)
	move    chan moveRequest // the group's move request (move.go)
	claims  chan claimSeen   // another host's claim, seen by a bootstrap holder (bootstrap.go)
	checked chan error       // the configuration check of a SIGHUP
	ticks   chan *alarm      // the node's alarms, as they go off
}

type node struct {
	cfg  Config
	log  *logger
	deps nodeDeps
	met  *metrics
	in   inbox

	state   nodeState
	term    campaigner
	stepped error // why the node last stepped down
	pulse   alarm // wakes an idle loop every pulseEvery: run marks it alive (/healthz)

	fence  fence
	expiry alarm // goes off at fence.holdUntil
	hold   addrHold
	take   takeover
	view   linkView
	rs     restart
	stand  standing
	boot   bootstrap
}

func newNode(cfg Config, log *logger, deps nodeDeps) *node {
	met, vips := newMetrics(cfg.Key), prefixList(cfg.Addresses)
	n := &node{
		cfg: cfg, log: log, deps: deps, met: met,
		in: inbox{
			rtnl:    make(chan rtnlEvent, 256),
			term:    make(chan termEvent, 16),
			probes:  make(chan probeResult, 1),
			health:  make(chan healthEvent, 1),
			drain:   make(chan drainMarks, 1),
			move:    make(chan moveRequest, 1),
			claims:  make(chan claimSeen, 2),
			checked: make(chan error, 1),
			ticks:   make(chan *alarm, 16),
		},
		hold: addrHold{kern: deps.kern, vips: cfg.Addresses, ann: cfg.announceConfig, log: log, met: met},
		take: takeover{log: log, vips: vips, squatLimit: squatBound(cfg.TTL)},
		view: linkView{iface: cfg.Interface, vips: cfg.Addresses, kern: deps.kern, open: deps.openFrames, log: log},
		rs:   restart{log: log, rec: newRecord(cfg, deps.now())},
		stand: standing{log: log, priority: cfg.Priority,
			healthy: cfg.Check == "", // with a check: unhealthy until it has passed vip.check.rise times
			ho:      handover{delay: cfg.PreemptDelay}},
		boot: bootstrap{log: log, named: cfg.Bootstrap != "" && cfg.Bootstrap == cfg.Name},
	}
	met.ranked(n.stand.rank())
	// The node's timers, each owned by the part that sets and stops it.
	for _, a := range []*alarm{&n.pulse, &n.expiry, &n.hold.burst, &n.hold.refresh, &n.take.wait, &n.take.wake, &n.stand.preempt, &n.stand.able, &n.rs.reexecAt, &n.boot.tick} {
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
	n.rs.sf.write(n.rs.rec)
}

// record brings the record's derived fields up to date.
func (n *node) record() {
	r := &n.rs.rec
	r.State = n.state.String()
	r.Link, r.LinkIndex = "", 0
	if n.view.have {
		r.Link, r.LinkIndex = n.view.link.Name, n.view.link.Index
	}
	r.Deadline = time.Time{}
	if n.term != nil && !n.fence.deadline.IsZero() {
		r.Deadline, _ = n.fence.holdUntil()
	}
	// Only a node that put the address on its link resumes as holder: one
	// that won the election but still waits (takeover wait, probe, a
	// squatter) must go through that wait again after a restart.
	r.Leading, r.Healthy, r.LastAnnounced = n.hold.holding, n.stand.healthy, n.hold.announced
}

// event is what handle acts on: an rtnlEvent, a termEvent, a probeResult,
// a healthEvent, an *alarm, a configChecked or a syscall.Signal.
type event = any

// configChecked is the result of a SIGHUP's configuration check.
type configChecked struct{ err error }

// pulseEvery is how often an idle loop wakes itself, so that /healthz
// tells an idle loop from a wedged one (metrics.go loopBound).
const pulseEvery = time.Second

// run is the event loop: it waits for the next event, reads the clock
// and hands both to handle. It returns after a graceful stop on a signal.
// After each event it marks itself alive for /healthz.
func (n *node) run(signals <-chan os.Signal) {
	n.log.infof("starting %s for %s on %s, etcd %s", release(), prefixList(n.cfg.Addresses), n.cfg.Interface, strings.Join(n.cfg.Etcd, ","))
	n.resync()
	n.pulse.set(pulseEvery)
	for {
		ev := n.in.next(signals)
		if !n.handle(n.deps.now(), ev) {
			return
		}
		n.met.loopRan()
	}
}

// next waits for the next event from any source, or a signal.
func (in *inbox) next(signals <-chan os.Signal) event {
	select {
	case sig := <-signals:
		return sig
	case err := <-in.checked:
		return configChecked{err}
	case e := <-in.rtnl:
		return e
	case e := <-in.term:
		return e
	case e := <-in.probes:
		return e
	case e := <-in.health:
		return e
	case m := <-in.drain:
		return m
	case m := <-in.move:
		return m
	case c := <-in.claims:
		return c
	case a := <-in.ticks:
		return a
	}
}

// handle acts on one event that arrived at now; it reports false once the
// node has stopped. The deadline is checked first, on every wake-up:
// after a freeze (SIGSTOP, a stalled VM) stale events, the deadline alarm
// and overdue announcement ticks arrive together, and none of them may
// act on the old leadership.
func (n *node) handle(now time.Time, ev event) bool {
	defer n.syncKernelFence()
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
	case drainMarks:
		n.onMarks(ev)
	case moveRequest:
		n.onMove(ev)
	case claimSeen:
		if n.state == stateBootstrap && !n.fence.elected { // a stale one after the hold ended is nothing
			n.boot.over(fmt.Sprintf("%s claims %s", ev.mac, ev.ip))
			n.stepDown(yieldTo(ev))
		}
	case *alarm:
		if !ev.take() {
			return true // stale
		}
		switch ev {
		case &n.pulse: // run marks the loop alive
			n.pulse.set(pulseEvery)
			n.checkKernelFence()
		case &n.expiry: // handle has checked the deadline
		case &n.take.wait:
			n.take.probe(n.view.frames, n.cfg.Addresses, n.cfg.Probe, n.in.probes)
		case &n.hold.burst, &n.hold.refresh:
			n.hold.tick(ev, n.claim())
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
		case &n.boot.tick:
			n.extendBootstrap()
		}
	case configChecked:
		if n.rs.checked(ev.err, n.hold.holding, n.term) {
			n.reexec("not holding the VIP")
		}
	case os.Signal: // SIGHUP reloads; any other stops (main.go asks for SIGTERM and SIGINT)
		if ev != syscall.SIGHUP {
			n.stop(ev)
			return false
		}
		n.reload()
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
	n.rs.rec.enter(n.deps.now(), s == stateLeader, n.rs.tenure, n.stand.ho.tookAt)
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

// claim is the gate the hold's claiming frames go through (mayClaim),
// with the clock, the term and the link's sockets as they are now.
func (n *node) claim() gate {
	// The kernel fence moves with the deadline before any claiming frame
	// (handle syncs it again once the event is done).
	n.syncKernelFence()
	return gate{may: n.mayClaim, now: n.deps.now, term: n.term, frames: n.view.frames, beforeSend: n.deps.beforeSend}
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
//     better rank and should hold the VIP (claim.go claimRanked).
//
// A signal is not a step-down: see stop. Handing over to a better-ranked
// candidate is not one either: see handOver.
func (n *node) stepDown(reason error) {
	n.stepped = reason
	n.rs.rec.LastStepDown, n.rs.rec.SteppedDownAt = reason.Error(), n.deps.now()
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
	if t := n.quit(graceful, 0); t != nil {
		n.rs.ending = append(slices.DeleteFunc(n.rs.ending, termEnded), t)
	}
	n.fence = fence{ttl: n.fence.ttl}
	n.expiry.stop()
	n.boot.tick.stop()
	n.boot.on = false
	n.rs.endTerm()
	n.take.squatStart = time.Time{} // each term waits its full squatLimit
	n.hold.vouched = time.Time{}    // a new lease is vouched for afresh
	n.stand.endTerm()
	n.save() // a crash from here on has no lease to resume
}

// quit removes the address (if we hold it) and ends the term, if any,
// giving it wait to finish its release mark and revocation; it returns the
// term it ended. Only a graceful end that held the address and removed it
// says so to the next holder (resign), which then adds it without waiting.
func (n *node) quit(graceful bool, wait time.Duration) campaigner {
	held := n.hold.holding
	clean := n.release()
	t := n.term
	n.term = nil
	if t != nil && graceful && held && clean {
		t.resign(wait)
	} else if t != nil {
		t.stop(wait)
	}
	return t
}

// release removes the addresses (if we hold them) and stops everything that
// belongs to taking and holding them. It reports whether nothing of ours
// is left on the link.
func (n *node) release() bool {
	n.take.stop()
	n.boot.stopWatch()
	return n.hold.release(n.view.link.Index)
}

// localRetry is how long a node that could not add the address waits
// before it campaigns again.
const localRetry = 5 * time.Second

// campaign starts a new term, unless a local failure asks to wait.
func (n *node) campaign() {
	if n.take.heldOff(n.deps.now()) {
		return
	}
	name := cmp.Or(n.cfg.Name, n.view.link.HardwareAddr.String())
	n.rs.rec.Name = name
	n.stand.onMarks(n.stand.marks, name, nil)     // the name may be new (a MAC)
	n.stand.onMove(n.stand.moveReq, name, 0, nil) // a move was for the term that ended
	ec := electConfig{prefix: n.cfg.Key, name: name, ttl: n.cfg.TTL, rank: n.stand.rank(), endpoints: n.cfg.Etcd, met: n.met}
	ec.window = n.fencedWindow()
	n.fence.kernel = ec.window > 0
	ec.resume = n.rs.carry(name, n.cfg.Name != "")
	n.log.infof("%s %s as %q (%s)", campaignVerb(ec.resume), n.cfg.Key, name, n.stand.rank())
	n.term = n.deps.newTerm(ec, n.in.term)
	if n.boot.wanted() && !n.hold.holding {
		n.startBootstrap()
	}
}

// startBootstrap takes the VIP without an election (bootstrap.go): the
// hold's own deadline a TTL ahead, moved by its timer, then the probe;
// takeAddress follows if nobody answers.
func (n *node) startBootstrap() {
	now := n.deps.now()
	n.boot.on = true
	n.fence.ttl, n.fence.boot = n.cfg.TTL, now.Add(n.cfg.TTL)
	n.expiry.set(n.cfg.TTL)
	n.boot.tick.set(bootTick(n.cfg.TTL))
	n.hold.vouch(now)
	n.log.infof("bootstrap: no etcd has answered since boot, and vip.bootstrap=%s names this node: probing %s, then holding it without an election until etcd answers",
		n.cfg.Bootstrap, prefixList(n.cfg.Addresses))
	n.take.begin(0)
}

// extendBootstrap moves a bootstrap hold's deadline a TTL ahead, the
// address's lifetime with it, while etcd is still silent.
func (n *node) extendBootstrap() {
	if !n.boot.on {
		return
	}
	now := n.deps.now()
	n.fence.boot = now.Add(n.cfg.TTL)
	n.expiry.set(n.cfg.TTL)
	n.hold.vouch(now)
	if n.hold.holding {
		n.stepDownOn(n.hold.extend(n.view.link, &n.fence, n.claim()))
		n.hold.announcePending(n.claim())
	}
	n.boot.tick.set(bootTick(n.cfg.TTL))
}

// campaignVerb says what a term does, resuming an earlier run's lease or
// not.
func campaignVerb(resume *resumeLease) string {
	if resume != nil {
		return "resuming the earlier run's term for"
	}
	return "campaigning for"
}

func (n *node) onTerm(ev termEvent) {
	if ev.t != n.term {
		return // a term that has already ended
	}
	n.hold.vouch(ev.vouched)
	switch ev.kind {
	case evGranted:
		if n.boot.answered() {
			n.log.infof("etcd answers: the bootstrap hold ends; it keeps the VIP only if this node is elected before %v", n.fence.boot.Sub(n.deps.now()).Round(time.Millisecond))
		}
		n.fence.ttl = ev.ttl
		n.setDeadlines(ev)
		if n.rs.granted(ev) && !n.hold.holding {
			n.view.removeListed(n.state) // the earlier run's copies are stale now
		}
		n.stand.onMove(n.stand.moveReq, n.rs.rec.Name, ev.lease, n.term) // a resumed term may be the one moved to
		n.save()
		n.hupAfterResume()
	case evRenewed:
		n.setDeadlines(ev)
		n.extended()
		n.hold.announcePending(n.claim())
		n.save()
		if n.rs.renewed(n.hold.holding) {
			n.reexec("renewed first")
		}
	case evElected:
		n.onElected(ev)
	case evLost:
		n.stepDown(ev.err)
	case evRival:
		n.stand.rival = ev.rival
		n.considerHandover()
	case evTrouble:
		logTrouble(n.log, ev.err)
	}
}

// onElected starts the takeover; a resumed term holds the address already.
func (n *node) onElected(ev termEvent) {
	n.fence.elected = true
	n.setDeadlines(ev)
	n.rs.rec.CreateRevision = ev.createRev
	if !n.fence.boot.IsZero() {
		n.fence.boot = time.Time{}
		if n.hold.holding { // the bootstrap hold's address: nobody else took it, as it answered
			n.take.stop()
			n.boot.stopWatch()
			n.takeAddress()
			if n.hold.holding && n.state == stateBootstrap { // its lifetime waits for a renewal (addrHold.take)
				n.setState(stateLeader, "elected; kept the bootstrap hold's address")
			}
			return
		}
	}
	if n.rs.elected(ev) { // no probe, no takeover wait: the address is ours already
		n.takeAddress()
		n.hupAfterResume()
		return
	}
	n.take.elected(ev.released, ev.fenced, n.cfg.Probe)
}

// logTrouble says that etcd is unreachable (err), or reachable again.
func logTrouble(log *logger, err error) {
	if err != nil {
		log.warnf("etcd unreachable: %v (retrying)", err)
	} else {
		log.infof("etcd reachable again")
	}
}

// setDeadlines moves the deadlines an event carries forward (never back),
// and the alarm with them.
func (n *node) setDeadlines(ev termEvent) {
	n.expiry.set(n.fence.advance(ev.deadline, ev.beat).Sub(n.deps.now()))
}

// extended acts on a deadline that moved: the address's lifetime follows it,
// and an elected node that had too little time left takes the address now.
func (n *node) extended() {
	if n.hold.holding {
		n.stepDownOn(n.hold.extend(n.view.link, &n.fence, n.claim()))
	} else if n.fence.elected && n.take.cancel == nil { // not waiting for a probe
		n.takeAddress()
	}
}

// stepDownOn steps down if err says so.
func (n *node) stepDownOn(err error) {
	if err != nil {
		n.stepDown(err)
	}
}

// takeAddress adds the addresses with a lifetime that ends before the
// fence (addrHold.take), then announces them (addrHold.claim).
func (n *node) takeAddress() {
	life, err := n.hold.take(n.view.link, &n.fence, n.claim())
	if errors.Is(err, errAddFailed) {
		// Both families or none: stepDown removes what was added.
		n.stand.markUnable(err, n.deps.now(), prefixList(n.cfg.Addresses), n.cfg.Interface)
		n.take.holdOff = n.deps.now().Add(localRetry)
		err = fmt.Errorf("%w (campaigning again in %v)", err, localRetry)
	}
	if err != nil {
		n.stepDown(err)
		return
	}
	if life == 0 {
		return // waiting for the renewal take asked for
	}
	n.stand.held(n.rs.tookAt(n.deps.now()))
	n.syncKernelFence() // a fresh or closed kernel fence would drop the first announcement
	// The first announcement goes out before anything slower (the log
	// line, the state file): the neighbours learn the new MAC at once.
	if !n.hold.claim(n.rs.resumed, n.claim()) { // a resumed term's neighbours still point here: one announcement, no burst
		return // the deadline passed before the announcement: stepped down
	}
	st, how := stateLeader, n.rs.how()
	if !n.fence.elected {
		st, how = stateBootstrap, "without an election (bootstrap); added"
		n.boot.watchClaims(n.view.frames, n.cfg.Addresses, n.in.claims)
	} else if n.state == stateBootstrap {
		how = "elected; kept the bootstrap hold's address"
		n.boot.stopWatch()
	}
	n.setState(st, fmt.Sprintf("%s %s on %s (lifetime %d s)", how, prefixList(n.cfg.Addresses), n.view.link.Name, int(life/time.Second)))
	n.considerHandover()
}

// onRTNL follows the link and guards the address against others
// (linkView.decide).
func (n *node) onRTNL(ev rtnlEvent) {
	d := n.view.decide(ev, n.hold.holding, n.rs.resuming, n.state)
	switch d.step {
	case rtnlResync:
		n.resync()
	case rtnlLink:
		n.setLink(d.link, d.ok, d.why)
	case rtnlAbleAgain:
		n.ableAgain(d.why)
	case rtnlPutBack:
		n.stepDownOn(n.hold.putBack(d.prefix, n.view.link, &n.fence, n.claim()))
	}
}

// resync lists links and addresses, picks the link and removes stale VIPs,
// unless we hold them or an earlier run's lease may still be resumed.
func (n *node) resync() {
	l, ok, addrs, err := n.view.list()
	if err != nil {
		return // logged
	}
	n.setLink(l, ok, "interface "+n.cfg.Interface)
	if ok && !n.hold.holding && !n.rs.resuming {
		n.view.removeCopies(addrs, n.state)
	}
}

// setLink applies a new view of the link (planLink): the state follows
// whether it can carry the address.
func (n *node) setLink(l linkMessage, ok bool, why string) {
	plan := planLink(&n.view, l, ok, n.state == stateWaiting, n.hold.holding)
	if plan.closeFrames {
		n.hold.stopBurst() // its frames would go out on the old sockets
	}
	err := n.view.apply(l, ok, plan, why)
	var fenceErr error
	if ok {
		fenceErr = n.fenceLink()
	}
	if plan.closeFrames && n.boot.unwatch != nil { // the watch's sockets are gone
		n.boot.watchClaims(n.view.frames, n.cfg.Addresses, n.in.claims)
	}
	if plan.ableAgain {
		n.ableAgain(fmt.Sprintf("%s changed", l.Name))
	}
	switch plan.step {
	case linkDown, linkGone:
		n.stepDown(err)
	case linkUp:
		n.setState(stateCandidate, fmt.Sprintf("%s (index %d, %s) is up", l.Name, l.Index, l.HardwareAddr))
		if n.term == nil {
			n.campaign()
		}
	case linkNewMAC:
		n.hold.startBurst(false, n.claim())
	}
	if fenceErr != nil && plan.step != linkDown && plan.step != linkGone && n.term != nil && n.fence.kernel {
		n.stepDown(fenceErr)
	}
}

// fenceLink puts the kernel fence on the link in use (bpffence.go). It
// returns why it could not: a term that advertised a fenced window
// cannot go on without it (setLink steps down).
func (n *node) fenceLink() error {
	if n.deps.kfence == nil || n.view.link.Index == 0 {
		return nil
	}
	err := n.deps.kfence.attach(n.view.link.Index)
	if err == nil {
		return nil
	}
	n.log.warnf("%v (vipd runs on without it on %s: the TTL rule, docs/design.md section 8)", err, n.view.link.Name)
	return fmt.Errorf("%w on %s: %w", errFenceLost, n.view.link.Name, err)
}

// checkKernelFence looks, once a second, whether the kernel fence's filter
// is still on the link; someone else may have removed it. A term that
// advertised the fenced window ends (and the filter is put back for the
// next).
func (n *node) checkKernelFence() {
	if n.deps.kfence == nil {
		return
	}
	err := n.deps.kfence.check()
	if err == nil {
		return
	}
	n.log.warnf("%v", err)
	if n.term != nil && n.fence.kernel {
		n.stepDown(fmt.Errorf("%w on %s: %w", errFenceLost, n.view.link.Name, err))
	}
	n.fenceLink()
}

// fencedWindow is the window a new term advertises and fences by: the
// configured one (or the TTL) while the kernel fence is attached, else
// 0, the TTL rule.
func (n *node) fencedWindow() time.Duration {
	if n.deps.kfence == nil || !n.deps.kfence.inForce() {
		return 0
	}
	return cmp.Or(n.cfg.Window, n.cfg.TTL)
}

// syncKernelFence gives the kernel fence the node's deadline while it
// holds the VIP, and closes it (deadline 0) while it does not: the
// kernel drops the VIP's frames past it, whatever this process does.
func (n *node) syncKernelFence() {
	if n.deps.kfence == nil {
		return
	}
	var until time.Time
	switch {
	case n.hold.holding:
		until, _ = n.fence.holdUntil()
	case n.rs.resuming:
		// The deadline a SIGHUP's earlier image left stands (it was its
		// holdUntil) until this run resumes the term, or lets it go.
		return
	}
	if err := n.deps.kfence.set(until); err != nil {
		n.log.warnf("%v", err)
	}
}

// onProbe takes the address only after a probe that nobody answered
// (takeover.onProbe).
func (n *node) onProbe(r probeResult) {
	if n.boot.on && !n.fence.elected && r.foreign != nil && r.seq == n.take.seq {
		// Another host holds the VIP: bootstrap is over, the term goes on.
		n.take.stop()
		n.boot.over(fmt.Sprintf("%s answers the bootstrap probe for %s", r.foreign, prefixList(n.cfg.Addresses)))
		n.fence.boot = time.Time{}
		n.expiry.stop()
		return
	}
	take, err := n.take.onProbe(r, n.deps.now())
	n.stepDownOn(err)
	if take {
		n.takeAddress()
	}
}

// onHealth applies a change of the check's verdict (standing.onHealth): a
// leader that is now outranked may hand over.
func (n *node) onHealth(ev healthEvent) {
	changed := n.stand.onHealth(ev, n.term)
	n.met.ranked(n.stand.rank())
	if changed {
		n.considerHandover()
	}
}

// onMarks applies the group's drain marks (standing.onMarks): a leader now
// drained may hand over.
func (n *node) onMarks(m drainMarks) {
	changed := n.stand.onMarks(m, n.rs.rec.Name, n.term)
	n.met.ranked(n.stand.rank())
	if changed {
		n.considerHandover()
	}
}

// onMove applies the group's move request to this term (standing.onMove):
// the holder hands over to the node moved to (its rank says so), and the
// node moved to publishes its rank.
func (n *node) onMove(m moveRequest) {
	lease, _ := n.rs.rec.leaseID()
	if n.stand.onMove(m, n.rs.rec.Name, lease, n.term) {
		n.considerHandover()
	}
}

// ableAgain ends an unable spell (standing.ableAgain).
func (n *node) ableAgain(why string) { n.stand.ableAgain(why, n.term) }

// considerHandover hands over now if the standing says so.
func (n *node) considerHandover() {
	if to, ok := n.stand.handOverTo(n.deps.now(), n.state == stateLeader && n.hold.holding); ok {
		n.handOver(to)
	}
}

// handOver is the graceful path to a better-ranked candidate: the address
// goes first, then our election key, with the release mark that lets the
// next holder add the address at once; then this node campaigns again, at
// the end of the queue. The candidates ahead of the better one step aside
// (claim.go claimRanked), so the VIP moves once.
func (n *node) handOver(to entry) {
	n.met.steppedDown(handoverReason(n.stand.rank(), to.rank))
	n.setState(stateCandidate, fmt.Sprintf("handing over to %s (%s > %s)", to.name, to.rank, n.stand.rank()))
	n.endTerm(true)
	n.campaign()
}

// reload is SIGHUP (restart.reload; configChecked goes on with it).
func (n *node) reload() {
	if n.rs.reload(n.deps.checkConfig, n.in.checked, n.hold.holding, n.term) {
		n.reexec("not holding the VIP")
	}
}

// hupAfterResume acts on a SIGHUP that came while resuming.
func (n *node) hupAfterResume() {
	if n.rs.hupDue() {
		n.reload()
	}
}

// reexec hands the term's record to a new process image (resume.go). A
// failure leaves this one running as it was.
func (n *node) reexec(why string) {
	n.rs.prepare(n.hold.holding, n.deps.afterFunc)
	n.save()
	n.rs.exec(why, n.deps.reexec)
}

// stop is the graceful stop: the address goes first so that the next node
// can take it at once, then the lease (which deletes our election key).
// Only a node that held the address and removed it says so to the next
// holder (resign), which then adds it without waiting.
func (n *node) stop(sig os.Signal) {
	n.log.infof("stopping on %v: removing the address and resigning", sig)
	if n.hold.holding {
		n.met.steppedDown(stepStop)
	}
	n.quit(true, 2*revokeTimeout) // and the burst with the address
	n.view.closeFrames()
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

package main

import (
	"fmt"
	"net/netip"
	"time"
)

// addrHold is the VIP on the link: whether this node put it there, the
// writes that add and refresh it (node.release removes it), and the
// frames that claim it
// once it is there: the takeover burst (vip.garp, vip.garp.interval) and
// the refresh (vip.garp.refresh). Each frame is sent from the loop, like
// every frame that claims the VIP, so that the deadline is checked right
// before it (node.mayClaim).
//
// Pauses no clock sees (a VM stopped by its hypervisor): every
// announcement after a term's first goes out only once etcd has
// acknowledged a renewal sent after the announcement became due
// (node.requestAnnounce). vouched is the latest such send time; pending
// names the announcement waiting for one, due since pendingSince.
type addrHold struct {
	kern         kernel
	vips         []netip.Prefix
	holding      bool  // the address is on the link because we put it there
	missing      bool  // while holding, the kernel lost it; put back after a prompt renewal
	retried      bool  // a refresh found no lifetime allowed and asked for a renewal at once
	burst        alarm // the takeover burst's next announcement (vip.garp, vip.garp.interval)
	burstLeft    int
	refresh      alarm // vip.garp.refresh
	vouched      time.Time
	pending      string
	pendingSince time.Time
}

// set adds or refreshes every VIP on the link index with lifetime life.
// The clock is read again, and the lifetime held against the fence f,
// before every call and after the last: a process stalled (SIGSTOP, a
// frozen VM) before or inside a call may otherwise set a lifetime that
// outlasts the fence. A pending SIGSTOP
// takes effect when a call returns, so the check right before the next
// call is what keeps a resumed process from adding an address that the
// kernel expired meanwhile, while another node holds it (NLM_F_REPLACE
// without NLM_F_CREATE still creates: the kernel does not insist on the
// flag). On errStalled the caller steps down, which removes what was set.
func (h *addrHold) set(index uint32, life time.Duration, f *fence, now func() time.Time) error {
	for _, p := range h.vips {
		if err := f.fits(now(), life); err != nil {
			return err
		}
		if err := h.kern.setAddr(index, p, life); err != nil {
			return fmt.Errorf("%w: %w", errAddFailed, err)
		}
	}
	return f.fits(now(), life)
}

// refreshStep is what a renewal does to the address's lifetime.
type refreshStep int

const (
	refreshSet      refreshStep = iota // set the lifetime allowed
	refreshRenewNow                    // none allowed: ask for the next renewal at once
	refreshKeep                        // none allowed, and a renewal was already asked for
)

// refreshPlan decides a refresh. With less than a second allowed (the
// acknowledgement came back late) the older, shorter lifetime stays, and
// the next renewal is asked for at once, so that the address gets its
// lifetime before the old one runs out; once per late acknowledgement, so
// that a slow etcd is not pressed harder.
func refreshPlan(life time.Duration, retried bool) refreshStep {
	switch {
	case life >= time.Second:
		return refreshSet
	case retried:
		return refreshKeep
	}
	return refreshRenewNow
}

// next counts one more of the burst's announcements; false once it is over.
func (h *addrHold) next() bool {
	if h.burstLeft <= 0 {
		return false
	}
	h.burstLeft--
	return true
}

// stopBurst cancels a running burst and a pending announcement: after a
// step-down (or a new MAC) their frames would announce the wrong thing.
func (h *addrHold) stopBurst() {
	h.burstLeft = 0
	h.pending = ""
	h.burst.stop()
}

// announceStep is what a renewal's acknowledgement does to a pending
// announcement.
type announceStep int

const (
	announceNothing  announceStep = iota // none pending
	announceAskAgain                     // the renewal was sent before it fell due: ask for another
	announceSend                         // vouched for: send it
)

// pendingStep decides a pending announcement: it goes out once a renewal
// sent after it fell due has been acknowledged (one already in flight
// when it became due does not count).
func pendingStep(pending string, since, vouched time.Time) announceStep {
	switch {
	case pending == "":
		return announceNothing
	case !vouched.After(since):
		return announceAskAgain
	}
	return announceSend
}

// startBurst announces, then vip.garp-1 more times, from the loop: the
// first frame at once when it is a takeover's (the claim, or the renewal
// takeAddress waited for, has just been acknowledged), after a renewal
// otherwise (requestAnnounce).
func (n *node) startBurst(takeover bool) {
	n.hold.stopBurst()
	if n.cfg.Garp < 1 {
		return
	}
	n.hold.burstLeft = n.cfg.Garp - 1
	if takeover {
		n.announceAll("takeover")
	} else {
		n.requestAnnounce("new MAC")
	}
	if n.hold.burstLeft > 0 && n.hold.holding { // the next one, unless that was the last or it stepped down
		n.hold.burst.set(n.cfg.GarpInterval)
	}
}

// burstTick is the burst's next announcement falling due.
func (n *node) burstTick() {
	if !n.hold.next() {
		return
	}
	n.requestAnnounce("takeover")
	if n.hold.burstLeft > 0 && n.hold.holding {
		n.hold.burst.set(n.cfg.GarpInterval)
	}
}

// requestAnnounce sends an announcement once etcd has acknowledged a
// renewal sent after now: it asks for one at once. A VM that its
// hypervisor paused past its lease resumes with a monotonic clock that
// saw nothing, and its alarms (burst, refresh) go off as if no time had
// passed; etcd then answers "lease not found" and the node steps down
// before anything goes out. In the ordinary case it costs one round trip
// to etcd per announcement.
func (n *node) requestAnnounce(why string) {
	if !n.mayClaim() || n.term == nil {
		return
	}
	n.hold.pending, n.hold.pendingSince = why, n.deps.now()
	n.term.renewNow()
}

// announcePending sends the pending announcement if a renewal sent after
// it became due has been acknowledged, and otherwise asks for another.
func (n *node) announcePending() {
	switch pendingStep(n.hold.pending, n.hold.pendingSince, n.hold.vouched) {
	case announceAskAgain:
		n.term.renewNow()
	case announceSend:
		why := n.hold.pending
		n.hold.pending = ""
		n.announceAll(why)
	}
}

// announceAll announces every VIP once, each only while the node holds
// them and its deadline has not passed (mayClaim): a process resumed
// after a freeze steps down before it can send anything.
func (n *node) announceAll(why string) {
	for _, p := range n.cfg.Addresses {
		if !n.mayClaim() || n.view.frames == nil {
			return
		}
		if err := n.view.frames.announce(p.Addr()); err != nil {
			n.log.warnf("%s announcement: %v", why, err)
		} else {
			n.met.announced(p.Addr())
		}
	}
	n.rec.LastAnnounced = n.deps.now()
	if n.state == stateLeader { // a takeover's first one: takeAddress saves right after
		n.save()
	}
}

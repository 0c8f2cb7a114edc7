package main

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// addrHold is the VIP on the link: whether this node put it there, the
// writes that add, refresh and remove it, and the frames that claim it
// once it is there: the takeover burst (vip.garp, vip.garp.interval) and
// the refresh (vip.garp.refresh). Each frame is sent from the loop, like
// every frame that claims the VIP, through the node's gate (gate.may is
// node.mayClaim), so that the deadline is checked right before it.
//
// Pauses no clock sees (a VM stopped by its hypervisor): every
// announcement after a term's first goes out only once etcd has
// acknowledged a renewal sent after the announcement became due
// (request). vouched is the latest such send time; pending names the
// announcement waiting for one, due since pendingSince.
type addrHold struct {
	kern         kernel
	vips         []netip.Prefix
	ann          announceConfig
	log          *logger
	met          *metrics
	announced    time.Time // when every VIP was last announced (the state file's last_announcement)
	holding      bool      // the address is on the link because we put it there
	missing      bool      // while holding, the kernel lost it; put back after a prompt renewal
	retried      bool      // a refresh found no lifetime allowed and asked for a renewal at once
	burst        alarm     // the takeover burst's next announcement (vip.garp, vip.garp.interval)
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

// gate is what the hold's claiming frames and renewal requests go through
// (node.claim): may is node.mayClaim, the one check that reads the clock
// and the deadline right before each frame; term renews, frames sends.
type gate struct {
	may        func() bool
	now        func() time.Time
	term       campaigner
	frames     linkFrames
	beforeSend func() // a test hook (nodeDeps.beforeSend); nil in use
}

// take adds the addresses with a lifetime that ends before the fence f
// (see fence.end), for a takeover. With less than a second allowed (the
// last renewal was sent too long ago: after the takeover wait, at
// vip.ttl=2, it always is) it asks for a renewal instead and returns 0,
// nil: the renewal's acknowledgement takes the address. On an error the
// caller steps down, which removes what was added.
func (h *addrHold) take(link linkMessage, f *fence, g gate) (time.Duration, error) {
	life := f.lifetime(g.now())
	if life < time.Second {
		left, _ := f.holdUntil()
		h.log.infof("elected with %v before the deadline; renewing before taking the address", left.Sub(g.now()).Round(time.Millisecond))
		g.term.renewNow()
		return 0, nil
	}
	h.holding = true // from here on, release removes what was added
	return life, h.set(link.Index, life, f, g.now)
}

// claim announces a fresh hold: the takeover burst, or one announcement
// for a resumed term (the neighbours still point here); then the periodic
// refresh. It reports whether the node still holds the address (the
// deadline may have passed before an announcement: stepped down).
func (h *addrHold) claim(resumed bool, g gate) bool {
	if !resumed {
		h.startBurst(true, g)
	} else {
		h.announce("resume", g)
	}
	if !h.holding {
		return false
	}
	if h.ann.GarpRefresh > 0 {
		h.refresh.set(h.ann.GarpRefresh)
	}
	return true
}

// extend extends the addresses' lifetimes after a renewal, never past the
// fence f (refreshPlan). An error is a reason to step down.
func (h *addrHold) extend(link linkMessage, f *fence, g gate) error {
	life := f.lifetime(g.now())
	switch refreshPlan(life, h.retried) {
	case refreshKeep:
		return nil
	case refreshRenewNow:
		h.retried = true
		g.term.renewNow()
		return nil
	}
	h.retried = false
	err := h.set(link.Index, life, f, g.now)
	switch {
	case errors.Is(err, errStalled):
		return err
	case err != nil && h.missing:
		return fmt.Errorf("put back %s: %w", prefixList(h.vips), err)
	case err != nil:
		h.log.warnf("refresh lifetime: %v", err)
	case h.missing:
		h.missing = false
		h.log.warnf("%s re-added on %s and announced (lifetime %d s)", prefixList(h.vips), link.Name, int(life/time.Second))
		h.request("re-add", g)
	}
	return nil
}

// putBack acts on the VIP p gone from the link while we hold it: removed
// by hand, or by the kernel after late renewals. It goes back under the
// same fence as any refresh. The fence usually allows no lifetime between
// renewals, so the term is asked for one at once; if it is not
// acknowledged in time, the deadline ends the leadership. An error is a
// reason to step down.
func (h *addrHold) putBack(p netip.Prefix, link linkMessage, f *fence, g gate) error {
	h.missing = true
	if f.lifetime(g.now()) < time.Second {
		h.log.warnf("%s was removed from %s while this node holds it; renewing at once to put it back", p, link.Name)
		g.term.renewNow()
		return nil
	}
	return h.extend(link, f, g)
}

// release removes the addresses from the link index (if we hold them) and
// stops the frames that claim them. It reports whether nothing of ours is
// left on the link.
func (h *addrHold) release(index uint32) bool {
	h.stopBurst()
	h.refresh.stop()
	if !h.holding {
		return true
	}
	h.holding, h.missing = false, false
	clean := true
	for _, p := range h.vips {
		if _, err := h.kern.delAddr(index, p); err != nil {
			h.log.errorf("%v", err)
			clean = false
		}
	}
	return clean
}

// vouch records a renewal's send time that etcd has acknowledged.
func (h *addrHold) vouch(sent time.Time) {
	if sent.After(h.vouched) {
		h.vouched = sent
	}
}

// startBurst announces, then vip.garp-1 more times, from the loop: the
// first frame at once when it is a takeover's (the claim, or the renewal
// take waited for, has just been acknowledged), after a renewal otherwise
// (request).
func (h *addrHold) startBurst(takeover bool, g gate) {
	h.stopBurst()
	if h.ann.Garp < 1 {
		return
	}
	h.burstLeft = h.ann.Garp - 1
	if takeover {
		h.announce("takeover", g)
	} else {
		h.request("new MAC", g)
	}
	if h.burstLeft > 0 && h.holding { // the next one, unless that was the last or it stepped down
		h.burst.set(h.ann.GarpInterval)
	}
}

// tick is the hold's alarm a going off: the burst's next announcement or
// the periodic refresh falling due.
func (h *addrHold) tick(a *alarm, g gate) {
	switch {
	case a == &h.refresh:
		h.refresh.set(h.ann.GarpRefresh) // a time.Ticker's period, counted from this tick
		h.request("periodic refresh", g)
	case h.next():
		h.request("takeover", g)
		if h.burstLeft > 0 && h.holding {
			h.burst.set(h.ann.GarpInterval)
		}
	}
}

// request sends an announcement once etcd has acknowledged a renewal sent
// after now: it asks for one at once. A VM that its hypervisor paused past
// its lease resumes with a monotonic clock that saw nothing, and its
// alarms (burst, refresh) go off as if no time had passed; etcd then
// answers "lease not found" and the node steps down before anything goes
// out. In the ordinary case it costs one round trip to etcd per
// announcement.
func (h *addrHold) request(why string, g gate) {
	if !g.may() || g.term == nil {
		return
	}
	h.pending, h.pendingSince = why, g.now()
	g.term.renewNow()
}

// announcePending sends the pending announcement if a renewal sent after
// it became due has been acknowledged, and otherwise asks for another.
func (h *addrHold) announcePending(g gate) {
	switch pendingStep(h.pending, h.pendingSince, h.vouched) {
	case announceAskAgain:
		g.term.renewNow()
	case announceSend:
		why := h.pending
		h.pending = ""
		h.announce(why, g)
	}
}

// announce announces every VIP once, each only while the node holds them
// and its deadline has not passed (g.may, node.mayClaim): a process
// resumed after a freeze steps down before it can send anything.
func (h *addrHold) announce(why string, g gate) {
	for _, p := range h.vips {
		if !g.may() || g.frames == nil {
			return
		}
		if g.beforeSend != nil {
			g.beforeSend()
		}
		err := g.frames.announce(p.Addr())
		switch {
		case errors.Is(err, unix.ENOBUFS):
			// The kernel fence dropped it: the deadline had passed by the
			// time it was sent (a freeze after the check above).
			h.log.warnf("%s announcement of %s dropped by the kernel fence: the deadline passed before it was sent", why, p.Addr())
		case err != nil:
			h.log.warnf("%s announcement: %v", why, err)
		default:
			h.met.announced(p.Addr())
		}
	}
	h.announced = g.now()
}

package main

import (
	"bytes"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// linkView is the node's view of its interface: which link carries the
// VIP, and its sockets for announcements and probes.
type linkView struct {
	iface      string // vip.interface: a name, or "auto"
	vips       []netip.Prefix
	kern       kernel
	open       func(l linkMessage, ipv6 bool) (linkFrames, error) // nodeDeps.openFrames
	log        *logger
	link       linkMessage
	have       bool
	frames     linkFrames // open while the link is usable; nil if it could not be opened
	waitingFor string     // what the last "waiting" line said
}

// usable says whether the link can carry the VIP.
func (v *linkView) usable() bool { return v.have && v.link.up() }

// linkEventStep is what a link message does.
type linkEventStep int

const (
	linkIgnore  linkEventStep = iota // another link
	linkRemoved                      // our link is gone
	linkChanged                      // our link changed
	linkResync                       // a link that may be ours appeared: list again
)

// linkEvent decides a link message, for the view v.
func linkEvent(v *linkView, l linkMessage, deleted bool) linkEventStep {
	switch {
	case v.have && l.Index == v.link.Index && deleted:
		return linkRemoved
	case v.have && l.Index == v.link.Index:
		return linkChanged
	case !v.have && !deleted && (v.iface == "auto" || l.Name == v.iface):
		return linkResync
	}
	return linkIgnore
}

// linkStep is what a new view of the link means to the node.
type linkStep int

const (
	linkSame    linkStep = iota
	linkDown             // was usable, is down: step down
	linkGone             // was usable, is gone: step down
	linkUp               // became usable: campaign
	linkWaiting          // not usable yet: say why
	linkNewMAC           // a holder's MAC changed: announce again
)

// linkPlan is what setLink does, in order.
type linkPlan struct {
	closeFrames bool // the old sockets: the link went down or changed its MAC
	openFrames  bool // the link is usable and has no sockets
	ableAgain   bool // a change that may cure an unable node (rank.go)
	step        linkStep
}

// planLink decides a new view (l, ok) of the link, from the old one: the
// state follows whether it can carry the address, and a new MAC means a
// new announcer and a fresh announcement.
func planLink(old *linkView, l linkMessage, ok bool, waiting, holding bool) linkPlan {
	wasUsable := old.usable()
	usable := ok && l.up()
	macChanged := ok && !bytes.Equal(l.HardwareAddr, old.link.HardwareAddr)
	p := linkPlan{closeFrames: wasUsable && (!usable || macChanged)}
	p.openFrames = usable && (old.frames == nil || p.closeFrames)
	p.ableAgain = ok && (usable != wasUsable || macChanged)
	switch {
	case wasUsable && !usable && ok:
		p.step = linkDown
	case wasUsable && !usable:
		p.step = linkGone
	case !wasUsable && usable:
		p.step = linkUp
	case !usable && waiting:
		p.step = linkWaiting
	case macChanged && holding:
		p.step = linkNewMAC
	}
	return p
}

// addrStep is what an address message on the node's link does.
type addrStep int

const (
	addrIgnore     addrStep = iota
	addrResync              // with interface auto and no link yet: the address that makes one "auto" may have arrived
	addrOther               // another address of our link changed (ableAgain)
	addrPutBack             // the VIP went while we hold it
	addrRemoveCopy          // a VIP appeared that we do not hold
)

// addrEvent decides an address message a for the view v. A copy of the
// VIP is left alone while resuming: it is the earlier run's.
func addrEvent(v *linkView, a addrMessage, deleted, isVIP, holding, resuming bool) addrStep {
	switch {
	case !v.have && !deleted && v.iface == "auto":
		return addrResync
	case !v.have || a.Index != v.link.Index:
		return addrIgnore
	case !isVIP:
		return addrOther
	case deleted && holding:
		return addrPutBack
	case !deleted && !holding && !resuming:
		return addrRemoveCopy
	}
	return addrIgnore
}

// rtnlStep is what a kernel message asks of the node (linkEvent,
// addrEvent).
type rtnlStep int

const (
	rtnlIgnore    rtnlStep = iota
	rtnlResync             // list links and addresses again
	rtnlLink               // a new view of our link: setLink(link, ok, why)
	rtnlAbleAgain          // another address of our link changed: ableAgain(why)
	rtnlPutBack            // the VIP prefix went while we hold it
)

// rtnlPlan is a kernel message decided: the step and what it needs.
type rtnlPlan struct {
	step   rtnlStep
	link   linkMessage
	ok     bool
	why    string
	prefix netip.Prefix
}

// decide follows the link and guards the address against others: what the
// message ev means, given whether we hold the VIP and whether an earlier
// run's lease may still be resumed. A copy of the VIP that we do not hold
// it removes itself (state is the node's, for the log).
func (v *linkView) decide(ev rtnlEvent, holding, resuming bool, state nodeState) rtnlPlan {
	switch {
	case ev.err != nil:
		v.log.errorf("%v", ev.err)
	case ev.resync:
		v.log.warnf("rtnetlink events were lost; listing links and addresses again")
		return rtnlPlan{step: rtnlResync}
	case ev.link != nil:
		switch linkEvent(v, *ev.link, ev.deleted) {
		case linkRemoved:
			return rtnlPlan{step: rtnlLink, why: "interface removed"}
		case linkChanged:
			return rtnlPlan{step: rtnlLink, link: *ev.link, ok: true, why: "link change"}
		case linkResync:
			return rtnlPlan{step: rtnlResync}
		}
	case ev.addr != nil:
		p := ev.addr.prefix()
		switch addrEvent(v, *ev.addr, ev.deleted, isVIP(v.vips, p), holding, resuming) {
		case addrResync:
			return rtnlPlan{step: rtnlResync}
		case addrOther:
			return rtnlPlan{step: rtnlAbleAgain, why: "an address of " + v.link.Name + " changed: " + p.String()}
		case addrPutBack:
			return rtnlPlan{step: rtnlPutBack, prefix: p}
		case addrRemoveCopy:
			v.removeStale(p, state)
		}
	}
	return rtnlPlan{}
}

func hasIPv6(vips []netip.Prefix) bool {
	for _, v := range vips {
		if v.Addr().Is6() {
			return true
		}
	}
	return false
}

func isVIP(vips []netip.Prefix, p netip.Prefix) bool {
	for _, v := range vips {
		if v == p {
			return true
		}
	}
	return false
}

// list lists links and addresses and picks the link (findLink); an error
// is logged.
func (v *linkView) list() (linkMessage, bool, []addrMessage, error) {
	links, err := v.kern.links()
	if err != nil {
		v.log.errorf("%v", err)
		return linkMessage{}, false, nil, err
	}
	addrs, err := v.kern.addrs(unix.AF_UNSPEC)
	if err != nil {
		v.log.errorf("%v", err)
		return linkMessage{}, false, nil, err
	}
	l, ok := findLink(links, addrs, v.iface, v.vips[0].Addr())
	return l, ok, addrs, nil
}

// removeStale removes a copy of the VIP p that we do not hold, such as one
// a crashed earlier run left behind; state is the node's, for the log.
func (v *linkView) removeStale(p netip.Prefix, state nodeState) {
	removed, err := v.kern.delAddr(v.link.Index, p)
	if err != nil {
		v.log.errorf("%v", err)
	} else if removed {
		v.log.warnf("removed a stale copy of %s from %s (this node is %s)", p, v.link.Name, state)
	}
}

// removeCopies removes the VIPs among addrs that are on our link. The
// caller knows that we do not hold them and that no earlier run's lease
// may still be resumed.
func (v *linkView) removeCopies(addrs []addrMessage, state nodeState) {
	for _, a := range addrs {
		if a.Index == v.link.Index && isVIP(v.vips, a.prefix()) {
			v.removeStale(a.prefix(), state)
		}
	}
}

// removeListed lists the addresses and removes the VIPs on our link
// (removeCopies), if there is a link.
func (v *linkView) removeListed(state nodeState) {
	if !v.have {
		return
	}
	addrs, err := v.kern.addrs(unix.AF_UNSPEC)
	if err != nil {
		v.log.errorf("%v", err)
		return
	}
	v.removeCopies(addrs, state)
}

// apply takes the new view (l, ok) and its sockets as plan says
// (planLink), and says what it means; the caller stops the burst first
// when they close. It returns the reason to step down for linkDown and
// linkGone (why: what found the link gone).
func (v *linkView) apply(l linkMessage, ok bool, plan linkPlan, why string) error {
	oldMAC := v.link.HardwareAddr
	v.link, v.have = l, ok
	if plan.closeFrames {
		v.closeFrames()
	}
	if plan.openFrames {
		frames, err := v.open(l, hasIPv6(v.vips))
		if err != nil {
			v.log.errorf("%v", err) // announcements and probes are skipped until the next link change
		}
		v.frames = frames
	}
	switch plan.step {
	case linkDown:
		return fmt.Errorf("%s is %w", v.iface, errLinkDown)
	case linkGone:
		return fmt.Errorf("%s: %w (%s)", v.iface, errLinkGone, why)
	case linkWaiting:
		v.logWaiting(ok)
	case linkNewMAC:
		v.log.infof("%s changed its MAC from %s to %s; announcing again", l.Name, oldMAC, l.HardwareAddr)
	}
	return nil
}

// logWaiting says once why the node cannot campaign yet.
func (v *linkView) logWaiting(haveLink bool) {
	msg := fmt.Sprintf("waiting for interface %s to appear", v.iface)
	if v.iface == "auto" {
		msg = fmt.Sprintf("waiting for an interface with an address in the subnet of %s", v.vips[0].Addr())
	}
	if haveLink {
		msg = fmt.Sprintf("waiting for %s to come up (it has no carrier or is down)", v.link.Name)
	}
	if msg != v.waitingFor {
		v.waitingFor = msg
		v.log.infof("%s", msg)
	}
}

// closeFrames closes the link's sockets (the node stops the burst first).
func (v *linkView) closeFrames() {
	if v.frames != nil {
		v.frames.Close()
		v.frames = nil
	}
}

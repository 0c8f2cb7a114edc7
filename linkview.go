package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// linkView is the node's view of its interface: which link carries the
// VIP, and its sockets for announcements and probes.
type linkView struct {
	iface      string // vip.interface: a name, or "auto"
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
	switch linkEvent(&n.view, l, deleted) {
	case linkRemoved:
		n.setLink(linkMessage{}, false, "interface removed")
	case linkChanged:
		n.setLink(l, true, "link change")
	case linkResync:
		n.resync()
	}
}

func (n *node) onAddr(a addrMessage, deleted bool) {
	switch addrEvent(&n.view, a, deleted, n.isVIP(a.prefix()), n.hold.holding, n.rs.resuming) {
	case addrResync:
		n.resync()
	case addrOther:
		n.ableAgain("an address of " + n.view.link.Name + " changed: " + a.prefix().String())
	case addrPutBack:
		// Removed by hand, or by the kernel after late renewals: put it
		// back under the same fence as any refresh. The fence usually
		// allows no lifetime between renewals, so the term is asked for
		// one at once; if it is not acknowledged in time, the deadline
		// ends the leadership.
		n.hold.missing = true
		if n.fence.lifetime(n.deps.now()) < time.Second {
			n.log.warnf("%s was removed from %s while leader; renewing at once to put it back", a.prefix(), n.view.link.Name)
			n.term.renewNow()
			return
		}
		n.refreshAddrs()
	case addrRemoveCopy:
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
	removed, err := n.deps.kern.delAddr(n.view.link.Index, p)
	if err != nil {
		n.log.errorf("%v", err)
	} else if removed {
		n.log.warnf("removed a stale copy of %s from %s (this node is %s)", p, n.view.link.Name, n.state)
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
	if n.hold.holding || n.rs.resuming {
		return
	}
	for _, a := range addrs {
		if a.Index == n.view.link.Index && n.isVIP(a.prefix()) {
			n.removeStale(a.prefix())
		}
	}
}

// settleResume ends the wait for a resume that did not happen: a copy of
// the VIP left on the link by the earlier run is stale now.
func (n *node) settleResume() {
	if !n.rs.resuming {
		return
	}
	n.rs.resuming = false
	if !n.view.have {
		return
	}
	addrs, err := n.deps.kern.addrs(unix.AF_UNSPEC)
	if err != nil {
		n.log.errorf("%v", err)
		return
	}
	n.removeStaleCopies(addrs)
}

// setLink applies a new view of the link (planLink).
func (n *node) setLink(l linkMessage, ok bool, why string) {
	plan := planLink(&n.view, l, ok, n.state == stateWaiting, n.hold.holding)
	oldMAC := n.view.link.HardwareAddr
	n.view.link, n.view.have = l, ok
	if plan.closeFrames {
		n.closeFrames()
	}
	if plan.openFrames {
		frames, err := n.deps.openFrames(l, n.hasIPv6())
		if err != nil {
			n.log.errorf("%v", err) // announcements and probes are skipped until the next link change
		}
		n.view.frames = frames
	}
	if plan.ableAgain {
		n.ableAgain(fmt.Sprintf("%s changed", l.Name))
	}
	switch plan.step {
	case linkDown:
		n.stepDown(fmt.Errorf("%s is %w", n.cfg.Interface, errLinkDown))
	case linkGone:
		n.stepDown(fmt.Errorf("%s: %w (%s)", n.cfg.Interface, errLinkGone, why))
	case linkUp:
		n.setState(stateCandidate, fmt.Sprintf("%s (index %d, %s) is up", l.Name, l.Index, l.HardwareAddr))
		if n.term == nil {
			n.campaign()
		}
	case linkWaiting:
		n.logWaiting(ok)
	case linkNewMAC:
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
		msg = fmt.Sprintf("waiting for %s to come up (it has no carrier or is down)", n.view.link.Name)
	}
	if msg != n.view.waitingFor {
		n.view.waitingFor = msg
		n.log.infof("%s", msg)
	}
}

// closeFrames stops the burst and closes the link's sockets.
func (n *node) closeFrames() {
	n.hold.stopBurst()
	if n.view.frames != nil {
		n.view.frames.Close()
		n.view.frames = nil
	}
}

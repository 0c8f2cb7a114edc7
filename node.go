package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
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

type node struct {
	cfg Config
	tls *tls.Config // etcd client TLS, nil for plain http
	log *logger
	rt  *rtnl
	cli *clientv3.Client

	rtEvents   chan rtnlEvent
	termEvents chan termEvent
	probes     chan probeResult

	link     linkMessage
	haveLink bool
	ann      *announcer // open while the link is usable

	state    nodeState
	term     *term
	deadline time.Time   // the lease's deadline; zero without a lease
	beat     time.Time   // once elected, the heartbeat's deadline (elect.go)
	timer    *time.Timer // fires at holdUntil
	elected  bool        // this term won the campaign
	holding  bool        // the address is on the link because we put it there

	probeSeq    int
	probeCancel context.CancelFunc
	squatStart  time.Time // when another host first answered for the VIP
	squatLoud   bool      // the squatter has been reported as an error
	waitingFor  string    // what the last "waiting" line said
	burstCancel context.CancelFunc
	refresh     *time.Ticker

	// After a local failure (the address cannot be added) the next term
	// waits, so that a persistent fault does not spin through elections.
	holdOff   time.Time
	wake      chan struct{}
	wakeTimer *time.Timer // sends on wake when holdOff ends; one at a time
}

func newNode(cfg Config, tlsCfg *tls.Config, log *logger, rt *rtnl, cli *clientv3.Client) *node {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	return &node{
		cfg: cfg, tls: tlsCfg, log: log, rt: rt, cli: cli,
		rtEvents:   make(chan rtnlEvent, 256),
		termEvents: make(chan termEvent, 16),
		probes:     make(chan probeResult, 1),
		wake:       make(chan struct{}, 1),
		timer:      timer,
	}
}

// run is the event loop. It returns after a graceful stop on a signal.
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
			n.stop(sig)
			return
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
		case <-n.wake:
			if n.term == nil && n.usable() {
				n.campaign()
			}
		case <-refresh:
			n.checkDeadline()
			n.announceAll("periodic refresh")
		}
	}
}

func (n *node) setState(s nodeState, reason string) {
	if s == n.state {
		return
	}
	n.log.infof("%s -> %s: %s", n.state, s, reason)
	n.state = s
}

// usable says whether the link can carry the VIP.
func (n *node) usable() bool { return n.haveLink && n.link.up() }

// checkDeadline steps a leader down once the deadline has passed. It runs
// on every wake-up: after a freeze (SIGSTOP, a stalled VM) stale events and
// the timer arrive together, and none of them may act on the old
// leadership first. A candidate holds nothing to fence: it keeps its lease
// and its place in the election (a lease that did expire ends the term
// through the renewal's "not found"), and take() will not add the address
// without a second left before the deadline.
func (n *node) checkDeadline() {
	if !n.elected || n.deadline.IsZero() {
		return
	}
	until, what := n.holdUntil()
	if time.Now().Before(until) {
		return
	}
	late := time.Since(until).Round(time.Millisecond)
	n.stepDown(fmt.Sprintf("%s not acknowledged in time (deadline passed %v ago)", what, late))
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

// timeLeft is how long the address may still be held.
func (n *node) timeLeft() time.Duration {
	until, _ := n.holdUntil()
	return time.Until(until)
}

// stepDown gives up the address and the term, then campaigns again with a
// new lease if the link allows it.
func (n *node) stepDown(reason string) {
	next := stateCandidate
	if !n.usable() {
		next = stateWaiting
	}
	if next == n.state {
		n.log.infof("%s: %s; starting over", n.state, reason)
	}
	n.setState(next, reason)
	n.release()
	if n.term != nil {
		n.term.stop(0)
		n.term = nil
	}
	n.deadline, n.beat = time.Time{}, time.Time{}
	n.timer.Stop()
	n.elected = false
	if next == stateCandidate {
		n.campaign()
	}
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
	n.term = startTerm(n.cli, electConfig{prefix: n.cfg.Key, name: name, ttl: n.cfg.TTL, endpoints: n.cfg.Etcd, tls: n.tls}, n.log, n.termEvents)
}

func (n *node) onTerm(ev termEvent) {
	if ev.t != n.term {
		return // a term that has already ended
	}
	switch ev.kind {
	case evGranted:
		n.setDeadline(ev.deadline)
		n.log.infof("campaigning for %s as %q (lease TTL %v)", n.cfg.Key, n.term.cfg.name, ev.ttl)
	case evRenewed:
		n.setDeadline(ev.deadline)
		n.extended()
	case evBeat:
		n.setBeat(ev.deadline)
		n.extended()
	case evElected:
		n.elected = true
		n.setBeat(ev.deadline)
		n.startProbe()
	case evLost:
		n.stepDown(ev.err.Error())
	case evTrouble:
		if ev.err != nil {
			n.log.warnf("etcd unreachable: %v (retrying)", ev.err)
		} else {
			n.log.infof("etcd reachable again")
		}
	}
}

func (n *node) setDeadline(d time.Time) {
	if d.After(n.deadline) {
		n.deadline = d
	}
	n.resetTimer()
}

func (n *node) setBeat(d time.Time) {
	if d.After(n.beat) {
		n.beat = d
	}
	n.resetTimer()
}

func (n *node) resetTimer() {
	n.timer.Reset(n.timeLeft())
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

// startProbe checks that nobody else answers for the VIP before we take it:
// a frozen or dead former holder's kernel answers ARP until the address
// lifetime runs out.
func (n *node) startProbe() {
	if n.cfg.Probe <= 0 || n.ann == nil {
		n.take()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.probeCancel = cancel
	n.probeSeq++
	seq, ann, window := n.probeSeq, n.ann, n.cfg.Probe
	vips := n.cfg.Addresses
	go func() {
		for {
			r := probeAll(ctx, ann, vips, window)
			r.seq = seq
			select {
			case n.probes <- r:
			case <-ctx.Done():
				return
			}
			if r.foreign == nil {
				return
			}
			select {
			case <-time.After(probeRetry):
			case <-ctx.Done():
				return
			}
		}
	}()
}

// probeAll probes every VIP; the IPv4 and IPv6 ones in parallel (they use
// separate sockets), so that a dual-stack takeover waits one window, not two.
func probeAll(ctx context.Context, ann *announcer, vips []netip.Prefix, window time.Duration) probeResult {
	var results [2]probeResult
	var wg sync.WaitGroup
	for i, v6 := range []bool{false, true} {
		wg.Go(func() {
			for _, p := range vips {
				if p.Addr().Is6() != v6 {
					continue
				}
				r := &results[i]
				if r.foreign, r.err = ann.probe(ctx, p.Addr(), window); r.foreign != nil || r.err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if results[0].foreign != nil || results[0].err != nil {
		return results[0]
	}
	return results[1]
}

// probeRetry is how soon a VIP that another host answered for is probed
// again.
const probeRetry = 200 * time.Millisecond

func (n *node) onProbe(r probeResult) {
	if r.seq != n.probeSeq || n.probeCancel == nil {
		return // a probe of an earlier election
	}
	if r.foreign != nil {
		n.onSquatter(r.foreign) // the prober tries again by itself
		return
	}
	n.probeCancel()
	n.probeCancel = nil
	n.squatStart, n.squatLoud = time.Time{}, false
	if r.err != nil {
		n.log.warnf("probe before take failed: %v; taking the address without it", r.err)
	}
	n.take()
}

// onSquatter logs another host answering for the VIP: briefly expected when
// a frozen former holder's address has not expired yet, loud when it lasts
// longer than any lifetime vipd gives.
func (n *node) onSquatter(mac net.HardwareAddr) {
	limit := n.cfg.TTL + 2*time.Second
	switch {
	case n.squatStart.IsZero():
		n.squatStart = time.Now()
		n.log.warnf("%s still answered by %s; waiting for it to go quiet before taking it", prefixList(n.cfg.Addresses), mac)
	case !n.squatLoud && time.Since(n.squatStart) >= limit:
		n.squatLoud = true
		n.log.errorf("a foreign host (MAC %s) has answered for %s for more than %v: someone else has configured it; not taking the address while it answers",
			mac, prefixList(n.cfg.Addresses), limit)
	}
}

// take adds the addresses with a lifetime that ends before the deadline,
// then announces them.
func (n *node) take() {
	left := n.timeLeft()
	if left < time.Second {
		n.log.infof("elected with %v before the deadline; taking the address after the next renewal", left.Round(time.Millisecond))
		return
	}
	n.holding = true // from here on, release() removes what was added
	for _, p := range n.cfg.Addresses {
		if err := n.rt.setAddr(n.link.Index, p, left); err != nil {
			n.holdOff = time.Now().Add(localRetry)
			n.stepDown(fmt.Sprintf("cannot add the address (campaigning again in %v): %v", localRetry, err))
			return
		}
	}
	n.setState(stateLeader, fmt.Sprintf("elected; added %s on %s (lifetime %d s)", prefixList(n.cfg.Addresses), n.link.Name, int(left/time.Second)))
	n.startBurst()
	if n.cfg.GarpRefresh > 0 {
		n.refresh = time.NewTicker(n.cfg.GarpRefresh)
	}
}

// refreshAddrs extends the addresses' lifetimes after a renewal, never past
// the deadline. With less than a second left the older, shorter lifetime
// stays.
func (n *node) refreshAddrs() {
	left := n.timeLeft()
	if left < time.Second {
		return
	}
	for _, p := range n.cfg.Addresses {
		if err := n.rt.setAddr(n.link.Index, p, left); err != nil {
			n.log.warnf("refresh lifetime: %v", err)
		}
	}
}

// release removes the addresses (if we hold them) and stops everything that
// belongs to holding them.
func (n *node) release() {
	if n.probeCancel != nil {
		n.probeCancel()
		n.probeCancel = nil
		n.probeSeq++
	}
	n.stopBurst()
	if n.refresh != nil {
		n.refresh.Stop()
		n.refresh = nil
	}
	if !n.holding {
		return
	}
	n.holding = false
	for _, p := range n.cfg.Addresses {
		if _, err := n.rt.delAddr(n.link.Index, p); err != nil {
			n.log.errorf("%v", err)
		}
	}
}

// startBurst announces at once, then vip.garp-1 more times.
func (n *node) startBurst() {
	n.stopBurst()
	if n.cfg.Garp < 1 || n.ann == nil {
		return
	}
	n.announceAll("takeover")
	if n.cfg.Garp < 2 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.burstCancel = cancel
	ann, vips, count, interval, log := n.ann, n.cfg.Addresses, n.cfg.Garp, n.cfg.GarpInterval, n.log
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for i := 1; i < count; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, p := range vips {
				if err := ann.announce(p.Addr()); err != nil && ctx.Err() == nil {
					log.warnf("%v", err)
				}
			}
		}
	}()
}

func (n *node) announceAll(why string) {
	if n.ann == nil || !n.holding {
		return
	}
	for _, p := range n.cfg.Addresses {
		if err := n.ann.announce(p.Addr()); err != nil {
			n.log.warnf("%s announcement: %v", why, err)
		}
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
	if a.Index != n.link.Index || !n.isVIP(a.prefix()) {
		return
	}
	switch {
	case deleted && n.holding:
		left := n.timeLeft()
		if left < time.Second {
			n.stepDown(fmt.Sprintf("renewals late: %s expired %v before the deadline", a.prefix(), left.Round(time.Millisecond)))
			return
		}
		if err := n.rt.setAddr(n.link.Index, a.prefix(), left); err != nil {
			n.stepDown(fmt.Sprintf("cannot re-add %s: %v", a.prefix(), err))
			return
		}
		n.log.warnf("%s was removed from %s while leader; re-added and announced", a.prefix(), n.link.Name)
		n.announceAll("re-add")
	case !deleted && !n.holding:
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
	removed, err := n.rt.delAddr(n.link.Index, p)
	if err != nil {
		n.log.errorf("%v", err)
	} else if removed {
		n.log.warnf("removed a stale copy of %s from %s (this node is %s)", p, n.link.Name, n.state)
	}
}

// resync lists links and addresses, picks the link and removes stale VIPs.
func (n *node) resync() {
	links, err := n.rt.links()
	if err != nil {
		n.log.errorf("%v", err)
		return
	}
	addrs, err := n.rt.addrs(unix.AF_UNSPEC)
	if err != nil {
		n.log.errorf("%v", err)
		return
	}
	l, ok := findLink(links, addrs, n.cfg.Interface, n.cfg.Addresses[0].Addr())
	n.setLink(l, ok, "interface "+n.cfg.Interface)
	if !ok {
		return
	}
	for _, a := range addrs {
		if a.Index == n.link.Index && n.isVIP(a.prefix()) && !n.holding {
			n.removeStale(a.prefix())
		}
	}
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
		n.closeAnnouncer()
	}
	if usable && n.ann == nil {
		ann, err := openAnnouncer(int(l.Index), l.Name, l.HardwareAddr, n.hasIPv6())
		if err != nil {
			n.log.errorf("%v", err) // announcements and probes are skipped until the next link change
		}
		n.ann = ann
	}

	switch {
	case wasUsable && !usable:
		reason := fmt.Sprintf("%s is down", n.cfg.Interface)
		if !ok {
			reason = fmt.Sprintf("%s: no such interface (%s)", n.cfg.Interface, why)
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
		n.startBurst()
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

// stopBurst cancels a running announcement burst: after a step-down (or a
// new MAC) its frames would announce the wrong thing.
func (n *node) stopBurst() {
	if n.burstCancel != nil {
		n.burstCancel()
		n.burstCancel = nil
	}
}

func (n *node) closeAnnouncer() {
	n.stopBurst()
	if n.ann != nil {
		n.ann.Close()
		n.ann = nil
	}
}

// stop is the graceful stop: the address goes first so that the next node
// can take it at once, then the lease (which deletes our election key).
func (n *node) stop(sig os.Signal) {
	n.log.infof("stopping on %v: removing the address and resigning", sig)
	n.release()
	if n.term != nil {
		n.term.stop(2 * revokeTimeout)
		n.term = nil
	}
	n.closeAnnouncer()
	n.setState(stateWaiting, "stopped")
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

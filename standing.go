package main

import (
	"fmt"
	"time"
)

// standing is this node's rank (rank.go) and, while it leads, the best
// other candidate and the handover rules.
type standing struct {
	priority int  // vip.priority
	healthy  bool // the check's verdict
	rival    rival
	ho       handover
	preempt  alarm // goes off when ho says to look again
	// A node that failed to hold ranks itself unable until unableUntil,
	// or until a link or address change on its interface; the back-off
	// doubles with each failure (unableFirst to unableMax) and starts
	// over once it has held the VIP.
	unableUntil   time.Time
	unableBackoff time.Duration
	able          alarm // goes off at unableUntil
}

// rank is this node's rank as it stands.
func (s *standing) rank() rank {
	return rank{unable: !s.unableUntil.IsZero(), healthy: s.healthy, priority: s.priority}
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
	s := &n.stand
	s.unableBackoff = min(max(2*s.unableBackoff, unableFirst), unableMax)
	s.unableUntil = n.deps.now().Add(s.unableBackoff)
	s.able.set(s.unableBackoff)
	n.log.errorf("cannot hold %s: %v; ranking this node unable (below every able node) for %v, or until %s or its addresses change",
		prefixList(n.cfg.Addresses), err, n.stand.unableBackoff, n.cfg.Interface)
}

// ableAgain ends an unable spell, publishing the node's rank again.
func (n *node) ableAgain(why string) {
	if n.stand.unableUntil.IsZero() {
		return
	}
	n.stand.unableUntil = time.Time{}
	n.stand.able.stop()
	n.log.infof("rank: %s again (%s); the next failure to hold waits %v", n.stand.rank(), why, min(2*n.stand.unableBackoff, unableMax))
	if n.term != nil {
		n.term.setRank(n.stand.rank())
	}
}

// onHealth applies a change of the check's verdict: the rank is published
// in the election entry, and a leader that is now outranked may hand over.
func (n *node) onHealth(ev healthEvent) {
	if ev.healthy == n.stand.healthy {
		if !ev.healthy {
			n.log.infof("rank: %s (%s)", n.stand.rank(), ev.reason) // the first verdict of a node that started unhealthy
		}
		return
	}
	old := n.stand.rank()
	n.stand.healthy = ev.healthy
	n.log.infof("rank: %s -> %s (%s)", old, n.stand.rank(), ev.reason)
	if n.term != nil {
		n.term.setRank(n.stand.rank())
	}
	n.considerHandover()
}

// considerHandover is when a leader hands over: to a strictly
// better-ranked candidate, at the time handover.decide says (rank.go).
func (n *node) considerHandover() {
	s := &n.stand
	s.preempt.stop()
	if n.state != stateLeader || !n.hold.holding {
		return
	}
	now := n.deps.now()
	yes, again := s.ho.decide(now, s.rank(), s.rival)
	switch {
	case yes:
		n.handOver(s.rival.entry)
	case again.IsZero():
		s.ho.said = ""
	default:
		s.preempt.set(again.Sub(now))
		why := "a higher priority must stand for vip.preempt.delay"
		if again.Equal(s.ho.tookAt.Add(s.ho.delay)) {
			why = "a new leader keeps the VIP for vip.preempt.delay"
		}
		msg := fmt.Sprintf("%s (%s) outranks this node (%s); handing over in %v (%s) unless that changes",
			s.rival.name, s.rival.rank, s.rank(), again.Sub(now).Round(time.Millisecond), why)
		if key := s.rival.name + s.rival.rank.String() + s.rank().String(); key != s.ho.said {
			s.ho.said = key
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
	n.met.steppedDown(handoverReason(n.stand.rank(), to.rank))
	n.setState(stateCandidate, fmt.Sprintf("handing over to %s (%s > %s)", to.name, to.rank, n.stand.rank()))
	n.endTerm(true)
	n.campaign()
}

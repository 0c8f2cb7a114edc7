package main

import (
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// standing is this node's rank (rank.go) and, while it leads, the best
// other candidate and the handover rules.
type standing struct {
	log      *logger
	priority int  // vip.priority
	healthy  bool // the check's verdict
	// drained: the group's drain marks (drain.go) name this node.
	drained bool
	marks   drainMarks
	// moved: the group's move request names this node's current term.
	moved   bool
	moveReq moveRequest
	rival   rival
	ho      handover
	preempt alarm // goes off when ho says to look again
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
	return rank{drained: s.drained, unable: !s.unableUntil.IsZero(), healthy: s.healthy, moved: s.moved, priority: s.priority}
}

// The back-off of a node that failed to hold the VIP.
const (
	unableFirst = 10 * time.Second
	unableMax   = 10 * time.Minute
)

// markUnable ranks the node below every able one after it failed at now
// to hold the VIP (vips, for the log) on iface: a preferred node that
// cannot add the address (IPv6 off on its link, say) would otherwise
// attract a handover, fail, and lose the VIP to the old holder again and
// again. It tries again after the back-off, or when its link or addresses
// change (ableAgain).
func (s *standing) markUnable(err error, now time.Time, vips, iface string) {
	s.unableBackoff = min(max(2*s.unableBackoff, unableFirst), unableMax)
	s.unableUntil = now.Add(s.unableBackoff)
	s.able.set(s.unableBackoff)
	s.log.errorf("cannot hold %s: %v; ranking this node unable (below every able node) for %v, or until %s or its addresses change",
		vips, err, s.unableBackoff, iface)
}

// ableAgain ends an unable spell, publishing the node's rank again in the
// election entry of term (nil: none).
func (s *standing) ableAgain(why string, term campaigner) {
	if s.unableUntil.IsZero() {
		return
	}
	s.unableUntil = time.Time{}
	s.able.stop()
	s.log.infof("rank: %s again (%s); the next failure to hold waits %v", s.rank(), why, min(2*s.unableBackoff, unableMax))
	if term != nil {
		term.setRank(s.rank())
	}
}

// held starts a tenure that began at took: a later failure to hold starts
// the back-off afresh, and the handover clock counts from took.
func (s *standing) held(took time.Time) {
	s.unableBackoff = 0
	s.ho.tookAt = took
}

// onHealth applies a change of the check's verdict: the rank is published
// in the election entry of term (nil: none). It reports whether the rank
// changed, so that a leader now outranked may hand over.
func (s *standing) onHealth(ev healthEvent, term campaigner) bool {
	if ev.healthy == s.healthy {
		if !ev.healthy {
			s.log.infof("rank: %s (%s)", s.rank(), ev.reason) // the first verdict of a node that started unhealthy
		}
		return false
	}
	old := s.rank()
	s.healthy = ev.healthy
	s.log.infof("rank: %s -> %s (%s)", old, s.rank(), ev.reason)
	if term != nil {
		term.setRank(s.rank())
	}
	return true
}

// onMarks applies the group's drain marks to this node, named name (""
// before its name is known): its rank is published in the election entry
// of term (nil: none). It reports whether the rank changed, so that a
// drained leader may hand over.
func (s *standing) onMarks(marks drainMarks, name string, term campaigner) bool {
	s.marks = marks
	mark, drained := marks[name]
	if name == "" || drained == s.drained {
		return false
	}
	old := s.rank()
	s.drained = drained
	why := "its drain mark is gone (vipd -undrain)"
	if drained {
		why = fmt.Sprintf("drained by an operator (%s): below every undrained node until vipd -undrain", mark)
	}
	s.log.infof("rank: %s -> %s (%s)", old, s.rank(), why)
	if term != nil {
		term.setRank(s.rank())
	}
	return true
}

// onMove applies the group's move request to this node's term (lease 0:
// none yet), as onMarks does the drain marks.
func (s *standing) onMove(req moveRequest, name string, lease clientv3.LeaseID, term campaigner) bool {
	s.moveReq = req
	moved := req.movedHere(name, lease)
	if moved == s.moved {
		return false
	}
	old := s.rank()
	s.moved = moved
	why := "the move to this node is over (a new term, or a move elsewhere)"
	if moved {
		why = fmt.Sprintf("an operator moved the VIP here (%s): above every other healthy node for this term", req["to"])
	}
	s.log.infof("rank: %s -> %s (%s)", old, s.rank(), why)
	if term != nil {
		term.setRank(s.rank())
	}
	return true
}

// handOverTo is when a leader hands over: to a strictly better-ranked
// candidate, at the time handover.decide says (rank.go). It returns the
// candidate to hand over to now, if any; a handover that may come later
// is timed by the preempt alarm and said once.
func (s *standing) handOverTo(now time.Time, leading bool) (entry, bool) {
	s.preempt.stop()
	if !leading {
		return entry{}, false
	}
	yes, again := s.ho.decide(now, s.rank(), s.rival)
	switch {
	case yes:
		return s.rival.entry, true
	case again.IsZero() && s.drained && (!s.rival.known || s.rival.rank.drained):
		if key := "drained, no undrained candidate"; key != s.ho.said {
			s.ho.said = key
			s.log.infof("drained, but keeping the VIP: no undrained candidate to take it")
		}
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
			s.log.infof("%s", msg)
		}
	}
	return entry{}, false
}

// endTerm forgets the term's rival and handover.
func (s *standing) endTerm() {
	s.rival = rival{}
	s.ho.aboveSince, s.ho.said = time.Time{}, ""
	s.preempt.stop()
}

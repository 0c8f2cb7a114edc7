package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A node's rank decides who should hold the VIP: a healthy node outranks an
// unhealthy one, then the higher vip.priority wins; equal ranks keep the
// holder (docs/design.md, section 3). Every node publishes its rank in the value of its
// election key (elect.go), so it lives and dies with the node's lease, and
// one range read shows every candidate with its rank.

type rank struct {
	// drained: an operator marked the node (`vipd -drain`, drain.go); it
	// ranks below every undrained node, whatever else, and takes the VIP
	// only when no undrained candidate is left.
	drained bool
	// unable: the node failed to hold the VIP (it could not add the
	// address) and has not seen a reason to believe it can yet; it ranks
	// below every able node, so that no handover goes to it (standing.go
	// markUnable). Its health is not published meanwhile.
	unable  bool
	healthy bool
	// moved: an operator moved the VIP to this node (`vipd -move`,
	// move.go), for this term: it outranks every other healthy node
	// whatever the priorities, so that the move holds; health still comes
	// first.
	moved    bool
	priority int
}

// above says whether r strictly outranks o.
func (r rank) above(o rank) bool {
	if r.drained != o.drained {
		return !r.drained
	}
	if r.unable != o.unable {
		return !r.unable
	}
	if r.healthy != o.healthy {
		return r.healthy
	}
	if r.moved != o.moved {
		return r.moved
	}
	return r.priority > o.priority
}

// healthWord is the rank's first field in an election entry and in logs.
func (r rank) healthWord() string {
	switch {
	case r.unable:
		return "unable"
	case r.healthy:
		return "healthy"
	}
	return "unhealthy"
}

func (r rank) String() string {
	s := r.healthWord()
	if r.drained {
		s = "drained, " + s
	}
	if r.moved {
		s += ", moved here"
	}
	return fmt.Sprintf("%s, priority %d", s, r.priority)
}

// unranked is the rank of an election entry vipd cannot read: below every
// rank a node can have, so that nobody steps aside or hands over for it.
var unranked = rank{drained: true, unable: true, healthy: false, priority: math.MinInt}

// entry is an election key's value: the node's name and its rank, and,
// once the node holds the VIP, when its tenure began and when it sent its
// last heartbeat. etcd records neither (a key's revisions carry no time),
// and `vipd -status` shows both.
type entry struct {
	name  string
	rank  rank
	since int64 // unix milliseconds, holder's clock; 0: not a holder
	beat  int64 // unix milliseconds, holder's clock; 0 when since is
	// window is the failure-detection window, in milliseconds, that the
	// node fences itself by in the kernel while it holds (bpffence.go):
	// candidates take over once its heartbeat has stood still that long.
	// 0: no kernel fence, the TTL rule (docs/design.md, section 8a).
	window int64
}

// holds says whether the entry was written by a holder (its claim or a
// heartbeat).
func (e entry) holds() bool { return e.since != 0 }

// MarshalText writes "NAME healthy|unhealthy|unable PRIORITY", followed
// by " since=MS beat=MS" for a holder, " drained=1" for a drained node,
// " moved=1" for the target of a move and " fence=MS" for a node fenced
// in the kernel (a vipd of 0.1.0 skips those words and ranks the node as if it were neither). Names have no whitespace
// (kcmdline.go validName), so the fields split cleanly. A vipd from
// before "unable" existed cannot read such an entry and ranks it below
// everyone (UnmarshalText), which is what "unable" means anyway.
func (e entry) MarshalText() ([]byte, error) {
	s := e.name + " " + e.rank.healthWord() + " " + strconv.Itoa(e.rank.priority)
	if e.holds() {
		s += " since=" + strconv.FormatInt(e.since, 10) + " beat=" + strconv.FormatInt(e.beat, 10)
	}
	if e.rank.drained {
		s += " drained=1"
	}
	if e.rank.moved {
		s += " moved=1"
	}
	if e.window > 0 {
		s += " fence=" + strconv.FormatInt(e.window, 10)
	}
	return []byte(s), nil
}

// UnmarshalText reads an election key's value. A bare name is what vipd
// wrote before ranks existed: such a node has the default rank (healthy,
// priority 0). After "NAME HEALTH PRIORITY" come KEY=VALUE words in any
// order, each key once: since= and beat= (both or neither), drained=1,
// moved=1 and fence=MS are read, and any other key is skipped, so that a later version may add one without
// making this one misread its entries (docs/operating.md, "Upgrades").
// Only canonical spacing is read. Anything else names the node by the
// whole value and ranks it below everyone.
func (e *entry) UnmarshalText(b []byte) error {
	f := strings.Fields(string(b))
	canonical := strings.Join(f, " ") == string(b)
	switch {
	case len(f) == 1 && canonical:
		*e = entry{name: f[0], rank: rank{healthy: true}}
		return nil
	case len(f) >= 3 && canonical && (f[1] == "healthy" || f[1] == "unhealthy" || f[1] == "unable"):
		p, err := strconv.Atoi(f[2])
		if err != nil || strconv.Itoa(p) != f[2] {
			break
		}
		r := entry{name: f[0], rank: rank{unable: f[1] == "unable", healthy: f[1] == "healthy", priority: p}}
		if !r.readFields(f[3:]) {
			break // out of the switch: unreadable
		}
		*e = r
		return nil
	}
	*e = entry{name: string(b), rank: unranked}
	return fmt.Errorf("election entry %q: want \"NAME healthy|unhealthy|unable PRIORITY [since=MS beat=MS] [KEY=VALUE...]\"", b)
}

// readFields reads the KEY=VALUE words after the rank: since= and beat=,
// both or neither, drained=1, moved=1 and fence=MS; other keys are skipped. A word without a key, or a key
// given twice, makes the entry unreadable.
func (e *entry) readFields(words []string) bool {
	var seen []string
	for _, w := range words {
		k, _, ok := strings.Cut(w, "=")
		if !ok || k == "" || slices.Contains(seen, k) {
			return false
		}
		seen = append(seen, k)
		var valid bool
		switch k {
		case "since":
			e.since, valid = millisField(w, "since=")
		case "beat":
			e.beat, valid = millisField(w, "beat=")
		case "drained":
			e.rank.drained, valid = true, w == "drained=1"
		case "moved":
			e.rank.moved, valid = true, w == "moved=1"
		case "fence":
			e.window, valid = millisField(w, "fence=")
		default:
			valid = true
		}
		if !valid {
			return false
		}
	}
	return slices.Contains(seen, "since") == slices.Contains(seen, "beat")
}

// millisField reads "PREFIX<unix milliseconds>", a positive number written
// as strconv writes it.
func millisField(s, prefix string) (int64, bool) {
	v, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != v {
		return 0, false
	}
	return n, true
}

// parseEntry reads an election key's value, unreadable ones included (see
// UnmarshalText).
func parseEntry(b []byte) entry {
	var e entry
	e.UnmarshalText(b)
	return e
}

func entryValue(name string, r rank, window time.Duration) string {
	b, _ := entry{name: name, rank: r, window: window.Milliseconds()}.MarshalText()
	return string(b)
}

// rival is the best-ranked other candidate, as the leader sees it.
type rival struct {
	entry
	known bool // false: there is no other candidate
}

// handover is the leader's decision to give the VIP to a better-ranked
// candidate (docs/design.md, section 3). It is kept apart from the node so that its
// timing rules can be read, and tested, in one place.
type handover struct {
	delay      time.Duration // vip.preempt.delay
	tookAt     time.Time     // when this node took the VIP
	aboveSince time.Time     // since when some candidate has outranked us; zero: none does
	said       string        // the last decision logged, so that each is logged once
}

// decide says, at now, whether to hand over to r (go), or else when to
// look again (zero: not before something changes). The rules:
//   - only to a candidate that strictly outranks us;
//   - never within delay of taking the VIP (flapping protection: a check
//     that alternates moves the VIP at most once per delay);
//   - at once if the candidate is healthier than we are;
//   - for priority alone, once the candidate has outranked us for delay;
//   - at once, delay or not, if we are drained and it is not, or it is
//     the target of a move: an operator asked for it (`vipd -drain`,
//     `vipd -move`).
func (h *handover) decide(now time.Time, own rank, r rival) (bool, time.Time) {
	if !r.known || !r.rank.above(own) {
		h.aboveSince = time.Time{}
		return false, time.Time{}
	}
	if own.drained && !r.rank.drained || r.rank.moved && !own.moved {
		return true, time.Time{}
	}
	if h.aboveSince.IsZero() {
		h.aboveSince = now
	}
	due := h.tookAt.Add(h.delay)
	if r.rank.healthy == own.healthy {
		due = later(due, h.aboveSince.Add(h.delay))
	}
	if now.Before(due) {
		return false, due
	}
	return true, time.Time{}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

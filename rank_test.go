package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRankOrder(t *testing.T) {
	cases := []struct {
		a, b rank
		want bool // a strictly above b
	}{
		{rank{healthy: true, priority: 0}, rank{healthy: false, priority: 0}, true},
		{rank{healthy: true, priority: -5}, rank{healthy: false, priority: 100}, true}, // health first
		{rank{healthy: false, priority: 100}, rank{healthy: true, priority: -5}, false},
		{rank{healthy: true, priority: 10}, rank{healthy: true, priority: 0}, true},
		{rank{healthy: true, priority: 0}, rank{healthy: true, priority: 10}, false},
		{rank{healthy: true, priority: 3}, rank{healthy: true, priority: 3}, false}, // equal: nobody preempts
		{rank{healthy: false, priority: 3}, rank{healthy: false, priority: 3}, false},
		{rank{priority: math.MinInt + 1}, unranked, true},
		{unranked, rank{priority: math.MinInt}, false},
		// unable below every able node, whatever its health and priority
		{rank{healthy: false, priority: -100}, rank{unable: true, priority: 100}, true},
		{rank{unable: true, priority: 100}, rank{healthy: false, priority: -100}, false},
		{rank{unable: true, priority: 100}, rank{unable: true, priority: 0}, true},
		{rank{unable: true, priority: math.MinInt + 1}, unranked, true}, // still above an unreadable entry
		// drained below every undrained node, whatever its health and priority
		{rank{unable: true, priority: -100}, rank{drained: true, healthy: true, priority: 100}, true},
		{rank{drained: true, healthy: true, priority: 100}, rank{unable: true, priority: -100}, false},
		{rank{drained: true, healthy: true}, rank{drained: true, healthy: false}, true},
		{rank{drained: true, unable: true, priority: math.MinInt + 1}, unranked, true},
	}
	for _, c := range cases {
		if got := c.a.above(c.b); got != c.want {
			t.Errorf("(%v).above(%v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestEntryText(t *testing.T) {
	type e = entry
	cases := []struct {
		value string
		want  entry
		ok    bool
	}{
		{"n1 healthy 10", e{name: "n1", rank: rank{healthy: true, priority: 10}}, true},
		{"n1 unhealthy -3", e{name: "n1", rank: rank{healthy: false, priority: -3}}, true},
		{"02:00:5e:00:53:01 healthy 0", e{name: "02:00:5e:00:53:01", rank: rank{healthy: true, priority: 0}}, true},
		// A holder's: its tenure and last heartbeat.
		{"n1 healthy 0 since=1700000000000 beat=1700000012345", e{name: "n1", rank: rank{healthy: true, priority: 0}, since: 1700000000000, beat: 1700000012345}, true},
		{"n2 unhealthy -7 since=1 beat=2", e{name: "n2", rank: rank{healthy: false, priority: -7}, since: 1, beat: 2}, true},
		// A drained node's mark.
		{"n1 healthy 5 drained=1", e{name: "n1", rank: rank{drained: true, healthy: true, priority: 5}}, true},
		{"n1 healthy 0 since=5 beat=6 drained=1", e{name: "n1", rank: rank{drained: true, healthy: true}, since: 5, beat: 6}, true},
		{"n1 healthy 0 drained=0", e{name: "n1 healthy 0 drained=0", rank: unranked}, false},
		// A node fenced in the kernel: the window it fences by.
		{"n1 healthy 0 since=5 beat=6 fence=500", e{name: "n1", rank: rank{healthy: true}, since: 5, beat: 6, window: 500}, true},
		{"n1 healthy 0 fence=0", e{name: "n1 healthy 0 fence=0", rank: unranked}, false},
		{"n1 healthy 0 fence=500ms", e{name: "n1 healthy 0 fence=500ms", rank: unranked}, false},
		// Keys a later version adds are skipped, wherever they stand.
		{"n1 healthy 0 ver=0.2.0", e{name: "n1", rank: rank{healthy: true, priority: 0}}, true},
		{"n1 unable 3 since=5 beat=6 ver=0.2.0 x=", e{name: "n1", rank: rank{unable: true, priority: 3}, since: 5, beat: 6}, true},
		{"n1 healthy 0 ver=0.2.0 beat=6 since=5", e{name: "n1", rank: rank{healthy: true, priority: 0}, since: 5, beat: 6}, true},
		// What vipd wrote before ranks: the default rank.
		{"n1", e{name: "n1", rank: rank{healthy: true, priority: 0}}, true},
		// Unreadable: named by the whole value, below everyone.
		{"", e{name: "", rank: unranked}, false},
		{"n1 sick 3", e{name: "n1 sick 3", rank: unranked}, false},
		{"n1 healthy", e{name: "n1 healthy", rank: unranked}, false},
		{"n1 healthy 010", e{name: "n1 healthy 010", rank: unranked}, false},
		{"n1 healthy +1", e{name: "n1 healthy +1", rank: unranked}, false},
		{"n1  healthy 1", e{name: "n1  healthy 1", rank: unranked}, false},
		{" n1", e{name: " n1", rank: unranked}, false},
		{"n1 healthy 99999999999999999999", e{name: "n1 healthy 99999999999999999999", rank: unranked}, false},
		{"n1 healthy 0 since=5", e{name: "n1 healthy 0 since=5", rank: unranked}, false},
		{"n1 healthy 0 since=5 beat=6 x", e{name: "n1 healthy 0 since=5 beat=6 x", rank: unranked}, false},
		{"n1 healthy 0 since=5 beat=6 =x", e{name: "n1 healthy 0 since=5 beat=6 =x", rank: unranked}, false},
		{"n1 healthy 0 since=5 beat=6 since=7", e{name: "n1 healthy 0 since=5 beat=6 since=7", rank: unranked}, false},
		{"n1 healthy 0 ver=1 ver=2", e{name: "n1 healthy 0 ver=1 ver=2", rank: unranked}, false},
		{"n1 healthy 0 beat=6 ver=2", e{name: "n1 healthy 0 beat=6 ver=2", rank: unranked}, false},
		{"n1 healthy 0 since=0 beat=6", e{name: "n1 healthy 0 since=0 beat=6", rank: unranked}, false},
		{"n1 healthy 0 since=5 beat=-6", e{name: "n1 healthy 0 since=5 beat=-6", rank: unranked}, false},
		{"n1 healthy 0 since=05 beat=6", e{name: "n1 healthy 0 since=05 beat=6", rank: unranked}, false},
		{"n1 healthy 0 since=5 beat=", e{name: "n1 healthy 0 since=5 beat=", rank: unranked}, false},
		{"n1 healthy 0 since=5  beat=6", e{name: "n1 healthy 0 since=5  beat=6", rank: unranked}, false},
		{"n1 healthy 0 since=5 beat=6\n", e{name: "n1 healthy 0 since=5 beat=6\n", rank: unranked}, false},
	}
	for _, c := range cases {
		var got entry
		err := got.UnmarshalText([]byte(c.value))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("%q: got %+v, err %v; want %+v, ok %v", c.value, got, err, c.want, c.ok)
		}
		if c.ok && c.value != "n1" {
			// Written back without the keys it skipped, since= and beat= in
			// their place.
			want := strings.Join(slices.DeleteFunc(strings.Fields(c.value), func(w string) bool {
				return strings.Contains(w, "=") && !strings.HasPrefix(w, "since=") && !strings.HasPrefix(w, "beat=") && w != "drained=1" && !strings.HasPrefix(w, "fence=")
			}), " ")
			if want == "n1 healthy 0 beat=6 since=5" {
				want = "n1 healthy 0 since=5 beat=6"
			}
			if b, _ := got.MarshalText(); string(b) != want {
				t.Errorf("%+v encodes as %q, want %q", got, b, want)
			}
		}
		if c.ok && got.holds() != strings.Contains(c.value, "since=") {
			t.Errorf("%q: holds() = %v", c.value, got.holds())
		}
	}
}

// FuzzEntry: what the entry decoder accepts encodes to bytes that decode
// to the same entry, and to the same bytes unless it had keys to skip (or
// since= after beat=), or was the bare name of older versions, which
// gains its rank.
func FuzzEntry(f *testing.F) {
	for _, s := range []string{"n1 healthy 10", "n1 unhealthy -3", "n1", "", "a b c", "n1 healthy 0",
		"n1 healthy 0 since=1700000000000 beat=1700000012345", "n1 unhealthy -3 since=1 beat=1", "n1 healthy 0 since=0 beat=1",
		"n1 healthy 0 since=1 beat=", "n1 healthy 0 since=1 beat=2 beat=3", "n1 healthy 0 ver=0.2.0 beat=2 since=1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var e entry
		if err := e.UnmarshalText(b); err != nil {
			if e.rank != unranked || e.name != string(b) {
				t.Fatalf("unreadable %q decoded as %+v", b, e)
			}
			return
		}
		enc, _ := e.MarshalText()
		var again entry
		if err := again.UnmarshalText(enc); err != nil || again != e {
			t.Fatalf("%q → %+v → %q → %+v (%v)", b, e, enc, again, err)
		}
		if string(enc) != string(b) && e.name != string(b) && !strings.Contains(string(b), "=") {
			t.Fatalf("%q encodes as %q", b, enc)
		}
	})
}

// TestHandoverDecide pins the leader's timing rules (docs/design.md, section 3).
func TestHandoverDecide(t *testing.T) {
	const delay = 5 * time.Second
	t0 := time.Unix(1000, 0)
	healthy0, healthy10 := rank{healthy: true, priority: 0}, rank{healthy: true, priority: 10}
	sick0, sick10 := rank{healthy: false, priority: 0}, rank{healthy: false, priority: 10}
	riv := func(r rank) rival { return rival{entry: entry{name: "n3", rank: r}, known: true} }
	drained := func(r rank) rank { r.drained = true; return r }
	type step struct {
		at   time.Duration // after t0
		own  rank
		r    rival
		yes  bool
		next time.Duration // when to look again, after t0; -1: not at all
	}
	cases := []struct {
		name  string
		took  time.Duration // after t0 (negative: long ago)
		steps []step
	}{
		{"no other candidate", -time.Hour, []step{{0, sick0, rival{}, false, -1}}},
		{"equal rank: never", -time.Hour, []step{{0, healthy0, riv(healthy0), false, -1}, {time.Hour, healthy0, riv(healthy0), false, -1}}},
		{"lower rank: never", -time.Hour, []step{{0, healthy10, riv(healthy0), false, -1}, {0, healthy0, riv(sick10), false, -1}}},
		{"we turned unhealthy: at once", -time.Hour, []step{{0, sick0, riv(healthy0), true, -1}}},
		// An operator's drain moves the VIP at once, even from a new
		// leader, to any undrained node; among drained nodes the usual
		// rules hold.
		{"drained: at once, even new", 0, []step{{0, drained(healthy10), riv(sick0), true, -1}}},
		{"drained, the rival too: equal, never", -time.Hour, []step{{0, drained(healthy0), riv(drained(healthy0)), false, -1}}},
		{"undrained holder, drained rival: never", -time.Hour, []step{{0, sick0, riv(drained(healthy10)), false, -1}}},
		{"health beats our priority: at once", -time.Hour, []step{{0, sick10, riv(healthy0), true, -1}}},
		{"priority: after the delay", -time.Hour, []step{
			{0, healthy0, riv(healthy10), false, delay},
			{delay - time.Millisecond, healthy0, riv(healthy10), false, delay},
			{delay, healthy0, riv(healthy10), true, -1},
		}},
		{"priority among the unhealthy: after the delay", -time.Hour, []step{
			{0, sick0, riv(sick10), false, delay},
			{delay, sick0, riv(sick10), true, -1},
		}},
		{"priority that did not stand: the clock starts again", -time.Hour, []step{
			{0, healthy0, riv(healthy10), false, delay},
			{2 * time.Second, healthy0, riv(healthy0), false, -1},
			{3 * time.Second, healthy0, riv(healthy10), false, 3*time.Second + delay},
			{delay, healthy0, riv(healthy10), false, 3*time.Second + delay},
		}},
		{"new leader: not even for health within the delay", 0, []step{
			{time.Second, sick0, riv(healthy0), false, delay},
			{delay, sick0, riv(healthy0), true, -1},
		}},
		{"new leader and priority: both delays", 0, []step{
			{4 * time.Second, healthy0, riv(healthy10), false, 4*time.Second + delay},
			{4*time.Second + delay, healthy0, riv(healthy10), true, -1},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := handover{delay: delay, tookAt: t0.Add(c.took)}
			for i, s := range c.steps {
				yes, next := h.decide(t0.Add(s.at), s.own, s.r)
				want := time.Time{}
				if s.next >= 0 {
					want = t0.Add(s.next)
				}
				if yes != s.yes || !next.Equal(want) {
					t.Fatalf("step %d (+%v, own %v, rival %+v): got %v, look again %v; want %v, %v", i, s.at, s.own, s.r, yes, next, s.yes, want)
				}
			}
		})
	}
}

package main

import (
	"testing"
	"time"
)

// TestHoldUntil checks which deadline bounds the address: the lease's
// alone until the node is elected, then whichever of the lease's and the
// heartbeat's comes first.
func TestHoldUntil(t *testing.T) {
	t0 := time.Now()
	lease, beat := t0.Add(1500*time.Millisecond), t0.Add(1200*time.Millisecond)
	cases := []struct {
		name        string
		elected     bool
		lease, beat time.Time
		want        time.Time
		what        string
	}{
		{"candidate: the lease only", false, lease, beat, lease, "lease renewal"},
		{"leader, heartbeat first", true, lease, beat, beat, "heartbeat"},
		{"leader, lease first", true, beat, lease, beat, "lease renewal"},
		{"leader before its first heartbeat is recorded", true, lease, time.Time{}, time.Time{}, "heartbeat"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := &node{elected: c.elected, deadline: c.lease, beat: c.beat}
			got, what := n.holdUntil()
			if !got.Equal(c.want) || what != c.what {
				t.Errorf("holdUntil() = %v, %q; want %v, %q", got.Sub(t0), what, c.want.Sub(t0), c.what)
			}
		})
	}
}

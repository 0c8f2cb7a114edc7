package main

import (
	"context"
	"time"
)

// The node's clock comes in through nodeDeps (now, afterFunc): the real
// one in vipd, a fake one in the node tests, which move it by hand so that
// a deadline, a burst or a back-off arrives at once and exactly.

// alarm is one of the node's timers. When it goes off, the clock's
// goroutine sends the alarm itself to the loop, which hands it to handle;
// only the loop's goroutine sets, stops and takes it. An alarm that went
// off before a stop or a new set is stale when it arrives, and take drops
// it, so that stop means what time.Timer.Stop means to a channel read in
// the loop: once it returns, nothing armed before it arrives. (Should a
// stale send arrive after the live one, the live one is dropped and the
// stale one taken in its place: the alarm goes off a moment late, never
// early.) Each alarm belongs to one part of the node, which stops it when
// what it times is over.
type alarm struct {
	after func(time.Duration, func()) *time.Timer // nodeDeps.afterFunc
	out   chan<- *alarm
	armed bool
	timer *time.Timer // the current setting's; nil once stopped or taken
	stale int         // sends under way from settings that were stopped too late to cancel
}

// set arms the alarm to go off once, after d, replacing any earlier setting.
func (a *alarm) set(d time.Duration) {
	a.stop()
	a.armed = true
	out := a.out
	a.timer = a.after(d, func() { out <- a })
}

// stop disarms the alarm; it reports whether it was armed and has not
// been taken.
func (a *alarm) stop() bool {
	was := a.armed
	a.armed = false
	if a.timer != nil && !a.timer.Stop() {
		a.stale++ // it went off already: its send is on the way
	}
	a.timer = nil
	return was
}

// take reports whether the alarm that arrived is live, not a stale one.
func (a *alarm) take() bool {
	if a.stale > 0 {
		a.stale--
		return false
	}
	if !a.armed {
		return false
	}
	a.armed, a.timer = false, nil
	return true
}

// sleepCtx waits d, or less if ctx ends first; false then.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

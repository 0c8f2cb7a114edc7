package main

import "time"

// clock is where the node reads the time and sets its alarms: the real
// clock in vipd, a fake one in the node tests, which move it by hand so
// that a deadline, a burst or a back-off arrives at once and exactly.
type clock struct {
	now func() time.Time
	// afterFunc runs f in its own goroutine once d has passed, unless the
	// returned stop is called first.
	afterFunc func(d time.Duration, f func()) (stop func() bool)
}

// realClock is the clock vipd runs on.
var realClock = clock{now: time.Now, afterFunc: realAfterFunc}

func realAfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// tick is an alarm going off, as the loop receives it.
type tick struct {
	a   *alarm
	gen uint64
}

// alarm is one of the node's timers. Only the loop's goroutine sets, stops
// and takes it; the clock's goroutine only sends the tick. A tick from
// before the latest set or stop is stale and dropped (take), so stop
// means what time.Timer.Stop means to a channel read in the loop: once it
// returns, nothing armed before it arrives. Each alarm belongs to one part
// of the node, which stops it when what it times is over.
type alarm struct {
	clk    *clock
	out    chan<- tick
	gen    uint64
	armed  bool
	cancel func() bool
}

// wire gives the alarm its clock and where its ticks go.
func (a *alarm) wire(clk *clock, out chan<- tick) { a.clk, a.out = clk, out }

// set arms the alarm to go off once, after d, replacing any earlier setting.
func (a *alarm) set(d time.Duration) {
	a.cancelPending()
	a.armed = true
	out, t := a.out, tick{a: a, gen: a.gen}
	a.cancel = a.clk.afterFunc(d, func() { out <- t })
}

// stop disarms the alarm; it reports whether it was armed and its tick not
// yet taken.
func (a *alarm) stop() bool {
	was := a.armed
	a.armed = false
	a.cancelPending()
	return was
}

func (a *alarm) cancelPending() {
	a.gen++
	if a.cancel != nil {
		a.cancel()
		a.cancel = nil
	}
}

// take reports whether t is the alarm's live tick, not a stale one.
func (a *alarm) take(t tick) bool {
	if t.gen != a.gen || !a.armed {
		return false
	}
	a.armed = false
	return true
}

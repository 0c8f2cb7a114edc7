package main

import (
	"fmt"
	"time"
)

// fence is the lease's and the heartbeat's deadlines, and what follows
// from them: when the node must have stepped down, and the kernel lifetime
// the address may be given. Pure arithmetic: the caller says what time it
// is.
type fence struct {
	ttl      time.Duration // the term's effective lease TTL
	deadline time.Time     // the lease's deadline; zero without a lease
	beat     time.Time     // once elected, the heartbeat's deadline (elect.go)
	elected  bool          // this term won the campaign
	// boot is the bootstrap hold's own deadline (bootstrap.go): before
	// any etcd has answered, the node named by vip.bootstrap holds the VIP
	// without an election, and its own timer moves this forward. Zero
	// otherwise; an election ends it.
	boot time.Time
	// kernel says that the node's kernel fence (bpffence.go) drops the
	// VIP's frames at holdUntil, to the millisecond: the address lifetime
	// is then only the second line (see end).
	kernel bool
}

// holdUntil is when the address must be gone at the latest: the lease's
// deadline and, once elected, the heartbeat's, whichever comes first. Other
// nodes may remove the election key of a holder whose heartbeat they have
// seen standing still for a TTL (elect.go), so both bind. A bootstrap
// hold has its own deadline, which no lease renewal moves.
func (f *fence) holdUntil() (time.Time, string) {
	switch {
	case !f.elected && !f.boot.IsZero():
		return f.boot, "bootstrap hold"
	case f.elected && f.beat.Before(f.deadline):
		return f.beat, "heartbeat"
	}
	return f.deadline, "lease renewal"
}

// advance moves the deadlines forward to deadline and beat (never back)
// and returns the new holdUntil.
func (f *fence) advance(deadline, beat time.Time) time.Time {
	f.deadline, f.beat = later(deadline, f.deadline), later(beat, f.beat)
	until, _ := f.holdUntil()
	return until
}

// overdue says why a leader must step down at now, or nil. A candidate
// holds nothing to fence: it keeps its lease and its place in the
// election (a lease that did expire ends the term through the renewal's
// "not found"), and takeAddress will not add the address without a second
// of lifetime before the deadline.
func (f *fence) overdue(now time.Time) error {
	if !f.elected && f.boot.IsZero() || f.elected && f.deadline.IsZero() {
		return nil
	}
	until, what := f.holdUntil()
	if now.Before(until) {
		return nil
	}
	late := now.Sub(until).Round(time.Millisecond)
	if !f.elected {
		return fmt.Errorf("%w (deadline passed %v ago)", errBootEnded, late)
	}
	return fmt.Errorf("%w: %s not acknowledged in time (deadline passed %v ago)", errDeadline, what, late)
}

// The kernel fence. The address is given a lifetime, so that the kernel
// removes it by itself from a node that is frozen or dead. Lifetimes are
// whole seconds, and the kernel's lifetime check runs at once whenever any
// address in the namespace changes and then no sooner than a second
// later: an address whose lifetime ends just after such a check stays up
// to a second longer (docs/design.md, section 2; pinned by kernel_test.go). So an
// address given lifetime L at time r may still be there at r + L +
// kernelSlack.
//
// Another node can add the address at the earliest when the holder's last
// acknowledged send time S plus the TTL has passed (lease expiry, or a
// heartbeat that stood still for a TTL: elect.go), and, unless the holder
// released the address and said so, takeoverWait later. Hence the lifetime
// must end by S + TTL + takeoverWait - kernelSlack (end), which is
// also never after the step-down deadline S + TTL - margin. At vip.ttl=2
// that leaves a lifetime of 1 s only to a refresh whose acknowledgement
// came back within takeoverWait - (kernelSlack - 1 s) of its send time; a
// later one is skipped, and the older, shorter lifetime stays.
//
// kernelSlack's 100 ms beyond the second are the kernel worker's own
// delay: kernel_test.go measured the removal at most 30 ms late at the
// 95th percentile, 155 ms at worst on a loaded machine, and up to 300 ms
// with the CPUs saturated on purpose. A refresh acknowledged promptly (a
// few ms) leaves about 190 ms for it, since the lifetime is rounded down;
// one acknowledged after 100 ms, the 100 ms counted here. The probe is the
// second line for the rest.
const (
	kernelSlack  = time.Second + 100*time.Millisecond
	takeoverWait = 200 * time.Millisecond
)

// end is when the address's kernel lifetime must end at the latest.
//
// With the kernel fence, other nodes take over as soon as the window has
// passed, often well within the one-second granularity of lifetimes; what
// keeps them from two holders is the filter, which silences the VIP here
// at holdUntil whatever the address does. The lifetime then only bounds
// how long a silent copy outlives a killed vipd: a second past holdUntil,
// which lets the address be added whenever holdUntil is ahead
// (docs/design.md, section 8a, replaces "never add with less than 1 s
// left" for fenced nodes).
func (f *fence) end() time.Time {
	until, _ := f.holdUntil()
	if f.kernel {
		return until.Add(time.Second)
	}
	fence := until.Add(margin(f.ttl) + takeoverWait - kernelSlack)
	if fence.Before(until) {
		return fence
	}
	return until
}

// lifetime is the whole-second lifetime the address may be given at now
// (below a second: none).
func (f *fence) lifetime(now time.Time) time.Duration {
	return f.end().Sub(now).Truncate(time.Second)
}

// fits says whether a lifetime set at now still ends by the fence.
func (f *fence) fits(now time.Time, life time.Duration) error {
	if over := now.Add(life).Sub(f.end()); over > 0 {
		return fmt.Errorf("%w: its %d s lifetime would outlast the fence by %v", errStalled, int(life/time.Second), over.Round(time.Millisecond))
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vipd/test/lab"
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
			f := &fence{elected: c.elected, deadline: c.lease, beat: c.beat}
			got, what := f.holdUntil()
			if !got.Equal(c.want) || what != c.what {
				t.Errorf("holdUntil() = %v, %q; want %v, %q", got.Sub(t0), what, c.want.Sub(t0), c.what)
			}
		})
	}
}

// fakeClock is the node's clock in these tests: time moves only when the
// test moves it, and an alarm goes off only when the test fires it (or
// moves the clock past it). Its timers are real ones that never fire, so
// that Stop says, as for time.AfterFunc, whether f has been run.
type fakeClock struct {
	mu      sync.Mutex
	t       time.Time
	pending []fakeTimer
}

type fakeTimer struct {
	when time.Time
	f    func()
	t    *time.Timer
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// add moves the clock without firing anything: the process was busy (a
// slow call) or stopped.
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) afterFunc(d time.Duration, f func()) *time.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := time.AfterFunc(math.MaxInt64, func() {})
	c.pending = append(c.pending, fakeTimer{when: c.t.Add(d), f: f, t: t})
	return t
}

// timers counts the timers set and not yet fired (stopped ones included).
func (c *fakeClock) timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// fireNext runs the earliest timer due by until, first moving the clock to
// it; it reports false when none is due.
func (c *fakeClock) fireNext(until time.Time) bool {
	c.mu.Lock()
	var next *fakeTimer
	for {
		i := -1
		for j, p := range c.pending {
			if !p.when.After(until) && (i < 0 || p.when.Before(c.pending[i].when)) {
				i = j
			}
		}
		if i < 0 {
			c.mu.Unlock()
			return false
		}
		p := c.pending[i]
		c.pending = slices.Delete(c.pending, i, i+1)
		if p.t.Stop() { // not stopped by the node: it goes off
			next = &p
			break
		}
	}
	if next.when.After(c.t) {
		c.t = next.when
	}
	c.mu.Unlock()
	next.f()
	return true
}

// fire runs the timer t now, without moving the clock: the alarm goes off
// early, as if its time had come.
func (c *fakeClock) fire(t *time.Timer) bool {
	c.mu.Lock()
	i := slices.IndexFunc(c.pending, func(p fakeTimer) bool { return p.t == t })
	if i < 0 || !t.Stop() {
		c.mu.Unlock()
		return false
	}
	p := c.pending[i]
	c.pending = slices.Delete(c.pending, i, i+1)
	c.mu.Unlock()
	p.f()
	return true
}

// The state machine with its outside parts replaced: a fake clock, a
// kernel that keeps addresses in a map, frames that are recorded, and
// terms driven by the test. Each test hands events to the node's handle,
// as its loop would, at the fake clock's time.

type fakeKernel struct {
	clk   *fakeClock
	link  linkMessage
	held  map[netip.Prefix]time.Duration // VIP -> lifetime last set
	sets  []time.Duration                // every lifetime set, in order
	dels  int
	stall time.Duration // each setAddr takes this long
	fail  error         // setAddr fails with this
	// freeze is how long the process stops right after a setAddr returns
	// (where a pending SIGSTOP takes effect); once.
	freeze time.Duration
}

func (k *fakeKernel) links() ([]linkMessage, error)      { return []linkMessage{k.link}, nil }
func (k *fakeKernel) addrs(uint8) ([]addrMessage, error) { return nil, nil }
func (k *fakeKernel) setAddr(_ uint32, p netip.Prefix, life time.Duration) error {
	k.clk.add(k.stall)
	if k.fail != nil {
		return k.fail
	}
	k.held[p] = life
	k.sets = append(k.sets, life)
	k.clk.add(k.freeze)
	k.freeze = 0
	return nil
}
func (k *fakeKernel) delAddr(_ uint32, p netip.Prefix) (bool, error) {
	_, ok := k.held[p]
	delete(k.held, p)
	k.dels++
	return ok, nil
}

// fakeFrames answers each probe round with the next queued answer (one
// per address family, so that both families see the same round); an empty
// queue means nobody answers.
type fakeFrames struct {
	sent   []netip.Addr
	probe4 chan probeAnswer
	probe6 chan probeAnswer
}

type probeAnswer func(ip netip.Addr) (net.HardwareAddr, error)

func (f *fakeFrames) queue(a probeAnswer) { f.probe4 <- a; f.probe6 <- a }

func (f *fakeFrames) announce(ip netip.Addr) error { f.sent = append(f.sent, ip); return nil }
func (f *fakeFrames) Close() error                 { return nil }

// watch reports nothing until ctx ends: the node tests hand claims to the
// node as events.
func (f *fakeFrames) watch(ctx context.Context, ip netip.Addr, window time.Duration) (net.HardwareAddr, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (f *fakeFrames) probe(ctx context.Context, ip netip.Addr, window time.Duration) (net.HardwareAddr, error) {
	q := f.probe4
	if ip.Is6() {
		q = f.probe6
	}
	select {
	case answer := <-q:
		return answer(ip)
	default:
		return nil, nil
	}
}

type fakeTerm struct {
	stopped, resigned bool
	ranks             []rank
	pokes             int
	releasing         chan struct{} // if set, ended until it is closed; else ended at once
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (t *fakeTerm) ended() <-chan struct{} {
	if t.releasing != nil {
		return t.releasing
	}
	return closedChan
}

func (t *fakeTerm) stop(time.Duration)   { t.stopped = true }
func (t *fakeTerm) resign(time.Duration) { t.resigned = true }
func (t *fakeTerm) renewNow()            { t.pokes++ }
func (t *fakeTerm) setRank(r rank)       { t.ranks = append(t.ranks, r) }

type nodeLab struct {
	t      *testing.T
	n      *node
	clk    *fakeClock
	kern   *fakeKernel
	frames *fakeFrames
	terms  []*fakeTerm
	log    *lab.SyncBuffer
}

var (
	fakeVIP4 = netip.MustParsePrefix("192.0.2.100/32")
	fakeVIP6 = netip.MustParsePrefix("2001:db8::100/128")
)

// newNodeLab is a node on an up link, campaigning with TTL ttl and the
// given vip.* words.
func newNodeLab(t *testing.T, ttl time.Duration, words ...string) *nodeLab {
	return newNodeLabWith(t, ttl, nil, words...)
}

// newNodeLabWith is newNodeLab with setup run on the node before it looks
// at its link (and so before its first term).
func newNodeLabWith(t *testing.T, ttl time.Duration, setup func(nl *nodeLab), words ...string) *nodeLab {
	cfg, err := parseConfig(append([]string{"vip.address=192.0.2.100,2001:db8::100", "vip.interface=eth0",
		"vip.etcd=http://192.0.2.1:2379", "vip.name=n1", "vip.ttl=" + ttl.String()}, words...), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	nl := &nodeLab{t: t, log: &lab.SyncBuffer{}, clk: newFakeClock(), frames: &fakeFrames{probe4: make(chan probeAnswer, 8), probe6: make(chan probeAnswer, 8)}}
	nl.kern = &fakeKernel{clk: nl.clk, held: map[netip.Prefix]time.Duration{}, link: linkMessage{Index: 2, Name: "eth0",
		Flags: unix.IFF_UP | unix.IFF_RUNNING, HardwareAddr: net.HardwareAddr{2, 0, 0x5e, 0, 0x53, 1}}}
	deps := nodeDeps{
		now:        nl.clk.now,
		afterFunc:  nl.clk.afterFunc,
		kern:       nl.kern,
		openFrames: func(linkMessage, bool) (linkFrames, error) { return nl.frames, nil },
		newTerm: func(electConfig, chan<- termEvent) campaigner {
			ft := &fakeTerm{}
			nl.terms = append(nl.terms, ft)
			return ft
		},
	}
	nl.n = newNode(cfg, &logger{w: nl.log}, deps)
	if setup != nil {
		setup(nl)
	}
	nl.n.resync()
	if len(nl.terms) != 1 {
		t.Fatalf("an up link started %d terms, want 1", len(nl.terms))
	}
	t.Cleanup(func() {
		nl.n.release()
		if t.Failed() {
			t.Logf("node log:\n%s", nl.log.String())
		}
	})
	return nl
}

// now is the fake clock's time.
func (nl *nodeLab) now() time.Time { return nl.clk.now() }

// handle hands ev to the node at the fake clock's time, as the loop does;
// it reports whether the node runs on.
func (nl *nodeLab) handle(ev event) bool { return nl.n.handle(nl.clk.now(), ev) }

// pump hands the node every alarm that has gone off.
func (nl *nodeLab) pump() {
	for {
		select {
		case a := <-nl.n.in.ticks:
			nl.handle(a)
		default:
			return
		}
	}
}

// advance moves the clock by d, handing the node each alarm as it goes
// off, in order.
func (nl *nodeLab) advance(d time.Duration) {
	end := nl.now().Add(d)
	for nl.clk.fireNext(end) {
		nl.pump()
	}
	if end.After(nl.now()) {
		nl.clk.add(end.Sub(nl.now()))
	}
}

// fire makes the alarm a go off now, ahead of its time.
func (nl *nodeLab) fire(a *alarm) {
	nl.t.Helper()
	if a.timer == nil || !nl.clk.fire(a.timer) {
		nl.t.Fatal("the alarm is not set")
	}
	nl.pump()
}

// term is the node's current term.
func (nl *nodeLab) term() *fakeTerm { return nl.terms[len(nl.terms)-1] }

// event delivers a term event from the current term, sent at sent.
func (nl *nodeLab) event(kind termEventKind, sent time.Time, released bool) {
	ttl := nl.n.cfg.TTL
	ev := termEvent{t: nl.term(), kind: kind, ttl: ttl, released: released}
	switch kind {
	case evGranted:
		ev.deadline, ev.vouched = deadlineAfter(sent, ttl), sent
	case evRenewed, evElected:
		ev.deadline, ev.beat, ev.vouched = deadlineAfter(sent, ttl), deadlineAfter(sent, ttl), sent
	}
	nl.handle(ev)
}

// renewed acknowledges a renewal sent a moment after everything so far.
func (nl *nodeLab) renewed() {
	nl.clk.add(time.Millisecond)
	nl.event(evRenewed, nl.now(), false)
}

// probe moves the clock to the end of the takeover wait, and hands the
// probe's result to the node; it returns how long that took on the clock.
// When the node asks for a renewal (too little lifetime left since the
// election's send time), the renewal is acknowledged at once.
func (nl *nodeLab) probe() time.Duration {
	nl.t.Helper()
	t0 := nl.now()
	pokes := nl.term().pokes
	for nl.n.take.wait.armed {
		if !nl.clk.fireNext(t0.Add(time.Hour)) {
			nl.t.Fatal("the takeover wait never ends")
		}
		nl.pump()
	}
	if nl.n.take.cancel == nil {
		nl.t.Fatal("no probe under way")
	}
	select {
	case r := <-nl.n.in.probes: // the probe runs off the loop, at once on fake frames
		nl.handle(r)
	case <-time.After(10 * time.Second):
		nl.t.Fatal("no probe result")
	}
	if nl.term().pokes > pokes {
		nl.event(evRenewed, nl.now(), false)
	}
	return nl.now().Sub(t0)
}

// lead makes the node the holder: granted, elected after a released
// predecessor, probed.
func (nl *nodeLab) lead() {
	nl.t.Helper()
	now := nl.now()
	nl.event(evGranted, now, false)
	nl.event(evElected, now, true)
	nl.probe()
	if !nl.n.hold.holding || nl.n.state != stateLeader {
		nl.t.Fatalf("not leader after a clean probe (state %v, holding %v)", nl.n.state, nl.n.hold.holding)
	}
}

func (nl *nodeLab) wantStepDown(reason error) {
	nl.t.Helper()
	if !errors.Is(nl.n.stepped, reason) {
		nl.t.Fatalf("stepped down with %v, want %v", nl.n.stepped, reason)
	}
	if nl.n.hold.holding || len(nl.kern.held) != 0 {
		nl.t.Fatalf("after the step-down the kernel still has %v (holding %v)", nl.kern.held, nl.n.hold.holding)
	}
	if !nl.terms[0].stopped {
		nl.t.Fatal("the old term was not stopped")
	}
}

// addrGone is the kernel's message that the VIP p went from eth0.
func addrGone(p netip.Prefix) rtnlEvent {
	return rtnlEvent{addr: &addrMessage{Family: unix.AF_INET, PrefixLen: uint8(p.Bits()), Index: 2, Address: p.Addr(), Local: p.Addr()}, deleted: true}
}

// TestNodeSendsOnlyWhileHolding: a frame that claims the VIP goes out only
// after the deadline was checked in the loop; a process resumed after its
// deadline steps down instead of sending (docs/design.md, section 2).
func TestNodeSendsOnlyWhileHolding(t *testing.T) {
	cases := []struct {
		name string
		send func(nl *nodeLab)
	}{
		{"burst tick", func(nl *nodeLab) { nl.fire(&nl.n.hold.burst) }},
		{"periodic refresh", func(nl *nodeLab) { nl.fire(&nl.n.hold.refresh) }},
		{"new MAC", func(nl *nodeLab) {
			l := nl.n.view.link
			l.HardwareAddr = net.HardwareAddr{2, 0, 0x5e, 0, 0x53, l.HardwareAddr[5] + 1}
			nl.handle(rtnlEvent{link: &l})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nl := newNodeLab(t, 2*time.Second)
			nl.lead()
			if len(nl.frames.sent) != 2 {
				t.Fatalf("takeover sent %v, want one announcement per VIP", nl.frames.sent)
			}
			pokes := nl.term().pokes
			c.send(nl) // in time: sent once etcd vouches for the lease again
			if len(nl.frames.sent) != 2 || nl.term().pokes != pokes+1 {
				t.Fatalf("sent %v with %d renewals asked for, want nothing before a renewal, and one asked for", nl.frames.sent[2:], nl.term().pokes-pokes)
			}
			nl.renewed()
			if len(nl.frames.sent) != 4 {
				t.Fatalf("sent %v after the renewal, want a second announcement per VIP", nl.frames.sent)
			}
			// A freeze: the deadline passes with nothing acknowledged, and
			// the alarm (or the link's message) is what wakes the loop.
			nl.clk.add(2 * time.Second)
			c.send(nl)
			if len(nl.frames.sent) != 4 {
				t.Fatalf("sent %v after the deadline", nl.frames.sent[4:])
			}
			nl.wantStepDown(errDeadline)
		})
	}
}

// TestNodeClaimGate: the gate every claiming frame goes through reads the
// clock itself, so a deadline that passes inside the handling of one event
// (between the loop's check and the send) still stops the frame.
func TestNodeClaimGate(t *testing.T) {
	nl := newNodeLab(t, 2*time.Second)
	nl.lead()
	sent := len(nl.frames.sent)
	nl.clk.add(2 * time.Second) // frozen after handle's own check
	nl.n.hold.announce("test", nl.n.claim())
	if len(nl.frames.sent) != sent {
		t.Fatalf("sent %v past the deadline", nl.frames.sent[sent:])
	}
	nl.wantStepDown(errDeadline)
}

// TestNodeBurstStopsOnStepDown: a step-down in the middle of the burst
// leaves nothing scheduled.
func TestNodeBurstStopsOnStepDown(t *testing.T) {
	nl := newNodeLab(t, 2*time.Second, "vip.garp.interval=10ms")
	nl.lead()
	nl.handle(termEvent{t: nl.term(), kind: evLost, err: errKeyGone})
	nl.wantStepDown(errKeyGone)
	nl.advance(50 * time.Millisecond)
	if nl.n.hold.burst.armed || nl.n.hold.burstLeft != 0 {
		t.Fatal("the burst is still scheduled after the step-down")
	}
	if len(nl.frames.sent) != 2 {
		t.Fatalf("sent %v after the step-down", nl.frames.sent[2:])
	}
}

// TestNodeProbeOutcomes: only a probe that nobody answered leads to the
// address; an answer from another host outranks a failed probe.
func TestNodeProbeOutcomes(t *testing.T) {
	squat := func(ip netip.Addr) (net.HardwareAddr, error) {
		if ip.Is6() {
			return net.HardwareAddr{2, 0, 0, 0, 0, 0x66}, nil
		}
		return nil, nil
	}
	broken4 := func(ip netip.Addr) (net.HardwareAddr, error) {
		if ip.Is4() {
			return nil, errors.New("use of closed file")
		}
		return nil, nil
	}
	both := func(ip netip.Addr) (net.HardwareAddr, error) {
		if ip.Is6() {
			return squat(ip)
		}
		return broken4(ip)
	}
	cases := []struct {
		name   string
		rounds []probeAnswer
		takes  int  // how many rounds until the address is taken
		squat  bool // the first round reports another host (not a failure)
	}{
		{"quiet", nil, 1, false},
		{"IPv6 answered", []probeAnswer{squat}, 2, true},
		{"IPv4 failed", []probeAnswer{broken4}, 2, false},
		{"IPv4 failed and IPv6 answered", []probeAnswer{both}, 2, true},
		{"answered, failed, answered", []probeAnswer{squat, broken4, both}, 4, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nl := newNodeLab(t, 2*time.Second)
			for _, f := range c.rounds {
				nl.frames.queue(f)
			}
			now := nl.now()
			nl.event(evGranted, now, false)
			nl.event(evElected, now, true)
			for round := 1; round <= c.takes; round++ {
				if nl.n.hold.holding {
					t.Fatalf("took the address after round %d, want after round %d", round-1, c.takes)
				}
				nl.probe()
				if round == 1 && nl.n.take.squatStart.IsZero() == c.squat {
					t.Fatalf("after the first round: another host reported %v, want %v", !nl.n.take.squatStart.IsZero(), c.squat)
				}
			}
			if !nl.n.hold.holding {
				t.Fatalf("did not take the address after %d rounds", c.takes)
			}
		})
	}
}

// TestNodeTakeoverWait: a node that wins from a holder that did not
// release the address waits out the kernel's lifetime slack before it
// adds it, with or without the probe; after a release it does not wait.
func TestNodeTakeoverWait(t *testing.T) {
	// Only the bounds that are the rule: not before the wait without a
	// release mark, and not after it with one. How long a takeover takes
	// is measured by the benchmark.
	cases := []struct {
		probe    string
		released bool
		min, max time.Duration
	}{
		{"20ms", true, 0, takeoverWait},
		{"20ms", false, takeoverWait - 20*time.Millisecond, time.Hour},
		{"0", false, takeoverWait, time.Hour},
		{"0", true, 0, takeoverWait},
	}
	// (A predecessor fenced in the kernel counts as released: see
	// TestNodeTakeoverFenced.)
	for _, c := range cases {
		t.Run(fmt.Sprintf("probe=%s released=%v", c.probe, c.released), func(t *testing.T) {
			nl := newNodeLab(t, 2*time.Second, "vip.probe="+c.probe)
			now := nl.now()
			nl.event(evGranted, now, false)
			nl.event(evElected, now, c.released)
			if nl.n.hold.holding {
				t.Fatal("took the address before the probe's result")
			}
			d := nl.probe()
			if !nl.n.hold.holding {
				t.Fatal("not holding after the wait")
			}
			// At vip.ttl=2 the claim's send time leaves no lifetime after
			// the wait: the node asks for a renewal at once instead of
			// waiting for the next one.
			if want := map[bool]int{true: 0, false: 1}[c.released]; nl.term().pokes != want {
				t.Fatalf("%d immediate renewals asked for, want %d", nl.term().pokes, want)
			}
			if d < c.min || d > c.max {
				t.Fatalf("the address was taken %v after the election, want %v to %v", d, c.min, c.max)
			}
		})
	}
}

// TestNodeLifetimeFence checks the fence arithmetic over every TTL the
// parser accepts in 250 ms steps and every acknowledgement delay: a
// lifetime set at r after a send at S ends, even with the kernel's slack,
// before another node can add the address (S + TTL + takeoverWait), and
// never after the step-down deadline.
func TestNodeLifetimeFence(t *testing.T) {
	r := time.Now()
	for ttl := 2 * time.Second; ttl <= 30*time.Second; ttl += 250 * time.Millisecond {
		f := &fence{ttl: ttl, elected: true}
		for delay := time.Duration(0); delay < ttl; delay += 10 * time.Millisecond {
			sent := r.Add(-delay)
			f.deadline, f.beat = deadlineAfter(sent, ttl), deadlineAfter(sent, ttl)
			life := f.lifetime(r)
			if life < time.Second {
				continue // skipped: the older lifetime stays
			}
			if end := r.Add(life + kernelSlack); end.After(sent.Add(ttl + takeoverWait)) {
				t.Fatalf("TTL %v, ack after %v: lifetime %v may last until %v after the send, past the earliest takeover at %v",
					ttl, delay, life, end.Sub(sent), ttl+takeoverWait)
			}
			if r.Add(life).After(f.deadline) {
				t.Fatalf("TTL %v, ack after %v: lifetime %v ends after the deadline", ttl, delay, life)
			}
			if err := f.fits(r, life); err != nil {
				t.Fatalf("TTL %v, ack after %v: the lifetime allowed does not fit: %v", ttl, delay, err)
			}
		}
		// A prompt acknowledgement always allows a lifetime: the node can
		// hold the address at every accepted TTL.
		f.deadline, f.beat = deadlineAfter(r, ttl), deadlineAfter(r, ttl)
		if f.lifetime(r) < time.Second {
			t.Fatalf("TTL %v: a prompt acknowledgement allows no lifetime", ttl)
		}
	}
}

// TestNodeLifetimeKernelFence: with the kernel fence, whose filter
// silences the VIP at holdUntil to the millisecond, every window the
// parser accepts lets a node add the address whenever its deadline is
// ahead, and the lifetime never leaves a silent copy more than a second
// (plus the kernel's slack) past it; the heartbeat's deadline keeps
// fenceMargin from the earliest takeover (send + window).
func TestNodeLifetimeKernelFence(t *testing.T) {
	r := time.Now()
	for window := minWindow; window <= 3*time.Second; window += 50 * time.Millisecond {
		ttl := max(2*time.Second, window)
		f := &fence{ttl: ttl, elected: true, kernel: true}
		for delay := time.Duration(0); delay < 2*window; delay += 5 * time.Millisecond {
			sent := r.Add(-delay)
			f.deadline, f.beat = deadlineAfter(sent, ttl), beatDeadline(sent, ttl, window)
			until, _ := f.holdUntil()
			if takeover := sent.Add(window); !until.Before(takeover.Add(-fenceMargin(window) + time.Millisecond)) {
				t.Fatalf("window %v: deadline %v after the send, want at least %v before the earliest takeover at %v",
					window, until.Sub(sent), fenceMargin(window), window)
			}
			life := f.lifetime(r)
			if until.After(r) && life < time.Second {
				t.Fatalf("window %v, ack after %v: no lifetime with %v left before the deadline", window, delay, until.Sub(r))
			}
			if !until.After(r) && life >= time.Second && r.Add(life).After(until.Add(time.Second)) {
				t.Fatalf("window %v, ack after %v: lifetime %v past a deadline that has passed", window, delay, life)
			}
			if life >= time.Second && r.Add(life).After(until.Add(time.Second)) {
				t.Fatalf("window %v, ack after %v: lifetime %v outlasts the deadline by more than a second", window, delay, life)
			}
		}
	}
}

// TestNodeRefresh: a prompt acknowledgement refreshes the lifetime, a late
// one is skipped (the older, shorter lifetime stays), and a refresh that
// returned too late to trust steps down and removes the address.
func TestNodeRefresh(t *testing.T) {
	nl := newNodeLab(t, 2*time.Second)
	nl.lead()
	sets := len(nl.kern.sets)
	nl.event(evRenewed, nl.now().Add(-20*time.Millisecond), false)
	if len(nl.kern.sets) != sets+2 || nl.kern.sets[sets] != time.Second {
		t.Fatalf("prompt acknowledgement: lifetimes set %v, want one more of 1s per VIP", nl.kern.sets)
	}
	// The next renewal, sent 400 ms later, came back after 300 ms: no
	// lifetime, and the next renewal is asked for at once, once.
	nl.advance(400 * time.Millisecond)
	pokes := nl.term().pokes
	nl.event(evRenewed, nl.now().Add(-300*time.Millisecond), false)
	nl.event(evRenewed, nl.now().Add(-300*time.Millisecond), false)
	if len(nl.kern.sets) != sets+2 {
		t.Fatalf("late acknowledgement: lifetimes set %v, want none more", nl.kern.sets)
	}
	if nl.term().pokes != pokes+1 {
		t.Fatalf("late acknowledgements asked for %d prompt renewals, want 1", nl.term().pokes-pokes)
	}
	nl.kern.stall = 200 * time.Millisecond
	nl.event(evRenewed, nl.now(), false)
	nl.wantStepDown(errStalled)
}

// TestNodeAddressGone: an address removed while the node holds it is put
// back and announced: at once when the fence still allows a lifetime,
// after an immediate renewal when not; and never after the deadline.
func TestNodeAddressGone(t *testing.T) {
	for _, c := range []struct {
		name   string
		ttl    time.Duration
		since  time.Duration // the last acknowledged send was this long ago
		renew  bool          // an immediate renewal is needed
		expire bool          // and it is not acknowledged before the deadline
	}{
		{"ttl 10s: put back at once", 10 * time.Second, 0, false, false},
		{"ttl 2s: after a renewal", 2 * time.Second, 600 * time.Millisecond, true, false},
		{"ttl 2s: renewal too late", 2 * time.Second, 1400 * time.Millisecond, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			nl := newNodeLab(t, c.ttl)
			nl.lead()
			nl.clk.add(c.since) // the loop had nothing to do since
			delete(nl.kern.held, fakeVIP4)
			frames := len(nl.frames.sent)
			nl.handle(addrGone(fakeVIP4))
			if _, back := nl.kern.held[fakeVIP4]; back == c.renew {
				t.Fatalf("put back at once: %v, want %v", back, !c.renew)
			}
			if nl.term().pokes != 1 { // for the fence, or for the announcement
				t.Fatalf("%d renewals asked for, want 1", nl.term().pokes)
			}
			if c.renew {
				if _, ok := nl.kern.held[fakeVIP4]; ok {
					t.Fatal("put back before the renewal, past the fence")
				}
				if c.expire {
					until, _ := nl.n.fence.holdUntil()
					nl.advance(until.Sub(nl.now()) + time.Millisecond)
					nl.wantStepDown(errDeadline)
					return
				}
				nl.event(evRenewed, nl.now(), false)
			}
			if _, ok := nl.kern.held[fakeVIP4]; !ok || !nl.n.hold.holding {
				t.Fatal("the address was not put back")
			}
			// The announcement waits for a renewal sent after the
			// address came back.
			if len(nl.frames.sent) != frames {
				t.Fatal("announced before etcd vouched for the lease again")
			}
			nl.renewed()
			if len(nl.frames.sent) == frames {
				t.Fatal("the address was put back without an announcement")
			}
		})
	}
}

// TestNodeStepDownTriggers: each trigger ends the leadership, removes the
// address, stops the term and names its reason.
func TestNodeStepDownTriggers(t *testing.T) {
	cases := []struct {
		name   string
		do     func(nl *nodeLab)
		reason error
	}{
		{"deadline", func(nl *nodeLab) {
			until, _ := nl.n.fence.holdUntil()
			nl.advance(until.Sub(nl.now())) // the alarm goes off at the deadline
		}, errDeadline},
		{"lease expired", func(nl *nodeLab) {
			nl.handle(termEvent{t: nl.term(), kind: evLost, err: errLeaseExpired})
		}, errLeaseExpired},
		{"key deleted", func(nl *nodeLab) {
			nl.handle(termEvent{t: nl.term(), kind: evLost, err: fmt.Errorf("%w: deleted", errKeyGone)})
		}, errKeyGone},
		{"link down", func(nl *nodeLab) {
			l := nl.n.view.link
			l.Flags &^= unix.IFF_RUNNING
			nl.handle(rtnlEvent{link: &l})
		}, errLinkDown},
		{"link removed", func(nl *nodeLab) { nl.handle(rtnlEvent{link: &nl.n.view.link, deleted: true}) }, errLinkGone},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nl := newNodeLab(t, 2*time.Second)
			nl.lead()
			c.do(nl)
			nl.wantStepDown(c.reason)
		})
	}
	t.Run("address cannot be added", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second)
		nl.kern.fail = errors.New("operation not permitted")
		now := nl.now()
		nl.event(evGranted, now, false)
		nl.event(evElected, now, true)
		nl.probe()
		nl.wantStepDown(errAddFailed)
		if len(nl.terms) != 1 || nl.n.take.holdOff.Sub(nl.now()) < localRetry/2 {
			t.Fatalf("campaigned again at once (%d terms, hold-off %v): a persistent fault would spin", len(nl.terms), nl.n.take.holdOff.Sub(nl.now()))
		}
		if len(nl.frames.sent) != 0 {
			t.Fatalf("announced %v without the address", nl.frames.sent)
		}
		nl.advance(localRetry)
		if len(nl.terms) != 2 {
			t.Fatalf("%d terms after the hold-off, want a second one", len(nl.terms))
		}
	})
	t.Run("events of an ended term are ignored", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second)
		nl.lead()
		old := nl.term()
		nl.handle(termEvent{t: old, kind: evLost, err: errKeyGone})
		nl.handle(termEvent{t: old, kind: evElected, beat: nl.now().Add(time.Hour), deadline: nl.now().Add(time.Hour), released: true})
		if nl.n.fence.elected || nl.n.take.cancel != nil {
			t.Fatal("an ended term's election was acted on")
		}
	})
}

// TestNodeStopResignsOnlyAfterHolding: the release mark (the next holder
// adds the address at once) is given only by a node that held the address
// and removed it.
func TestNodeStopResignsOnlyAfterHolding(t *testing.T) {
	nl := newNodeLab(t, 2*time.Second)
	nl.lead()
	if nl.handle(syscall.SIGTERM) {
		t.Fatal("the node runs on after SIGTERM")
	}
	if !nl.terms[0].resigned || len(nl.kern.held) != 0 {
		t.Fatalf("holder stopped: resigned %v, addresses left %v", nl.terms[0].resigned, nl.kern.held)
	}

	nl = newNodeLab(t, 2*time.Second)
	now := nl.now()
	nl.event(evGranted, now, false)
	nl.event(evElected, now, false) // still waiting out the slack
	nl.handle(syscall.SIGTERM)
	if nl.terms[0].resigned || !nl.terms[0].stopped {
		t.Fatal("a node that never added the address marked it released")
	}
}

// TestNodeRank: the node publishes its rank as the check's verdict
// changes, and a leader hands over only to a strictly better candidate,
// by the graceful path (address removed, then resign), campaigning again.
func TestNodeRank(t *testing.T) {
	rivalEv := func(nl *nodeLab, r rank) {
		nl.handle(termEvent{t: nl.term(), kind: evRival, rival: rival{entry: entry{name: "n3", rank: r}, known: true}})
	}
	t.Run("health published", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second, "vip.check=tcp://127.0.0.1:6443")
		if nl.n.stand.rank() != (rank{healthy: false, priority: 0}) {
			t.Fatalf("with a check the node starts as %v, want unhealthy until it passes", nl.n.stand.rank())
		}
		nl.handle(healthEvent{healthy: true, reason: "2 checks passed"})
		nl.handle(healthEvent{healthy: true, reason: "again"}) // no change: nothing published
		if got := nl.term().ranks; len(got) != 1 || got[0] != (rank{healthy: true, priority: 0}) {
			t.Fatalf("published %v, want one healthy rank", got)
		}
		if !strings.Contains(nl.log.String(), "rank: unhealthy, priority 0 -> healthy, priority 0 (2 checks passed)") {
			t.Fatalf("the rank change was not logged with its reason:\n%s", nl.log.String())
		}
	})
	t.Run("unhealthy leader hands over at once", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second, "vip.check=tcp://127.0.0.1:6443", "vip.preempt.delay=0")
		nl.handle(healthEvent{healthy: true})
		nl.lead()
		rivalEv(nl, rank{healthy: true, priority: 0}) // equal: stays
		if nl.n.state != stateLeader || len(nl.terms) != 1 {
			t.Fatalf("handed over to an equal rank (state %v, %d terms)", nl.n.state, len(nl.terms))
		}
		nl.handle(healthEvent{healthy: false, reason: "3 checks failed"})
		if nl.n.state != stateCandidate || nl.n.hold.holding || len(nl.kern.held) != 0 {
			t.Fatalf("after turning unhealthy: state %v, holding %v, kernel %v", nl.n.state, nl.n.hold.holding, nl.kern.held)
		}
		if !nl.terms[0].resigned || len(nl.terms) != 2 {
			t.Fatalf("the handover did not resign (%v) and campaign again (%d terms)", nl.terms[0].resigned, len(nl.terms))
		}
		want := "leader -> candidate: handing over to n3 (healthy, priority 0 > unhealthy, priority 0)"
		if !strings.Contains(nl.log.String(), want) {
			t.Fatalf("log lacks %q:\n%s", want, nl.log.String())
		}
	})
	t.Run("all unhealthy: the holder stays", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second, "vip.check=tcp://127.0.0.1:6443", "vip.preempt.delay=0")
		nl.lead()
		rivalEv(nl, rank{healthy: false, priority: 0})
		if nl.n.state != stateLeader {
			t.Fatal("an unhealthy leader left for an unhealthy candidate")
		}
	})
	t.Run("drained: at once, even within the delay; all drained: stays", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second, "vip.name=n1", "vip.preempt.delay=1h")
		nl.lead()
		rivalEv(nl, rank{drained: true, healthy: true})
		nl.handle(drainMarks{"n1": "by=op", "n3": "by=op"})
		if nl.n.state != stateLeader || !strings.Contains(nl.log.String(), "drained, but keeping the VIP: no undrained candidate") {
			t.Fatalf("drained with only drained rivals: state %v\n%s", nl.n.state, nl.log.String())
		}
		if got := nl.term().ranks; len(got) != 1 || !got[0].drained {
			t.Fatalf("published %v, want one drained rank", got)
		}
		nl.handle(drainMarks{"n1": "by=op"}) // n3 undrained; its entry follows
		rivalEv(nl, rank{healthy: true})
		if nl.n.state != stateCandidate || !nl.terms[0].resigned {
			t.Fatalf("drained, an undrained rival: state %v, resigned %v", nl.n.state, nl.terms[0].resigned)
		}
		if !strings.Contains(nl.log.String(), `as "n1" (drained, healthy, priority 0)`) {
			t.Fatalf("the next term does not campaign drained:\n%s", nl.log.String())
		}
		nl.handle(drainMarks{})
		if got := nl.term().ranks; len(got) != 1 || got[0].drained {
			t.Fatalf("after the undrain the node published %v", got)
		}
	})
	t.Run("priority waits for the delay", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second, "vip.preempt.delay=300ms")
		nl.lead()
		rivalEv(nl, rank{healthy: true, priority: 10})
		if nl.n.state != stateLeader {
			t.Fatal("preempted for priority at once")
		}
		nl.advance(299 * time.Millisecond)
		if nl.n.state != stateLeader {
			t.Fatal("preempted for priority before the delay")
		}
		nl.advance(time.Millisecond) // the second look, at the delay
		if nl.n.state != stateCandidate || !nl.terms[0].resigned {
			t.Fatalf("after the delay: state %v, resigned %v", nl.n.state, nl.terms[0].resigned)
		}
	})
}

// TestNodeUnable: a node that cannot add the address ranks itself unable
// for its back-off, publishes its rank again when the back-off ends, and
// the next failure doubles the back-off.
func TestNodeUnable(t *testing.T) {
	nl := newNodeLab(t, 2*time.Second)
	nl.kern.fail = errors.New("operation not permitted")
	nl.win()
	if !nl.n.stand.rank().unable || nl.n.stand.unableBackoff != unableFirst {
		t.Fatalf("after a failure to add: rank %v, back-off %v", nl.n.stand.rank(), nl.n.stand.unableBackoff)
	}
	nl.advance(unableFirst)
	if nl.n.stand.rank().unable {
		t.Fatal("still unable after the back-off")
	}
	if got := nl.term().ranks; len(got) == 0 || got[len(got)-1].unable {
		t.Fatalf("the able rank was not published: %v", got)
	}
	nl.win()
	if nl.n.stand.unableBackoff != 2*unableFirst {
		t.Fatalf("second back-off %v, want %v", nl.n.stand.unableBackoff, 2*unableFirst)
	}
}

// win is the current term's election, granted and elected after a
// released predecessor, through to the probe's result.
func (nl *nodeLab) win() {
	nl.t.Helper()
	now := nl.now()
	nl.event(evGranted, now, false)
	nl.event(evElected, now, true)
	nl.probe()
}

// TestNodeFrozenBetweenAddresses: a process stopped right after one
// address's refresh returned (a pending SIGSTOP takes effect at the
// syscall's return) must not, once resumed, set the next address with the
// lifetime it chose before the stop: the kernel may have expired that
// address meanwhile, and the refresh would add it again while another node
// holds it (a soak found this). The clock is read before every call.
func TestNodeFrozenBetweenAddresses(t *testing.T) {
	nl := newNodeLab(t, 2*time.Second)
	nl.lead()
	sets := len(nl.kern.sets)
	nl.kern.freeze = 1500 * time.Millisecond
	nl.event(evRenewed, nl.now(), false)
	if got := len(nl.kern.sets) - sets; got != 1 {
		t.Fatalf("after the freeze %d more addresses were set, want only the one before it", got-1)
	}
	nl.wantStepDown(errStalled)
}

// TestNodeForeignSquatter (issue 19, defect 6): an elected node that keeps
// finding another host answering for the VIP waits at most squatLimit,
// then says so loudly, counts it and steps aside (a new term, at the end
// of the queue), without ever adding the address. Before, it waited for
// ever while holding the election key.
func TestNodeForeignSquatter(t *testing.T) {
	if b := squatBound(3 * time.Second); b != 5*time.Second {
		t.Errorf("squatBound(3s) = %v, want TTL + 2 s", b)
	}
	nl := newNodeLab(t, 2*time.Second)
	nl.n.take.squatLimit = 300 * time.Millisecond
	squat := func(netip.Addr) (net.HardwareAddr, error) { return net.HardwareAddr{2, 0, 0, 0, 0, 0x66}, nil }
	now := nl.now()
	nl.event(evGranted, now, false)
	nl.event(evElected, now, true)
	first := nl.term()
	for end := nl.now().Add(3 * time.Second); nl.term() == first && nl.now().Before(end); {
		nl.frames.queue(squat)
		nl.probe()
		if nl.n.hold.holding {
			t.Fatal("took the address while another host answered for it")
		}
	}
	if nl.term() == first || !first.stopped {
		t.Fatalf("still waiting in the first term after 3 s (squatLimit %v)", nl.n.take.squatLimit)
	}
	if !errors.Is(nl.n.stepped, errForeign) || nl.n.met.stepdowns[stepForeign].Load() != 1 {
		t.Errorf("stepped down with %v, %d counted as foreign; want errForeign, 1", nl.n.stepped, nl.n.met.stepdowns[stepForeign].Load())
	}
	if !strings.Contains(nl.log.String(), "a foreign host (MAC 02:00:00:00:00:66)") {
		t.Errorf("no alarm in the log:\n%s", nl.log.String())
	}
	if !nl.n.take.squatStart.IsZero() || len(nl.kern.held) != 0 {
		t.Errorf("the next term starts with squatStart %v and addresses %v, want none", nl.n.take.squatStart, nl.kern.held)
	}
}

// TestNodePauseNoStaleAnnouncement (issue 19, a pause no clock sees): an
// announcement that falls due goes out only after etcd acknowledges a
// renewal sent after that moment. A VM paused by its hypervisor past its
// lease resumes with a monotonic clock that saw nothing: its burst tick
// fires, the renewal it asks for is answered "lease not found", and it
// steps down without a frame. Before, the tick sent at once.
func TestNodePauseNoStaleAnnouncement(t *testing.T) {
	nl := newNodeLab(t, 2*time.Second)
	nl.lead()
	frames, pokes := len(nl.frames.sent), nl.term().pokes
	inFlight := nl.now() // a renewal sent before the tick
	nl.fire(&nl.n.hold.burst)
	nl.event(evRenewed, inFlight, false)
	if len(nl.frames.sent) != frames {
		t.Fatalf("announced on a renewal sent before the announcement fell due: %v", nl.frames.sent[frames:])
	}
	if nl.term().pokes != pokes+2 {
		t.Fatalf("%d renewals asked for, want 2 (at the tick, and again after the stale acknowledgement)", nl.term().pokes-pokes)
	}
	nl.handle(termEvent{t: nl.term(), kind: evLost, err: errLeaseExpired})
	nl.wantStepDown(errLeaseExpired)
	if len(nl.frames.sent) != frames {
		t.Fatalf("announced after the lease was gone: %v", nl.frames.sent[frames:])
	}
}

// TestAlarm: an alarm that went off before it was stopped or set again is
// stale when it arrives, and is dropped; stop says whether the alarm was
// still to come.
func TestAlarm(t *testing.T) {
	clk := newFakeClock()
	out := make(chan *alarm, 4)
	a := &alarm{after: clk.afterFunc, out: out}
	a.set(time.Second)
	clk.fireNext(clk.now().Add(time.Second)) // went off: on its way
	if !a.stop() {
		t.Fatal("stop of an alarm not yet taken said it was not armed")
	}
	a.set(time.Second) // again, before the stale one arrives
	if (<-out).take() {
		t.Fatal("the stale alarm was taken")
	}
	clk.fireNext(clk.now().Add(time.Second))
	if !(<-out).take() {
		t.Fatal("the live alarm was dropped")
	}
	if a.stop() {
		t.Fatal("stop after the alarm was taken said it was still armed")
	}
	a.set(time.Second)
	a.stop() // in time: nothing on its way
	a.set(time.Second)
	clk.fireNext(clk.now().Add(time.Second))
	if !(<-out).take() {
		t.Fatal("the alarm set after a timely stop was dropped")
	}
}

// The decisions the node's handlers act on, each a pure function.

func TestFenceOverdue(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lease, beat := t0.Add(1500*time.Millisecond), t0.Add(1200*time.Millisecond)
	for _, c := range []struct {
		name string
		f    fence
		now  time.Time
		want bool
	}{
		{"candidate past its lease: nothing to fence", fence{deadline: lease}, lease.Add(time.Second), false},
		{"leader without a lease", fence{elected: true}, lease, false},
		{"leader before the heartbeat's deadline", fence{elected: true, deadline: lease, beat: beat}, beat.Add(-time.Nanosecond), false},
		{"leader at the heartbeat's deadline", fence{elected: true, deadline: lease, beat: beat}, beat, true},
		{"leader past the lease's deadline", fence{elected: true, deadline: beat, beat: lease}, lease, true},
	} {
		err := c.f.overdue(c.now)
		if (err != nil) != c.want || (err != nil && !errors.Is(err, errDeadline)) {
			t.Errorf("%s: overdue = %v, want overdue %v", c.name, err, c.want)
		}
	}
}

func TestLinkEvent(t *testing.T) {
	eth0 := linkView{iface: "eth0", have: true, link: linkMessage{Index: 2, Name: "eth0"}}
	none := linkView{iface: "eth0"}
	auto := linkView{iface: "auto"}
	for _, c := range []struct {
		name    string
		v       linkView
		l       linkMessage
		deleted bool
		want    linkEventStep
	}{
		{"our link changed", eth0, linkMessage{Index: 2, Name: "eth0"}, false, linkChanged},
		{"our link removed", eth0, linkMessage{Index: 2}, true, linkRemoved},
		{"another link", eth0, linkMessage{Index: 3, Name: "eth1"}, false, linkIgnore},
		{"our interface appears", none, linkMessage{Index: 2, Name: "eth0"}, false, linkResync},
		{"another interface appears", none, linkMessage{Index: 3, Name: "eth1"}, false, linkIgnore},
		{"a link is removed while we have none", none, linkMessage{Index: 2, Name: "eth0"}, true, linkIgnore},
		{"auto: any link may be ours", auto, linkMessage{Index: 3, Name: "eth1"}, false, linkResync},
	} {
		if got := linkEvent(&c.v, c.l, c.deleted); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestLinkDecide: what a kernel message asks of the node, through
// linkEvent and addrEvent; a copy of the VIP that we do not hold the view
// removes itself.
func TestLinkDecide(t *testing.T) {
	eth0 := linkMessage{Index: 2, Name: "eth0"}
	other := netip.MustParsePrefix("192.0.2.7/24")
	addr := func(p netip.Prefix, index uint32, deleted bool) rtnlEvent {
		return rtnlEvent{addr: &addrMessage{Family: unix.AF_INET, PrefixLen: uint8(p.Bits()), Index: index, Address: p.Addr(), Local: p.Addr()}, deleted: deleted}
	}
	for _, c := range []struct {
		name              string
		ev                rtnlEvent
		holding, resuming bool
		want              rtnlStep
		dels              int
	}{
		{"events lost", rtnlEvent{resync: true}, false, false, rtnlResync, 0},
		{"an error", rtnlEvent{err: errors.New("boom")}, false, false, rtnlIgnore, 0},
		{"our link changed", rtnlEvent{link: &eth0}, false, false, rtnlLink, 0},
		{"our link removed", rtnlEvent{link: &eth0, deleted: true}, true, false, rtnlLink, 0},
		{"another address of our link", addr(other, 2, false), false, false, rtnlAbleAgain, 0},
		{"an address of another link", addr(other, 3, false), false, false, rtnlIgnore, 0},
		{"the VIP went while we hold it", addr(fakeVIP4, 2, true), true, false, rtnlPutBack, 0},
		{"the VIP went while we do not", addr(fakeVIP4, 2, true), false, false, rtnlIgnore, 0},
		{"a copy of the VIP appeared", addr(fakeVIP4, 2, false), false, false, rtnlIgnore, 1},
		{"the earlier run's copy while resuming", addr(fakeVIP4, 2, false), false, true, rtnlIgnore, 0},
		{"our own VIP appeared", addr(fakeVIP4, 2, false), true, false, rtnlIgnore, 0},
	} {
		kern := &fakeKernel{held: map[netip.Prefix]time.Duration{fakeVIP4: time.Second}}
		v := linkView{iface: "eth0", vips: []netip.Prefix{fakeVIP4, fakeVIP6}, kern: kern, log: &logger{w: &lab.SyncBuffer{}}, have: true, link: eth0}
		d := v.decide(c.ev, c.holding, c.resuming, stateCandidate)
		if d.step != c.want || kern.dels != c.dels {
			t.Errorf("%s: step %v with %d removals, want %v with %d", c.name, d.step, kern.dels, c.want, c.dels)
		}
		if d.step == rtnlLink && d.ok != !c.ev.deleted {
			t.Errorf("%s: link ok %v, want %v", c.name, d.ok, !c.ev.deleted)
		}
	}
}

func TestPlanLink(t *testing.T) {
	mac1, mac2 := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	up := func(mac net.HardwareAddr) linkMessage {
		return linkMessage{Index: 2, Name: "eth0", Flags: unix.IFF_UP | unix.IFF_RUNNING, HardwareAddr: mac}
	}
	down := linkMessage{Index: 2, Name: "eth0", Flags: unix.IFF_UP, HardwareAddr: mac1}
	usable := linkView{have: true, link: up(mac1), frames: &fakeFrames{}}
	usableNoFrames := linkView{have: true, link: up(mac1)}
	wasDown := linkView{have: true, link: down}
	for _, c := range []struct {
		name             string
		old              linkView
		l                linkMessage
		ok               bool
		waiting, holding bool
		want             linkPlan
	}{
		{"nothing changed", usable, up(mac1), true, false, true, linkPlan{}},
		{"nothing changed, no sockets yet", usableNoFrames, up(mac1), true, false, false, linkPlan{openFrames: true}},
		{"down", usable, down, true, false, true, linkPlan{closeFrames: true, ableAgain: true, step: linkDown}},
		{"gone", usable, linkMessage{}, false, false, true, linkPlan{closeFrames: true, step: linkGone}},
		{"up", wasDown, up(mac1), true, true, false, linkPlan{openFrames: true, ableAgain: true, step: linkUp}},
		{"still down", wasDown, down, true, true, false, linkPlan{step: linkWaiting}},
		{"still missing", linkView{}, linkMessage{}, false, true, false, linkPlan{step: linkWaiting}},
		{"new MAC while holding", usable, up(mac2), true, false, true, linkPlan{closeFrames: true, openFrames: true, ableAgain: true, step: linkNewMAC}},
		{"new MAC as a candidate", usable, up(mac2), true, false, false, linkPlan{closeFrames: true, openFrames: true, ableAgain: true}},
	} {
		if got := planLink(&c.old, c.l, c.ok, c.waiting, c.holding); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestAddrEvent(t *testing.T) {
	eth0 := linkView{iface: "eth0", have: true, link: linkMessage{Index: 2, Name: "eth0"}}
	on := func(index uint32) addrMessage { return addrMessage{Index: index} }
	for _, c := range []struct {
		name                            string
		v                               linkView
		a                               addrMessage
		deleted, vip, holding, resuming bool
		want                            addrStep
	}{
		{"auto, no link yet: an address arrives", linkView{iface: "auto"}, on(3), false, false, false, false, addrResync},
		{"auto, no link yet: an address goes", linkView{iface: "auto"}, on(3), true, false, false, false, addrIgnore},
		{"no link yet", linkView{iface: "eth0"}, on(2), false, true, false, false, addrIgnore},
		{"another link", eth0, on(3), true, true, true, false, addrIgnore},
		{"another address of ours", eth0, on(2), false, false, true, false, addrOther},
		{"the VIP went while held", eth0, on(2), true, true, true, false, addrPutBack},
		{"the VIP went while not held", eth0, on(2), true, true, false, false, addrIgnore},
		{"a copy of the VIP appears", eth0, on(2), false, true, false, false, addrRemoveCopy},
		{"a copy of the VIP while resuming", eth0, on(2), false, true, false, true, addrIgnore},
		{"our own VIP added", eth0, on(2), false, true, true, false, addrIgnore},
	} {
		if got := addrEvent(&c.v, c.a, c.deleted, c.vip, c.holding, c.resuming); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestProbeOutcome(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 0x66}
	for _, c := range []struct {
		name       string
		r          probeResult
		seq        int
		inProgress bool
		want       probeStep
	}{
		{"quiet", probeResult{seq: 3}, 3, true, probeTake},
		{"answered", probeResult{seq: 3, foreign: mac}, 3, true, probeSquatter},
		{"failed", probeResult{seq: 3, err: errors.New("closed")}, 3, true, probeFailed},
		{"an earlier round's", probeResult{seq: 2}, 3, true, probeStale},
		{"after the round was stopped", probeResult{seq: 3}, 3, false, probeStale},
	} {
		if got := probeOutcome(c.r, c.seq, c.inProgress); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestTakeoverDelay(t *testing.T) {
	for _, c := range []struct {
		released bool
		window   time.Duration
		want     time.Duration
	}{
		{true, 20 * time.Millisecond, 0},
		{true, 0, 0},
		{false, 0, takeoverWait},
		{false, 20 * time.Millisecond, takeoverWait - 20*time.Millisecond},
		{false, time.Second, 0}, // a probe longer than the wait covers it
	} {
		if got := takeoverDelay(c.released, c.window); got != c.want {
			t.Errorf("released %v, probe %v: wait %v, want %v", c.released, c.window, got, c.want)
		}
	}
}

func TestRefreshPlan(t *testing.T) {
	for _, c := range []struct {
		life    time.Duration
		retried bool
		want    refreshStep
	}{
		{time.Second, false, refreshSet},
		{time.Second, true, refreshSet},
		{0, false, refreshRenewNow},
		{0, true, refreshKeep},
		{-time.Second, false, refreshRenewNow},
	} {
		if got := refreshPlan(c.life, c.retried); got != c.want {
			t.Errorf("lifetime %v, retried %v: %v, want %v", c.life, c.retried, got, c.want)
		}
	}
}

func TestPendingStep(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name           string
		pending        string
		since, vouched time.Time
		want           announceStep
	}{
		{"none pending", "", t0, t0.Add(time.Second), announceNothing},
		{"vouched for by a renewal sent later", "refresh", t0, t0.Add(time.Millisecond), announceSend},
		{"a renewal sent at the same moment", "refresh", t0, t0, announceAskAgain},
		{"a renewal sent before", "refresh", t0, t0.Add(-time.Millisecond), announceAskAgain},
	} {
		if got := pendingStep(c.pending, c.since, c.vouched); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestNodeBootstrap: the node vip.bootstrap names takes the VIP without an
// election while etcd is silent (after a clean probe), holds it with its
// own timer, and keeps it without a gap when its term is elected after
// etcd's first answer; elected elsewhere, its hold lapses within a TTL of
// that answer. A foreign answer to the probe keeps it off the address;
// once etcd has answered, a new term does not hold without an election.
func TestNodeBootstrap(t *testing.T) {
	const ttl = 2 * time.Second
	vip4 := netip.MustParsePrefix("192.0.2.100/32")
	bootLab := func(t *testing.T) *nodeLab {
		nl := newNodeLab(t, ttl, "vip.bootstrap=n1")
		if !nl.n.boot.on {
			t.Fatalf("no bootstrap hold under way\n%s", nl.log.String())
		}
		nl.probe()
		if !nl.n.hold.holding || nl.n.state != stateBootstrap || nl.kern.held[vip4] == 0 ||
			!strings.Contains(nl.log.String(), "candidate -> bootstrap: without an election (bootstrap); added 192.0.2.100/32,2001:db8::100/128") {
			t.Fatalf("after a clean probe: state %v, holding %v, kernel %v\n%s", nl.n.state, nl.n.hold.holding, nl.kern.held, nl.log.String())
		}
		return nl
	}
	t.Run("held by its own timer while etcd is silent", func(t *testing.T) {
		nl := bootLab(t)
		nl.advance(10 * ttl)
		if !nl.n.hold.holding || nl.n.state != stateBootstrap || nl.kern.held[vip4] == 0 || nl.kern.held[vip4] > ttl {
			t.Fatalf("ten TTLs on: state %v, kernel %v (lifetime at most the TTL)", nl.n.state, nl.kern.held)
		}
	})
	t.Run("elected after etcd answers: kept without a gap", func(t *testing.T) {
		nl := bootLab(t)
		nl.advance(ttl)
		nl.event(evGranted, nl.now(), false)
		nl.event(evElected, nl.now(), false) // no release mark: no previous holder
		if nl.n.state != stateLeader || !nl.n.hold.holding || nl.n.take.cancel != nil {
			t.Fatalf("elected: state %v, holding %v, probing %v", nl.n.state, nl.n.hold.holding, nl.n.take.cancel != nil)
		}
		if nl.kern.dels != 0 {
			t.Fatalf("the address was removed (%d deletions) on the way from bootstrap to leader", nl.kern.dels)
		}
		if !strings.Contains(nl.log.String(), "elected; kept the bootstrap hold's address") {
			t.Fatalf("log:\n%s", nl.log.String())
		}
		nl.advance(ttl / 2)
		nl.renewed()
		nl.advance(ttl / 2)
		if nl.n.state != stateLeader {
			t.Fatalf("the elected leader lost the VIP: %v", nl.n.stepped)
		}
	})
	t.Run("elected late in its lease: leader at once, the lifetime at the renewal", func(t *testing.T) {
		nl := bootLab(t)
		nl.event(evGranted, nl.now(), false)
		nl.event(evElected, nl.now().Add(-1200*time.Millisecond), false) // too little left for a lifetime
		if nl.n.state != stateLeader || !nl.n.hold.holding || nl.kern.dels != 0 || nl.n.boot.unwatch != nil {
			t.Fatalf("elected with little lease left: state %v, holding %v, deletions %d", nl.n.state, nl.n.hold.holding, nl.kern.dels)
		}
		nl.renewed()
		if nl.n.state != stateLeader || nl.kern.held[vip4] == 0 {
			t.Fatalf("after the renewal: state %v, kernel %v", nl.n.state, nl.kern.held)
		}
	})
	t.Run("elected elsewhere: the hold lapses within a TTL", func(t *testing.T) {
		nl := bootLab(t)
		nl.event(evGranted, nl.now(), false)
		t0 := nl.now()
		for nl.n.hold.holding && nl.now().Sub(t0) < 2*ttl {
			nl.advance(100 * time.Millisecond)
			nl.event(evRenewed, nl.now(), false) // the candidate's lease goes on
		}
		if nl.n.hold.holding || len(nl.kern.held) != 0 || !errors.Is(nl.n.stepped, errBootEnded) {
			t.Fatalf("not elected: holding %v, kernel %v, stepped %v", nl.n.hold.holding, nl.kern.held, nl.n.stepped)
		}
		if took := nl.now().Sub(t0); took > ttl {
			t.Fatalf("the hold lasted %v after etcd answered, want at most the TTL", took)
		}
		if nl.n.boot.on || nl.n.state != stateCandidate {
			t.Fatalf("after the hold: bootstrap %v, state %v", nl.n.boot.on, nl.n.state)
		}
	})
	t.Run("another host claims the VIP: let go at once", func(t *testing.T) {
		nl := bootLab(t)
		if nl.n.boot.unwatch == nil {
			t.Fatal("no watch for claims while holding without an election")
		}
		other := net.HardwareAddr{2, 0, 0x5e, 0, 0x53, 2}
		nl.handle(claimSeen{ip: vip4.Addr(), mac: other})
		if nl.n.hold.holding || len(nl.kern.held) != 0 || !errors.Is(nl.n.stepped, errBootYield) || nl.n.boot.unwatch != nil {
			t.Fatalf("after another host's claim: holding %v, kernel %v, stepped %v", nl.n.hold.holding, nl.kern.held, nl.n.stepped)
		}
		if nl.n.boot.on || nl.n.take.wait.armed || nl.n.take.cancel != nil {
			t.Fatal("a bootstrap holder that let go for a claim tries to take the VIP again")
		}
		if !strings.Contains(nl.log.String(), "02:00:5e:00:53:02 answers for 192.0.2.100") {
			t.Fatalf("log:\n%s", nl.log.String())
		}
	})
	t.Run("elected: the watch ends, a late claim is nothing", func(t *testing.T) {
		nl := bootLab(t)
		nl.event(evGranted, nl.now(), false)
		nl.event(evElected, nl.now(), false)
		if nl.n.boot.unwatch != nil {
			t.Fatal("the watch for claims outlived the bootstrap hold")
		}
		nl.handle(claimSeen{ip: vip4.Addr(), mac: net.HardwareAddr{2, 0, 0x5e, 0, 0x53, 2}})
		if nl.n.state != stateLeader {
			t.Fatalf("an elected leader stepped down for a stale claim: %v", nl.n.stepped)
		}
	})
	t.Run("another host answers: no take", func(t *testing.T) {
		nl := newNodeLab(t, ttl, "vip.bootstrap=n1")
		nl.frames.queue(func(netip.Addr) (net.HardwareAddr, error) { return net.HardwareAddr{2, 0, 0x5e, 0, 0x53, 9}, nil })
		nl.probe()
		if nl.n.hold.holding || len(nl.kern.held) != 0 || nl.n.boot.on || !nl.n.boot.seen || nl.n.take.wait.armed {
			t.Fatalf("another host answers: kernel %v, bootstrap on %v, over %v, probing again %v", nl.kern.held, nl.n.boot.on, nl.n.boot.seen, nl.n.take.wait.armed)
		}
		nl.advance(5 * ttl) // nothing lapses, nothing is taken: an ordinary candidate
		if nl.n.hold.holding || nl.n.state != stateCandidate || len(nl.terms) != 1 {
			t.Fatalf("after the bootstrap ended: state %v, %d terms", nl.n.state, len(nl.terms))
		}
	})
	t.Run("not named, or etcd answered before: none", func(t *testing.T) {
		nl := newNodeLab(t, ttl, "vip.bootstrap=n2")
		if nl.n.boot.on || nl.n.take.cancel != nil || nl.n.take.wait.armed {
			t.Fatal("a node vip.bootstrap does not name takes the VIP")
		}
		nl = newNodeLabWith(t, ttl, func(nl *nodeLab) { nl.n.boot.seen = true }, "vip.bootstrap=n1")
		if nl.n.boot.on {
			t.Fatal("bootstrap after etcd had answered")
		}
	})
}

// fakeKernelFence records the deadlines the node gives its kernel fence.
type fakeKernelFence struct {
	attached  uint32
	sets      []time.Time
	attachErr error // attach fails (and leaves the fence detached)
}

func (f *fakeKernelFence) attach(ifindex uint32) error {
	if f.attachErr != nil {
		f.attached = 0
		return f.attachErr
	}
	f.attached = ifindex
	return nil
}
func (f *fakeKernelFence) set(until time.Time) error {
	if len(f.sets) == 0 || !f.sets[len(f.sets)-1].Equal(until) {
		f.sets = append(f.sets, until)
	}
	return nil
}
func (f *fakeKernelFence) inForce() bool { return f.attached != 0 }
func (f *fakeKernelFence) check() error  { return nil }
func (f *fakeKernelFence) last() time.Time {
	if len(f.sets) == 0 {
		return time.Time{}
	}
	return f.sets[len(f.sets)-1]
}

// TestNodeKernelFenced: with its kernel fence attached, a node campaigns
// with the configured window (advertised in its entry); elected after a
// fenced holder it takes the address without the takeover wait, with a
// lifetime although less than a second is left before its deadline (the
// filter, not the lifetime, is the fence then), and gives the filter
// that deadline before the first announcement; past it, the filter is
// closed. Without the fence the same settings campaign by the TTL rule.
func TestNodeKernelFenced(t *testing.T) {
	const ttl, window = 2 * time.Second, 500 * time.Millisecond
	for _, fenced := range []bool{true, false} {
		t.Run(fmt.Sprintf("fenced=%v", fenced), func(t *testing.T) {
			var kf *fakeKernelFence
			var cfgs []electConfig
			nl := newNodeLabWith(t, ttl, func(nl *nodeLab) {
				if fenced {
					kf = &fakeKernelFence{}
					nl.n.deps.kfence = kf
				}
				inner := nl.n.deps.newTerm
				nl.n.deps.newTerm = func(c electConfig, ch chan<- termEvent) campaigner {
					cfgs = append(cfgs, c)
					return inner(c, ch)
				}
			}, "vip.window="+window.String())
			want := time.Duration(0)
			if fenced {
				want = window
			}
			if cfgs[0].window != want || nl.n.fence.kernel != fenced {
				t.Fatalf("campaigned with window %v (kernel fence %v), want %v", cfgs[0].window, nl.n.fence.kernel, want)
			}
			if !fenced {
				return
			}
			now := nl.now()
			nl.event(evGranted, now, false)
			nl.handle(termEvent{t: nl.term(), kind: evElected, ttl: ttl, fenced: true, vouched: now,
				deadline: deadlineAfter(now, ttl), beat: beatDeadline(now, ttl, window)})
			if d := nl.probe(); d > nl.n.cfg.Probe {
				t.Fatalf("took the address %v after the election: a fenced predecessor needs no takeover wait", d)
			}
			if !nl.n.hold.holding {
				t.Fatalf("not holding with %v left before the deadline", time.Until(beatDeadline(now, ttl, window)))
			}
			if life := nl.kern.held[fakeVIP4]; life != time.Second {
				t.Fatalf("lifetime %v, want 1s", life)
			}
			if got := kf.last(); !got.Equal(beatDeadline(now, ttl, window)) {
				t.Fatalf("kernel fence deadline %v, want the heartbeat's %v", got, beatDeadline(now, ttl, window))
			}
			for nl.clk.fireNext(now.Add(window)) {
				nl.pump()
			}
			if nl.n.hold.holding || !kf.last().IsZero() {
				t.Fatalf("past the deadline: holding %v, kernel fence deadline %v (want closed)", nl.n.hold.holding, kf.last())
			}
		})
	}
}

// TestNodeKernelFenceLost: a holder whose term advertised the fenced
// window and whose fence can no longer be attached (its link changed)
// steps down, counted as link_down, and campaigns again by the TTL rule.
func TestNodeKernelFenceLost(t *testing.T) {
	kf := &fakeKernelFence{}
	var cfgs []electConfig
	nl := newNodeLabWith(t, 2*time.Second, func(nl *nodeLab) {
		nl.n.deps.kfence = kf
		inner := nl.n.deps.newTerm
		nl.n.deps.newTerm = func(c electConfig, ch chan<- termEvent) campaigner {
			cfgs = append(cfgs, c)
			return inner(c, ch)
		}
	}, "vip.window=500ms")
	nl.lead()
	kf.attachErr = errors.New("kernel fence: attach the filter: no such device")
	l := nl.n.view.link
	l.HardwareAddr = net.HardwareAddr{2, 0, 0x5e, 0, 0x53, 9}
	nl.handle(rtnlEvent{link: &l})
	nl.wantStepDown(errFenceLost)
	if r := stepReasonOf(nl.n.stepped); r != stepLinkDown {
		t.Errorf("counted as %v, want link_down", r)
	}
	nl.pump()
	if len(cfgs) < 2 || cfgs[0].window != 500*time.Millisecond || cfgs[len(cfgs)-1].window != 0 {
		var ws []time.Duration
		for _, c := range cfgs {
			ws = append(ws, c.window)
		}
		t.Fatalf("terms campaigned with windows %v, want 500ms, then 0 (the TTL rule)", ws)
	}
}

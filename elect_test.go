package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"vipd/test/lab"
)

// TestHolderView follows a holder's key through polls and watch events:
// only a mod revision that stood still for the holder's TTL, counted from
// when it was first seen, makes the holder stale.
// fencedKV is a holder's election key whose entry advertises a kernel
// fence of window ms.
func fencedKV(key string, create, mod int64, window int) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(key), CreateRevision: create, ModRevision: mod, Lease: 7,
		Value: []byte(fmt.Sprintf("n1 healthy 0 since=1 beat=2 fence=%d", window))}
}

func TestHolderView(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	kv := func(key string, create, mod int64) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte(key), CreateRevision: create, ModRevision: mod, Lease: 7, Value: []byte("n1")}
	}
	type step struct {
		poll  *mvccpb.KeyValue // observe
		watch *mvccpb.KeyValue // heard
		ttl   time.Duration    // set when the lookup answers (0: unchanged)
		at    int              // ms after t0
		stale bool             // stale() at this step's time
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"unknown TTL is never stale", []step{
			{poll: kv("/k/a", 5, 9), at: 0},
			{poll: kv("/k/a", 5, 9), at: 10000, stale: false},
		}},
		{"a holder fenced in the kernel: the window it advertises", []step{
			{poll: fencedKV("/k/a", 5, 9, 500), ttl: 2 * time.Second, at: 0},
			{poll: fencedKV("/k/a", 5, 9, 500), at: 499, stale: false},
			{poll: fencedKV("/k/a", 5, 9, 500), at: 500, stale: true},
		}},
		{"a heartbeat without the fence brings the TTL back", []step{
			{poll: fencedKV("/k/a", 5, 9, 500), ttl: 2 * time.Second, at: 0},
			{watch: kv("/k/a", 5, 12), at: 100},
			{poll: kv("/k/a", 5, 12), at: 700, stale: false},
			{poll: kv("/k/a", 5, 12), at: 2100, stale: true},
		}},
		{"stands still for the TTL", []step{
			{poll: kv("/k/a", 5, 9), ttl: 2 * time.Second, at: 0},
			{poll: kv("/k/a", 5, 9), at: 1999, stale: false},
			{poll: kv("/k/a", 5, 9), at: 2000, stale: true},
		}},
		{"a heartbeat seen by a poll starts the count again", []step{
			{poll: kv("/k/a", 5, 9), ttl: 2 * time.Second, at: 0},
			{poll: kv("/k/a", 5, 12), at: 1500},
			{poll: kv("/k/a", 5, 12), at: 3000, stale: false},
			{poll: kv("/k/a", 5, 12), at: 3500, stale: true},
		}},
		{"a heartbeat heard on the watch starts the count again", []step{
			{poll: kv("/k/a", 5, 9), ttl: 2 * time.Second, at: 0},
			{watch: kv("/k/a", 5, 12), at: 1900},
			{poll: kv("/k/a", 5, 12), at: 2500, stale: false},
			{poll: kv("/k/a", 5, 12), at: 3900, stale: true},
		}},
		{"a poll older than the watch does not go back", []step{
			{poll: kv("/k/a", 5, 9), ttl: 2 * time.Second, at: 0},
			{watch: kv("/k/a", 5, 12), at: 100},
			{poll: kv("/k/a", 5, 9), at: 200},
			{poll: kv("/k/a", 5, 12), at: 2099, stale: false},
			{poll: kv("/k/a", 5, 12), at: 2100, stale: true},
		}},
		{"other keys on the watch are not the holder's heartbeat", []step{
			{poll: kv("/k/a", 5, 9), ttl: 2 * time.Second, at: 0},
			{watch: kv("/k/b", 20, 21), at: 1000},
			{watch: kv("/k/a", 30, 31), at: 1500}, // the key again, but created anew
			{poll: kv("/k/a", 5, 9), at: 2000, stale: true},
		}},
		{"a new holder needs its own TTL and its own count", []step{
			{poll: kv("/k/a", 5, 9), ttl: 2 * time.Second, at: 0},
			{poll: kv("/k/b", 8, 40), at: 2500, stale: false},
			{poll: kv("/k/b", 8, 40), at: 4600, stale: false}, // the TTL lookup has not answered
			{ttl: 3 * time.Second, at: 4700, stale: false},
			{poll: kv("/k/b", 8, 40), at: 5499, stale: false},
			{poll: kv("/k/b", 8, 40), at: 5500, stale: true},
		}},
		{"the same holder keeps its TTL across heartbeats", []step{
			{poll: kv("/k/a", 5, 9), ttl: 2 * time.Second, at: 0},
			{poll: kv("/k/a", 5, 10), at: 400},
			{poll: kv("/k/a", 5, 10), at: 2400, stale: true},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h holderView
			for i, s := range c.steps {
				now := at(s.at)
				if s.poll != nil {
					h.observe(s.poll, now)
				}
				if s.watch != nil {
					h.heard(s.watch, now)
				}
				if s.ttl != 0 {
					h.ttl = s.ttl
				}
				if got := h.stale(now); got != s.stale {
					t.Fatalf("step %d (%d ms): stale = %v, want %v (view %+v)", i, s.at, got, s.stale, h)
				}
			}
		})
	}
}

// stuckWatcher is a watch stream bound to an etcd member that has
// vanished: creating a watch waits until its context ends. It counts the
// watches on each key that are still open.
type stuckWatcher struct {
	mu   sync.Mutex
	open map[string]int
}

func (w *stuckWatcher) Watch(ctx context.Context, key string, _ ...clientv3.OpOption) clientv3.WatchChan {
	w.mu.Lock()
	w.open[key]++
	w.mu.Unlock()
	<-ctx.Done()
	w.mu.Lock()
	w.open[key]--
	w.mu.Unlock()
	ch := make(chan clientv3.WatchResponse)
	close(ch)
	return ch
}

func (w *stuckWatcher) openOn(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.open[key]
}

func (w *stuckWatcher) RequestProgress(context.Context) error { return nil }
func (w *stuckWatcher) Close() error                          { return nil }

// TestElectionGoesRoundStuckWatches: with every watch stuck (as on a stream
// bound to a vanished etcd member), a candidate still learns by its polls
// that the holder is gone and wins; and once it leads, no watch of the
// election prefix is left open (nobody would read it, and the etcd client
// would buffer every write under the prefix for as long as it leads).
func TestElectionGoesRoundStuckWatches(t *testing.T) {
	t.Parallel()
	cli := loopbackEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const prefix = "/vipd/stuck"
	// The holder keeps its 2 s lease alive and beats as a vipd leader does;
	// the candidate, whose watches hear nothing, polls while the heartbeat
	// seems quiet.
	holder, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	holderKey := fmt.Sprintf("%s/%x", prefix, holder.ID)
	if _, err := cli.Put(ctx, holderKey, "holder", clientv3.WithLease(holder.ID)); err != nil {
		t.Fatal(err)
	}
	beatCtx, stopBeats := context.WithCancel(ctx)
	defer stopBeats()
	if _, err := cli.KeepAlive(beatCtx, holder.ID); err != nil {
		t.Fatal(err)
	}
	go func() {
		tick := time.NewTicker(2 * time.Second / leaderRenewalsPerTTL)
		defer tick.Stop()
		for {
			select {
			case <-beatCtx.Done():
				return
			case <-tick.C:
				cli.Txn(beatCtx).If(clientv3.Compare(clientv3.Version(holderKey), ">", 0)).Then(beatOp(holderKey, "holder")).Commit()
			}
		}
	}()
	w := &stuckWatcher{open: map[string]int{}}
	cli.Watcher = w

	tm := startTestTerm(t, cli, prefix, "n1", rank{}, nil)
	tm.next(t, evGranted, 5*time.Second)
	time.Sleep(3 * time.Second) // the candidate is waiting behind the holder, which stays
	stopBeats()
	if resp, err := cli.Get(ctx, holderKey); err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("the beating holder's key was removed (err %v): a quiet watch was taken for a quiet holder", err)
	}
	if _, err := cli.Revoke(ctx, holder.ID); err != nil {
		t.Fatal(err)
	}
	ev := tm.next(t, evElected, 2*time.Second)
	if ev.released {
		t.Error("elected as if the holder had released the address; it was revoked without a mark")
	}
	lab.WaitFor(t, 2*time.Second, "the leader poll's watch to be cancelled", func() bool { return w.openOn(prefix+"/") == 0 })
}

// The term's pure decisions.

func TestTermLeaseTiming(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cases := []struct {
		requested time.Duration
		granted   int64
		ttl       time.Duration // effectiveTTL
		margin    time.Duration
		interval  [2]time.Duration // candidate's, leader's
	}{
		{2 * time.Second, 2, 2 * time.Second, 500 * time.Millisecond, [2]time.Duration{666666666, 500 * time.Millisecond}},
		{3 * time.Second, 3, 3 * time.Second, 750 * time.Millisecond, [2]time.Duration{time.Second, 750 * time.Millisecond}},
		// A fractional request is granted rounded up; the shorter one rules.
		{2500 * time.Millisecond, 3, 2500 * time.Millisecond, 625 * time.Millisecond, [2]time.Duration{833333333, 625 * time.Millisecond}},
		// The server raised the TTL: the granted one rules.
		{1 * time.Second, 2, 2 * time.Second, 500 * time.Millisecond, [2]time.Duration{666666666, 500 * time.Millisecond}},
		// Short TTLs keep half a second of margin.
		{1 * time.Second, 1, 1 * time.Second, 500 * time.Millisecond, [2]time.Duration{333333333, 250 * time.Millisecond}},
		{10 * time.Second, 10, 10 * time.Second, 2500 * time.Millisecond, [2]time.Duration{3333333333, 2500 * time.Millisecond}},
	}
	for _, c := range cases {
		ttl := effectiveTTL(c.requested, c.granted)
		if ttl != c.ttl {
			t.Errorf("effectiveTTL(%v, %d) = %v, want %v", c.requested, c.granted, ttl, c.ttl)
		}
		if m := margin(ttl); m != c.margin {
			t.Errorf("margin(%v) = %v, want %v", ttl, m, c.margin)
		}
		if d := deadlineAfter(t0, ttl); !d.Equal(t0.Add(ttl - c.margin)) {
			t.Errorf("deadlineAfter(t0, %v) = t0+%v, want t0+%v", ttl, d.Sub(t0), ttl-c.margin)
		}
		if got := [2]time.Duration{renewalInterval(ttl, false), renewalInterval(ttl, true)}; got != c.interval {
			t.Errorf("renewalInterval(%v) = %v, want %v", ttl, got, c.interval)
		}
	}
}

func TestTermNextRenewal(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const interval = 500 * time.Millisecond
	cases := []struct {
		after renewalAfter
		want  time.Duration
	}{
		{afterTick(false), interval},
		{afterTick(true), backoffMin},
		{afterClaim(true), interval},
		{afterClaim(false), takeoverWait * 3 / 4},
	}
	for _, c := range cases {
		if got := nextRenewal(t0, interval, c.after).Sub(t0); got != c.want {
			t.Errorf("nextRenewal after %d = t0+%v, want t0+%v", c.after, got, c.want)
		}
	}
	// Before the takeover wait ends, so that the fence allows the new
	// holder a lifetime at once.
	if takeoverWait*3/4 >= takeoverWait {
		t.Error("the renewal after an unreleased claim comes after the takeover wait")
	}
}

func TestTermRetryTiming(t *testing.T) {
	backoffs := []time.Duration{backoffMin}
	for b := backoffMin; b < backoffMax; {
		b = nextBackoff(b)
		backoffs = append(backoffs, b)
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 2000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if fmt.Sprint(backoffs) != fmt.Sprint(want) {
		t.Errorf("backoffs %v, want %v", backoffs, want)
	}
	if got := nextBackoff(backoffMax); got != backoffMax {
		t.Errorf("nextBackoff(max) = %v", got)
	}
	for _, c := range []struct{ ttl, want time.Duration }{
		{time.Second, 500 * time.Millisecond},
		{3 * time.Second, 750 * time.Millisecond},
		{20 * time.Second, rpcTimeout},
	} {
		if got := grantTimeout(c.ttl); got != c.want {
			t.Errorf("grantTimeout(%v) = %v, want %v", c.ttl, got, c.want)
		}
	}
}

// TestTermPollTick: what a candidate's poll does at each tick, as the
// holder's heartbeat moves, goes quiet and stands still.
func TestTermPollTick(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	known := holderView{key: "/k/a", createRev: 5, modRev: 9, since: t0, ttl: 2 * time.Second}
	fenced := known
	fenced.fenced = 600 * time.Millisecond
	cases := []struct {
		name     string
		h        holderView
		at       int
		wasQuiet bool
		want     tickAction
	}{
		{"holder unknown: ask, touching the members once", holderView{}, 0, false, tickQuiet},
		{"holder unknown, already quiet", holderView{}, 0, true, tickPoll},
		{"heartbeat just seen", known, 100, false, tickWait},
		{"within a renewal interval and a twelfth of the TTL", known, 666, false, tickWait},
		{"moving again after a quiet spell", known, 666, true, tickWait},
		{"quiet: first tick", known, 667, false, tickQuiet},
		{"fenced 600 ms: within a renewal interval and a twelfth", fenced, 200, false, tickWait},
		{"fenced 600 ms: quiet", fenced, 201, false, tickQuiet},
		{"fenced 600 ms: stood still for its window", fenced, 600, true, tickStale},
		{"quiet: later ticks", known, 1500, true, tickPoll},
		{"stood still for its TTL", known, 2000, true, tickStale},
		{"stale without a quiet tick before", known, 2500, false, tickStale},
	}
	for _, c := range cases {
		if got := c.h.onTick(at(c.at), c.wasQuiet); got != c.want {
			t.Errorf("%s: onTick = %d, want %d", c.name, got, c.want)
		}
	}
}

func cand(key, name string, createRev int64, r rank) candidate {
	return candidate{entry: entry{name: name, rank: r}, key: key, createRev: createRev}
}

func TestTermBestCandidate(t *testing.T) {
	healthy := func(p int) rank { return rank{healthy: true, priority: p} }
	a := cand("/k/a", "a", 5, healthy(0))
	b := cand("/k/b", "b", 6, healthy(1))
	c := cand("/k/c", "c", 7, healthy(1))
	sick := cand("/k/d", "d", 4, rank{priority: 9})
	unable := cand("/k/e", "e", 3, rank{unable: true, healthy: true, priority: 9})
	cases := []struct {
		name string
		cs   []candidate // in queue order
		want string      // "" for none
	}{
		{"none", nil, ""},
		{"one", []candidate{a}, "a"},
		{"higher priority", []candidate{a, b}, "b"},
		{"first in the queue among equals", []candidate{a, b, c}, "b"},
		{"health before priority", []candidate{sick, a}, "a"},
		{"able before health", []candidate{unable, sick}, "d"},
		{"only the unable", []candidate{unable}, "e"},
	}
	for _, tc := range cases {
		best, ok := bestOf(tc.cs)
		if got := map[bool]string{true: best.name}[ok]; got != tc.want {
			t.Errorf("%s: bestOf = %q, want %q", tc.name, got, tc.want)
		}
		// The leader's view of the same candidates, from a map: the
		// queue order is the create revisions'.
		m := map[string]candidate{}
		for _, c := range tc.cs {
			m[c.key] = c
		}
		r := bestRival(m)
		if r.known != (tc.want != "") || r.name != tc.want {
			t.Errorf("%s: bestRival = %+v, want %q", tc.name, r, tc.want)
		}
	}
	me, others := splitOwn([]candidate{a, b, c}, "/k/b")
	if me.name != "b" || len(others) != 2 || others[0].name != "a" || others[1].name != "c" {
		t.Errorf("splitOwn = %v, %v", me, others)
	}
}

func TestTermClaimNext(t *testing.T) {
	unanswered := fmt.Errorf("%w /k/a: %w: %w", errClaim, errClaimRPC, context.DeadlineExceeded)
	cases := []struct {
		name  string
		err   error
		moved int
		want  claimStep
	}{
		{"claimed", nil, 0, claimDone},
		{"a rank moved", errRanksMoved, 1, claimReread},
		{"ranks moved four times", errRanksMoved, 4, claimReread},
		{"ranks moved five times: give up", errRanksMoved, 5, claimDone},
		{"unanswered: again", unanswered, 0, claimRetry},
		{"key gone: over", fmt.Errorf("%w: /k/a vanished", errKeyGone), 0, claimDone},
		{"changed hands: over", fmt.Errorf("%w /k/a: it changed hands", errClaim), 0, claimDone},
	}
	for _, c := range cases {
		if got := claimNext(c.err, c.moved); got != c.want {
			t.Errorf("%s: claimNext = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestTermHeartbeatValue(t *testing.T) {
	held, now := time.UnixMilli(1000_000), time.UnixMilli(1005_500)
	cases := []struct {
		name      string
		published string
		held      time.Time
		want      string
	}{
		{"a candidate's entry", "n1 healthy 3", held, "n1 healthy 3 since=1000000 beat=1005500"},
		{"the tenure moves on", "n1 healthy 3 since=1 beat=2", held, "n1 healthy 3 since=1000000 beat=1005500"},
		{"a tenure nobody recorded", "n1 unhealthy 0", time.Time{}, "n1 unhealthy 0 since=1005500 beat=1005500"},
	}
	for _, c := range cases {
		got, beats := heartbeatValue(c.published, c.held, now)
		if got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
		if again := tenureValue(c.published, beats); again != got {
			t.Errorf("%s: a rank published after it reads %q, want %q", c.name, again, got)
		}
	}
	var o ownEntry
	o.publish("n1 healthy 0")
	if got := o.withTenure("n1 healthy 1"); got != "n1 healthy 1" {
		t.Errorf("before any heartbeat withTenure = %q", got)
	}
	o.held = held
	o.heartbeat(now)
	if got := o.withTenure("n1 unhealthy 1"); got != "n1 unhealthy 1 since=1000000 beat=1005500" {
		t.Errorf("after a heartbeat withTenure = %q", got)
	}
}

// testTerm is a term under test with its events, read as the node's loop
// would (a term whose events nobody reads stops renewing).
type testTerm struct {
	*term
	name   string
	events chan termEvent
	log    *lab.SyncBuffer
}

// startTestTerm starts a term for name with rank r on prefix; it is
// stopped when the test ends, before the etcd it talks to.
func startTestTerm(t *testing.T, cli *clientv3.Client, prefix, name string, r rank, resume *resumeLease) *testTerm {
	t.Helper()
	tt := &testTerm{name: name, events: make(chan termEvent, 1000), log: &lab.SyncBuffer{}}
	tt.term = startTerm(cli, electConfig{prefix: prefix, name: name, ttl: 2 * time.Second, rank: r, resume: resume}, &logger{w: tt.log}, tt.events)
	t.Cleanup(func() {
		tt.stop(time.Second)
		if t.Failed() {
			t.Logf("--- %s's log:\n%s", name, tt.log.String())
		}
	})
	return tt
}

// next is the term's next event of kind want, within the time given; the
// term must not end meanwhile (unless evLost is what is wanted).
func (tt *testTerm) next(t *testing.T, want termEventKind, within time.Duration) termEvent {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case ev := <-tt.events:
			if ev.kind == want {
				return ev
			}
			if ev.kind == evLost {
				t.Fatalf("%s: term lost: %v", tt.name, ev.err)
			}
		case <-timeout:
			t.Fatalf("%s: no event %d within %v", tt.name, want, within)
		}
	}
}

// none checks that the term reports no event of kind within d.
func (tt *testTerm) none(t *testing.T, kind termEventKind, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev := <-tt.events:
			if ev.kind == kind || ev.kind == evLost {
				t.Fatalf("%s: unexpected event %d (err %v)", tt.name, ev.kind, ev.err)
			}
		case <-timeout:
			return
		}
	}
}

// queued waits until the term's campaign has put its key in the queue.
func (tt *testTerm) queued(t *testing.T, cli *clientv3.Client, key string) {
	t.Helper()
	lab.WaitFor(t, 5*time.Second, tt.name+"'s election key", func() bool {
		resp, err := cli.Get(context.Background(), key)
		return err == nil && len(resp.Kvs) > 0
	})
}

// TestElectionTakeover runs terms against a real etcd (no root needed):
// the first wins an empty election; the next waits behind it and takes
// over as soon as it goes, at once after a release mark, and knowing that
// no mark was left after a plain revocation; and a candidate that leads
// steps aside for a better-ranked one behind it.
func TestElectionTakeover(t *testing.T) {
	t.Parallel()
	cli := loopbackEtcd(t)
	healthy := rank{healthy: true}
	ctx := context.Background()

	t.Run("wins an empty election", func(t *testing.T) {
		const prefix = "/vipd/empty"
		a := startTestTerm(t, cli, prefix, "a", healthy, nil)
		g := a.next(t, evGranted, 5*time.Second)
		if g.ttl != 2*time.Second || g.key != a.keyOf(g.lease) || g.resumed {
			t.Errorf("granted %+v", g)
		}
		ev := a.next(t, evElected, 2*time.Second)
		if ev.released || ev.key != g.key || ev.createRev == 0 || ev.held.IsZero() || ev.beat.IsZero() {
			t.Errorf("elected %+v", ev)
		}
		resp, err := cli.Get(ctx, ev.key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("the key: %v %v", resp, err)
		}
		if e := parseEntry(resp.Kvs[0].Value); e.name != "a" || !e.holds() || e.since != ev.held.UnixMilli() {
			t.Errorf("the key's entry %q does not say that a holds it since %v", resp.Kvs[0].Value, ev.held)
		}
		r := a.next(t, evRenewed, time.Second)
		if r.beat.IsZero() || r.deadline.IsZero() {
			t.Errorf("a leader's renewal moves both deadlines: %+v", r)
		}
		// Beside the election, on the same lease, the info key names the
		// version; it goes with the lease.
		info := infoKey(prefix, g.lease)
		if resp, err := cli.Get(ctx, info); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "version="+release() ||
			resp.Kvs[0].Lease != int64(g.lease) {
			t.Errorf("info key %s: %v (err %v), want version=%s on lease %x", info, resp, err, release(), g.lease)
		}
		if resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 1 {
			t.Errorf("%d keys under the election prefix (err %v), want only a's", resp.Count, err)
		}
		a.stop(time.Second)
		if resp, err := cli.Get(ctx, info); err != nil || len(resp.Kvs) != 0 {
			t.Errorf("info key %s outlived the term (err %v)", info, err)
		}
	})

	// waitBehind starts a, which wins, and b, which waits behind it and
	// whom a sees as its rival.
	waitBehind := func(t *testing.T, prefix string) (a, b *testTerm) {
		a = startTestTerm(t, cli, prefix, "a", healthy, nil)
		a.next(t, evElected, 5*time.Second)
		b = startTestTerm(t, cli, prefix, "b", rank{healthy: true, priority: -1}, nil)
		b.next(t, evGranted, 5*time.Second)
		if r := a.next(t, evRival, 3*time.Second).rival; !r.known || r.name != "b" {
			t.Fatalf("a's rival: %+v", r)
		}
		b.none(t, evElected, time.Second) // over two of a's heartbeats
		return a, b
	}

	t.Run("takes over at once after a release", func(t *testing.T) {
		const prefix = "/vipd/release"
		a, b := waitBehind(t, prefix)
		start := time.Now()
		a.resign(time.Second)
		<-a.ended()
		ev := b.next(t, evElected, 2*time.Second)
		if !ev.released {
			t.Error("b was not told that a released the address")
		}
		t.Logf("b elected %v after a resigned", time.Since(start).Round(time.Millisecond))
		if resp, err := cli.Get(ctx, prefix); err != nil || len(resp.Kvs) != 0 {
			t.Errorf("b's claim left the release mark (err %v)", err)
		}
	})

	t.Run("takes over after a revocation, without a mark", func(t *testing.T) {
		const prefix = "/vipd/revoke"
		a, b := waitBehind(t, prefix)
		a.stop(time.Second)
		if ev := b.next(t, evElected, 2*time.Second); ev.released {
			t.Error("b was told that a released the address; a only revoked its lease")
		}
	})

	t.Run("the first in line steps aside for a better rank", func(t *testing.T) {
		const prefix = "/vipd/ranked"
		h := startTestTerm(t, cli, prefix, "h", healthy, nil)
		h.next(t, evElected, 5*time.Second)
		low := startTestTerm(t, cli, prefix, "low", healthy, nil)
		low.queued(t, cli, low.keyOf(low.next(t, evGranted, 5*time.Second).lease))
		high := startTestTerm(t, cli, prefix, "high", rank{healthy: true, priority: 5}, nil)
		high.queued(t, cli, high.keyOf(high.next(t, evGranted, 5*time.Second).lease))
		h.resign(time.Second)
		ev := low.next(t, evLost, 2*time.Second)
		if !errors.Is(ev.err, errOutranked) {
			t.Fatalf("low's term ended with %v, want %v", ev.err, errOutranked)
		}
		// The node starts a new term at the end of the queue; the old
		// one's lease goes, and the best-ranked candidate claims, with
		// the mark h left: nobody claimed in between.
		low.stop(time.Second)
		if ev := high.next(t, evElected, 2*time.Second); !ev.released {
			t.Error("high was not told that h released the address")
		}
	})
}

// TestElectionResume: a term carries on an earlier run's lease whose key
// still leads, and campaigns afresh (revoking that lease) when the key is
// behind another.
func TestElectionResume(t *testing.T) {
	t.Parallel()
	cli := loopbackEtcd(t)
	ctx := context.Background()
	// earlier leaves the key an earlier run's campaign would have left.
	earlier := func(t *testing.T, prefix, name string) resumeLease {
		t.Helper()
		lease, err := cli.Grant(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("%s/%x", prefix, lease.ID)
		resp, err := cli.Put(ctx, key, name+" healthy 0", clientv3.WithLease(lease.ID))
		if err != nil {
			t.Fatal(err)
		}
		return resumeLease{id: lease.ID, key: key, createRev: resp.Header.Revision, ttl: 2 * time.Second,
			held: time.UnixMilli(time.Now().Add(-time.Hour).UnixMilli()), name: name, healthy: true}
	}

	t.Run("carries on a lease that leads", func(t *testing.T) {
		r := earlier(t, "/vipd/resume", "a")
		a := startTestTerm(t, cli, "/vipd/resume", "a", rank{healthy: true}, &r)
		if g := a.next(t, evGranted, 2*time.Second); !g.resumed || g.lease != r.id {
			t.Errorf("granted %+v, want the earlier lease %x resumed", g, r.id)
		}
		ev := a.next(t, evElected, time.Second)
		if !ev.resumed || !ev.released || ev.createRev != r.createRev || !ev.held.Equal(r.held) {
			t.Errorf("elected %+v, want the earlier key resumed, held since %v", ev, r.held)
		}
		// The lease is renewed, and the heartbeat says the tenure is the
		// earlier run's.
		if ev := a.next(t, evRenewed, time.Second); ev.deadline.IsZero() || ev.beat.IsZero() {
			t.Errorf("renewed %+v, want both deadlines moved", ev)
		}
		resp, err := cli.Get(ctx, r.key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("the resumed key is gone (err %v)", err)
		}
		if e := parseEntry(resp.Kvs[0].Value); e.since != r.held.UnixMilli() {
			t.Errorf("the resumed key's entry %q, want since=%d", resp.Kvs[0].Value, r.held.UnixMilli())
		}
		// A resume (a SIGHUP into a new binary) writes its own version.
		lab.WaitFor(t, 2*time.Second, "the resumed term's info key", func() bool {
			resp, err := cli.Get(ctx, infoKey("/vipd/resume", r.id))
			return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "version="+release()
		})
	})

	t.Run("campaigns afresh behind another", func(t *testing.T) {
		const prefix = "/vipd/behind"
		other := startTestTerm(t, cli, prefix, "other", rank{healthy: true}, nil)
		other.next(t, evElected, 5*time.Second)
		r := earlier(t, prefix, "a")
		a := startTestTerm(t, cli, prefix, "a", rank{healthy: true}, &r)
		g := a.next(t, evGranted, 2*time.Second)
		if g.resumed || g.lease == r.id {
			t.Errorf("granted %+v: resumed a lease that does not lead", g)
		}
		if resp, err := cli.TimeToLive(ctx, r.id); err != nil || resp.TTL > 0 {
			t.Errorf("the earlier lease was not revoked (TTL %v, err %v)", resp.TTL, err)
		}
		a.none(t, evElected, 500*time.Millisecond)
	})
}

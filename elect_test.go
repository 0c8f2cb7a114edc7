package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestHolderView follows a holder's key through polls and watch events:
// only a mod revision that stood still for the holder's TTL, counted from
// when it was first seen, makes the holder stale.
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

	events := make(chan termEvent, 16)
	log := &syncBuffer{}
	tm := startTerm(cli, electConfig{prefix: prefix, name: "n1", ttl: 2 * time.Second}, &logger{w: log}, events)
	defer tm.stop(time.Second)
	next := func(want termEventKind, within time.Duration) termEvent {
		t.Helper()
		timeout := time.After(within)
		for {
			select {
			case ev := <-events:
				if ev.kind == want {
					return ev
				}
				if ev.kind == evLost {
					t.Fatalf("term lost: %v\n%s", ev.err, log.String())
				}
			case <-timeout:
				t.Fatalf("no event %d within %v; log:\n%s", want, within, log.String())
			}
		}
	}
	next(evGranted, 5*time.Second)
	time.Sleep(3 * time.Second) // the candidate is waiting behind the holder, which stays
	stopBeats()
	if resp, err := cli.Get(ctx, holderKey); err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("the beating holder's key was removed (err %v): a quiet watch was taken for a quiet holder\n%s", err, log.String())
	}
	if _, err := cli.Revoke(ctx, holder.ID); err != nil {
		t.Fatal(err)
	}
	ev := next(evElected, 2*time.Second)
	if ev.released {
		t.Error("elected as if the holder had released the address; it was revoked without a mark")
	}
	waitFor(t, 2*time.Second, "the leader poll's watch to be cancelled", func() bool { return w.openOn(prefix+"/") == 0 })
}

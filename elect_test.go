package main

import (
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
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

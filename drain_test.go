package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestWatchDrain: the watcher reports the group's marks once read, then
// each change, from a real etcd; it ends with its context.
func TestWatchDrain(t *testing.T) {
	t.Parallel()
	cli := loopbackEtcd(t)
	ctx := context.Background()
	const key = "/vipd/drain"
	if _, err := cli.Put(ctx, drainKey(key, "n1"), "by=test"); err != nil {
		t.Fatal(err)
	}
	// A key of another group, whose name begins with ours, is not ours.
	if _, err := cli.Put(ctx, drainKey(key+"x", "n9"), "by=test"); err != nil {
		t.Fatal(err)
	}
	out := make(chan drainMarks)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { watchMarks(wctx, cli, drainPrefix(key), out); close(done) }()
	next := func(want ...string) {
		t.Helper()
		select {
		case m := <-out:
			if len(m) != len(want) {
				t.Fatalf("marks %v, want %v", m, want)
			}
			for _, n := range want {
				if _, ok := m[n]; !ok {
					t.Fatalf("marks %v, want %v", m, want)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no marks within 5 s, want %v", want)
		}
	}
	next("n1")
	cli.Put(ctx, drainKey(key, "n2"), "by=test")
	next("n1", "n2")
	cli.Delete(ctx, drainKey(key, "n1"))
	next("n2")
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher outlived its context")
	}
}

// TestSetDrain: the marks as the commands write and remove them, and what
// they say.
func TestSetDrain(t *testing.T) {
	t.Parallel()
	cli := loopbackEtcd(t)
	ctx := context.Background()
	const key = "/vipd/set"
	a := startTestTerm(t, cli, key, "n1", rank{healthy: true}, nil)
	a.next(t, evElected, 5*time.Second)

	msg, err := setDrain(ctx, cli, key, "n1", true, "tester", time.Unix(0, 0))
	if err != nil || !strings.HasPrefix(msg, "drained n1: ") || strings.Contains(msg, "no node campaigns") {
		t.Errorf("drain n1: %q, %v", msg, err)
	}
	if resp, err := cli.Get(ctx, drainKey(key, "n1")); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "by=tester at=1970-01-01T00:00:00Z" ||
		resp.Kvs[0].Lease != 0 {
		t.Errorf("the mark: %v, %v; want by= and at=, on no lease", resp, err)
	}
	if msg, _ := setDrain(ctx, cli, key, "n7", true, "tester", time.Now()); !strings.Contains(msg, "no node campaigns as n7 now") {
		t.Errorf("drain of a name nobody campaigns under: %q", msg)
	}
	if _, err := setDrain(ctx, cli, key, "bad name", true, "tester", time.Now()); err == nil {
		t.Error("a name with a space drained")
	}
	// The holder is the only candidate: it keeps the VIP, and says so.
	if got := drainOutcome(ctx, cli, key, "n1"); got != "n1 keeps the VIP: no undrained candidate to take it" {
		t.Errorf("outcome: %q", got)
	}
	for _, n := range []string{"n1", "n7"} {
		if msg, err := setDrain(ctx, cli, key, n, false, "", time.Now()); err != nil || !strings.HasPrefix(msg, "undrained "+n) {
			t.Errorf("undrain %s: %q, %v", n, msg, err)
		}
	}
	if msg, _ := setDrain(ctx, cli, key, "n1", false, "", time.Now()); msg != "n1 was not drained" {
		t.Errorf("undrain twice: %q", msg)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The term's clock and the leader's phase: renewals from the grant on,
// the claim once the campaign is won, then the heartbeat, the rivals and
// at the end the release.

// keeper is the term's clock (see keep). Only keep's goroutine uses it.
type keeper struct {
	t         *term
	id        clientv3.LeaseID
	key       string        // our election key
	createRev int64         // our key's, once it leads
	leading   bool          // the key is claimed (or the lease resumed)
	trouble   bool          // a renewal failed and etcd trouble was reported; cleared by the next that passes
	interval  time.Duration // between renewals: a candidate's, then a leader's
}

// keep is the term's clock: it renews the lease (every
// TTL/candidateRenewalsPerTTL, and TTL/leaderRenewalsPerTTL once elected),
// claims the election key when the campaign is won unless a better-ranked
// candidate should (claimRanked), and from then on sends
// the heartbeat (see holderView) together with each renewal, recording when
// each was sent. Renewal and heartbeat go out at the same moment so that
// both deadlines rest on one send time: the address's lifetime follows the
// earlier of the two. It returns once the term ends, with its keeper:
// whether we had claimed our key, and the key's create revision, for the
// release. A resumed term (resumelead.go) starts in the lead, from the
// confirmation it sent at r.sent.
func (t *term) keep(id clientv3.LeaseID, key string, won <-chan int64, stopPoll func(), r *resumed) keeper {
	k := keeper{t: t, id: id, key: key, interval: t.renewalInterval(false)}
	defer t.renewer.close()
	k.run(won, stopPoll, r)
	return k
}

// run is keep's loop; it returns when the term is over.
func (k *keeper) run(won <-chan int64, stopPoll func(), r *resumed) {
	t := k.t
	timer := time.NewTimer(k.interval)
	defer timer.Stop()
	if r != nil {
		k.createRev, k.leading, k.interval = r.createRev, true, t.renewalInterval(true)
		k.follow(r.rev)
		timer.Reset(time.Until(r.sent.Add(k.interval)))
	}
	for {
		var sent, next time.Time
		select {
		case <-t.ctx.Done():
			return
		case rev := <-won:
			won = nil // the poll and the campaign may both report it
			stopPoll()
			var released, ok bool
			if sent, released, ok = k.elected(rev); !ok {
				return
			}
			next = nextRenewal(sent, k.interval, afterClaim(released))
		case <-t.poke:
		case <-timer.C:
		}
		if sent.IsZero() { // the timer or renewNow
			if sent = k.tick(); sent.IsZero() {
				return
			}
			next = nextRenewal(sent, k.interval, afterTick(k.trouble))
		}
		timer.Reset(time.Until(next))
	}
}

// renewalInterval is the time between renewals: a candidate's, or a
// leader's, whose heartbeat goes with each and so comes leaderRenewalsPerTTL
// times per window.
func (t *term) renewalInterval(leading bool) time.Duration {
	if leading {
		return t.window() / leaderRenewalsPerTTL
	}
	return renewalInterval(t.ttl, false)
}

// renewalInterval is the time between renewals of a lease of ttl.
func renewalInterval(ttl time.Duration, leading bool) time.Duration {
	if leading {
		return ttl / leaderRenewalsPerTTL
	}
	return ttl / candidateRenewalsPerTTL
}

// renewalAfter says what was sent at the send time nextRenewal counts from.
type renewalAfter int

const (
	afterRenewal         renewalAfter = iota // a renewal (and heartbeat) that was answered
	afterFailedRenewal                       // a renewal that failed
	afterReleasedClaim                       // the claim, which found the release mark
	afterUnreleasedClaim                     // the claim, without the mark: the node waits takeoverWait
)

func afterTick(trouble bool) renewalAfter {
	if trouble {
		return afterFailedRenewal
	}
	return afterRenewal
}

func afterClaim(released bool) renewalAfter {
	if released {
		return afterReleasedClaim
	}
	return afterUnreleasedClaim
}

// nextRenewal is when the renewal after one sent at sent goes out.
func nextRenewal(sent time.Time, interval time.Duration, after renewalAfter) time.Time {
	switch after {
	case afterFailedRenewal:
		// Its stream may be bound to a member that has just vanished.
		// The next one goes out soon, on a new stream that the
		// balancer may put on another member.
		return sent.Add(backoffMin)
	case afterUnreleasedClaim: // (after a fenced predecessor there is no wait, and this renewal is merely early)
		// The node adds the address takeoverWait after the claim
		// (takeover.go takeoverDelay). A renewal sent shortly before
		// then lets the fence allow it a lifetime at once (at
		// vip.ttl=2 the claim's own send time is too old by then).
		return sent.Add(takeoverWait * 3 / 4)
	}
	return sent.Add(interval)
}

// elected claims the key our campaign won (its create revision rev)
// together with a renewal, and tells the node. It returns their send
// time, whether the previous holder left the release mark, and false
// when the term is over.
func (k *keeper) elected(rev int64) (time.Time, bool, bool) {
	t := k.t
	k.createRev = rev
	sent := time.Now()
	if t.own.held.IsZero() {
		t.own.held = sent
	}
	k.interval = t.renewalInterval(true)
	c := claimer{t: t, key: k.key, createRev: rev, id: k.id}
	// The closures take copies, so that the keeper stays on keep's stack.
	id, interval := k.id, k.interval
	var claimRev int64
	var released bool
	var claimErr, renewErr error
	both(func() { claimRev, released, claimErr = c.claimRanked() },
		func() { renewErr = t.renewOnce(id, interval) })
	if claimErr != nil {
		t.send(termEvent{kind: evLost, err: claimErr})
		return sent, released, false
	}
	k.leading = true
	k.follow(claimRev)
	ev := termEvent{kind: evElected, beat: beatDeadline(sent, t.ttl, t.cfg.window), released: released, fenced: t.prevFenced.Load(), lease: k.id, key: k.key, createRev: rev, held: t.own.held}
	if !k.renewed(renewErr, sent, &ev) {
		return sent, released, false
	}
	t.send(ev)
	return sent, released, true
}

// follow starts, once we lead, the watch of our key and of the rivals
// from rev on. Both end with the term.
func (k *keeper) follow(rev int64) {
	go k.t.watchKey(k.key, rev)
	go k.t.followRivals(k.key, rev)
}

// tick sends one renewal and, while leading, one heartbeat, and reports
// them. It returns their send time, or the zero time when the term is over.
func (k *keeper) tick() time.Time {
	t, id, interval := k.t, k.id, k.interval // copies for the closures, as in elected
	sent := time.Now()
	var renewErr, beatErr error
	if k.leading {
		key, createRev := k.key, k.createRev
		both(func() { renewErr = t.renewOnce(id, interval) },
			func() { beatErr = t.beat(key, createRev, interval) })
	} else {
		renewErr = t.renewOnce(id, interval)
	}
	if errors.Is(beatErr, errKeyGone) {
		t.send(termEvent{kind: evLost, err: beatErr})
		return time.Time{}
	}
	t.failed(t.ctx, opHeartbeat, beatErr)
	ev := termEvent{kind: evRenewed}
	if k.leading && beatErr == nil {
		// A missed heartbeat is not reported: it only lets the deadline
		// come closer. The renewal reports etcd trouble.
		ev.beat = beatDeadline(sent, t.ttl, t.cfg.window)
	}
	if !k.renewed(renewErr, sent, &ev) {
		return time.Time{}
	}
	if !ev.deadline.IsZero() || !ev.beat.IsZero() {
		t.send(ev)
	}
	return sent
}

// renewed applies a renewal's outcome to ev and reports etcd trouble once
// per spell. It says false when the term is over.
func (k *keeper) renewed(err error, sent time.Time, ev *termEvent) bool {
	t := k.t
	switch {
	case t.ctx.Err() != nil:
		return false
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		t.send(termEvent{kind: evLost, err: errLeaseExpired})
		return false
	case err != nil:
		t.failed(t.ctx, opRenew, err)
		if !k.trouble {
			k.trouble = true
			t.troubled(fmt.Errorf("renew lease: %w", err))
		}
	default:
		if k.trouble {
			k.trouble = false
			t.troubled(nil)
		}
		ev.deadline = deadlineAfter(sent, t.ttl)
		ev.vouched = sent
	}
	return true
}

// both runs a and b at once and waits for both: two requests that must
// rest on one send time.
func both(a, b func()) {
	var wg sync.WaitGroup
	wg.Go(a)
	b()
	wg.Wait()
}

// beat sends one heartbeat: our election key rewritten, on condition that it
// is still ours. A leader whose key was removed learns it here
// (errKeyGone).
func (t *term) beat(key string, createRev int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	resp, err := t.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", createRev)).
		Then(beatOp(key, t.own.heartbeat(time.Now()))).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s (another node removed it after our heartbeat stood still, or it was deleted by hand)", errKeyGone, key)
	}
	return nil
}

// beatOp is a heartbeat: the key rewritten with value (see heartbeatValue),
// which gives it a new mod revision, under the same lease.
func beatOp(key, value string) clientv3.Op {
	return clientv3.OpPut(key, value, clientv3.WithIgnoreLease())
}

// watchKey ends the term if someone deletes our election key (an operator
// forcing a handover, etcd expiring the lease, or another node after our
// heartbeat stood still). Puts, our own heartbeats among them, are filtered
// out on the server, so nothing piles up unread. It is read until the term
// ends, which cancels it.
func (t *term) watchKey(key string, rev int64) {
	for wr := range t.cli.Watch(t.ctx, key, clientv3.WithRev(rev+1), clientv3.WithFilterPut()) {
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				t.send(termEvent{kind: evLost, err: fmt.Errorf("%w: %s was deleted", errKeyGone, key)})
				return
			}
		}
	}
}

// rivals tells the node, while it leads, which other candidate has the
// best rank, each time that changes (see follow). One goroutine's state.
type rivals struct {
	t    *term
	own  string // our election key, left out
	last rival  // as last reported
}

// followRivals tells the node, while it leads, which other candidate has
// the best rank (see rivals.follow); own is our key. It ends with the term.
func (t *term) followRivals(own string, rev int64) {
	r := rivals{t: t, own: own}
	r.follow(rev)
}

// follow lists the other candidates, then watches them from the list's
// revision. The watch leaves out our own key, whose heartbeats would
// otherwise come back to us several times a second. A watch that ends
// (its member lost the raft leader, the stream broke, the revision was
// compacted) is replaced by a new list and watch. It ends with the term.
func (r *rivals) follow(rev int64) {
	for r.t.ctx.Err() == nil {
		cs, rev, err := r.list()
		if err == nil {
			r.report(cs)
			r.watch(rev, cs)
		}
		r.t.sleep(leaderPoll)
	}
}

// report tells the node the best rival in cs if it changed.
func (r *rivals) report(cs map[string]candidate) {
	best := bestRival(cs)
	if best != r.last && r.t.send(termEvent{kind: evRival, rival: best}) {
		r.last = best
	}
}

// bestRival is the best-ranked of cs, the first in the queue (the oldest
// key) among equals.
func bestRival(cs map[string]candidate) rival {
	list := make([]candidate, 0, len(cs))
	for _, c := range cs {
		list = append(list, c)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].createRev < list[j].createRev })
	best, ok := bestOf(list)
	return rival{entry: best.entry, known: ok}
}

// list reads the other candidates and the revision they were read at.
func (r *rivals) list() (map[string]candidate, int64, error) {
	list, rev, err := r.t.readCandidates(rpcTimeout)
	r.t.failed(r.t.ctx, opRead, err)
	if err != nil {
		return nil, 0, err
	}
	cs := map[string]candidate{}
	for _, c := range list {
		if c.key != r.own {
			cs[c.key] = c
		}
	}
	return cs, rev, nil
}

// watch applies the writes and deletes under the election prefix, except
// to our key, after rev to cs, and reports each batch, until the watch
// ends. Two ranges, below and above our key, leave our key out.
func (r *rivals) watch(rev int64, cs map[string]candidate) {
	t, own := r.t, r.own
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(t.ctx))
	defer cancel()
	below := t.cli.Watch(ctx, t.cfg.prefix+"/", clientv3.WithRange(own), clientv3.WithRev(rev+1))
	above := t.cli.Watch(ctx, own+"\x00", clientv3.WithRange(clientv3.GetPrefixRangeEnd(t.cfg.prefix+"/")), clientv3.WithRev(rev+1))
	for below != nil || above != nil {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case wr, ok = <-below:
			if !ok {
				below = nil
			}
		case wr, ok = <-above:
			if !ok {
				above = nil
			}
		}
		if !ok || wr.Canceled || wr.Err() != nil {
			return // cancel ends the other watch; the caller lists again
		}
		for _, ev := range wr.Events {
			k := string(ev.Kv.Key)
			if ev.Type == clientv3.EventTypeDelete {
				delete(cs, k)
			} else {
				cs[k] = candidateFrom(ev.Kv)
			}
		}
		if len(wr.Events) > 0 {
			r.report(cs)
		}
	}
}

// releaseKey deletes our election key (the next candidate leads at once)
// and, in the same transaction, tells the next holder that this one
// removed the address before it left, so that it need not wait out the
// kernel's lifetime slack (fence.go, takeoverWait). The mark is the bare
// prefix key (election keys are below it), written only while our
// election key still exists, so only while nobody has claimed since we
// did; every claim takes it away. A mark therefore always speaks of the
// last node that claimed. The lease is revoked afterwards, as after any
// term.
func (k *keeper) releaseKey() {
	t := k.t
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	resp, err := releaseTxn(ctx, t.cli, t.cfg.prefix, t.cfg.name, k.key, k.createRev)
	t.failed(context.Background(), opWrite, err)
	switch {
	case err != nil:
		t.log.warnf("could not tell the next holder that the address is released: %v (it will wait %v before adding it)", err, takeoverWait)
	case !resp.Succeeded:
		t.log.warnf("election key %s was gone before the release was marked; the next holder waits %v before adding the address", k.key, takeoverWait)
	}
}

// releaseTxn deletes an election key, unless it changed hands, and leaves
// the release mark in the same transaction (see releaseKey).
func releaseTxn(ctx context.Context, cli *clientv3.Client, prefix, name, key string, createRev int64) (*clientv3.TxnResponse, error) {
	return cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", createRev)).
		Then(clientv3.OpPut(prefix, "released by "+name), clientv3.OpDelete(key)).Commit()
}

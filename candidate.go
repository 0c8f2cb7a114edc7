package main

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// The candidate's phase of a term: the lease is granted, the campaign
// queues our key behind the holder's, and a poll follows the holder's
// heartbeat until our key leads (then keep claims it: claim.go).

// grant obtains a lease, retrying with capped backoff while etcd is
// unreachable. It reports the first deadline.
func (t *term) grant() (clientv3.LeaseID, time.Duration, bool) {
	backoff := backoffMin
	trouble := false
	for {
		sent := time.Now()
		// Short attempts: a request that landed on a vanished etcd member
		// waits out its whole timeout, and the next attempt may go to a
		// live one.
		ctx, cancel := context.WithTimeout(t.ctx, grantTimeout(t.cfg.ttl))
		resp, err := t.cli.Grant(ctx, ceilSeconds(t.cfg.ttl))
		cancel()
		if err == nil && time.Now().After(deadlineAfter(sent, effectiveTTL(t.cfg.ttl, resp.TTL))) {
			// The answer took so long (etcd just came back) that this
			// lease is already past its deadline: start over at once.
			t.revoke(resp.ID)
			continue
		}
		if err == nil {
			if trouble {
				t.troubled(nil)
			}
			ttl := effectiveTTL(t.cfg.ttl, resp.TTL)
			if ttl != t.cfg.ttl {
				t.log.infof("etcd granted a %d s lease for the requested %v; timing follows the granted TTL", resp.TTL, t.cfg.ttl)
			}
			ok := t.send(termEvent{kind: evGranted, ttl: ttl, deadline: deadlineAfter(sent, ttl), vouched: sent, lease: resp.ID, key: t.keyOf(resp.ID)})
			if !ok {
				t.revoke(resp.ID)
			}
			return resp.ID, ttl, ok
		}
		if t.ctx.Err() != nil {
			return 0, 0, false
		}
		t.failed(t.ctx, opGrant, err)
		if !trouble {
			trouble = true
			t.troubled(fmt.Errorf("grant lease: %w", err))
		}
		if !t.sleep(backoff) {
			return 0, 0, false
		}
		backoff = nextBackoff(backoff)
	}
}

// grantTimeout bounds one lease grant for a term of the requested ttl:
// short, so that the next attempt soon goes to another member, but not
// shorter than a round trip to a busy etcd may take.
func grantTimeout(ttl time.Duration) time.Duration {
	return min(rpcTimeout, max(500*time.Millisecond, ttl/4))
}

// nextBackoff is the wait before the attempt after one that waited
// backoff: doubled, up to backoffMax.
func nextBackoff(backoff time.Duration) time.Duration {
	return min(backoff*2, backoffMax)
}

// runCampaign campaigns until it wins or the term ends. Campaign blocks in
// Resign when its context is cancelled while etcd is unreachable, so nothing
// waits for this goroutine. Its context is the term's own: cancelling a
// Campaign resigns, which would delete our key while we lead.
//
// Two paths can find that we lead, and the first one counts: the library's
// Campaign, which waits on a watch stream, and pollLeader, which asks with
// short unary requests. A watch stream bound to an etcd member that has just
// vanished (its node died or was cut off) hangs until gRPC gives up on the
// connection; the poll goes round it.
func (t *term) runCampaign(e *concurrency.Election, won chan<- int64) {
	backoff := backoffMin
	for {
		// The entry as last published: a Campaign that finds our key
		// already there rewrites its value.
		err := e.Campaign(t.ctx, t.own.published())
		if err == nil {
			won <- e.Rev()
			return
		}
		if t.ctx.Err() != nil {
			return
		}
		t.failed(t.ctx, opCampaign, err)
		t.log.warnf("campaign for %s: %v (retrying)", t.cfg.prefix, err)
		if !t.sleep(backoff) {
			return
		}
		backoff = nextBackoff(backoff)
	}
}

// leaderPoll is how often a candidate looks at what it knows of the holder,
// and asks etcd when that is not enough (see pollLeader).
const leaderPoll = 250 * time.Millisecond

// poller is a candidate's poll of the leader (see pollLeader): one
// goroutine's state, from the grant until our key leads.
type poller struct {
	t     *term
	ctx   context.Context // ends once the campaign is won
	key   string          // ours
	id    clientv3.LeaseID
	won   chan<- int64 // our key's create revision, once it leads
	h     holderView
	quiet bool // the holder's heartbeat was quiet at the last tick (members touched)
}

// pollLeader reports our key's create revision once it is the oldest key
// under the election prefix, which is what makes a campaign's owner the
// leader. Until then it follows the holder's heartbeat (see holderView)
// through a watch, which hears each heartbeat within milliseconds while its
// etcd member lives. It asks etcd itself, every leaderPoll, only while the
// watch has nothing to say: before it knows the holder, after a write to
// another key under the prefix (a new holder's claim), and while the
// holder's heartbeat is quiet (the holder is gone, or the watch's member
// is). An idle cluster thus costs etcd no polls, and a stuck watch still
// costs no failover time: staleness is counted from when the heartbeat was
// last seen to move, by either path. It ends with ctx, which the term
// cancels once the campaign is won.
func (t *term) pollLeader(ctx context.Context, key string, id clientv3.LeaseID, won chan<- int64) {
	p := poller{t: t, ctx: ctx, key: key, id: id, won: won}
	p.run()
}

func (p *poller) run() {
	writes := make(chan []*mvccpb.KeyValue, 16)
	go p.t.followWrites(p.ctx, writes)
	tick := time.NewTicker(leaderPoll)
	defer tick.Stop()
	// The poll's ticks alone would see a short window run out, or the
	// heartbeat go quiet, up to a tick late: staleAt goes off when they do.
	staleAt := time.NewTimer(time.Hour) // armStale
	defer staleAt.Stop()
	pollNow := true
	for {
		p.armStale(staleAt)
		if !pollNow {
			select {
			case <-p.ctx.Done():
				return
			case kvs := <-writes:
				pollNow = p.heard(kvs)
				continue
			case <-tick.C:
				if !p.tick(time.Now()) {
					continue
				}
			case <-staleAt.C:
				if !p.tick(time.Now()) {
					continue
				}
			}
		}
		var leads bool
		leads, pollNow = p.poll()
		if leads {
			return
		}
	}
}

// armStale sets timer to go off when the holder's heartbeat will have
// gone quiet, or else stood still for its window, as far as the poll
// knows it now.
func (p *poller) armStale(timer *time.Timer) {
	timer.Stop()
	if w := p.h.window(); w > 0 {
		for _, after := range []time.Duration{p.h.quietAfter() + time.Millisecond, w} {
			if d := time.Until(p.h.since.Add(after)); d > 0 { // both past: the ticks ask again
				timer.Reset(d)
				break
			}
		}
	}
	p.t.prevFenced.Store(p.h.fenced > 0)
}

// heard takes in the writes the watch reported. It says whether what
// leads must be read again: a write to another key than the holder's.
func (p *poller) heard(kvs []*mvccpb.KeyValue) bool {
	again := false
	for _, kv := range kvs {
		if !p.h.heard(kv, time.Now()) {
			again = true
		}
	}
	return again
}

// tick acts on the poll's clock (see holderView.onTick) and says whether
// etcd is asked now.
func (p *poller) tick(now time.Time) bool {
	switch p.h.onTick(now, p.quiet) {
	case tickWait:
		p.quiet = false
		return false
	case tickQuiet:
		p.quiet = true
		p.touchMembers()
		p.t.renewer.fresh.Store(true)
	case tickStale:
		p.t.renewer.fresh.Store(true) // see touchMembers; the poll removes the key
	}
	return true
}

// poll asks etcd which key leads. It says whether ours does (reported on
// won), and whether to ask again at once: after removing a stale holder's
// key, the next key in line leads.
func (p *poller) poll() (leads, again bool) {
	t := p.t
	timeout, start := p.reqTimeout(), time.Now()
	rctx, cancel := context.WithTimeout(p.ctx, timeout)
	resp, err := t.cli.Get(rctx, t.cfg.prefix+"/", clientv3.WithFirstCreate()...)
	cancel()
	t.failed(p.ctx, opRead, err)
	if err != nil || len(resp.Kvs) == 0 {
		return false, err != nil && p.retryNow(start, timeout)
	}
	kv := resp.Kvs[0]
	if string(kv.Key) == p.key && clientv3.LeaseID(kv.Lease) == p.id {
		p.won <- kv.CreateRevision
		return true, false
	}
	p.h.observe(kv, time.Now())
	if p.h.ttl == 0 {
		p.h.ttl = p.grantedTTL(clientv3.LeaseID(kv.Lease))
	}
	return false, p.h.stale(time.Now()) && p.removeStale()
}

// reqTimeout bounds a poll's request: leaderPoll, or less once the
// holder's heartbeat is stale under a short window. A request that went
// to a member which vanished with the holder's node waits for nothing
// (its connection is found dead only after TCP's retransmissions); the
// next one, at once (retryNow), goes to another member (round robin).
func (p *poller) reqTimeout() time.Duration {
	if !p.h.stale(time.Now()) {
		return leaderPoll
	}
	return min(leaderPoll, max(p.h.window()/6, 50*time.Millisecond))
}

// retryNow says whether a request of the stale path that failed is sent
// again at once: only after it waited out its timeout (a member that
// does not answer), not after a quick refusal (etcd down), which waits
// for the next tick.
func (p *poller) retryNow(start time.Time, timeout time.Duration) bool {
	return p.h.stale(time.Now()) && time.Since(start) >= timeout/2
}

// touchMembers sends one small read per etcd endpoint at once, when the
// holder's heartbeat has just gone quiet: the client's round-robin
// balancer puts one on each connection. An idle candidate otherwise sends
// nothing on most of them, and a connection to a member that vanished
// with the holder's node is found dead (by TCP_USER_TIMEOUT, main.go) only
// a second after a request waits on it. Found now, it is gone before the
// failover's own requests (the removal, the claim) need a member. The
// answers are not needed; each read ends within leaderPoll. For the same
// reason the renewals move to a new stream (renewer.fresh), which the
// balancer puts on a member that still answers.
func (p *poller) touchMembers() {
	t, ctx := p.t, p.ctx
	for range t.cfg.endpoints {
		go func() {
			rctx, cancel := context.WithTimeout(ctx, leaderPoll)
			defer cancel()
			t.cli.Get(rctx, t.cfg.prefix, clientv3.WithCountOnly())
		}()
	}
}

// followWrites passes on the writes under the election prefix (the
// holder's heartbeats) until ctx (the poll's) ends, which also cancels the
// watch: the etcd client keeps every response that nobody reads. It runs
// apart from the poll because creating a watch waits for the server's
// confirmation on a stream shared with every other watch, and that stream
// may be bound to a member that has vanished, which is what the poll is
// there to go round. A watch that ends (its member lost the raft leader,
// or the stream broke) is opened again after a poll interval.
func (t *term) followWrites(ctx context.Context, out chan<- []*mvccpb.KeyValue) {
	for {
		wch := t.cli.Watch(clientv3.WithRequireLeader(ctx), t.cfg.prefix+"/", clientv3.WithPrefix(), clientv3.WithFilterDelete())
		for wr := range wch {
			if len(wr.Events) == 0 {
				continue
			}
			kvs := make([]*mvccpb.KeyValue, len(wr.Events))
			for i, ev := range wr.Events {
				kvs[i] = ev.Kv
			}
			select {
			case out <- kvs:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(leaderPoll):
		}
	}
}

// grantedTTL is the TTL etcd granted the holder's lease (0 if unknown). The
// holder's own timing uses that TTL or a shorter requested one, never a
// longer one, and other nodes may be configured with a different vip.ttl.
func (p *poller) grantedTTL(id clientv3.LeaseID) time.Duration {
	ctx, cancel := context.WithTimeout(p.ctx, leaderPoll)
	defer cancel()
	resp, err := p.t.cli.TimeToLive(ctx, id)
	p.t.failed(ctx, opRead, err)
	if err != nil || resp.GrantedTTL <= 0 {
		return 0
	}
	return time.Duration(resp.GrantedTTL) * time.Second
}

// removeStale deletes the election key of a holder whose heartbeat stood
// still, unless it has moved since. It reports whether to ask etcd again
// at once: the key was removed (the next key leads), or the request went
// unanswered (retryNow).
func (p *poller) removeStale() bool {
	h := p.h
	timeout, start := p.reqTimeout(), time.Now()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	resp, err := p.t.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(h.key), "=", h.modRev)).
		Then(clientv3.OpDelete(h.key)).Commit()
	p.t.failed(ctx, opWrite, err)
	if err != nil {
		return p.retryNow(start, timeout) // no answer: again at once (on another member); else at the next tick
	}
	if !resp.Succeeded {
		return false // the heartbeat moved, or the key is gone already
	}
	p.t.log.warnf("removed election key %s of holder %q: its heartbeat stood still for %v (dead, frozen or cut off; by its own deadline it no longer holds the address)",
		h.key, h.name, time.Since(h.since).Round(time.Millisecond))
	return true
}

// holderView is what a candidate has seen of the holder's heartbeat.
//
// The holder rewrites its election key every TTL/leaderRenewalsPerTTL and holds
// the address only until the send time of its last acknowledged heartbeat +
// TTL - margin (or, fenced in the kernel, until that send time + its
// window - fenceMargin, elect.go beatDeadline). A candidate that has seen
// the key's mod revision stand still for the holder's whole TTL (or the
// window its entry advertises), counted from the moment it first saw that
// revision (which was written after the heartbeat was sent), knows that the
// holder's deadline has passed by at least the margin: the same room that
// etcd's own lease expiry leaves. It may then remove the key, on condition
// that its mod revision has still not moved, and the next candidate leads.
//
// This is not the lease done twice: a new etcd leader extends every lease by
// a TTL and its election timeout, so when a node that hosted etcd's leader
// dies, its lease outlives it by seconds; its heartbeat does not.
type holderView struct {
	key               string
	name              string
	createRev, modRev int64
	since             time.Time     // when this mod revision was first seen
	ttl               time.Duration // the holder's granted lease TTL; 0 until known
	// fenced is the window the holder's entry advertises (fence=MS): it
	// fences itself in the kernel by it; 0: it does not, the TTL rule.
	fenced time.Duration
}

// window is how long the holder's heartbeat must stand still before its
// key may be removed: the window it advertises, or else its TTL (0 while
// unknown).
func (h *holderView) window() time.Duration {
	if h.fenced > 0 && (h.ttl == 0 || h.fenced < h.ttl) {
		return h.fenced
	}
	return h.ttl
}

// observe records the holder's key as read at now.
func (h *holderView) observe(kv *mvccpb.KeyValue, now time.Time) {
	if h.sameKey(kv) && kv.ModRevision <= h.modRev {
		return // nothing new (a watch event may have told us more already)
	}
	ttl := h.ttl
	if !h.sameKey(kv) {
		ttl = 0 // another holder: its TTL is looked up again
	}
	e := parseEntry(kv.Value)
	*h = holderView{key: string(kv.Key), name: e.name, createRev: kv.CreateRevision, modRev: kv.ModRevision,
		since: now, ttl: ttl, fenced: time.Duration(e.window) * time.Millisecond}
}

// heard records a write to a key under the election prefix, seen at now:
// a heartbeat if it is the holder's key. It says false for a write to any
// other key, which may be a new holder's claim: what leads is then read
// again.
func (h *holderView) heard(kv *mvccpb.KeyValue, now time.Time) bool {
	if !h.sameKey(kv) {
		return false
	}
	if kv.ModRevision > h.modRev {
		h.modRev, h.since = kv.ModRevision, now
		h.fenced = time.Duration(parseEntry(kv.Value).window) * time.Millisecond
	}
	return true
}

// quiet says whether the holder's heartbeat has not been seen to move for
// longer than a leader's renewal interval and a poll: the watch has
// nothing to say, and etcd is asked. Also true before the holder is known.
func (h *holderView) quiet(now time.Time) bool {
	return h.ttl == 0 || now.Sub(h.since) > h.quietAfter()
}

// quietAfter is how long after the heartbeat was last seen to move it
// counts as quiet: a poll's worth after the next one was due, or a twelfth
// of the window when the window is short. The members are touched then
// (touchMembers), and a vanished one must be found before the window ends.
func (h *holderView) quietAfter() time.Duration {
	w := h.window()
	return w/leaderRenewalsPerTTL + min(leaderPoll, w/12)
}

func (h *holderView) sameKey(kv *mvccpb.KeyValue) bool {
	return string(kv.Key) == h.key && kv.CreateRevision == h.createRev
}

// stale says whether the holder's heartbeat has stood still for its
// window (its TTL, without a kernel fence).
func (h *holderView) stale(now time.Time) bool {
	return h.ttl > 0 && now.Sub(h.since) >= h.window()
}

// tickAction is what a candidate's poll does at a tick of its clock.
type tickAction int

const (
	tickWait  tickAction = iota // the heartbeat moves: the watch says enough, etcd is not asked
	tickPoll                    // still quiet: ask etcd
	tickQuiet                   // just went quiet: touch the members, renew on a fresh stream, ask etcd
	tickStale                   // stood still for its window: renew on a fresh stream, ask etcd, remove the key
)

// onTick decides a tick at now, given whether the heartbeat was quiet at
// the last one: each spell of quiet touches the members once.
func (h *holderView) onTick(now time.Time, wasQuiet bool) tickAction {
	switch {
	case h.stale(now):
		return tickStale
	case !h.quiet(now):
		return tickWait
	case !wasQuiet:
		return tickQuiet
	}
	return tickPoll
}

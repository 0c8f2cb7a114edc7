package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// A term is one lease and one campaign: it starts as a candidate and ends
// when the lease is lost, revoked or the node steps down. A node never
// campaigns twice on the same lease: the election would silently hand it back
// its old key and with it a leadership that another node may hold by now.

// The reasons a term ends on its own, as the node sees them (wrapped with
// details; checked with errors.Is).
var (
	errLeaseExpired = errors.New("lease expired on the server")
	errKeyGone      = errors.New("election key gone")
	errClaim        = errors.New("could not claim the election key")
	errSession      = errors.New("could not open the election session")
	errOutranked    = errors.New("outranked") // a candidate behind us should hold the VIP: we step aside
)

// termEventKind says what happened in a term.
type termEventKind int

const (
	evGranted termEventKind = iota // lease granted; deadline is set
	evRenewed                      // renewal (and, once elected, heartbeat) acknowledged; deadlines moved
	evElected                      // campaign won, key claimed; beat is the claim's deadline
	evLost                         // lease or key gone; the term is over (err says why)
	evTrouble                      // etcd unreachable (err set) or back (err nil)
	evRival                        // once elected: the best-ranked other candidate changed
)

// termEvent is what a term reports to the node's loop.
type termEvent struct {
	t        campaigner
	kind     termEventKind
	deadline time.Time // the lease's: when to step down at the latest (zero: unchanged)
	beat     time.Time // the heartbeat's, once elected (zero: unchanged)
	ttl      time.Duration
	// released (evElected): the previous holder removed its address and
	// said so before it left (see claim), so the kernel holds no copy of
	// it anywhere and the address can be added at once.
	released bool
	rival    rival // evRival
	err      error
	// The term's lease and election key (evGranted, evElected), for the
	// state file and so for a later resume (resume.go); createRev once
	// elected. resumed (evGranted, evElected): the term carries on the
	// lease of an earlier vipd on this node.
	lease     clientv3.LeaseID
	key       string
	createRev int64
	resumed   bool
	held      time.Time // evElected: the tenure's start, as the election entry says it
	// vouched (evGranted, evRenewed, evElected): the send time of the
	// request whose acknowledgement this event reports, for the lease:
	// etcd held it alive then, whatever the local clock has seen since.
	vouched time.Time
	// took (evElected, resumed): the tenure's start on this process's
	// monotonic clock, for the handover rules; zero when the earlier run's
	// record cannot say (another boot): the tenure then counts from now.
	took time.Time
}

// campaigner is a term as the node sees it; tests replace it.
type campaigner interface {
	// stop abandons the term: the lease is revoked (bounded by wait; 0:
	// in the background), which deletes the election key.
	stop(wait time.Duration)
	// resign is stop after a graceful release: the address is gone from
	// this node, and the next holder may add it without waiting out the
	// kernel's lifetime slack.
	resign(wait time.Duration)
	// renewNow sends the next renewal (and heartbeat) at once.
	renewNow()
	// setRank publishes the node's rank in its election entry.
	setRank(r rank)
	// ended is closed once a stopped term has finished its release
	// mark and lease revocation (or given up on them).
	ended() <-chan struct{}
}

// electConfig is the part of the configuration a term needs.
type electConfig struct {
	prefix    string
	name      string
	ttl       time.Duration
	rank      rank         // the rank to campaign with; setRank changes it
	endpoints []string     // for diagnose
	tls       *tls.Config  // for diagnose
	resume    *resumeLease // carry on this lease if it still leads (resume.go)
	met       *metrics     // the node's; nil records nothing
}

type term struct {
	cli      *clientv3.Client
	cfg      electConfig
	log      *logger
	events   chan<- termEvent
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{} // closed when the lease is revoked (or given up)
	ttl      time.Duration // the effective TTL, set once the lease is granted
	trouble  chan error    // etcd unreachable (the error) or back (nil); see reportTrouble
	released atomic.Bool   // set by resign before the term is cancelled
	poke     chan struct{} // renewNow
	ranks    chan rank     // setRank; holds the latest only
	entry    atomic.Value  // string: our election entry as last published
	renewer  renewer       // used by keep only

	// held is when this node's tenure began: set by keep before the claim
	// (or for a resumed term), read by heartbeat on keep's behalf.
	held  time.Time
	beats atomic.Value // [2]int64: the since and beat the last heartbeat wrote (see withTenure)
}

const (
	rpcTimeout    = 2 * time.Second
	revokeTimeout = 1 * time.Second
	backoffMin    = 100 * time.Millisecond
	backoffMax    = 2 * time.Second
)

// startTerm grants a lease and campaigns with it in the background.
func startTerm(cli *clientv3.Client, cfg electConfig, log *logger, events chan<- termEvent) *term {
	ctx, cancel := context.WithCancel(context.Background())
	t := &term{cli: cli, cfg: cfg, log: log, events: events, ctx: ctx, cancel: cancel, done: make(chan struct{}), trouble: make(chan error, 8),
		poke: make(chan struct{}, 1), ranks: make(chan rank, 1), renewer: renewer{cli: cli, met: cfg.met}}
	t.entry.Store(entryValue(cfg.name, cfg.rank))
	go t.reportTrouble()
	go t.run()
	return t
}

// stop ends the term: the campaign is abandoned and the lease revoked, which
// deletes our election key so that the next candidate wins at once. It waits
// at most wait for the revocation (0: not at all).
func (t *term) stop(wait time.Duration) {
	t.cancel()
	if wait <= 0 {
		return
	}
	select {
	case <-t.done:
	case <-time.After(wait):
		t.log.warnf("lease revocation still pending after %v; etcd will expire the lease", wait)
	}
}

func (t *term) resign(wait time.Duration) {
	t.released.Store(true)
	t.stop(wait)
}

func (t *term) ended() <-chan struct{} { return t.done }

func (t *term) renewNow() {
	select {
	case t.poke <- struct{}{}:
	default: // one is pending already
	}
}

// setRank hands the latest rank to publishRank, replacing one it has not
// taken yet. Only the loop calls it, so nothing else fills the slot.
func (t *term) setRank(r rank) {
	select {
	case <-t.ranks:
	default:
	}
	t.ranks <- r
}

// margin is how long before the lease could expire on the server that the
// node gives up the address: clocks, scheduling and the kernel's one-second
// lifetime granularity all need room.
func margin(ttl time.Duration) time.Duration {
	return max(500*time.Millisecond, ttl/4)
}

// deadlineAfter is when a node must have stepped down if its last
// acknowledged renewal was sent at sent. The send time, not the time of the
// acknowledgement, is what bounds the server's expiry.
func deadlineAfter(sent time.Time, ttl time.Duration) time.Time {
	return sent.Add(ttl - margin(ttl))
}

// effectiveTTL is the TTL that timing is based on. etcd leases are whole
// seconds: a fractional request is granted rounded up, and the shorter
// requested value keeps the deadline safe. When the server raises the TTL
// (its minimum depends on its election timeout), the granted TTL rules.
func effectiveTTL(requested time.Duration, grantedSecs int64) time.Duration {
	granted := time.Duration(grantedSecs) * time.Second
	if grantedSecs == ceilSeconds(requested) {
		return requested
	}
	return granted
}

func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

func (t *term) send(ev termEvent) bool {
	ev.t = t
	select {
	case t.events <- ev:
		return true
	case <-t.ctx.Done():
		return false
	}
}

func (t *term) run() {
	defer close(t.done)
	if r := t.cfg.resume; r != nil && t.resumeLead(*r) {
		return
	}
	id, ttl, ok := t.grant()
	if !ok {
		return
	}
	t.ttl = ttl
	defer t.revoke(id)

	session, err := concurrency.NewSession(t.cli, concurrency.WithLease(id), concurrency.WithContext(t.ctx))
	if err != nil {
		t.send(termEvent{kind: evLost, err: fmt.Errorf("%w: %w", errSession, err)})
		return
	}
	// The session's own KeepAlive would renew the lease outside our
	// send-time bookkeeping; we renew it ourselves.
	session.Orphan()

	key := t.keyOf(id)
	won := make(chan int64, 2) // our key's create revision, once it leads
	go t.publishRank(key, id)
	go t.runCampaign(concurrency.NewElection(session, t.cfg.prefix), won)
	pollCtx, stopPoll := context.WithCancel(t.ctx)
	defer stopPoll()
	go t.pollLeader(pollCtx, key, id, won)
	createRev, ok := t.keep(id, key, won, stopPoll, nil)
	if ok && t.released.Load() {
		t.releaseKey(key, createRev)
	}
}

// keyOf is the election key Campaign creates for lease id.
func (t *term) keyOf(id clientv3.LeaseID) string { return fmt.Sprintf("%s/%x", t.cfg.prefix, id) }

// keep is the term's clock: it renews the lease (every
// TTL/candidateRenewalsPerTTL, and TTL/leaderRenewalsPerTTL once elected),
// claims the election key when the campaign is won unless a better-ranked
// candidate should (claimRanked), and from then on sends
// the heartbeat (see holderView) together with each renewal, recording when
// each was sent. Renewal and heartbeat go out at the same moment so that
// both deadlines rest on one send time: the address's lifetime follows the
// earlier of the two. It returns once the term ends, with our key's create
// revision and whether we had claimed it. A resumed term (resume.go)
// starts in the lead, from the confirmation it sent at r.sent.
func (t *term) keep(id clientv3.LeaseID, key string, won <-chan int64, stopPoll func(), r *resumed) (int64, bool) {
	defer t.renewer.close()
	interval := t.ttl / candidateRenewalsPerTTL
	timer := time.NewTimer(interval)
	defer timer.Stop()
	var createRev int64
	leading, trouble := false, false
	if r != nil {
		createRev, leading, interval = r.createRev, true, t.ttl/leaderRenewalsPerTTL
		go t.watchKey(key, r.rev)
		go t.followRivals(key, r.rev)
		timer.Reset(time.Until(r.sent.Add(interval)))
	}
	for {
		var sent time.Time
		next := interval // until the next renewal, from sent
		select {
		case <-t.ctx.Done():
			return createRev, leading
		case rev := <-won:
			won = nil // the poll and the campaign may both report it
			stopPoll()
			createRev, sent = rev, time.Now()
			if t.held.IsZero() {
				t.held = sent
			}
			interval = t.ttl / leaderRenewalsPerTTL
			next = interval
			var claimRev int64
			var released bool
			var claimErr, renewErr error
			both(func() { claimRev, released, claimErr = t.claimRanked(key, createRev, id) },
				func() { renewErr = t.renewOnce(id, interval) })
			if claimErr != nil {
				t.send(termEvent{kind: evLost, err: claimErr})
				return createRev, false
			}
			leading = true
			go t.watchKey(key, claimRev)
			go t.followRivals(key, claimRev)
			ev := termEvent{kind: evElected, beat: deadlineAfter(sent, t.ttl), released: released, lease: id, key: key, createRev: createRev, held: t.held}
			if !t.renewed(renewErr, sent, &trouble, &ev) {
				return createRev, leading
			}
			t.send(ev)
			if !released {
				// The node adds the address takeoverWait after the claim
				// (node.go). A renewal sent shortly before then lets the
				// fence allow it a lifetime at once (at vip.ttl=2 the
				// claim's own send time is too old by then).
				next = takeoverWait * 3 / 4
			}
		case <-t.poke:
		case <-timer.C:
		}
		if sent.IsZero() { // the timer or renewNow
			if sent = t.tick(id, key, createRev, leading, interval, &trouble); sent.IsZero() {
				return createRev, leading
			}
			if trouble {
				// The renewal failed: its stream may be bound to a
				// member that has just vanished. The next one goes out
				// soon, on a new stream that the balancer may put on
				// another member.
				next = backoffMin
			}
		}
		timer.Reset(time.Until(sent.Add(next)))
	}
}

// tick sends one renewal and, while leading, one heartbeat, and reports
// them. It returns their send time, or the zero time when the term is over.
func (t *term) tick(id clientv3.LeaseID, key string, createRev int64, leading bool, interval time.Duration, trouble *bool) time.Time {
	sent := time.Now()
	var renewErr, beatErr error
	if leading {
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
	if leading && beatErr == nil {
		// A missed heartbeat is not reported: it only lets the deadline
		// come closer. The renewal reports etcd trouble.
		ev.beat = deadlineAfter(sent, t.ttl)
	}
	if !t.renewed(renewErr, sent, trouble, &ev) {
		return time.Time{}
	}
	if !ev.deadline.IsZero() || !ev.beat.IsZero() {
		t.send(ev)
	}
	return sent
}

// renewed applies a renewal's outcome to ev and reports etcd trouble once
// per spell. It says false when the term is over.
func (t *term) renewed(err error, sent time.Time, trouble *bool, ev *termEvent) bool {
	switch {
	case t.ctx.Err() != nil:
		return false
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		t.send(termEvent{kind: evLost, err: errLeaseExpired})
		return false
	case err != nil:
		t.failed(t.ctx, opRenew, err)
		if !*trouble {
			*trouble = true
			t.troubled(fmt.Errorf("renew lease: %w", err))
		}
	default:
		if *trouble {
			*trouble = false
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

// renewOnce sends one lease renewal, bounded by timeout.
func (t *term) renewOnce(id clientv3.LeaseID, timeout time.Duration) error {
	return t.renewer.renew(t.ctx, id, timeout)
}

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
		ctx, cancel := context.WithTimeout(t.ctx, min(rpcTimeout, max(500*time.Millisecond, t.cfg.ttl/4)))
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
		backoff = min(backoff*2, backoffMax)
	}
}

// troubled reports that etcd became unreachable (err) or is back (nil).
func (t *term) troubled(err error) {
	select {
	case t.trouble <- err:
	case <-t.ctx.Done():
	}
}

// reportTrouble tells the node, in order, when etcd becomes unreachable and
// when it is back. It runs apart from the lease loop: finding out why the
// endpoints fail takes up to a dial timeout, and a renewal loop that waited
// for it would miss its own deadline.
func (t *term) reportTrouble() {
	for {
		select {
		case <-t.ctx.Done():
			return
		case err := <-t.trouble:
			if err != nil {
				err = fmt.Errorf("%w%s", err, diagnose(t.cfg.endpoints, t.cfg.tls))
			}
			t.send(termEvent{kind: evTrouble, err: err})
		}
	}
}

// How many renewals are sent per TTL. The leader's set the address's
// lifetime: with TTL 2 it is 1 s, and a refresh that comes too late for a
// lifetime asks for the next renewal at once (node.go refreshAddrs), so
// every 500 ms leaves room for one late renewal. A candidate's only keep
// its lease and its place in the election, and it renews again the moment
// it wins: three per TTL leave room for two to fail. Each renewal is an
// etcd request, and etcd also serves the Kubernetes API: an idle cluster
// should cost it little.
const (
	leaderRenewalsPerTTL    = 4
	candidateRenewalsPerTTL = 3
)

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
		err := e.Campaign(t.ctx, t.entry.Load().(string))
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
		backoff = min(backoff*2, backoffMax)
	}
}

// leaderPoll is how often a candidate looks at what it knows of the holder,
// and asks etcd when that is not enough (see pollLeader).
const leaderPoll = 250 * time.Millisecond

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
	var h holderView
	writes := make(chan []*mvccpb.KeyValue, 16)
	go t.followWrites(ctx, writes)
	tick := time.NewTicker(leaderPoll)
	defer tick.Stop()
	pollNow, quiet := true, false
	for {
		if !pollNow {
			select {
			case <-ctx.Done():
				return
			case kvs := <-writes:
				for _, kv := range kvs {
					if !h.heard(kv, time.Now()) {
						pollNow = true
					}
				}
				continue
			case <-tick.C:
			}
			now := time.Now()
			switch {
			case h.stale(now):
				t.renewer.fresh.Store(true) // see touchMembers; the poll below removes the key
			case !h.quiet(now):
				quiet = false
				continue
			case !quiet:
				quiet = true
				t.touchMembers(ctx)
				t.renewer.fresh.Store(true)
			}
		}
		pollNow = false
		rctx, cancel := context.WithTimeout(ctx, leaderPoll)
		resp, err := t.cli.Get(rctx, t.cfg.prefix+"/", clientv3.WithFirstCreate()...)
		cancel()
		t.failed(ctx, opRead, err)
		if err != nil || len(resp.Kvs) == 0 {
			continue
		}
		kv := resp.Kvs[0]
		if string(kv.Key) == key && clientv3.LeaseID(kv.Lease) == id {
			won <- kv.CreateRevision
			return
		}
		h.observe(kv, time.Now())
		if h.ttl == 0 {
			h.ttl = t.grantedTTL(ctx, clientv3.LeaseID(kv.Lease))
		}
		// After removing the holder's key, the next key in line leads:
		// ask again at once.
		pollNow = h.stale(time.Now()) && t.removeStale(ctx, h)
	}
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
func (t *term) touchMembers(ctx context.Context) {
	for range t.cfg.endpoints {
		go func() {
			rctx, cancel := context.WithTimeout(ctx, leaderPoll)
			defer cancel()
			t.cli.Get(rctx, t.cfg.prefix, clientv3.WithCountOnly())
		}()
	}
}

// followWrites passes on the writes under the election prefix (the
// holder's heartbeats) until ctx ends, which also cancels the watch: the
// etcd client keeps every response that nobody reads. It runs apart from
// the poll because creating a watch waits for the server's confirmation on
// a stream shared with every other watch, and that stream may be bound to
// a member that has vanished, which is what the poll is there to go round.
// A watch that ends (its member lost the raft leader, or the stream broke)
// is opened again after a poll interval.
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

// holderView is what a candidate has seen of the holder's heartbeat.
//
// The holder rewrites its election key every TTL/leaderRenewalsPerTTL and holds
// the address only until the send time of its last acknowledged heartbeat +
// TTL - margin. A candidate that has seen the key's mod revision stand still
// for the holder's whole TTL, counted from the moment it first saw that
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
	*h = holderView{key: string(kv.Key), name: parseEntry(kv.Value).name, createRev: kv.CreateRevision, modRev: kv.ModRevision,
		since: now, ttl: ttl}
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
	}
	return true
}

// quiet says whether the holder's heartbeat has not been seen to move for
// longer than a leader's renewal interval and a poll: the watch has
// nothing to say, and etcd is asked. Also true before the holder is known.
func (h *holderView) quiet(now time.Time) bool {
	return h.ttl == 0 || now.Sub(h.since) > h.ttl/leaderRenewalsPerTTL+leaderPoll
}

func (h *holderView) sameKey(kv *mvccpb.KeyValue) bool {
	return string(kv.Key) == h.key && kv.CreateRevision == h.createRev
}

// stale says whether the holder's heartbeat has stood still for its TTL.
func (h *holderView) stale(now time.Time) bool {
	return h.ttl > 0 && now.Sub(h.since) >= h.ttl
}

// grantedTTL is the TTL etcd granted the holder's lease (0 if unknown). The
// holder's own timing uses that TTL or a shorter requested one, never a
// longer one, and other nodes may be configured with a different vip.ttl.
func (t *term) grantedTTL(ctx context.Context, id clientv3.LeaseID) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, leaderPoll)
	defer cancel()
	resp, err := t.cli.TimeToLive(ctx, id)
	t.failed(ctx, opRead, err)
	if err != nil || resp.GrantedTTL <= 0 {
		return 0
	}
	return time.Duration(resp.GrantedTTL) * time.Second
}

// removeStale deletes the election key of a holder whose heartbeat stood
// still, unless it has moved since. It reports whether the key was removed.
func (t *term) removeStale(ctx context.Context, h holderView) bool {
	ctx, cancel := context.WithTimeout(ctx, leaderPoll)
	defer cancel()
	resp, err := t.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(h.key), "=", h.modRev)).
		Then(clientv3.OpDelete(h.key)).Commit()
	t.failed(ctx, opWrite, err)
	if err != nil || !resp.Succeeded {
		return false // etcd busy (we ask again), or the heartbeat moved, or the key is gone already
	}
	t.log.warnf("removed election key %s of holder %q: its heartbeat stood still for %v (dead, frozen or cut off; by its own deadline it no longer holds the address)",
		h.key, h.name, time.Since(h.since).Round(time.Millisecond))
	return true
}

// claimRanked is the rank-aware claim. The etcd election is first come,
// first served; the VIP should go to the best-ranked candidate in one step
// (docs/design.md, section 3). So the candidate that leads reads every candidate's
// entry and claims only if none outranks its own; otherwise it steps aside
// (errOutranked: the node starts a new term, at the end of the queue), and
// the next in line decides the same way, until the best one claims. Nobody
// adds the address on the way. The claim is conditional on no candidate's
// entry having changed since it was read, so a rank published in between
// is not missed.
//
// Each request is bounded by claimAttempt and tried again until
// rpcTimeout: right after a node was lost, the client may still send a
// request to the etcd member that vanished with it, and the next attempt
// goes to the next member. A claim that reached etcd but whose answer was
// lost is safe to send again: its conditions still hold, and the release
// mark it took is then missing, so the node waits the takeover wait
// (the conservative side).
func (t *term) claimRanked(key string, createRev int64, id clientv3.LeaseID) (int64, bool, error) {
	give := time.Now().Add(rpcTimeout)
	for moved := 0; ; {
		own, others, err := t.candidates(key)
		if err != nil {
			err = fmt.Errorf("%w %s: read the candidates: %w", errClaim, key, err)
		} else if best, ok := bestOf(others); ok && best.rank.above(own.rank) {
			return 0, false, fmt.Errorf("%w: %s (%s) outranks this node (%s)", errOutranked, best.name, best.rank, own.rank)
		} else {
			var rev int64
			var released bool
			rev, released, err = t.claim(key, createRev, id, others)
			switch {
			case errors.Is(err, errRanksMoved):
				if moved++; moved < 5 {
					continue
				}
				return 0, false, err
			case !errors.Is(err, errClaimRPC):
				return rev, released, err
			}
		}
		t.failed(t.ctx, opClaim, err) // only a read or a claim that went unanswered gets here
		if t.ctx.Err() != nil || time.Now().After(give) {
			return 0, false, err
		}
	}
}

// claimAttempt bounds each request of a claim (see claimRanked).
const claimAttempt = 500 * time.Millisecond

// errClaimRPC: a claim's request failed or went unanswered; it may be
// sent again.
var errClaimRPC = errors.New("no answer")

// errRanksMoved: a candidate's entry changed between reading and claiming.
var errRanksMoved = errors.New("a candidate's entry changed while claiming")

// candidate is one election entry as read from etcd.
type candidate struct {
	entry
	key               string
	createRev, modRev int64
	lease             clientv3.LeaseID
}

func candidateFrom(kv *mvccpb.KeyValue) candidate {
	return candidate{entry: parseEntry(kv.Value), key: string(kv.Key), createRev: kv.CreateRevision, modRev: kv.ModRevision,
		lease: clientv3.LeaseID(kv.Lease)}
}

// readCandidates reads every election entry, in queue order, and the
// revision they were read at.
func (t *term) readCandidates(timeout time.Duration) ([]candidate, int64, error) {
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	return listCandidates(ctx, t.cli, t.cfg.prefix)
}

// listCandidates reads every election entry under prefix, in queue order,
// and the revision they were read at (also for `vipd -status`).
func listCandidates(ctx context.Context, cli *clientv3.Client, prefix string) ([]candidate, int64, error) {
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, 0, err
	}
	cs := make([]candidate, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		cs[i] = candidateFrom(kv)
	}
	return cs, resp.Header.Revision, nil
}

// candidates reads every election entry: ours, and the others in queue
// order.
func (t *term) candidates(own string) (candidate, []candidate, error) {
	cs, _, err := t.readCandidates(claimAttempt)
	if err != nil {
		return candidate{}, nil, err
	}
	var me candidate
	var others []candidate
	for _, c := range cs {
		if c.key == own {
			me = c
		} else {
			others = append(others, c)
		}
	}
	return me, others, nil
}

// bestOf is the best-ranked candidate, the first in the queue among equals.
func bestOf(cs []candidate) (candidate, bool) {
	var best candidate
	for i, c := range cs {
		if i == 0 || c.rank.above(best.rank) {
			best = c
		}
	}
	return best, len(cs) > 0
}

// claim confirms that the key the campaign won still exists with the create
// revision and lease it was won with (Campaign can return success after the
// key is gone: the lease expired while it waited), and that the other
// candidates' entries are as read, and, in the same transaction, writes the
// first heartbeat and takes the release mark (see releaseKey). It returns
// the revision of the claim and whether the mark was there.
func (t *term) claim(key string, createRev int64, id clientv3.LeaseID, others []candidate) (int64, bool, error) {
	ctx, cancel := context.WithTimeout(t.ctx, claimAttempt)
	defer cancel()
	conds := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(key), "=", createRev),
		clientv3.Compare(clientv3.LeaseValue(key), "=", id),
	}
	for _, c := range others {
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(c.key), "=", c.modRev))
	}
	resp, err := t.cli.Txn(ctx).If(conds...).
		Then(beatOp(key, t.heartbeat(time.Now())), clientv3.OpGet(t.cfg.prefix), clientv3.OpDelete(t.cfg.prefix)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("%w %s: %w: %w", errClaim, key, errClaimRPC, err)
	}
	if resp.Succeeded {
		mark := resp.Responses[1].GetResponseRange().GetKvs()
		return resp.Header.Revision, len(mark) > 0, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	switch {
	case len(kvs) == 0:
		return 0, false, fmt.Errorf("%w: %s vanished after the campaign", errKeyGone, key)
	case kvs[0].CreateRevision == createRev && clientv3.LeaseID(kvs[0].Lease) == id:
		return 0, false, errRanksMoved
	}
	return 0, false, fmt.Errorf("%w %s: it changed hands (create revision %d lease %x, want %d %x)",
		errClaim, key, kvs[0].CreateRevision, kvs[0].Lease, createRev, id)
}

// publishRank writes the node's rank into our election entry whenever the
// node reports a new one, until the term ends. The write is conditional on
// the key being ours; before Campaign has created it (or while etcd is
// unreachable) it is tried again every candidate renewal interval.
// Campaign itself writes the entry as last published.
func (t *term) publishRank(key string, id clientv3.LeaseID) {
	published := t.cfg.rank
	want := published
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case want = <-t.ranks:
		case <-retry.C:
		}
		if want == published {
			continue
		}
		value := entryValue(t.cfg.name, want)
		ctx, cancel := context.WithTimeout(t.ctx, rpcTimeout)
		resp, err := t.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", id)).
			Then(clientv3.OpPut(key, t.withTenure(value), clientv3.WithIgnoreLease())).Commit()
		cancel()
		t.failed(t.ctx, opWrite, err)
		if err == nil && resp.Succeeded {
			published = want
			t.entry.Store(value)
			continue
		}
		retry.Reset(t.ttl / candidateRenewalsPerTTL)
	}
}

// followRivals tells the node, while it leads, which other candidate has
// the best rank, each time that changes: a list, then a watch from the
// list's revision. The watch leaves out our own key, whose heartbeats
// would otherwise come back to us several times a second. A watch that
// ends (its member lost the raft leader, the stream broke, the revision
// was compacted) is replaced by a new list and watch. It ends with the
// term.
func (t *term) followRivals(own string, rev int64) {
	var last rival
	report := func(cs map[string]candidate) {
		list := make([]candidate, 0, len(cs))
		for _, c := range cs {
			list = append(list, c)
		}
		sort.Slice(list, func(i, j int) bool { return list[i].createRev < list[j].createRev })
		best, ok := bestOf(list)
		r := rival{entry: best.entry, known: ok}
		if r != last && t.send(termEvent{kind: evRival, rival: r}) {
			last = r
		}
	}
	for t.ctx.Err() == nil {
		cs, rev, err := t.listRivals(own)
		if err == nil {
			report(cs)
			t.watchRivals(own, rev, cs, report)
		}
		t.sleep(leaderPoll)
	}
}

// listRivals reads the other candidates and the revision they were read at.
func (t *term) listRivals(own string) (map[string]candidate, int64, error) {
	list, rev, err := t.readCandidates(rpcTimeout)
	t.failed(t.ctx, opRead, err)
	if err != nil {
		return nil, 0, err
	}
	cs := map[string]candidate{}
	for _, c := range list {
		if c.key != own {
			cs[c.key] = c
		}
	}
	return cs, rev, nil
}

// watchRivals applies the writes and deletes under the election prefix,
// except to own, after rev to cs, and reports each batch, until the watch
// ends. Two ranges, below and above our key, leave our key out.
func (t *term) watchRivals(own string, rev int64, cs map[string]candidate, report func(map[string]candidate)) {
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
			report(cs)
		}
	}
}

// releaseKey deletes our election key (the next candidate leads at once)
// and, in the same transaction, tells the next holder that this one
// removed the address before it left, so that it need not wait out the
// kernel's lifetime slack (node.go, takeoverWait). The mark is the bare
// prefix key (election keys are below it), written only while our
// election key still exists, so only while nobody has claimed since we
// did; every claim takes it away. A mark therefore always speaks of the
// last node that claimed. The lease is revoked afterwards, as after any
// term.
func (t *term) releaseKey(key string, createRev int64) {
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	resp, err := releaseTxn(ctx, t.cli, t.cfg.prefix, t.cfg.name, key, createRev)
	t.failed(context.Background(), opWrite, err)
	switch {
	case err != nil:
		t.log.warnf("could not tell the next holder that the address is released: %v (it will wait %v before adding it)", err, takeoverWait)
	case !resp.Succeeded:
		t.log.warnf("election key %s was gone before the release was marked; the next holder waits %v before adding the address", key, takeoverWait)
	}
}

// releaseTxn deletes an election key, unless it changed hands, and leaves
// the release mark in the same transaction (see releaseKey).
func releaseTxn(ctx context.Context, cli *clientv3.Client, prefix, name, key string, createRev int64) (*clientv3.TxnResponse, error) {
	return cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", createRev)).
		Then(clientv3.OpPut(prefix, "released by "+name), clientv3.OpDelete(key)).Commit()
}

// beatOp is a heartbeat: the key rewritten with value (see heartbeat),
// which gives it a new mod revision, under the same lease.
func beatOp(key, value string) clientv3.Op {
	return clientv3.OpPut(key, value, clientv3.WithIgnoreLease())
}

// heartbeat is our election entry as a heartbeat sent at now writes it:
// the entry as last published, with our tenure's start and now, which
// `vipd -status` shows (etcd keeps no times).
func (t *term) heartbeat(now time.Time) string {
	e := parseEntry([]byte(t.entry.Load().(string)))
	e.since, e.beat = t.held.UnixMilli(), now.UnixMilli()
	if t.held.IsZero() { // a tenure nobody recorded (an old state file): unknown, but the entry stays readable
		e.since = e.beat
	}
	t.beats.Store([2]int64{e.since, e.beat})
	b, _ := e.MarshalText()
	return string(b)
}

// withTenure adds to an entry value the since and beat of our last
// heartbeat, if we hold the VIP: a rank published between two heartbeats
// must not make the holder look like a candidate to `vipd -status`.
func (t *term) withTenure(value string) string {
	sb, ok := t.beats.Load().([2]int64)
	if !ok {
		return value
	}
	e := parseEntry([]byte(value))
	e.since, e.beat = sb[0], sb[1]
	b, _ := e.MarshalText()
	return string(b)
}

// beat sends one heartbeat: our election key rewritten, on condition that it
// is still ours. A leader whose key was removed learns it here
// (errKeyGone).
func (t *term) beat(key string, createRev int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	resp, err := t.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", createRev)).
		Then(beatOp(key, t.heartbeat(time.Now()))).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s (another node removed it after our heartbeat stood still, or it was deleted by hand)", errKeyGone, key)
	}
	return nil
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

// revoke gives the lease back so the next candidate need not wait for it to
// expire. Bounded: with etcd unreachable the lease expires by itself.
func (t *term) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	if _, err := t.cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.failed(context.Background(), opRevoke, err)
		t.log.warnf("revoke lease %x: %v (etcd will expire it)", id, err)
		return
	}
	t.log.infof("lease %x revoked", id)
}

// failed counts a failed etcd request (err set), unless ctx ended: a
// request the term's end cut off has not failed.
func (t *term) failed(ctx context.Context, op etcdOp, err error) {
	if err != nil && ctx.Err() == nil {
		t.cfg.met.etcdFailed(op)
	}
}

// sleep waits d unless the term ends first.
func (t *term) sleep(d time.Duration) bool {
	if d <= 0 {
		return t.ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-t.ctx.Done():
		return false
	}
}

// diagnose says why etcd cannot be reached where a plain connection attempt
// can tell: the client library waits for a connection and reports only a
// deadline, which hides a refused connection or a certificate mismatch.
func diagnose(endpoints []string, tlsCfg *tls.Config) string {
	// In parallel: the term waits for this before it retries.
	errs := make([]error, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Go(func() { errs[i] = dialEndpoint(ep, tlsCfg, time.Second) })
	}
	wg.Wait()
	var reasons []string
	for i, err := range errs {
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", endpoints[i], err))
		}
	}
	if len(reasons) == 0 {
		return ""
	}
	return " [" + strings.Join(reasons, "; ") + "]"
}

// dialEndpoint connects to an etcd endpoint and, for https, completes the
// TLS handshake.
func dialEndpoint(endpoint string, tlsCfg *tls.Config, timeout time.Duration) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "2379")
	}
	conn, err := net.DialTimeout("tcp", host, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if u.Scheme != "https" {
		return nil
	}
	cfg := &tls.Config{}
	if tlsCfg != nil {
		cfg = tlsCfg.Clone()
	}
	cfg.ServerName = u.Hostname()
	conn.SetDeadline(time.Now().Add(timeout))
	return tls.Client(conn, cfg).Handshake()
}

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

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
	// fenced (evElected): the last holder the poll saw advertised a
	// kernel fence, so any copy its kernel keeps is silent: no takeover
	// wait either.
	fenced bool
	rival  rival // evRival
	err    error
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
	prefix string
	name   string
	ttl    time.Duration
	// window is the failure-detection window this node fences itself by
	// in the kernel while it holds (vip.window, or the TTL); 0 without a
	// kernel fence: the TTL rule. It is advertised in the entry.
	window    time.Duration
	rank      rank         // the rank to campaign with; setRank changes it
	endpoints []string     // for diagnose
	tls       *tls.Config  // for diagnose
	resume    *resumeLease // carry on this lease if it still leads (resume.go)
	met       *metrics     // the node's; nil records nothing
}

// term is the core a term's phases share (candidate.go, claim.go,
// leader.go, resumelead.go): the client, the configuration, the way to the
// node's loop, and the term's lifetime. Each phase keeps its own state in
// its own type (poller, claimer, keeper, rivals, resumer).
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
	// prevFenced says whether the last holder the poll saw advertised a
	// kernel fence (candidate.go): its copy of the address, if its kernel
	// keeps one, cannot speak, so no takeover wait is due (takeover.go).
	prevFenced atomic.Bool
	poke       chan struct{} // renewNow
	ranks      chan rank     // setRank; holds the latest only
	own        ownEntry      // our election entry, as published and as the heartbeat writes it
	// renewer sends the lease's renewals, one at a time (the resume's,
	// then keep's), but the candidate's poll may ask it for a fresh
	// stream (renewer.fresh).
	renewer renewer
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
	t.own.publish(entryValue(cfg.name, cfg.rank, cfg.window))
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

// beatDeadline is when a leader must have stepped down if its last
// acknowledged heartbeat was sent at sent. Without a kernel fence (window
// 0) it is the lease's rule: other nodes wait a TTL of standing still
// (candidate.go holderView). With one, they wait the window the entry
// advertises, and the kernel drops the VIP's frames at this deadline to
// the millisecond, so only fenceMargin is kept back (docs/design.md,
// section 8a).
func beatDeadline(sent time.Time, ttl, window time.Duration) time.Time {
	if window <= 0 {
		return deadlineAfter(sent, ttl)
	}
	// Candidates wait the shorter of the advertised window and the
	// granted TTL (a resumed term's lease may be shorter than vip.ttl).
	window = min(window, ttl)
	return sent.Add(window - fenceMargin(window))
}

// fenceMargin is what a kernel-fenced holder keeps back from its window:
// the transmit queue behind the filter (a frame that passed it just in
// time is on the wire within milliseconds) and the two clocks' rates.
func fenceMargin(window time.Duration) time.Duration {
	return max(50*time.Millisecond, window/10)
}

// window is the time the leader's heartbeat may stand still before the
// other nodes take over: the TTL, or the kernel-fenced window if shorter.
func (t *term) window() time.Duration {
	if w := t.cfg.window; w > 0 && (t.ttl == 0 || w < t.ttl) {
		return w
	}
	return t.ttl
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

// run is the term from start to end: a resumed lease (resumelead.go), or a
// new lease through the candidate's phase (candidate.go) and the claim
// (claim.go) into the leader's (leader.go).
func (t *term) run() {
	defer close(t.done)
	if r := t.cfg.resume; r != nil && (&resumer{t: t, r: *r}).lead() {
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
	k := t.keep(id, key, won, stopPoll, nil)
	if k.leading && t.released.Load() {
		k.releaseKey()
	}
}

// keyOf is the election key Campaign creates for lease id.
func (t *term) keyOf(id clientv3.LeaseID) string { return fmt.Sprintf("%s/%x", t.cfg.prefix, id) }

// The info key says which vipd a node runs: "<vip.key>@info/<lease hex>",
// "version=0.1.0+abc1234", on the election key's lease, so it lives and
// dies with it. It stands beside the election, not under its prefix,
// where it would count as a candidate. The version is not in the entry
// itself because vipd before 0.1.0 reads no word it does not know there
// (rank.go): it would rank such a node below everyone and see no holder.
const infoKeyMark = "@info/"

func infoPrefix(electionKey string) string { return electionKey + infoKeyMark }

func infoKey(electionKey string, id clientv3.LeaseID) string {
	return fmt.Sprintf("%s%x", infoPrefix(electionKey), id)
}

func infoValue() string { return "version=" + release() }

// describe writes our info key; a failure only delays it (publishRank
// tries again), as nothing but -status reads it.
func (t *term) describe(id clientv3.LeaseID) bool {
	ctx, cancel := context.WithTimeout(t.ctx, rpcTimeout)
	defer cancel()
	_, err := t.cli.Put(ctx, infoKey(t.cfg.prefix, id), infoValue(), clientv3.WithLease(id))
	t.failed(t.ctx, opWrite, err)
	return err == nil
}

// renewOnce sends one lease renewal, bounded by timeout.
func (t *term) renewOnce(id clientv3.LeaseID, timeout time.Duration) error {
	return t.renewer.renew(t.ctx, id, timeout)
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
// lifetime asks for the next renewal at once (hold.go addrHold.extend), so
// every 500 ms leaves room for one late renewal. A candidate's only keep
// its lease and its place in the election, and it renews again the moment
// it wins: three per TTL leave room for two to fail. Each renewal is an
// etcd request, and etcd also serves the Kubernetes API: an idle cluster
// should cost it little.
const (
	leaderRenewalsPerTTL    = 4
	candidateRenewalsPerTTL = 3
)

// publishRank writes our info key once, and the node's rank into our
// election entry whenever the node reports a new one, until the term
// ends. The write is conditional on
// the key being ours; before Campaign has created it (or while etcd is
// unreachable) it is tried again every candidate renewal interval.
// Campaign itself writes the entry as last published.
func (t *term) publishRank(key string, id clientv3.LeaseID) {
	published := t.cfg.rank
	want := published
	described := t.describe(id)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	if !described {
		retry.Reset(renewalInterval(t.ttl, false))
	}
	for {
		select {
		case <-t.ctx.Done():
			return
		case want = <-t.ranks:
		case <-retry.C:
			if !described {
				described = t.describe(id)
			}
		}
		if want != published {
			value := entryValue(t.cfg.name, want, t.cfg.window)
			ctx, cancel := context.WithTimeout(t.ctx, rpcTimeout)
			resp, err := t.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", id)).
				Then(clientv3.OpPut(key, t.own.withTenure(value), clientv3.WithIgnoreLease())).Commit()
			cancel()
			t.failed(t.ctx, opWrite, err)
			if err == nil && resp.Succeeded {
				published = want
				t.own.publish(value)
			}
		}
		if want != published || !described {
			retry.Reset(renewalInterval(t.ttl, false))
		}
	}
}

// ownEntry is our election entry: as last published (publishRank writes
// it; the campaign and the heartbeat read it), and the tenure that each
// heartbeat adds to it (see heartbeatValue).
type ownEntry struct {
	value atomic.Value // string: the entry as last published
	// held is when this node's tenure began: set by keep before the claim
	// (or by the resume, resumelead.go) and read by the heartbeat,
	// all on the term's run goroutine.
	held  time.Time
	beats atomic.Value // [2]int64: the since and beat the last heartbeat wrote (see withTenure)
}

func (o *ownEntry) publish(value string) { o.value.Store(value) }

func (o *ownEntry) published() string { return o.value.Load().(string) }

// heartbeat is our election entry as a heartbeat sent at now writes it.
func (o *ownEntry) heartbeat(now time.Time) string {
	value, beats := heartbeatValue(o.published(), o.held, now)
	o.beats.Store(beats)
	return value
}

// withTenure adds to an entry value the since and beat of our last
// heartbeat, if we hold the VIP: a rank published between two heartbeats
// must not make the holder look like a candidate to `vipd -status`.
func (o *ownEntry) withTenure(value string) string {
	beats, ok := o.beats.Load().([2]int64)
	if !ok {
		return value
	}
	return tenureValue(value, beats)
}

// heartbeatValue is an entry as published, as a heartbeat sent at now
// writes it: with the tenure's start (held) and now, which `vipd -status`
// shows (etcd keeps no times); and the two as written.
func heartbeatValue(published string, held, now time.Time) (string, [2]int64) {
	since, beat := held.UnixMilli(), now.UnixMilli()
	if held.IsZero() { // a tenure nobody recorded (an old state file): unknown, but the entry stays readable
		since = beat
	}
	beats := [2]int64{since, beat}
	return tenureValue(published, beats), beats
}

// tenureValue is an entry value with the since and beat in beats.
func tenureValue(value string, beats [2]int64) string {
	e := parseEntry([]byte(value))
	e.since, e.beat = beats[0], beats[1]
	b, _ := e.MarshalText()
	return string(b)
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

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strings"
	"sync"
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

// termEventKind says what happened in a term.
type termEventKind int

const (
	evGranted termEventKind = iota // lease granted; deadline is set
	evRenewed                      // renewal acknowledged; deadline moved
	evElected                      // campaign won, key claimed; deadline is the heartbeat's
	evBeat                         // heartbeat acknowledged; its deadline moved
	evLost                         // lease or key gone; the term is over
	evTrouble                      // etcd unreachable (err set) or back (err nil)
)

// termEvent is what a term reports to the node's loop.
type termEvent struct {
	t        *term
	kind     termEventKind
	deadline time.Time // evGranted, evRenewed, evElected, evBeat: when to step down at the latest
	ttl      time.Duration
	err      error
}

// electConfig is the part of the configuration a term needs.
type electConfig struct {
	prefix    string
	name      string
	ttl       time.Duration
	endpoints []string    // for diagnose
	tls       *tls.Config // for diagnose
}

type term struct {
	cli     *clientv3.Client
	cfg     electConfig
	log     *logger
	events  chan<- termEvent
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{} // closed when the lease is revoked (or given up)
	ttl     time.Duration // the effective TTL, set once the lease is granted
	trouble chan error    // etcd unreachable (the error) or back (nil); see reportTrouble
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
	t := &term{cli: cli, cfg: cfg, log: log, events: events, ctx: ctx, cancel: cancel, done: make(chan struct{}), trouble: make(chan error, 8)}
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
	id, ttl, ok := t.grant()
	if !ok {
		return
	}
	t.ttl = ttl
	defer t.revoke(id)

	session, err := concurrency.NewSession(t.cli, concurrency.WithLease(id), concurrency.WithContext(t.ctx))
	if err != nil {
		t.send(termEvent{kind: evLost, err: fmt.Errorf("open election session: %w", err)})
		return
	}
	// The session's own KeepAlive would renew the lease outside our
	// send-time bookkeeping; we renew it ourselves.
	session.Orphan()

	go t.renew(id, ttl)
	t.campaign(concurrency.NewElection(session, t.cfg.prefix), id)
	// The lease is revoked only when the node ends the term.
	<-t.ctx.Done()
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
			ok := t.send(termEvent{kind: evGranted, ttl: ttl, deadline: deadlineAfter(sent, ttl)})
			if !ok {
				t.revoke(resp.ID)
			}
			return resp.ID, ttl, ok
		}
		if t.ctx.Err() != nil {
			return 0, 0, false
		}
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
// when it is back. It runs apart from the lease loops: finding out why the
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

// renewalsPerTTL is how many renewals are sent per TTL. With TTL 2 the
// address lifetime is 1 s: renewing every 400 ms leaves room for one
// renewal to time out and the next to refresh the address in time.
const renewalsPerTTL = 5

// renew keeps the lease alive with KeepAliveOnce every TTL/renewalsPerTTL,
// recording when each renewal was sent.
func (t *term) renew(id clientv3.LeaseID, ttl time.Duration) {
	interval := ttl / renewalsPerTTL
	trouble := false
	for {
		sent := time.Now()
		ctx, cancel := context.WithTimeout(t.ctx, interval)
		_, err := t.cli.KeepAliveOnce(ctx, id)
		cancel()
		switch {
		case t.ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			t.send(termEvent{kind: evLost, err: errors.New("lease expired on the server")})
			return
		case err != nil:
			if !trouble {
				trouble = true
				t.troubled(fmt.Errorf("renew lease: %w", err))
			}
		default:
			if trouble {
				trouble = false
				t.troubled(nil)
			}
			t.send(termEvent{kind: evRenewed, deadline: deadlineAfter(sent, ttl)})
		}
		if !t.sleep(time.Until(sent.Add(interval))) {
			return
		}
	}
}

// campaign waits to become leader, claims the election key (checking that
// it is still ours and writing the first heartbeat), reports it, and then
// keeps the heartbeat going and watches the key until the term ends.
//
// Two paths can find that we lead, and the first one counts: the library's
// Campaign, which waits on a watch stream, and pollLeader, which asks with
// short unary requests. A watch stream bound to an etcd member that has just
// vanished (its node died or was cut off) hangs until gRPC gives up on the
// connection; the poll goes round it.
func (t *term) campaign(e *concurrency.Election, id clientv3.LeaseID) {
	key := fmt.Sprintf("%s/%x", t.cfg.prefix, id) // the key Campaign creates for this lease
	won := make(chan int64, 2)                    // our key's create revision, once it leads
	go t.runCampaign(e, won)
	go t.pollLeader(key, id, won)
	var createRev int64
	select {
	case createRev = <-won:
	case <-t.ctx.Done():
		return
	}
	sent := time.Now()
	rev, err := t.claim(key, createRev, id)
	if err != nil {
		t.send(termEvent{kind: evLost, err: err})
		return
	}
	if !t.send(termEvent{kind: evElected, deadline: deadlineAfter(sent, t.ttl)}) {
		return
	}
	go t.heartbeat(key, createRev, sent)
	t.watchKey(key, rev)
}

// runCampaign campaigns until it wins or the term ends. Campaign blocks in
// Resign when its context is cancelled while etcd is unreachable, so nothing
// waits for this goroutine.
func (t *term) runCampaign(e *concurrency.Election, won chan<- int64) {
	backoff := backoffMin
	for {
		err := e.Campaign(t.ctx, t.cfg.name)
		if err == nil {
			won <- e.Rev()
			return
		}
		if t.ctx.Err() != nil {
			return
		}
		t.log.warnf("campaign for %s: %v (retrying)", t.cfg.prefix, err)
		if !t.sleep(backoff) {
			return
		}
		backoff = min(backoff*2, backoffMax)
	}
}

// leaderPoll is how often a candidate asks etcd whether its key leads. It
// is also how late, at most, a candidate notices that the holder's heartbeat
// has moved.
const leaderPoll = 250 * time.Millisecond

// pollLeader reports our key's create revision once it is the oldest key
// under the election prefix, which is what makes a campaign's owner the
// leader. Until then it follows the holder's heartbeat (see holderView):
// through a watch, which hears each heartbeat within milliseconds while its
// etcd member lives, and through the polls, which go on when it does not.
func (t *term) pollLeader(key string, id clientv3.LeaseID, won chan<- int64) {
	var h holderView
	var beats clientv3.WatchChan // nil (blocking) after the watch closed
	watching, pollNow := false, false
	tick := time.NewTicker(leaderPoll)
	defer tick.Stop()
	for {
		if !watching {
			beats, watching = t.cli.Watch(t.ctx, t.cfg.prefix+"/", clientv3.WithPrefix(), clientv3.WithFilterDelete()), true
		}
		if !pollNow {
			select {
			case <-t.ctx.Done():
				return
			case wr, ok := <-beats:
				if !ok {
					beats = nil // watched again after the next poll
				}
				for _, ev := range wr.Events {
					h.heard(ev.Kv, time.Now())
				}
				continue
			case <-tick.C:
			}
		}
		pollNow, watching = false, beats != nil
		ctx, cancel := context.WithTimeout(t.ctx, leaderPoll)
		resp, err := t.cli.Get(ctx, t.cfg.prefix+"/", clientv3.WithFirstCreate()...)
		cancel()
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
			h.ttl = t.grantedTTL(clientv3.LeaseID(kv.Lease))
		}
		// After removing the holder's key, the next key in line leads:
		// ask again at once.
		pollNow = h.stale(time.Now()) && t.removeStale(h)
	}
}

// holderView is what a candidate has seen of the holder's heartbeat.
//
// The holder rewrites its election key every TTL/renewalsPerTTL and holds
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
	*h = holderView{key: string(kv.Key), name: string(kv.Value), createRev: kv.CreateRevision, modRev: kv.ModRevision,
		since: now, ttl: ttl}
}

// heard records a write to a key under the election prefix, seen at now:
// a heartbeat if it is the holder's key.
func (h *holderView) heard(kv *mvccpb.KeyValue, now time.Time) {
	if h.sameKey(kv) && kv.ModRevision > h.modRev {
		h.modRev, h.since = kv.ModRevision, now
	}
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
func (t *term) grantedTTL(id clientv3.LeaseID) time.Duration {
	ctx, cancel := context.WithTimeout(t.ctx, leaderPoll)
	defer cancel()
	resp, err := t.cli.TimeToLive(ctx, id)
	if err != nil || resp.GrantedTTL <= 0 {
		return 0
	}
	return time.Duration(resp.GrantedTTL) * time.Second
}

// removeStale deletes the election key of a holder whose heartbeat stood
// still, unless it has moved since. It reports whether the key was removed.
func (t *term) removeStale(h holderView) bool {
	ctx, cancel := context.WithTimeout(t.ctx, leaderPoll)
	defer cancel()
	resp, err := t.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(h.key), "=", h.modRev)).
		Then(clientv3.OpDelete(h.key)).Commit()
	if err != nil || !resp.Succeeded {
		return false // etcd busy (we ask again), or the heartbeat moved, or the key is gone already
	}
	t.log.warnf("removed election key %s of holder %q: its heartbeat stood still for %v (dead, frozen or cut off; by its own deadline it no longer holds the address)",
		h.key, h.name, time.Since(h.since).Round(time.Millisecond))
	return true
}

// claim confirms that the key the campaign won still exists with the create
// revision and lease it was won with (Campaign can return success after the
// key is gone: the lease expired while it waited) and, in the same
// transaction, writes the first heartbeat.
func (t *term) claim(key string, createRev int64, id clientv3.LeaseID) (int64, error) {
	ctx, cancel := context.WithTimeout(t.ctx, rpcTimeout)
	defer cancel()
	resp, err := t.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(key), "=", createRev),
		clientv3.Compare(clientv3.LeaseValue(key), "=", id),
	).Then(beatOp(key)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return 0, fmt.Errorf("claim election key %s: %w", key, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return 0, fmt.Errorf("election key %s vanished after the campaign", key)
	}
	return 0, fmt.Errorf("election key %s changed hands (create revision %d lease %x, want %d %x)",
		key, kvs[0].CreateRevision, kvs[0].Lease, createRev, id)
}

// beatOp rewrites a key as it is: a new mod revision, same value and lease.
func beatOp(key string) clientv3.Op {
	return clientv3.OpPut(key, "", clientv3.WithIgnoreValue(), clientv3.WithIgnoreLease())
}

// heartbeat rewrites our election key every TTL/renewalsPerTTL while we lead
// (see holderView), recording when each write was sent. The write is
// conditional on the key still being ours: a leader whose key was removed
// learns it here.
func (t *term) heartbeat(key string, createRev int64, last time.Time) {
	interval := t.ttl / renewalsPerTTL
	for t.sleep(time.Until(last.Add(interval))) {
		sent := time.Now()
		last = sent
		ctx, cancel := context.WithTimeout(t.ctx, interval)
		resp, err := t.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", createRev)).
			Then(beatOp(key)).Commit()
		cancel()
		switch {
		case t.ctx.Err() != nil:
			return
		case err != nil:
			// The renewal loop reports etcd trouble; a missed heartbeat
			// only lets the deadline come closer.
		case !resp.Succeeded:
			t.send(termEvent{kind: evLost, err: fmt.Errorf("election key %s is gone (another node removed it after our heartbeat stood still, or it was deleted by hand)", key)})
			return
		default:
			t.send(termEvent{kind: evBeat, deadline: deadlineAfter(sent, t.ttl)})
		}
	}
}

// watchKey ends the term if someone deletes our election key (an operator
// forcing a handover, etcd expiring the lease, or another node after our
// heartbeat stood still). Puts, our own heartbeats among them, are filtered
// out on the server.
func (t *term) watchKey(key string, rev int64) {
	for wr := range t.cli.Watch(t.ctx, key, clientv3.WithRev(rev+1), clientv3.WithFilterPut()) {
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				t.send(termEvent{kind: evLost, err: fmt.Errorf("election key %s was deleted", key)})
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

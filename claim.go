package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The claim: the step between the candidate's phase and the leader's,
// once our key leads the election.

// claimer is one claim of the key our campaign won (see claimRanked).
type claimer struct {
	t         *term
	key       string
	createRev int64 // the key's, as the campaign won it
	id        clientv3.LeaseID
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
//
// It returns the revision of the claim and whether the release mark was
// there.
func (c claimer) claimRanked() (int64, bool, error) {
	t := c.t
	give := time.Now().Add(rpcTimeout)
	for moved := 0; ; {
		own, others, err := c.candidates()
		if err != nil {
			err = fmt.Errorf("%w %s: read the candidates: %w", errClaim, c.key, err)
		} else if best, ok := bestOf(others); ok && best.rank.above(own.rank) {
			return 0, false, fmt.Errorf("%w: %s (%s) outranks this node (%s)", errOutranked, best.name, best.rank, own.rank)
		} else {
			rev, released, cerr := c.claim(others)
			if errors.Is(cerr, errRanksMoved) {
				moved++
			}
			switch claimNext(cerr, moved) {
			case claimDone:
				return rev, released, cerr
			case claimReread:
				continue
			}
			err = cerr
		}
		t.failed(t.ctx, opClaim, err) // only a read or a claim that went unanswered gets here
		if t.ctx.Err() != nil || time.Now().After(give) {
			return 0, false, err
		}
	}
}

// claimStep is what claimRanked does after a claim's transaction.
type claimStep int

const (
	claimDone   claimStep = iota // claimed, or failed for good: return its outcome
	claimReread                  // a candidate's entry moved: read them again and claim at once
	claimRetry                   // unanswered: read and claim again, until rpcTimeout
)

// claimNext decides after a claim that ended with err, the moved-th time
// a candidate's entry changed under it: a rank that moves five times in
// one claim is a node flapping, and the claim gives up (the node starts a
// new term).
func claimNext(err error, moved int) claimStep {
	switch {
	case errors.Is(err, errRanksMoved) && moved < 5:
		return claimReread
	case errors.Is(err, errRanksMoved):
		return claimDone
	case errors.Is(err, errClaimRPC):
		return claimRetry
	}
	return claimDone
}

// claimAttempt bounds each request of a claim (see claimRanked).
const claimAttempt = 500 * time.Millisecond

// claimAttempt is the term's bound on each request of its claim: less
// under a short fenced window, so that a request that went to a vanished
// member is given up (and sent to the next) sooner.
func (t *term) claimAttempt() time.Duration {
	return min(claimAttempt, max(t.window()/6, 50*time.Millisecond))
}

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
func (c claimer) candidates() (candidate, []candidate, error) {
	cs, _, err := c.t.readCandidates(c.t.claimAttempt())
	if err != nil {
		return candidate{}, nil, err
	}
	me, others := splitOwn(cs, c.key)
	return me, others, nil
}

// splitOwn separates the entry under own from the others, which keep
// their order.
func splitOwn(cs []candidate, own string) (candidate, []candidate) {
	var me candidate
	var others []candidate
	for _, c := range cs {
		if c.key == own {
			me = c
		} else {
			others = append(others, c)
		}
	}
	return me, others
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
func (c claimer) claim(others []candidate) (int64, bool, error) {
	t, key, createRev, id := c.t, c.key, c.createRev, c.id
	ctx, cancel := context.WithTimeout(t.ctx, t.claimAttempt())
	defer cancel()
	conds := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(key), "=", createRev),
		clientv3.Compare(clientv3.LeaseValue(key), "=", id),
	}
	for _, c := range others {
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(c.key), "=", c.modRev))
	}
	resp, err := t.cli.Txn(ctx).If(conds...).
		Then(beatOp(key, t.own.heartbeat(time.Now())), clientv3.OpGet(t.cfg.prefix), clientv3.OpDelete(t.cfg.prefix)).Else(clientv3.OpGet(key)).Commit()
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

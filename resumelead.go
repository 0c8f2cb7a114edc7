package main

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The resume path of a term: it carries on the lease of an earlier vipd on
// this node (resume.go says when and why) instead of campaigning afresh.

// resumer is a term's attempt to carry on the earlier run's lease r.
type resumer struct {
	t *term
	r resumeLease
}

// resumed is where a resumed term's lead starts (keep).
type resumed struct {
	createRev int64
	rev       int64     // the confirmation's revision: watches start after it
	sent      time.Time // when the confirmation and the renewal were sent
}

// lead tries to carry on the lease. It reports true when the term is over
// (it was resumed and has ended, or the term was stopped meanwhile), false
// when the lease cannot be resumed and the term goes on with a new one.
// It tries for at most a TTL: by then the lease has either expired or been
// renewed.
func (rs *resumer) lead() (over bool) {
	t, r := rs.t, rs.r
	t.ttl = r.ttl
	// The tenure goes on, and the confirmation, a heartbeat, says since
	// when (-status); a term that campaigns afresh starts a new one.
	t.own.held = r.held
	defer func() {
		if !over {
			t.own.held = time.Time{}
		}
	}()
	give := time.Now().Add(r.ttl)
	for {
		sent := time.Now()
		var renewErr, confirmErr error
		var rev int64
		var leads bool
		both(func() { renewErr = t.renewOnce(r.id, claimAttempt) },
			func() { rev, leads, confirmErr = rs.confirm() })
		switch {
		case t.ctx.Err() != nil:
			t.revoke(r.id)
			return true
		case errors.Is(renewErr, rpctypes.ErrLeaseNotFound):
			t.log.infof("the lease %x of the earlier run has expired; campaigning with a new one", r.id)
			return false
		case renewErr == nil && confirmErr == nil && !leads:
			t.log.infof("the earlier run's key %s no longer leads (gone, or behind another); revoking its lease %x and campaigning afresh", r.key, r.id)
			t.revoke(r.id)
			return false
		case renewErr == nil && confirmErr == nil:
			rs.carryOn(rev, sent)
			return true
		case time.Now().After(give):
			t.log.warnf("could not confirm the earlier run's lease %x within its TTL (renew: %v; confirm: %v); campaigning afresh", r.id, renewErr, confirmErr)
			t.revoke(r.id)
			return false
		}
		if !t.sleep(backoffMin) {
			t.revoke(r.id)
			return true
		}
	}
}

// confirm checks, in one transaction, that the earlier run's key is still
// there as it was and leads the election, and rewrites it (a heartbeat,
// with our entry) if it is there. It returns the transaction's revision
// and whether the key leads.
func (rs *resumer) confirm() (int64, bool, error) {
	t, r := rs.t, rs.r
	ctx, cancel := context.WithTimeout(t.ctx, claimAttempt)
	defer cancel()
	resp, err := t.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(r.key), "=", r.createRev),
		clientv3.Compare(clientv3.LeaseValue(r.key), "=", r.id)).
		Then(beatOp(r.key, t.own.heartbeat(time.Now())),
			clientv3.OpGet(t.cfg.prefix+"/", clientv3.WithFirstCreate()...)).Commit()
	if err != nil {
		t.failed(t.ctx, opClaim, err)
		return 0, false, err
	}
	if !resp.Succeeded {
		return resp.Header.Revision, false, nil
	}
	first := resp.Responses[1].GetResponseRange().GetKvs()
	return resp.Header.Revision, len(first) > 0 && string(first[0].Key) == r.key, nil
}

// carryOn is the rest of a resumed term: the node is told it leads, and
// the term keeps the lease and the heartbeat from the confirmation on,
// as after a claim.
func (rs *resumer) carryOn(rev int64, sent time.Time) {
	t, r := rs.t, rs.r
	defer t.revoke(r.id)
	t.log.infof("resumed the earlier run's lease %x and election key %s (TTL %v)", r.id, r.key, r.ttl)
	if !t.send(termEvent{kind: evGranted, ttl: r.ttl, deadline: deadlineAfter(sent, r.ttl), vouched: sent, lease: r.id, key: r.key, resumed: true}) {
		return
	}
	if !t.send(termEvent{kind: evElected, beat: beatDeadline(sent, r.ttl, t.cfg.window), released: true, resumed: true, lease: r.id, key: r.key, createRev: r.createRev, held: r.held, took: r.took}) {
		return
	}
	go t.publishRank(r.key, r.id)
	k := t.keep(r.id, r.key, nil, func() {}, &resumed{createRev: r.createRev, rev: rev, sent: sent})
	if k.leading && t.released.Load() {
		k.releaseKey()
	}
}

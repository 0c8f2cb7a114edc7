package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// renewer sends a term's lease renewals on one LeaseKeepAlive stream, at
// the moments the term chooses (the client's own KeepAlive keeps its own
// schedule, which would sit outside our send-time bookkeeping).
// KeepAliveOnce would open a new stream per renewal, which etcd counts as
// two requests instead of one; renewals are most of what an idle cluster
// asks of etcd. A stream that fails or does not answer in time is dropped,
// and the next renewal opens a new one, which the client's balancer may
// put on another member: a stream bound to a member that vanished costs
// one renewal, as a KeepAliveOnce would.
type renewer struct {
	cli    *clientv3.Client
	stream pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
	fresh  atomic.Bool // set from elsewhere: the next renewal opens a new stream
	met    *metrics    // the renewal round trips; nil records nothing
}

// renew sends one renewal of id and waits at most timeout for its answer.
// The stream lives in ctx (the term's). Only one goroutine calls it.
func (r *renewer) renew(ctx context.Context, id clientv3.LeaseID, timeout time.Duration) error {
	start := time.Now()
	if r.fresh.Swap(false) {
		r.close()
	}
	if r.stream == nil {
		// A member without a raft leader ends the stream instead of
		// leaving it unanswered.
		sctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		stream, err := pb.NewLeaseClient(r.cli.ActiveConnection()).LeaseKeepAlive(sctx)
		if err != nil {
			cancel()
			return rpcErr(ctx, err)
		}
		r.stream, r.cancel = stream, cancel
	}
	late := time.AfterFunc(timeout, r.cancel)
	err := r.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)})
	var resp *pb.LeaseKeepAliveResponse
	if err == nil {
		resp, err = r.stream.Recv()
	}
	if cut := !late.Stop(); cut || err != nil {
		r.close()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil: // answered just as the stream was cut off: still an answer
		case cut:
			return fmt.Errorf("no answer within %v", timeout)
		default:
			return rpcErr(ctx, err)
		}
	}
	// Opening a stream counts: it is part of what a renewal waits for.
	r.met.renewed(time.Since(start))
	if resp.TTL <= 0 {
		return rpctypes.ErrLeaseNotFound
	}
	return nil
}

// close drops the stream.
func (r *renewer) close() {
	if r.cancel != nil {
		r.cancel()
		r.stream, r.cancel = nil, nil
	}
}

// rpcErr turns a gRPC status into the client's error values, so that
// errors.Is finds rpctypes.ErrLeaseNotFound.
func rpcErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return rpctypes.Error(err)
}

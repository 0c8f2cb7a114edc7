package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Draining takes a node out of the running for the VIP by hand, as a
// rolling OS upgrade needs: drain, upgrade and reboot, undrain. The mark
// is a key in etcd, "<vip.key>@drain/<name>", without a lease: it stays
// through restarts and reboots of the node until `vipd -undrain` removes
// it. The node watches its own mark and publishes it in its election
// entry (drained=1, rank.go), so that every reader ranks it below every
// undrained node; a drained holder hands the VIP over at once to the best
// undrained candidate, and keeps it when there is none.

const drainKeyMark = "@drain/"

func drainPrefix(electionKey string) string { return electionKey + drainKeyMark }

func drainKey(electionKey, name string) string { return drainPrefix(electionKey) + name }

// drainMarks is every drain mark of the group, name -> the mark's value
// (who drained it, and when), as etcd has them.
type drainMarks map[string]string

// drainRecheck is how often the watch is replaced by a fresh read: a
// watch on a member cut off from its cluster can stall without an error.
const drainRecheck = 30 * time.Second

// watchMarks reports the keys under prefix (the group's drain marks, or
// its move request: move.go) to out: once read, then at each change,
// until ctx ends. All the drain marks rather than this node's own: the
// node's name may be its MAC, known only once its link is up. etcd being
// away is waited out; the node keeps the marks it last heard of
// meanwhile.
func watchMarks[M ~map[string]string](ctx context.Context, cli *clientv3.Client, prefix string, out chan<- M) {
	backoff := backoffMin
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		resp, err := cli.Get(rctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		backoff = backoffMin
		marks := M{}
		for _, kv := range resp.Kvs {
			marks[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
		}
		if !sendMarks(ctx, out, maps.Clone(marks)) || !followMarks(ctx, cli, prefix, resp.Header.Revision, marks, out) {
			return
		}
	}
}

// followMarks passes on the marks after each change after rev, for
// drainRecheck at most; false once ctx has ended.
func followMarks[M ~map[string]string](ctx context.Context, cli *clientv3.Client, prefix string, rev int64, marks M, out chan<- M) bool {
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), drainRecheck)
	defer cancel()
	for wr := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if wr.Err() != nil {
			break
		}
		for _, ev := range wr.Events {
			name := strings.TrimPrefix(string(ev.Kv.Key), prefix)
			if ev.Type == clientv3.EventTypePut {
				marks[name] = string(ev.Kv.Value)
			} else {
				delete(marks, name)
			}
		}
		if !sendMarks(ctx, out, maps.Clone(marks)) {
			return false
		}
	}
	return ctx.Err() == nil
}

// sendMarks hands the loop its own copy of the marks.
func sendMarks[M ~map[string]string](ctx context.Context, out chan<- M, marks M) bool {
	select {
	case out <- marks:
		return true
	case <-ctx.Done():
		return false
	}
}

// setDrain marks name drained (on) or removes its mark, and says what
// it did in one line. who and now go into the mark.
func setDrain(ctx context.Context, cli *clientv3.Client, key, name string, on bool, who string, now time.Time) (string, error) {
	if err := validName(name); err != nil {
		return "", fmt.Errorf("drain %q: %w", name, err)
	}
	k := drainKey(key, name)
	if !on {
		resp, err := cli.Delete(ctx, k)
		switch {
		case err != nil:
			return "", fmt.Errorf("undrain %s: %w", name, err)
		case resp.Deleted == 0:
			return fmt.Sprintf("%s was not drained", name), nil
		}
		return fmt.Sprintf("undrained %s: it ranks as its health and priority say again", name), nil
	}
	v, err := readElection(ctx, cli, key)
	if err != nil {
		return "", err
	}
	if _, err := cli.Put(ctx, k, fmt.Sprintf("by=%s at=%s", who, now.UTC().Format(time.RFC3339))); err != nil {
		return "", fmt.Errorf("drain %s: %w", name, err)
	}
	msg := fmt.Sprintf("drained %s: it ranks below every undrained node until `vipd -undrain %s`", name, name)
	if !v.has(name) {
		// A node down for its upgrade is drained so too; a name typed
		// wrong shows in -status's drain marks.
		msg += fmt.Sprintf(" (no node campaigns as %s now: the mark waits for it)", name)
	}
	return msg, nil
}

// has says whether a node of that name campaigns.
func (v electionView) has(name string) bool {
	for _, c := range v.cs {
		if c.name == name {
			return true
		}
	}
	return false
}

// drainOutcome waits (bounded) until a drained holder has handed the VIP
// over, and says where it went, or why it stays.
func drainOutcome(ctx context.Context, cli *clientv3.Client, key, name string) string {
	for {
		v, err := readElection(ctx, cli, key)
		if err != nil {
			return fmt.Sprintf("could not see the outcome: %v", err)
		}
		h, rest := splitHolder(v.cs, v.versions)
		switch {
		case h == nil:
			// nobody holds yet: a takeover is under way
		case h.name != name:
			return fmt.Sprintf("%s holds the VIP", h.name)
		case len(rest) == 0 || rest[0].rank.drained:
			return fmt.Sprintf("%s keeps the VIP: no undrained candidate to take it", name)
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return fmt.Sprintf("%s still holds the VIP after %v", name, drainWait)
		}
	}
}

// drainWait bounds how long -drain waits to see the VIP move.
const drainWait = 5 * time.Second

// drainNow sets or removes name's mark and, for a drain, waits (bounded)
// to say where the VIP went; one line.
func drainNow(ctx context.Context, cli *clientv3.Client, key, name string, on bool, who string) (string, error) {
	msg, err := setDrain(ctx, cli, key, name, on, who, time.Now())
	if err != nil || !on {
		return msg, err
	}
	wctx, cancel := context.WithTimeout(ctx, drainWait)
	defer cancel()
	return msg + "; " + drainOutcome(wctx, cli, key, name), nil
}

// runDrain is `vipd -drain [NAME]` and `vipd -undrain [NAME]` with a
// configuration: NAME defaults to this node's vip.name.
func runDrain(st setup, name string, on bool, stdout, stderr io.Writer) int {
	cli, err := newEtcdClient(st.cfg.Etcd, st.tls, time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: etcd client: %v\n", err)
		return exitRuntime
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), statusTimeout+drainWait)
	defer cancel()
	host, _ := os.Hostname()
	msg, err := drainNow(ctx, cli, st.cfg.Key, cmp.Or(name, st.cfg.Name), on, "vipd -drain on "+cmp.Or(host, st.cfg.Name))
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitRuntime
	}
	fmt.Fprintln(stdout, msg)
	return exitOK
}

// runLocal is -drain, -undrain or -move with no settings: the vipd
// running on this node does it with its etcd client; request is the
// socket's line ("drain n2"). It returns false, having printed nothing,
// when no vipd answers; with several groups on the node it refuses, as it
// cannot know which is meant.
func runLocal(paths []string, request string, stdout, stderr io.Writer) (int, bool) {
	verb, _, _ := strings.Cut(request, " ")
	var live []string
	for _, p := range paths {
		if conn, err := net.DialTimeout("unix", p, time.Second); err == nil {
			conn.Close()
			live = append(live, p)
		}
	}
	switch len(live) {
	case 0:
		return 0, false
	case 1:
	default:
		fmt.Fprintf(stderr, "vipd: %d vipd groups run here (%s): give the group's settings (vip.key=..., vip.etcd=...) to -%s\n", len(live), strings.Join(live, ", "), verb)
		return exitUsage, true
	}
	var rep cmdReply
	if err := askSocket(live[0], request+"\n", statusSockTimeout+max(drainWait, moveWait)+time.Second, &rep); err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitRuntime, true
	}
	if rep.Error != "" {
		fmt.Fprintf(stderr, "vipd: %s\n", rep.Error)
		return exitRuntime, true
	}
	fmt.Fprintln(stdout, rep.Message)
	return exitOK, true
}

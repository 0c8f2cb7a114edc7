package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Moving the VIP on purpose: `vipd -move [NAME]` writes a request,
// "<vip.key>@move/to" = "to=NAME lease=HEX by=… at=…", on the lease of
// NAME's election key, so that it dies with that term: a node that stops,
// crashes or hands over loses it, and a restarted node (a new lease) is
// not pulled back to. The named node sees the request (watchMarks) and
// publishes moved=1 in its entry: healthy and moved, it outranks every
// other healthy node whatever their priorities (rank.go), so the holder
// hands over at once by the graceful path, and once it holds, priority
// does not pull the VIP away again. The move ends with the term, when the
// node turns unhealthy or is drained (both rank above "moved"), or with
// the next move.

const moveKeyMark = "@move/"

func movePrefix(electionKey string) string { return electionKey + moveKeyMark }

func moveKey(electionKey string) string { return movePrefix(electionKey) + "to" }

// moveRequest is the group's move request as etcd has it: "to" -> its
// value (empty: none).
type moveRequest map[string]string

// movedHere says whether the request names this node, as the term with
// the given lease: a request for an earlier term of the node does not.
func (m moveRequest) movedHere(name string, lease clientv3.LeaseID) bool {
	req, ok := m["to"]
	if !ok || name == "" || lease == 0 {
		return false
	}
	var to, l string
	for _, w := range strings.Fields(req) {
		if v, ok := strings.CutPrefix(w, "to="); ok {
			to = v
		}
		if v, ok := strings.CutPrefix(w, "lease="); ok {
			l = v
		}
	}
	id, err := strconv.ParseInt(l, 16, 64)
	return to == name && err == nil && clientv3.LeaseID(id) == lease
}

// errMove refuses a move, with the reason.
var errMove = errors.New("cannot move the VIP")

// moveTarget picks the node to move to: name, or without one the next in
// takeover order; it must be a live candidate other than the holder,
// healthy and able, and not drained.
func moveTarget(v electionView, key, name string) (holder, to candidate, err error) {
	h, rest := splitHolder(v.cs, v.versions)
	if h == nil {
		return holder, to, fmt.Errorf("%w: nobody holds it", errMove)
	}
	if name == h.name {
		return *h, to, fmt.Errorf("%w to %s: it holds the VIP already", errMove, name)
	}
	for _, c := range rest {
		if name != "" && c.name != name {
			continue
		}
		switch {
		case c.rank.drained:
			err = fmt.Errorf("%w to %s: it is drained (vipd -undrain %s first)", errMove, c.name, c.name)
		case c.rank.unable:
			err = fmt.Errorf("%w to %s: it failed to hold the VIP lately (unable)", errMove, c.name)
		case !c.rank.healthy:
			err = fmt.Errorf("%w to %s: it is unhealthy", errMove, c.name)
		default:
			return *h, c, nil
		}
		if name != "" {
			return *h, to, err
		}
	}
	if name != "" {
		return *h, to, fmt.Errorf("%w to %s: no such candidate of %s (vipd -status lists them)", errMove, name, key)
	}
	if err != nil {
		return *h, to, fmt.Errorf("%w: no healthy, undrained candidate (the next one: %v)", errMove, err)
	}
	return *h, to, fmt.Errorf("%w: no other candidate", errMove)
}

// moveWait bounds how long -move waits to see the VIP arrive.
const moveWait = 5 * time.Second

// moveNow moves the VIP to name (or the next candidate) and waits
// (bounded) until it holds; one line saying so, or an error saying why
// not.
func moveNow(ctx context.Context, cli *clientv3.Client, key, name, who string) (string, error) {
	v, err := readElection(ctx, cli, key)
	if err != nil {
		return "", err
	}
	h, to, err := moveTarget(v, key, name)
	if err != nil {
		return "", err
	}
	req := fmt.Sprintf("to=%s lease=%x by=%s at=%s", to.name, int64(to.lease), who, time.Now().UTC().Format(time.RFC3339))
	start := time.Now()
	if _, err := cli.Put(ctx, moveKey(key), req, clientv3.WithLease(to.lease)); err != nil {
		return "", fmt.Errorf("move the VIP to %s: %w", to.name, err)
	}
	wctx, cancel := context.WithTimeout(ctx, moveWait)
	defer cancel()
	for {
		v, err := readElection(wctx, cli, key)
		if err == nil {
			if now, _ := splitHolder(v.cs, v.versions); now != nil && now.name == to.name {
				return fmt.Sprintf("moved the VIP from %s to %s in %v", h.name, to.name, time.Since(start).Round(time.Millisecond)), nil
			}
		}
		if !sleepCtx(wctx, 50*time.Millisecond) {
			return "", fmt.Errorf("%w to %s: it does not hold the VIP %v after the request (see vipd -status and the holder's log)", errMove, to.name, moveWait)
		}
	}
}

// runMove is `vipd -move [NAME]` with a configuration.
func runMove(st setup, name string, stdout, stderr io.Writer) int {
	cli, err := newEtcdClient(st.cfg.Etcd, st.tls, time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: etcd client: %v\n", err)
		return exitRuntime
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), statusTimeout+moveWait)
	defer cancel()
	host, _ := os.Hostname()
	msg, err := moveNow(ctx, cli, st.cfg.Key, name, "vipd -move on "+cmp.Or(host, st.cfg.Name))
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitRuntime
	}
	fmt.Fprintln(stdout, msg)
	return exitOK
}

package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// probeResult reports one round of probe-before-take.
type probeResult struct {
	seq     int
	foreign net.HardwareAddr // another host answered for the VIP
	err     error            // the probe itself failed
}

// takeover is what an elected node goes through before it adds the
// address: the takeover wait, the probe (a frozen or dead former holder's
// kernel answers ARP until the address lifetime runs out), a squatter's
// answers; and, after a local failure, the hold-off before the next term.
type takeover struct {
	log        *logger
	vips       string // the VIPs, for the log
	seq        int
	ctx        context.Context    // the round's: its probe runs under it
	cancel     context.CancelFunc // set from the wait's start to the result
	wait       alarm              // the takeover wait before the probe
	failed     bool               // the last probe failed (logged once per spell)
	squatStart time.Time          // when another host first answered for the VIP, in this term
	squatLimit time.Duration      // how long a term waits for it before stepping aside (squatBound)
	// After a local failure (the address cannot be added) the next term
	// waits until holdOff, so that a persistent fault does not spin
	// through elections; wake goes off then.
	holdOff time.Time
	wake    alarm
}

// begin starts a new round: after delay, a probe that checks that nobody
// else answers for the VIP before we take it. Without a probe
// (vip.probe=0, or no socket) the result comes after delay alone.
func (t *takeover) begin(delay time.Duration) {
	t.stop()
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.seq++
	t.wait.set(delay)
}

// elected starts the takeover of a won campaign, with a probe of window:
// after the takeover wait unless the previous holder said it released
// the address, or fenced itself in the kernel (its copy, if its kernel
// still keeps one, cannot speak: docs/design.md, section 8a).
func (t *takeover) elected(released, fenced bool, window time.Duration) {
	if !released && !fenced {
		t.log.infof("elected; no release mark from the previous holder and it was not fenced in the kernel, so the address is added after %v (the kernel's lifetime slack)", takeoverWait)
	}
	t.begin(takeoverDelay(released || fenced, window))
}

// stop abandons a round in progress: its result, if one comes, is stale.
func (t *takeover) stop() {
	t.wait.stop()
	if t.cancel != nil {
		t.cancel()
		t.ctx, t.cancel = nil, nil
		t.seq++
	}
}

// probe runs the round's probe, once its wait is over, off the loop; the
// result comes back on out. Without a probe (window 0, or no socket) the
// result is that nobody answered.
func (t *takeover) probe(frames linkFrames, vips []netip.Prefix, window time.Duration, out chan<- probeResult) {
	ctx, seq := t.ctx, t.seq
	go func() {
		var r probeResult
		if window > 0 && frames != nil {
			r = probeAll(ctx, frames, vips, window)
		}
		r.seq = seq
		select {
		case out <- r:
		case <-ctx.Done():
		}
	}()
}

// takeoverDelay is how long an elected node waits before its probe. The
// previous holder that did not say it removed the address (no release
// mark) may keep it until kernelSlack after its lifetime (see fence.end),
// so takeoverWait passes first; the probe's own window counts towards it.
func takeoverDelay(released bool, window time.Duration) time.Duration {
	if released {
		return 0
	}
	return max(0, takeoverWait-window)
}

// probeStep is what a probe's result leads to.
type probeStep int

const (
	probeStale    probeStep = iota // a probe of an earlier round or election: ignored
	probeSquatter                  // another host answers for the VIP
	probeFailed                    // the probe itself failed: try again
	probeTake                      // nobody answered: take the address
)

// probeOutcome judges a probe's result. Only a probe that nobody answered
// leads to the address; one that failed (its socket was closed by a MAC
// change, say) says nothing about the VIP.
func probeOutcome(r probeResult, seq int, inProgress bool) probeStep {
	switch {
	case r.seq != seq || !inProgress:
		return probeStale
	case r.foreign != nil:
		return probeSquatter
	case r.err != nil:
		return probeFailed
	}
	return probeTake
}

// probeRetry is how soon a VIP is probed again after another host answered
// for it or the probe failed.
const probeRetry = 200 * time.Millisecond

// squatBound is how long an elected node waits while another host
// answers for the VIP: TTL + 2 s, longer than any copy that a frozen or
// dead vipd's kernel can keep (its lifetime ends by the fence, plus the
// kernel's second of slack). An answer that outlasts it comes from a host
// that configured the VIP by hand or by another tool.
func squatBound(ttl time.Duration) time.Duration { return ttl + 2*time.Second }

// probeAll probes every VIP; the IPv4 and IPv6 ones in parallel (they use
// separate sockets), so that a dual-stack takeover waits one window, not two.
// Another host's answer for any VIP outranks a failed probe of another: it
// is the one result that must keep us from taking the address.
func probeAll(ctx context.Context, frames linkFrames, vips []netip.Prefix, window time.Duration) probeResult {
	var results [2]probeResult
	var wg sync.WaitGroup
	for i, v6 := range []bool{false, true} {
		wg.Go(func() {
			for _, p := range vips {
				if p.Addr().Is6() != v6 {
					continue
				}
				r := &results[i]
				if r.foreign, r.err = frames.probe(ctx, p.Addr(), window); r.foreign != nil || r.err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	for _, r := range results {
		if r.foreign != nil {
			return probeResult{foreign: r.foreign}
		}
	}
	if results[0].err != nil {
		return results[0]
	}
	return results[1]
}

// onProbe judges a probe's result at now: it reports whether to take the
// address (only after a probe that nobody answered), or an error to step
// down with; a probe that failed is tried again, with the link's current
// sockets.
func (t *takeover) onProbe(r probeResult, now time.Time) (bool, error) {
	step := probeOutcome(r, t.seq, t.cancel != nil)
	if step == probeStale {
		return false, nil // a probe of an earlier election
	}
	t.ctx, t.cancel = nil, nil
	switch step {
	case probeSquatter:
		if err := t.squatter(r.foreign, now); err != nil {
			return false, err
		}
		t.begin(probeRetry)
	case probeFailed:
		if !t.failed {
			t.log.warnf("probe before take failed: %v; probing again every %v", r.err, probeRetry)
			t.failed = true
		}
		t.begin(probeRetry)
	case probeTake:
		t.squatStart, t.failed = time.Time{}, false
		return true, nil
	}
	return false, nil
}

// squatter deals with another host (mac) answering for the VIP at now.
// Briefly that is expected: a frozen former holder's address has not
// expired yet. Past squatLimit it is a foreign host: the node says so
// loudly and steps aside (the error, errForeign, counted as
// vipd_stepdowns_total{reason="foreign"}), so that another candidate,
// which may see the LAN differently, can try; it campaigns again at the
// end of the queue, so with one node, or a squatter every node sees, the
// alarm is raised again each squatLimit and nobody adds the address.
func (t *takeover) squatter(mac net.HardwareAddr, now time.Time) error {
	if t.squatStart.IsZero() {
		t.squatStart = now
		t.log.warnf("%s still answered by %s; waiting for it to go quiet before taking it", t.vips, mac)
		return nil
	}
	if now.Sub(t.squatStart) < t.squatLimit {
		return nil
	}
	t.log.errorf("a foreign host (MAC %s) has answered for %s for more than %v: someone else has configured it; not taking the address while it answers",
		mac, t.vips, t.squatLimit)
	return fmt.Errorf("%w: %s for more than %v; stepping aside so that another node may try", errForeign, mac, t.squatLimit)
}

// heldOff says whether a local failure still holds off the next term at
// now; if so, wake goes off when it ends.
func (t *takeover) heldOff(now time.Time) bool {
	wait := t.holdOff.Sub(now)
	if wait > 0 {
		t.wake.set(wait)
	}
	return wait > 0
}

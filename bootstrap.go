package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// The bootstrap hold: before etcd exists there is no election, and the
// VIP that the etcd and Kubernetes bootstrap commands would use does not
// answer. vip.bootstrap names one node that may hold it meanwhile: while
// no etcd endpoint has answered since this node booted, it probes, and if
// nobody answers for the VIP it adds the address, with the usual kernel
// lifetime, which its own timer (tick) refreshes, and announces it. There
// is no quorum and no lease behind it: the probe is the fence, and the
// promise is one holder eventually, not never two (docs/design.md).
//
// It ends at etcd's first answer (the first lease granted): the node is
// an ordinary candidate from then on. Its hold is no longer extended; if
// its term is elected before the hold's deadline it keeps the address
// without a gap, and otherwise the deadline passes and it lets go (the
// elected node's probe waits for it, as for any squatter). The first
// answer is remembered under /run/vipd, so that a restart or a SIGHUP
// during a later etcd outage does not hold without an election again.
type bootstrap struct {
	log    *logger
	named  bool   // vip.bootstrap is this node's vip.name
	seen   bool   // an etcd endpoint has answered since boot
	marker string // the file that remembers it ("": none)
	on     bool   // taking or holding the VIP without an election
	tick   alarm  // moves the hold's deadline forward while etcd is silent
	// unwatch stops the watch for another host's claims while the node
	// holds without an election (nil: none runs).
	unwatch context.CancelFunc
}

// claimSeen is another host claiming a VIP while this node holds it
// without an election: an elected holder's probe or announcement.
type claimSeen struct {
	ip  netip.Addr
	mac net.HardwareAddr
}

// errBootYield: a bootstrap holder saw another host claim the VIP.
var errBootYield = errors.New("another host claims the VIP")

// watchClaims listens on frames, sending nothing, for another host that
// claims one of vips, and reports the first to out; one goroutine per
// VIP, all ended by stopWatch.
func (b *bootstrap) watchClaims(frames linkFrames, vips []netip.Prefix, out chan<- claimSeen) {
	b.stopWatch()
	if frames == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.unwatch = cancel
	for _, p := range vips {
		go func(ip netip.Addr) {
			for ctx.Err() == nil {
				mac, err := frames.watch(ctx, ip, time.Second)
				switch {
				case mac != nil:
					select {
					case out <- claimSeen{ip: ip, mac: mac}:
					case <-ctx.Done():
					}
					return
				case err != nil && ctx.Err() == nil:
					b.log.warnf("bootstrap: %v (watching again in 1 s)", err)
					sleepCtx(ctx, time.Second)
				}
			}
		}(p.Addr())
	}
}

// stopWatch ends the watch for claims, if one runs.
func (b *bootstrap) stopWatch() {
	if b.unwatch != nil {
		b.unwatch()
		b.unwatch = nil
	}
}

// over ends bootstrap for this boot at the first sign of another holder
// (a claim seen while holding, or an answer to the bootstrap probe): an
// elected holder means etcd exists, and a host that configured the VIP by
// hand is not to be fought. Remembered like etcd's answer, so that the
// node does not take the VIP back the moment the other holder's probe has
// stopped answering, nor after a restart.
func (b *bootstrap) over(why string) {
	b.log.infof("bootstrap over: %s; from now on this node holds the VIP only when elected through etcd", why)
	b.seen = true
	if err := b.remember(); err != nil {
		b.log.warnf("cannot remember that bootstrap is over (%v): a restart during an etcd outage would try again", err)
	}
	b.tick.stop()
	b.on = false
	b.stopWatch()
}

// yieldTo is the step-down reason for a claim seen.
func yieldTo(c claimSeen) error {
	return fmt.Errorf("%w: %s answers for %s (an elected holder's probe or announcement): letting go", errBootYield, c.mac, c.ip)
}

// errBootEnded: the bootstrap hold's deadline passed: etcd answered and
// the node was not elected in time, or the process was frozen.
var errBootEnded = errors.New("bootstrap hold ended")

// bootMarkerPath is where a group remembers that etcd answered since boot.
func bootMarkerPath(key string) string {
	return strings.TrimSuffix(statePath(key), ".json") + ".etcd-answered"
}

// load reads the marker at path, which counts only for this boot (its
// content is the kernel's boot id): a /run that is not a tmpfs outlives a
// reboot. Without a call (the node tests) nothing is remembered.
func (b *bootstrap) load(path string) {
	b.marker = path
	if data, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(data)) == bootID() && bootID() != "" {
		b.seen = true
	}
}

// wanted says whether the node should take the VIP without an election.
func (b *bootstrap) wanted() bool { return b.named && !b.seen && !b.on }

// answered records etcd's first answer since boot, and ends the bootstrap
// hold's extensions; it reports whether a bootstrap hold was on.
func (b *bootstrap) answered() bool {
	if !b.seen {
		b.seen = true
		if err := b.remember(); err != nil {
			b.log.warnf("cannot remember that etcd answered (%v): a restart during an etcd outage would hold the VIP without an election again", err)
		}
	}
	b.tick.stop()
	was := b.on
	b.on = false
	return was
}

// remember writes the marker, on the node vip.bootstrap names only.
func (b *bootstrap) remember() error {
	if !b.named || b.marker == "" {
		return nil
	}
	return os.WriteFile(b.marker, []byte(bootID()+"\n"), 0o644)
}

// bootTick is how often a bootstrap hold moves its deadline, a TTL ahead.
func bootTick(ttl time.Duration) time.Duration { return ttl / 4 }

package main

import (
	"errors"
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

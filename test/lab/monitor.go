package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// monitor follows the VIP in every node namespace through rtnetlink events,
// timestamped on one monotonic clock, and records any moment at which two
// nodes held it.
type monitor struct {
	vip      netip.Addr
	mu       sync.Mutex
	start    time.Time
	names    []string
	held     []bool
	since    time.Time // when the set of holders last changed
	events   []string
	overlap  []string
	lastAdds []time.Time // per node: when it last gained the VIP
	gained   []time.Time // every gain, by any node
}

func startMonitor(t testing.TB, nodes []*labNode, vip netip.Addr) *monitor {
	m := &monitor{vip: vip, start: time.Now(), since: time.Now()}
	for i, nd := range nodes {
		m.names = append(m.names, nd.name)
		m.held = append(m.held, false)
		m.lastAdds = append(m.lastAdds, time.Time{})
		followAddrs(t, nd, func(a *addrMessage, held bool) {
			if a.ip() == vip {
				m.record(i, held)
			}
		})
	}
	return m
}

// followAddrs calls record for every address the node has now, then for
// every address event from now on, in the kernel's order. It subscribes
// before listing so that nothing falls between the two.
func followAddrs(t testing.TB, nd *labNode, record func(a *addrMessage, held bool)) {
	w, err := watchRTNL(nd.ns.fd(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	events := make(chan rtnlEvent, 256)
	go w.run(events)
	r, err := dialRTNL(nd.ns.fd(t))
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := r.addrs(0)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		record(&a, true)
	}
	go func() {
		for ev := range events {
			if ev.err != nil {
				return
			}
			if ev.addr != nil {
				record(ev.addr, !ev.deleted)
			}
		}
	}()
}

func (m *monitor) record(node int, held bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held[node] == held {
		return // a lifetime refresh
	}
	now := time.Now()
	m.held[node], m.since = held, now
	verb := "lost"
	if held {
		verb = "gained"
		m.lastAdds[node] = now
		m.gained = append(m.gained, now)
	}
	m.events = append(m.events, fmt.Sprintf("%9.3fs %s %s", now.Sub(m.start).Seconds(), m.names[node], verb))
	if held {
		for i, h := range m.held {
			if h && i != node {
				m.overlap = append(m.overlap, fmt.Sprintf("%s gained %s at %.3fs while %s held it",
					m.names[node], m.vip, now.Sub(m.start).Seconds(), m.names[i]))
			}
		}
	}
}

// current returns the nodes holding the VIP and since when that is so.
func (m *monitor) current() ([]int, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var h []int
	for i, held := range m.held {
		if held {
			h = append(h, i)
		}
	}
	return h, m.since
}

// gainedAt is when node last gained the VIP (zero if never).
func (m *monitor) gainedAt(node int) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastAdds[node]
}

func (m *monitor) overlaps() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.overlap...)
}

func (m *monitor) history() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.events, "\n")
}

// gains is how many times any node has gained the VIP: the first holder's
// take and every move since.
func (m *monitor) gains() int { return len(m.gainTimes()) }

// gainTimes is when each gain happened.
func (m *monitor) gainTimes() []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Time(nil), m.gained...)
}

package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// Monitor follows the VIP in every node namespace through rtnetlink events,
// timestamped on one monotonic clock, and records any moment at which two
// nodes held it.
type Monitor struct {
	vip      netip.Addr
	mu       sync.Mutex
	Start    time.Time // History's times are since Start
	names    []string
	held     []bool
	since    time.Time // when the set of holders last changed
	events   []string
	overlap  []string
	lastAdds []time.Time // per node: when it last gained the VIP
	gained   []time.Time // every gain, by any node
}

func startMonitor(t testing.TB, nodes []*Node, vip netip.Addr) *Monitor {
	m := &Monitor{vip: vip, Start: time.Now(), since: time.Now()}
	for i, nd := range nodes {
		m.names = append(m.names, nd.Name)
		m.held = append(m.held, false)
		m.lastAdds = append(m.lastAdds, time.Time{})
		FollowAddrs(t, nd, func(a *Addr, held bool) {
			if a.IP == vip {
				m.Record(i, held)
			}
		})
	}
	return m
}

// FollowAddrs calls record for every address the node has now, then for
// every address event from now on, in the kernel's order. It subscribes
// before listing so that nothing falls between the two.
func FollowAddrs(t testing.TB, nd *Node, record func(a *Addr, held bool)) {
	w, err := WatchAddrs(nd.NS.Fd(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	events := make(chan AddrEvent, 256)
	go w.Run(events)
	o, err := DialObserver(nd.NS.Fd(t))
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := o.Addrs()
	o.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		record(&a, true)
	}
	go func() {
		for ev := range events {
			if ev.Err != nil {
				return
			}
			if !ev.Overflow {
				record(&ev.Addr, !ev.Deleted)
			}
		}
	}()
}

func (m *Monitor) Record(node int, held bool) {
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
	m.events = append(m.events, fmt.Sprintf("%9.3fs %s %s", now.Sub(m.Start).Seconds(), m.names[node], verb))
	if held {
		for i, h := range m.held {
			if h && i != node {
				m.overlap = append(m.overlap, fmt.Sprintf("%s gained %s at %.3fs while %s held it",
					m.names[node], m.vip, now.Sub(m.Start).Seconds(), m.names[i]))
			}
		}
	}
}

// Current returns the nodes holding the VIP and since when that is so.
func (m *Monitor) Current() ([]int, time.Time) {
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

// GainedAt is when node last gained the VIP (zero if never).
func (m *Monitor) GainedAt(node int) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastAdds[node]
}

func (m *Monitor) Overlaps() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.overlap...)
}

func (m *Monitor) History() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.events, "\n")
}

// Gains is how many times any node has gained the VIP: the first holder's
// take and every move since.
func (m *Monitor) Gains() int { return len(m.GainTimes()) }

// GainTimes is when each gain happened.
func (m *Monitor) GainTimes() []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Time(nil), m.gained...)
}

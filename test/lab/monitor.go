package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// Monitor follows the VIP in every node namespace through rtnetlink events,
// timestamped on one monotonic clock, and records any moment at which two
// nodes spoke for it.
//
// A node speaks for the VIP when the address is in its kernel and its
// kernel fence (vipd's eBPF filter on the VIP interface's egress, read
// with FenceReader) lets the VIP's frames out: there is none, or its
// deadline is ahead. A node whose vipd was killed or frozen keeps the
// address up to its lifetime (whole seconds) but, its fence closed, cannot
// answer for it, so another node may take the VIP meanwhile. For a node
// without the filter, speaking is having the address, as before the fence.
//
// Two nodes speaking is checked when a node gains the address (the other
// nodes' fences are read then) and by a sweep every sweepEvery while two
// or more nodes have the address, which catches a fence that opens again
// late. A fence that cannot be read counts as open: the oracle then
// judges as strictly as without fences.
type Monitor struct {
	vip      netip.Addr
	mu       sync.Mutex
	Start    time.Time // History's times are since Start
	names    []string
	held     []bool         // per node: the address is in its kernel
	ifindex  []uint32       // per node: the interface it was last seen on (0: unknown)
	speaks   []bool         // per node: as last judged (held, fence passes)
	readers  []*FenceReader // per node; nil: its fence is not read
	fence    []Fence        // per node: the last read
	fenceErr []error        // per node: why the last read failed
	since    time.Time      // when the set of speaking nodes last changed
	events   []string
	overlap  []string
	lastAdds []time.Time // per node: when it last gained the VIP
	gained   []time.Time // every gain, by any node
}

// sweepEvery is how often the fences are read while two or more nodes have
// the address: often enough to catch a fence reopened during the second or
// two an address can outlive its vipd.
const sweepEvery = 20 * time.Millisecond

// errNotRead stands for a fence that the monitor has no way to read (no
// reader, or the interface is not known).
var errNotRead = errors.New("fence not read")

func startMonitor(t testing.TB, nodes []*Node, vip netip.Addr) *Monitor {
	m := &Monitor{vip: vip, Start: time.Now(), since: time.Now()}
	n := len(nodes)
	m.held, m.ifindex, m.speaks = make([]bool, n), make([]uint32, n), make([]bool, n)
	m.readers, m.fence, m.fenceErr = make([]*FenceReader, n), make([]Fence, n), make([]error, n)
	m.lastAdds = make([]time.Time, n)
	for i, nd := range nodes {
		m.names = append(m.names, nd.Name)
		r, err := NewFenceReader(nd.NS)
		if err != nil {
			m.closeReaders()
			t.Fatal(err)
		}
		m.readers[i] = r
	}
	// Registered before FollowAddrs's cleanups, so it runs after them
	// (cleanups run last first): the sweep stops, then the readers close,
	// and an event still in flight finds no reader rather than a closed one.
	quit, done := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		close(quit)
		<-done
		m.closeReaders()
	})
	go func() {
		defer close(done)
		tick := time.NewTicker(sweepEvery)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				m.sweep()
			}
		}
	}()
	for i, nd := range nodes {
		FollowAddrs(t, nd, func(a *Addr, held bool) {
			if a.IP == vip {
				m.record(i, a.Index, held)
			}
		})
	}
	return m
}

// closeReaders closes the fence readers; fences are not read after.
func (m *Monitor) closeReaders() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, r := range m.readers {
		if r != nil {
			r.Close()
			m.readers[i] = nil
		}
	}
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

// Record notes that node gained (held) or lost the VIP's address, on an
// interface the monitor is not told: its fence is not read, and the node
// speaks while it has the address.
func (m *Monitor) Record(node int, held bool) { m.record(node, 0, held) }

// record notes an address event of node on interface ifindex.
func (m *Monitor) record(node int, ifindex uint32, held bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if held && ifindex != 0 {
		m.ifindex[node] = ifindex
	}
	if m.held[node] == held {
		return // a lifetime refresh
	}
	now := time.Now()
	m.held[node] = held
	verb := "lost"
	if held {
		verb = "gained"
		m.lastAdds[node] = now
		m.gained = append(m.gained, now)
	}
	m.events = append(m.events, fmt.Sprintf("%9.3fs %s %s", now.Sub(m.Start).Seconds(), m.names[node], verb))
	if !held {
		if m.speaks[node] {
			m.speaks[node], m.since = false, now
		}
		return
	}
	// The others' fences are read now: one that has closed no longer
	// speaks, one still open (or no fence) is an overlap.
	m.refresh(node)
	// The gainer speaks from the moment it has the address, without a
	// read: vipd opens its fence in the same step as it adds the address,
	// and waiting for that would only make the check less strict. The
	// sweep and Current read its fence from then on.
	m.speaks[node], m.since = true, now
	for i, sp := range m.speaks {
		if sp && i != node {
			m.overlap = append(m.overlap, fmt.Sprintf("%s gained %s at %.3fs while %s held it (%s)",
				m.names[node], m.vip, now.Sub(m.Start).Seconds(), m.names[i], m.fenceNote(i)))
		}
	}
}

// sweep reads the fences while two or more nodes have the address.
func (m *Monitor) sweep() {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, h := range m.held {
		if h {
			n++
		}
	}
	if n >= 2 {
		m.refresh(-1)
	}
}

// refresh reads the fence of every node with the address but skip and
// records the changes: a node whose fence closed stops speaking (a line in
// History); one whose fence opened again speaks again, an overlap with
// every node speaking then. m.mu is held.
func (m *Monitor) refresh(skip int) {
	now := time.Now()
	var opened []int
	for i, h := range m.held {
		if !h || i == skip {
			continue
		}
		passes := m.readFence(i, now)
		switch {
		case m.speaks[i] && !passes:
			m.speaks[i] = false
			// The set of speakers changed when the deadline passed, if
			// the fence says when; otherwise when it was seen.
			at := now
			if f := m.fence[i]; f.Deadline != 0 {
				at = now.Add(f.Left())
			}
			if at.After(m.since) {
				m.since = at
			}
			m.events = append(m.events, fmt.Sprintf("%9.3fs %s silent, still has the address (%s)",
				now.Sub(m.Start).Seconds(), m.names[i], m.fenceNote(i)))
		case !m.speaks[i] && passes:
			opened = append(opened, i)
		}
	}
	// One at a time, so that two nodes opening together make one overlap.
	for _, i := range opened {
		m.speaks[i], m.since = true, now
		m.events = append(m.events, fmt.Sprintf("%9.3fs %s speaks again, has the address (%s)",
			now.Sub(m.Start).Seconds(), m.names[i], m.fenceNote(i)))
		for j, sp := range m.speaks {
			if sp && j != i {
				m.overlap = append(m.overlap, fmt.Sprintf("%s's fence opened for %s at %.3fs while %s held it (%s)",
					m.names[i], m.vip, now.Sub(m.Start).Seconds(), m.names[j], m.fenceNote(j)))
			}
		}
	}
}

// readFence reads node i's fence into m.fence and says whether it lets
// the VIP's frames out; a fence that cannot be read counts as open, and a
// new read error is noted in History. m.mu is held.
func (m *Monitor) readFence(i int, now time.Time) bool {
	r, ifindex := m.readers[i], m.ifindex[i]
	if r == nil || ifindex == 0 {
		m.fence[i], m.fenceErr[i] = Fence{}, errNotRead
		return true
	}
	f, err := r.Read(ifindex)
	if err != nil && (m.fenceErr[i] == nil || m.fenceErr[i] == errNotRead) {
		m.events = append(m.events, fmt.Sprintf("%9.3fs %s fence unreadable (counted as open): %v",
			now.Sub(m.Start).Seconds(), m.names[i], err))
	}
	m.fence[i], m.fenceErr[i] = f, err
	return err != nil || f.Passes()
}

// fenceNote says what node i's fence was at the last read.
func (m *Monitor) fenceNote(i int) string {
	switch err := m.fenceErr[i]; {
	case err == errNotRead:
		return err.Error()
	case err != nil:
		return fmt.Sprintf("fence unreadable: %v", err)
	}
	return m.fence[i].String()
}

// Current returns the nodes speaking for the VIP now (their fences are
// read) and since when that set is so. For nodes without a kernel fence,
// these are the nodes that have the address.
func (m *Monitor) Current() ([]int, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refresh(-1)
	var h []int
	for i, sp := range m.speaks {
		if sp {
			h = append(h, i)
		}
	}
	return h, m.since
}

// WithAddress returns the nodes that have the VIP's address in their
// kernel, whatever their fences say: for checks that the address itself
// is gone.
func (m *Monitor) WithAddress() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var h []int
	for i, held := range m.held {
		if held {
			h = append(h, i)
		}
	}
	return h
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

package soak

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"vipd/test/lab"
)

// The watchers of the soak (soak_test.go): a timeline of who held each VIP
// when, the client's neighbour table read over rtnetlink, the unrelated
// address churn on the holder's node, and per-process resource samples.
// None of them may call t.Fatal: they run on their own goroutines.

// holdSpan is one stretch during which one node held a VIP (to is zero
// while it still does).
type holdSpan struct {
	Node     int
	from, to time.Time
}

// holderTrack keeps the whole history of one VIP in every node namespace,
// from rtnetlink events, so that an announcement seen at time t can be
// checked against who held the address at t.
type holderTrack struct {
	Vip   netip.Addr
	Mu    sync.Mutex
	open  []int // per node: index of its open span in spans, -1 if none
	spans []holdSpan
}

// startHolderTracks follows several VIPs through one subscription per node,
// so that their events keep the kernel's order.
func startHolderTracks(t testing.TB, nodes []*lab.Node, vips ...netip.Addr) []*holderTrack {
	var hs []*holderTrack
	for _, vip := range vips {
		h := &holderTrack{Vip: vip}
		for range nodes {
			h.open = append(h.open, -1)
		}
		hs = append(hs, h)
	}
	record := func(node int, a *lab.Addr, held bool) {
		for _, h := range hs {
			if a.IP == h.Vip {
				h.Record(node, held, time.Now())
			}
		}
	}
	for i, nd := range nodes {
		lab.FollowAddrs(t, nd, func(a *lab.Addr, held bool) { record(i, a, held) })
	}
	return hs
}

func (h *holderTrack) Record(node int, held bool, at time.Time) {
	h.Mu.Lock()
	defer h.Mu.Unlock()
	switch {
	case held && h.open[node] < 0:
		h.open[node] = len(h.spans)
		h.spans = append(h.spans, holdSpan{Node: node, from: at})
	case !held && h.open[node] >= 0:
		h.spans[h.open[node]].to = at
		h.open[node] = -1
	}
}

// single is the one node that holds the VIP now and since when; ok is false
// when none or several do.
func (h *holderTrack) single() (node int, since time.Time, ok bool) {
	h.Mu.Lock()
	defer h.Mu.Unlock()
	node = -1
	for i, s := range h.open {
		if s < 0 {
			continue
		}
		if node >= 0 {
			return -1, time.Time{}, false
		}
		node, since = i, h.spans[s].from
	}
	return node, since, node >= 0
}

// heldSince is when node gained the VIP it holds now (zero if it holds
// none).
func (h *holderTrack) heldSince(node int) time.Time {
	h.Mu.Lock()
	defer h.Mu.Unlock()
	if s := h.open[node]; s >= 0 {
		return h.spans[s].from
	}
	return time.Time{}
}

// holders are the nodes that hold the VIP now.
func (h *holderTrack) holders() []int {
	h.Mu.Lock()
	defer h.Mu.Unlock()
	var held []int
	for i, s := range h.open {
		if s >= 0 {
			held = append(held, i)
		}
	}
	return held
}

// heldNear says whether node held the VIP at any moment from after before
// t until ahead after it (the address event may be seen later than a frame
// sent after the address was added). lead is how long before the gain that
// made it so the frame came (0 if it came during the span).
func (h *holderTrack) heldNear(node int, t time.Time, after, ahead time.Duration) (ok bool, lead time.Duration) {
	h.Mu.Lock()
	defer h.Mu.Unlock()
	lo, hi := t.Add(-after), t.Add(ahead)
	for _, s := range h.spans {
		if s.Node == node && !s.from.After(hi) && (s.to.IsZero() || !s.to.Before(lo)) {
			return true, max(0, s.from.Sub(t))
		}
	}
	return false, 0
}

// at describes who held the VIP at t, for violation reports.
func (h *holderTrack) At(t time.Time, names []string, t0 time.Time) string {
	h.Mu.Lock()
	defer h.Mu.Unlock()
	var who []string
	for _, s := range h.spans {
		if !s.from.After(t) && (s.to.IsZero() || s.to.After(t)) {
			who = append(who, fmt.Sprintf("%s (since %s)", names[s.Node], rel(t0, s.from)))
		}
	}
	if len(who) == 0 {
		return "nobody"
	}
	return strings.Join(who, ", ")
}

// rel is t as seconds since t0, the soak's clock (the lab monitor's start).
func rel(t0, t time.Time) string { return fmt.Sprintf("+%.3fs", t.Sub(t0).Seconds()) }

// neighEntry is one entry of the client's neighbour table.
type neighEntry struct {
	MAC   string // "" without a link-layer address
	state uint16 // NUD_*
}

func nudName(state uint16) string {
	var names []string
	for _, s := range []struct {
		bit  uint16
		Name string
	}{{unix.NUD_INCOMPLETE, "INCOMPLETE"}, {unix.NUD_REACHABLE, "REACHABLE"}, {unix.NUD_STALE, "STALE"},
		{unix.NUD_DELAY, "DELAY"}, {unix.NUD_PROBE, "PROBE"}, {unix.NUD_FAILED, "FAILED"},
		{unix.NUD_NOARP, "NOARP"}, {unix.NUD_PERMANENT, "PERMANENT"}} {
		if state&s.bit != 0 {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return "NONE"
	}
	return strings.Join(names, "|")
}

// neighbours reads a namespace's neighbour table (both families) over an
// open rtnetlink connection (the lab's observer): cheaper than running
// `ip neigh` ten times a second.
func neighbours(r *lab.Observer) (map[netip.Addr]neighEntry, error) {
	list, err := r.Neighbours()
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]neighEntry, len(list))
	for _, n := range list {
		out[n.IP] = neighEntry{MAC: n.MAC, state: n.State}
	}
	return out, nil
}

// addrOp adds or removes an address that is not the VIP, permanently (no
// lifetime), as DHCP clients, CNI plugins and kube-proxy do all day.
func addrOp(r *lab.Observer, index uint32, p netip.Prefix, add bool) error {
	if add {
		return r.AddAddr(index, p)
	}
	return r.DelAddr(index, p)
}

// churnStats counts the background address changes.
type churnStats struct {
	Mu             sync.Mutex
	adds, dels     int
	errs           int
	lastErr        string
	skippedNoHold  int // moments without a single holder
	perNode        map[string]int
	addedOn        int // node index that has the unrelated addresses now, -1 if none
	added4, added6 netip.Prefix
}

// runChurn adds an unrelated IPv4 and IPv6 address (TEST-NET-2 and a
// 2001:db8: documentation prefix) on the current holder's eth0, and removes
// it again, one step every 200–400 ms: every such change makes the kernel
// re-run, and reschedule, its address lifetime check (issue 9, defect 3).
func (s *soak) runChurn(rts []*lab.Observer, index []uint32, seed uint64) {
	defer s.wg.Done()
	rng := newRand(seed)
	c := &s.churn
	c.addedOn = -1
	n := 0
	for {
		select {
		case <-s.quit:
			s.churnRemove(rts, index)
			return
		case <-time.After(time.Duration(200+rng.IntN(201)) * time.Millisecond):
		}
		c.Mu.Lock()
		on := c.addedOn
		c.Mu.Unlock()
		if on >= 0 {
			s.churnRemove(rts, index)
			continue
		}
		h, _, ok := s.tr4.single()
		if !ok {
			c.Mu.Lock()
			c.skippedNoHold++
			c.Mu.Unlock()
			continue
		}
		n++
		p4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + n%250)}), 32)
		p6 := netip.MustParsePrefix(fmt.Sprintf("2001:db8:5100::%x/128", 1+n%250))
		var errs []string
		for _, p := range []netip.Prefix{p4, p6} {
			if err := addrOp(rts[h], index[h], p, true); err != nil {
				errs = append(errs, err.Error())
			}
		}
		c.Mu.Lock()
		c.adds++
		c.addedOn, c.added4, c.added6 = h, p4, p6
		if c.perNode == nil {
			c.perNode = map[string]int{}
		}
		c.perNode[s.l.Nodes[h].Name]++
		if len(errs) > 0 {
			c.errs++
			c.lastErr = strings.Join(errs, "; ")
		}
		c.Mu.Unlock()
	}
}

func (s *soak) churnRemove(rts []*lab.Observer, index []uint32) {
	c := &s.churn
	c.Mu.Lock()
	defer c.Mu.Unlock()
	if c.addedOn < 0 {
		return
	}
	on := c.addedOn
	for _, p := range []netip.Prefix{c.added4, c.added6} {
		// Gone already is fine: a link that went down takes IPv6
		// addresses with it.
		if err := addrOp(rts[on], index[on], p, false); err != nil && !strings.Contains(err.Error(), "cannot assign") {
			c.errs++
			c.lastErr = err.Error()
		}
	}
	c.dels++
	c.addedOn = -1
}

// proc is one running vipd process as the resource sampler sees it.
type proc struct {
	Node   int
	pid    int
	Start  time.Time
	frozen bool
}

// resSample is one resource sample of one process.
type resSample struct {
	At         time.Time
	rss        int64   // bytes, from /proc/PID/status
	heapMB     float64 // live heap after the last GC (gctrace); -1 when none was seen yet
	goroutines int     // from /metrics; -1 when not available
}

// resSeries are the samples of one process lifetime: a restarted vipd
// starts a new series.
type resSeries struct {
	Node    int
	pid     int
	Start   time.Time
	samples []resSample
}

// runSampler samples every running vipd every soakSample.
func (s *soak) runSampler() {
	defer s.wg.Done()
	tick := time.NewTicker(soakSample)
	defer tick.Stop()
	for {
		s.sampleOnce()
		select {
		case <-s.quit:
			return
		case <-tick.C:
		}
	}
}

func (s *soak) sampleOnce() {
	s.Mu.Lock()
	var procs []proc
	for _, p := range s.procs {
		if p != nil {
			procs = append(procs, *p)
		}
	}
	s.Mu.Unlock()
	for _, p := range procs {
		rss, err := procRSS(p.pid)
		if err != nil {
			continue // it has just exited
		}
		heap := s.liveHeap(p)
		g := -1
		if s.metrics && !p.frozen {
			if m, err := s.scrape(p.Node); err == nil {
				if v, ok := m["go_goroutines"]; ok {
					g = int(v)
				}
			}
		}
		s.Mu.Lock()
		sr := s.series[p.pid]
		if sr == nil {
			sr = &resSeries{Node: p.Node, pid: p.pid, Start: p.Start}
			s.series[p.pid] = sr
		}
		sr.samples = append(sr.samples, resSample{At: time.Now(), rss: rss, heapMB: heap, goroutines: g})
		s.Mu.Unlock()
	}
}

// gctraceRE reads the heap sizes of a gctrace line ("gc 12 @30.1s 0%: ...,
// 3->3->1 MB, 4 MB goal, ..."): at the start of the GC, at its end, and
// live (marked) after it.
var gctraceRE = regexp.MustCompile(`(?m)^gc \d+ @[0-9.]+s .* (\d+)->(\d+)->(\d+) MB`)

// liveHeap is the live heap in MB that process p's runtime reported after
// its last GC (its vipd runs with GODEBUG=gctrace=1), or -1.
func (s *soak) liveHeap(p proc) float64 {
	nd := s.l.Nodes[p.Node]
	s.Mu.Lock()
	cur := s.procs[p.Node]
	s.Mu.Unlock()
	if cur == nil || cur.pid != p.pid || nd.Log == nil {
		return -1 // restarted meanwhile: the log is another process's
	}
	m := gctraceRE.FindAllStringSubmatch(nd.Log.String(), -1)
	if len(m) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(m[len(m)-1][3], 64)
	if err != nil {
		return -1
	}
	return v
}

func procRSS(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// scrape reads the node's vipd /metrics (vip.metrics) from inside its
// namespace: Prometheus text, metric name (without labels) → value.
func (s *soak) scrape(node int) (map[string]float64, error) {
	nd := s.l.Nodes[node]
	c := &http.Client{
		Timeout: time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := nd.NS.Do(func() (err error) {
				c, err = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}},
	}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/metrics", nd.IP, soakMetricsPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format: the unlabelled samples,
// metric name → value.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	m := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.Contains(line, "{") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[f[0]] = v
		}
	}
	return m, sc.Err()
}

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(`# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 23
go_gc_duration_seconds{quantile="0.5"} 4.2e-05
process_resident_memory_bytes 1.8112512e+07
vipd_state 2 1700000000000
`))
	if err != nil {
		t.Fatal(err)
	}
	if m["go_goroutines"] != 23 || m["process_resident_memory_bytes"] != 18112512 || m["vipd_state"] != 2 {
		t.Fatalf("parsed %v", m)
	}
	if _, ok := m["go_gc_duration_seconds"]; ok {
		t.Fatalf("a labelled sample was taken: %v", m)
	}
}

func TestSlope(t *testing.T) {
	if got := slope([]float64{0, 1, 2, 3}, []float64{10, 12, 14, 16}); math.Abs(got-2) > 1e-9 {
		t.Fatalf("slope %v, want 2", got)
	}
}

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return math.NaN()
	}
	return (n*sxy - sx*sy) / d
}

// trend is a series after its warm-up: first and last value and the slope
// per hour; ok is false when too little of it is left to fit a line.
type trend struct {
	span        time.Duration
	First, last float64
	perHour     float64
	ok          bool
}

func (sr *resSeries) trend(value func(resSample) (float64, bool)) trend {
	var xs, ys []float64
	var tr trend
	var t0, t1 time.Time
	for _, smp := range sr.samples {
		v, ok := value(smp)
		if !ok || smp.At.Sub(sr.Start) < soakWarmup {
			continue
		}
		if len(xs) == 0 {
			t0, tr.First = smp.At, v
		}
		t1, tr.last = smp.At, v
		xs, ys = append(xs, smp.At.Sub(sr.Start).Hours()), append(ys, v)
	}
	tr.span = t1.Sub(t0)
	if len(xs) >= 5 && tr.span >= soakMinSpan {
		tr.perHour, tr.ok = slope(xs, ys), true
	}
	return tr
}

// vipdProcesses lists the processes running the binary under test.
func vipdProcesses(bin string) []string {
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && exe == bin {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			found = append(found, fmt.Sprintf("pid %d: %s", pid, strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")))
		}
	}
	return found
}

// TestGctraceLine: the soak reads the live heap from the runtime's own
// gctrace lines, mixed into vipd's log.
func TestGctraceLine(t *testing.T) {
	log := "2026-12-06T03:18:35.471Z vipd: lease granted (TTL 2s)\n" +
		"gc 1 @0.043s 1%: 2.5+0.34+0.012 ms clock, 5.1+1.3/0.10/0+0.025 ms cpu, 3->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P\n" +
		"2026-12-06T03:18:36.000Z vipd: candidate -> leader: elected\n" +
		"gc 2 @120.5s 0%: 0.11+2.0+0.005 ms clock, 0.23+1.0/0.002/0+0.011 ms cpu, 5->5->2 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P (forced)\n"
	m := gctraceRE.FindAllStringSubmatch(log, -1)
	if len(m) != 2 || m[0][3] != "1" || m[1][3] != "2" {
		t.Fatalf("gctrace matches %q, want live heaps 1 and 2", m)
	}
}

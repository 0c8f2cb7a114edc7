package scenario

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// scrapeNode reads a lab node's /metrics from inside its namespace,
// checks it with promtool and parses it. The listener may take a moment
// after start, so a refused connection is tried again for a few seconds.
func scrapeNode(t *testing.T, nd *lab.Node) map[string]*lab.ExpoFamily {
	t.Helper()
	return scrapeNodeAt(t, nd, labMetricsPort)
}

func scrapeNodeAt(t *testing.T, nd *lab.Node, port int) map[string]*lab.ExpoFamily {
	t.Helper()
	return scrapeFrom(t, nd.NS, nd, port)
}

// scrapeFrom is scrapeNodeAt from the namespace ns. It also checks the
// group label (lab.CheckGroups).
func scrapeFrom(t *testing.T, ns *lab.NS, nd *lab.Node, port int) map[string]*lab.ExpoFamily {
	t.Helper()
	url := fmt.Sprintf("http://%s:%d/metrics", nd.IP, port)
	var body []byte
	var err error
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var resp *http.Response
		if resp, err = lab.NSHTTP(ns).Get(url); err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("%s", resp.Status)
			}
		}
		if err == nil || time.Now().After(end) {
			break
		}
	}
	if err != nil {
		t.Fatalf("scrape %s: %v", nd.Name, err)
	}
	if err := lab.Promtool(body); err != nil {
		t.Errorf("%s: %v", nd.Name, err)
	}
	fams, err := lab.ParseExposition(string(body))
	if err != nil {
		t.Fatalf("%s: %v\n%s", nd.Name, err, body)
	}
	if err := lab.CheckGroups(fams, labGroup); err != nil {
		t.Errorf("%s: %v", nd.Name, err)
	}
	return fams
}

// labGroup is the lab's vip.key, the default: the group label of every
// lab node's vipd_ series.
const labGroup = "/vipd/" + lab.VIP

// groupValue is the sample of name with the labels kv in the lab's
// group, failing the test when there is none.
func groupValue(t *testing.T, fams map[string]*lab.ExpoFamily, name string, kv ...string) float64 {
	t.Helper()
	return lab.MustSampleValue(t, fams, name, lab.InGroup(labGroup, kv...)...)
}

// scrapeAll scrapes every running node until exactly one, the holder
// want, reports vipd_leader 1 (the monitor sees the address a moment
// before the node's state changes) or time runs out.
func scrapeAll(t *testing.T, l *lab.Lab, want *lab.Node) map[*lab.Node]map[string]*lab.ExpoFamily {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		all := map[*lab.Node]map[string]*lab.ExpoFamily{}
		var leaders []string
		for _, nd := range l.Nodes {
			if nd.Cmd == nil {
				continue
			}
			all[nd] = scrapeNode(t, nd)
			if v := groupValue(t, all[nd], "vipd_leader"); v == 1 {
				leaders = append(leaders, nd.Name)
			} else if v != 0 {
				t.Fatalf("%s: vipd_leader %v", nd.Name, v)
			}
		}
		if len(leaders) == 1 && leaders[0] == want.Name {
			return all
		}
		if time.Now().After(end) {
			t.Fatalf("vipd_leader 1 on %v, want only on %s (the holder)", leaders, want.Name)
		}
	}
}

// TestLabMetrics scrapes three nodes before and after the holder is
// killed: one leader at a time, the new one's transitions counted, and
// announcements and renewals seen; promtool accepts every scrape.
func TestLabMetrics(t *testing.T) {
	l := lab.NewWith(t, lab.Options{Nodes: 3, DualStack: true, Args: []string{"vip.ttl=2"}})
	for _, nd := range l.Nodes {
		l.Start(nd, fmt.Sprintf("vip.metrics=%s:%d", nd.IP, labMetricsPort))
	}
	old := l.Holder(lab.ElectBound, time.Second)
	before := scrapeAll(t, l, old)
	checkHolderMetrics(t, old, before[old])
	for nd, fams := range before {
		if nd != old {
			if v := groupValue(t, fams, "vipd_state", "state", "candidate"); v != 1 {
				t.Errorf("%s: vipd_state{candidate} %v, want 1", nd.Name, v)
			}
		}
	}

	l.Kill(old)
	next := l.HolderOtherThan(old, lab.MoveBound)
	after := scrapeAll(t, l, next)
	checkHolderMetrics(t, next, after[next])
	key := []string{"from", "candidate", "to", "leader"}
	if b, a := groupValue(t, before[next], "vipd_transitions_total", key...), groupValue(t, after[next], "vipd_transitions_total", key...); a != b+1 {
		t.Errorf("%s: vipd_transitions_total{candidate->leader} went from %v to %v over its takeover, want +1", next.Name, b, a)
	}
	for nd, fams := range after {
		if b, a := groupValue(t, before[nd], "vipd_lease_renewal_seconds_count"), groupValue(t, fams, "vipd_lease_renewal_seconds_count"); a <= b {
			t.Errorf("%s: renewal count went from %v to %v, want more", nd.Name, b, a)
		}
	}
}

// checkHolderMetrics checks what a holder must have counted.
func checkHolderMetrics(t *testing.T, nd *lab.Node, fams map[string]*lab.ExpoFamily) {
	t.Helper()
	for _, c := range []struct {
		Name string
		kv   []string
	}{
		{"vipd_state", []string{"state", "leader"}},
		{"vipd_transitions_total", []string{"from", "candidate", "to", "leader"}},
		{"vipd_announcements_total", []string{"family", "ipv4"}},
		{"vipd_announcements_total", []string{"family", "ipv6"}},
		{"vipd_lease_renewal_seconds_count", nil},
		{"vipd_lease_renewal_seconds_bucket", []string{"le", "+Inf"}},
		{"vipd_healthy", nil}, // no vip.check: always healthy
	} {
		if v := groupValue(t, fams, c.Name, c.kv...); v < 1 {
			t.Errorf("holder %s: %s%v = %v, want > 0", nd.Name, c.Name, c.kv, v)
		}
	}
}

// TestMetricsLowPort (issue 19, defect 7): vip.metrics on a port below
// 1024 is bound before vipd drops its privileges, and the socket survives
// a SIGHUP re-exec (the new image could not bind it again). Before, the
// listener started after the drop and retried every 5 s for ever.
func TestMetricsLowPort(t *testing.T) {
	l := lab.New(t, 1, "vip.ttl=2")
	nd := l.Nodes[0]
	const port = 99
	l.Start(nd, fmt.Sprintf("vip.metrics=%s:%d", nd.IP, port))
	l.Holder(lab.ElectBound, 0)
	fams := scrapeNodeAt(t, nd, port)
	if v := groupValue(t, fams, "vipd_leader"); v != 1 {
		t.Errorf("vipd_leader %v before the SIGHUP, want 1", v)
	}
	started := lab.MustSampleValue(t, fams, "process_start_time_seconds")
	l.Signal(nd, syscall.SIGHUP)
	lab.WaitLogCount(t, nd, "resumed the earlier run's lease", 1, 10*time.Second)
	// The leader transition follows that line by about a millisecond (seen
	// once: the scrape came first); as TestPrivilegesNonRoot, wait for it.
	lab.WaitLogCount(t, nd, "resumed; refreshed", 1, 5*time.Second)
	fams = scrapeNodeAt(t, nd, port)
	if v := groupValue(t, fams, "vipd_leader"); v != 1 {
		t.Errorf("vipd_leader %v after the SIGHUP, want 1", v)
	}
	// The same pid, a new image: its counters started again from 0, and
	// process_start_time_seconds must say so (the pid's start in /proc
	// would not).
	if v := lab.MustSampleValue(t, fams, "process_start_time_seconds"); v <= started {
		t.Errorf("process_start_time_seconds %v after the SIGHUP re-exec, want later than %v (the earlier image's)", v, started)
	}
	if strings.Contains(nd.Log.String(), "retrying every 5 s") {
		t.Errorf("vip.metrics on port %d was not bound at once:\n%s", port, nd.Log.String())
	}
	if n := strings.Count(nd.Log.String(), "serving metrics on"); n != 2 {
		t.Errorf("%d \"serving metrics\" lines, want 2 (one per image):\n%s", n, nd.Log.String())
	}
}

// labMetricsPort is where every lab node serves /metrics, on its own IP.
const labMetricsPort = 9100

// TestMetricsFlood (issue 22): thousands of TCP connections opened from
// the client's namespace and held idle against the holder's metrics
// listener. The listener serves a few at once and closes the rest at
// once, so the daemon's memory stays within a few MiB of its level
// before (each connection used to get a goroutine and buffers for up to
// scrapeTimeout), a scrape from the client and /healthz are answered once
// the flood ends, and the VIP never moves.
func TestMetricsFlood(t *testing.T) {
	const (
		conns   = 5000
		workers = 8
		// What the flood may add: a turned-away connection leaves only
		// garbage (its descriptor's structures), so the heap grows to its
		// next GC goal at most, twice the live heap with GOGC=100 (about
		// 4 MB here). Measured: +2.0 MiB at 5,000 connections, +3.4 MiB
		// after 25,000 in five rounds; the unlimited listener took +29 MiB
		// at 5,000.
		maxRise = 6 << 20
	)
	l := lab.New(t, 2, "vip.ttl=2")
	for _, nd := range l.Nodes {
		l.Start(nd, fmt.Sprintf("vip.metrics=%s:%d", nd.IP, labMetricsPort))
	}
	h := l.Holder(lab.ElectBound, time.Second)
	gains := l.Mon.Gains()
	goBefore := lab.MustSampleValue(t, scrapeFrom(t, l.Client, h, labMetricsPort), "go_goroutines")
	time.Sleep(2 * time.Second) // the runtime settles after the election
	before := lab.RSS(t, h)

	addr := fmt.Sprintf("%s:%d", h.IP, labMetricsPort)
	held := openIdle(t, l.Client, addr, conns, workers)
	during := lab.RSS(t, h)
	time.Sleep(2 * time.Second) // held idle a while
	duringLate := lab.RSS(t, h)
	for _, c := range held {
		c.Close()
	}
	time.Sleep(2 * time.Second) // the runtime settles
	after := lab.RSS(t, h)
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	t.Logf("holder %s: VmRSS %.1f MiB before, %.1f MiB with %d connections open, %.1f MiB 2 s later, %.1f MiB after they closed",
		h.Name, mib(before), mib(during), len(held), mib(duringLate), mib(after))

	fams := scrapeFrom(t, l.Client, h, labMetricsPort)
	if v := groupValue(t, fams, "vipd_leader"); v != 1 {
		t.Errorf("the holder's vipd_leader %v after the flood, want 1", v)
	}
	t.Logf("goroutines %v before the flood, %v after", goBefore, lab.MustSampleValue(t, fams, "go_goroutines"))
	if code, err := lab.HealthStatus(l.Client, fmt.Sprintf("http://%s/healthz", addr)); err != nil || code != 200 {
		t.Errorf("GET /healthz after the flood: %d, %v; want 200", code, err)
	}
	for _, m := range []struct {
		when string
		rss  int64
	}{{"with the connections open", during}, {"2 s later", duringLate}, {"after they closed", after}} {
		if rise := m.rss - before; rise > maxRise {
			t.Errorf("the holder's VmRSS %s is %.1f MiB above its %.1f MiB before the flood (limit %.0f MiB)", m.when, mib(rise), mib(before), mib(maxRise))
		}
	}
	if !strings.Contains(h.Log.String(), "closing further ones at once") {
		t.Errorf("the holder did not say that it turned connections away:\n%s", h.Log.String())
	}
	lab.AssertKept(t, l, h, gains)
	l.AssertNoOverlap()

	// A stop while connections are held idle: vipd closes the ones in
	// service and waits for their goroutines before it exits; that wait
	// must end, and the exit be the usual status 0.
	openIdle(t, l.Client, addr, 2, 1)
	l.Signal(h, syscall.SIGTERM)
	if err := l.Wait(h, 15*time.Second); err != nil {
		t.Errorf("the holder's exit on SIGTERM with idle connections open: %v, want status 0\n%s", err, h.Log.String())
	}
	l.AssertNoOverlap()
}

// openIdle opens n TCP connections to addr from ns, workers at a time,
// and returns them open, idle (nothing sent); the test's end closes them.
// The server may close any of them: only the opening must succeed.
func openIdle(t *testing.T, ns *lab.NS, addr string, n, workers int) []net.Conn {
	t.Helper()
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			errs <- ns.Do(func() error {
				d := net.Dialer{Timeout: 10 * time.Second}
				for i := w; i < n; i += workers {
					c, err := d.Dial("tcp", addr)
					if err != nil {
						return fmt.Errorf("connection %d of %d to %s: %w", i+1, n, addr, err)
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
				return nil
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return conns
}

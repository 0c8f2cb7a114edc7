package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// scrape sends one request line to the metrics handler over a pipe and
// returns the parsed answer.
func scrape(t *testing.T, m *metrics, request string) (*http.Response, string) {
	t.Helper()
	client, server := net.Pipe()
	go m.answer(server)
	defer client.Close()
	go io.WriteString(client, request+"\r\nHost: x\r\nAccept: */*\r\n\r\n")
	method, _, _ := strings.Cut(request, " ")
	resp, err := http.ReadResponse(bufio.NewReader(client), &http.Request{Method: method}) // a HEAD's answer has no body

	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%q: body: %v", request, err)
	}
	return resp, string(body)
}

// testGroup is the group (vip.key) of the metrics the tests make: the
// default key of the node tests' configuration.
const testGroup = "/vipd/192.0.2.100"

func TestMetricsEndpoint(t *testing.T) {
	m := newMetrics(testGroup)
	resp, body := scrape(t, m, "GET /metrics HTTP/1.1")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"\nvipd_leader{group=\"/vipd/192.0.2.100\"} 0\n", "vipd_build_info{version=", "\ngo_goroutines ", "# TYPE vipd_leader gauge\n"} {
		if !strings.Contains("\n"+body, want) {
			t.Errorf("GET /metrics lacks %q:\n%s", want, body)
		}
	}
	// Every sample line is NAME[{LABELS}] VALUE after its HELP and TYPE.
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		if strings.HasPrefix(line, "# ") {
			continue
		}
		if f := strings.Fields(line); len(f) != 2 {
			t.Errorf("sample line %q is not NAME VALUE", line)
		}
	}
	m.transition(stateWaiting, stateLeader)
	if _, body := scrape(t, m, "GET /metrics?x=1 HTTP/1.1"); !strings.Contains(body, "\nvipd_leader{group=\"/vipd/192.0.2.100\"} 1\n") {
		t.Errorf("leader not shown:\n%s", body)
	}
	if resp, _ := scrape(t, m, "GET / HTTP/1.1"); resp.StatusCode != 404 {
		t.Errorf("GET /: %s, want 404", resp.Status)
	}
	if resp, _ := scrape(t, m, "POST /metrics HTTP/1.1"); resp.StatusCode != 405 {
		t.Errorf("POST /metrics: %s, want 405", resp.Status)
	}
	if resp, _ := scrape(t, m, "GET /healthz/x HTTP/1.1"); resp.StatusCode != 404 {
		t.Errorf("GET /healthz/x: %s, want 404", resp.Status)
	}
}

// TestMetricsHealthz: /healthz answers 200 while the loop's mark is
// fresh, 503 once it is older than loopBound, and 200 again after the
// next mark.
func TestMetricsHealthz(t *testing.T) {
	m := newMetrics(testGroup)
	m.loopRan()
	for _, req := range []string{"GET /healthz HTTP/1.1", "GET /healthz?verbose HTTP/1.0", "HEAD /healthz HTTP/1.1"} {
		if resp, _ := scrape(t, m, req); resp.StatusCode != 200 {
			t.Errorf("%s with a fresh mark: %s, want 200", req, resp.Status)
		}
	}
	// The loop last ran longer than loopBound ago: as a wedged loop leaves it.
	m.loopMark.Store(int64(time.Since(imageStart) - loopBound - time.Second))
	resp, body := scrape(t, m, "GET /healthz HTTP/1.1")
	if resp.StatusCode != 503 || !strings.Contains(body, "handled nothing for") {
		t.Errorf("GET /healthz with a stale mark: %s %q, want 503 saying how long", resp.Status, body)
	}
	if resp, _ := scrape(t, m, "GET /metrics HTTP/1.1"); resp.StatusCode != 200 {
		t.Errorf("GET /metrics with a stale mark: %s, want 200 (the metrics say what they say)", resp.Status)
	}
	m.loopRan()
	if resp, _ := scrape(t, m, "GET /healthz HTTP/1.1"); resp.StatusCode != 200 {
		t.Errorf("GET /healthz after the loop ran again: %s, want 200", resp.Status)
	}
}

// TestNodeLoopMarksAlive: the node's loop marks itself alive after each
// event it handles, and its pulse alarm keeps coming while nothing else
// does, so /healthz tells an idle loop from a wedged one.
func TestNodeLoopMarksAlive(t *testing.T) {
	nl := newNodeLab(t, 2*time.Second)
	nl.n.met.loopMark.Store(int64(time.Since(imageStart) - loopBound - time.Second))
	signals := make(chan os.Signal, 1)
	done := make(chan struct{})
	go func() { defer close(done); nl.n.run(signals) }()
	nl.n.in.rtnl <- rtnlEvent{resync: true}
	lab.WaitFor(t, 10*time.Second, "the loop's mark after an event", func() bool { return nl.n.met.loopAge() < loopBound })
	signals <- syscall.SIGTERM
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop did not stop on SIGTERM")
	}

	// The pulse re-arms itself each time it goes off.
	nl = newNodeLab(t, 2*time.Second)
	nl.n.pulse.set(pulseEvery) // as run does
	for range 3 {
		nl.advance(pulseEvery)
		if !nl.n.pulse.armed {
			t.Fatal("the pulse went off and was not armed again")
		}
	}
}

// sampleMetrics is a metrics value with some of everything counted.
func sampleMetrics() *metrics {
	m := newMetrics(testGroup)
	m.ranked(rank{drained: true, healthy: false, priority: -3})
	m.transition(stateWaiting, stateCandidate)
	m.transition(stateCandidate, stateLeader)
	m.transition(stateLeader, stateCandidate)
	m.transition(stateCandidate, stateLeader)
	m.steppedDown(stepReasonOf(fmt.Errorf("renew: %w", errLeaseExpired)))
	for range 3 {
		m.announced(netip.MustParseAddr("192.0.2.100"))
	}
	m.announced(netip.MustParseAddr("2001:db8::100"))
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 3 * time.Millisecond, 3 * time.Second} {
		m.renewed(d)
	}
	m.etcdFailed(opRenew)
	m.etcdFailed(opRenew)
	m.etcdFailed(opClaim)
	return m
}

// TestMetricsExposition parses back a rendered metrics value.
func TestMetricsExposition(t *testing.T) {
	fams, err := lab.ParseExposition(string(sampleMetrics().exposition()))
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{
		"vipd_leader": "gauge", "vipd_state": "gauge", "vipd_transitions_total": "counter", "vipd_stepdowns_total": "counter",
		"vipd_announcements_total": "counter", "vipd_lease_renewal_seconds": "histogram", "vipd_etcd_errors_total": "counter",
		"vipd_build_info": "gauge", "go_goroutines": "gauge", "process_resident_memory_bytes": "gauge",
		"vipd_healthy": "gauge", "vipd_priority": "gauge", "process_start_time_seconds": "gauge", "vipd_drained": "gauge",
	}
	for name, typ := range types {
		if f := fams[name]; f == nil || f.Type != typ || f.Help == "" {
			t.Errorf("family %s: %+v, want TYPE %s with a HELP", name, f, typ)
		}
	}
	if len(fams) != len(types) {
		t.Errorf("%d families, want %d", len(fams), len(types))
	}
	want := []struct {
		name string
		kv   []string
		v    float64
	}{
		{"vipd_leader", nil, 1},
		{"vipd_healthy", nil, 0},
		{"vipd_drained", nil, 1},
		{"vipd_priority", nil, -3},
		{"vipd_state", []string{"state", "leader"}, 1},
		{"vipd_state", []string{"state", "candidate"}, 0},
		{"vipd_state", []string{"state", "waiting"}, 0},
		{"vipd_transitions_total", []string{"from", "candidate", "to", "leader"}, 2},
		{"vipd_transitions_total", []string{"from", "leader", "to", "candidate"}, 1},
		{"vipd_transitions_total", []string{"from", "waiting", "to", "candidate"}, 1},
		{"vipd_transitions_total", []string{"from", "leader", "to", "waiting"}, 0},
		{"vipd_stepdowns_total", []string{"reason", "lease_expired"}, 1},
		{"vipd_stepdowns_total", []string{"reason", "deadline"}, 0},
		{"vipd_stepdowns_total", []string{"reason", "stop"}, 0},
		{"vipd_announcements_total", []string{"family", "ipv4"}, 3},
		{"vipd_announcements_total", []string{"family", "ipv6"}, 1},
		{"vipd_lease_renewal_seconds_bucket", []string{"le", "0.001"}, 2}, // le is inclusive
		{"vipd_lease_renewal_seconds_bucket", []string{"le", "0.0025"}, 2},
		{"vipd_lease_renewal_seconds_bucket", []string{"le", "0.005"}, 4},
		{"vipd_lease_renewal_seconds_bucket", []string{"le", "2.5"}, 4},
		{"vipd_lease_renewal_seconds_bucket", []string{"le", "+Inf"}, 5},
		{"vipd_lease_renewal_seconds_count", nil, 5},
		{"vipd_etcd_errors_total", []string{"op", "renew"}, 2},
		{"vipd_etcd_errors_total", []string{"op", "claim"}, 1},
		{"vipd_etcd_errors_total", []string{"op", "grant"}, 0},
	}
	for _, w := range want {
		if got := lab.MustSampleValue(t, fams, w.name, lab.InGroup(testGroup, w.kv...)...); got != w.v {
			t.Errorf("%s%v = %v, want %v", w.name, w.kv, got, w.v)
		}
	}
	if err := lab.CheckGroups(fams, testGroup); err != nil {
		t.Error(err)
	}
	if v := lab.MustSampleValue(t, fams, "vipd_build_info", "version", release()); v != 1 {
		t.Errorf("vipd_build_info %v, want 1", v)
	}
	// This image's start, not the pid's: what a SIGHUP re-exec resets.
	if v := lab.MustSampleValue(t, fams, "process_start_time_seconds"); math.Abs(v-float64(imageStart.UnixNano())/1e9) > 1e-3 {
		t.Errorf("process_start_time_seconds %v, want the image's start %v", v, float64(imageStart.UnixNano())/1e9)
	}
	if sum := lab.MustSampleValue(t, fams, "vipd_lease_renewal_seconds_sum", lab.InGroup(testGroup)...); math.Abs(sum-3.0075) > 1e-9 {
		t.Errorf("renewal sum %v, want 3.0075", sum)
	}
	// Every label value is pre-declared: the series exist from the start,
	// and there are exactly these many (nothing grows).
	counts := map[string]int{"vipd_state": nStates, "vipd_transitions_total": nStates * (nStates - 1), "vipd_stepdowns_total": int(nStepReasons),
		"vipd_announcements_total": 2, "vipd_lease_renewal_seconds": nBounds + 3, "vipd_etcd_errors_total": int(nEtcdOps)}
	for name, n := range counts {
		if got := len(fams[name].Samples); got != n {
			t.Errorf("%s has %d series, want %d", name, got, n)
		}
	}
	for _, s := range fams["vipd_stepdowns_total"].Samples {
		if r := s.Labels["reason"]; !regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`).MatchString(r) {
			t.Errorf("reason %q is not short snake_case", r)
		}
	}
}

// TestParseExpositionRejects: the parser the other tests rely on finds
// what it is meant to find.
func TestParseExpositionRejects(t *testing.T) {
	hist := "# HELP h_seconds x\n# TYPE h_seconds histogram\n"
	for name, text := range map[string]string{
		"HELP twice":          "# HELP a x\n# TYPE a gauge\na 1\n# HELP a x\n",
		"TYPE twice":          "# HELP a x\n# TYPE a gauge\n# TYPE a gauge\na 1\n",
		"no TYPE":             "# HELP a x\na 1\n",
		"split family":        "# HELP a x\n# TYPE a gauge\na 1\n# HELP b x\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n",
		"not cumulative":      hist + "h_seconds_bucket{le=\"1\"} 2\nh_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 1\nh_seconds_count 1\n",
		"+Inf is not _count":  hist + "h_seconds_bucket{le=\"1\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\nh_seconds_sum 1\nh_seconds_count 1\n",
		"no +Inf":             hist + "h_seconds_bucket{le=\"1\"} 1\nh_seconds_sum 1\nh_seconds_count 1\n",
		"unterminated label":  "# HELP a x\n# TYPE a gauge\na{x=\"1} 1\n",
		"bad value":           "# HELP a x\n# TYPE a gauge\na one\n",
		"le not increasing":   hist + "h_seconds_bucket{le=\"1\"} 1\nh_seconds_bucket{le=\"0.5\"} 1\nh_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 1\nh_seconds_count 1\n",
		"histogram bare name": hist + "h_seconds 1\n",
	} {
		if _, err := lab.ParseExposition(text); err == nil {
			t.Errorf("%s: accepted:\n%s", name, text)
		}
	}
}

// TestMetricsPromtool: promtool accepts the exposition, and the check
// does catch what promtool objects to.
func TestMetricsPromtool(t *testing.T) {
	if err := lab.Promtool(sampleMetrics().exposition()); err != nil {
		t.Fatal(err)
	}
	if err := lab.Promtool(newMetrics(testGroup).exposition()); err != nil {
		t.Fatalf("fresh metrics: %v", err)
	}
	if err := lab.Promtool([]byte("# HELP vipd_x x\n# TYPE vipd_x counter\nvipd_x 1\n")); err == nil {
		t.Fatal("promtool's finding on a counter without _total went unnoticed")
	}
}

// TestStepReasons maps each step-down error, wrapped as the code wraps
// it, to its label.
func TestStepReasons(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: heartbeat not acknowledged in time", errDeadline), "deadline"},
		{errLeaseExpired, "lease_expired"},
		{fmt.Errorf("%w: k was deleted", errKeyGone), "key_gone"},
		{fmt.Errorf("%w: n2 (healthy, priority 5) outranks this node", errOutranked), "outranked"},
		{fmt.Errorf("%w k: %w: %w", errClaim, errClaimRPC, errors.New("timeout")), "claim_failed"},
		{fmt.Errorf("%w: %w", errSession, errors.New("x")), "claim_failed"},
		{fmt.Errorf("%w: lifetime would outlast the fence", errStalled), "stalled"},
		{fmt.Errorf("put back 192.0.2.100/32: %w", fmt.Errorf("%w: %w", errAddFailed, errors.New("EPERM"))), "add_failed"},
		{fmt.Errorf("put back 192.0.2.100/32: %w", fmt.Errorf("%w: over", errStalled)), "stalled"},
		{fmt.Errorf("eth0 is %w", errLinkDown), "link_down"},
		{fmt.Errorf("eth0: %w (interface removed)", errLinkGone), "link_down"},
		{errors.New("something new"), "other"},
	}
	for _, c := range cases {
		if got := stepReasonOf(c.err).String(); got != c.want {
			t.Errorf("%v: %s, want %s", c.err, got, c.want)
		}
	}
	if r := handoverReason(rank{healthy: false, priority: 9}, rank{healthy: true, priority: 0}); r != stepUnhealthy {
		t.Errorf("unhealthy leader to a healthy one: %v", r)
	}
	if r := handoverReason(rank{healthy: true, priority: 0}, rank{healthy: true, priority: 1}); r != stepPriority {
		t.Errorf("to a higher priority: %v", r)
	}
	if r := handoverReason(rank{drained: true, healthy: false}, rank{healthy: true}); r != stepDrained {
		t.Errorf("drained, to an undrained one: %v", r)
	}
	if r := handoverReason(rank{healthy: true, priority: 9}, rank{healthy: true, moved: true}); r != stepMoved {
		t.Errorf("to the node moved to: %v", r)
	}
	seen := map[string]bool{}
	for r := range stepReason(nStepReasons) {
		if seen[r.String()] {
			t.Errorf("label %s twice", r)
		}
		seen[r.String()] = true
	}
}

// TestNodeMetrics follows the node's hooks: the state and its
// transitions, announcements, and what counts as a step-down.
func TestNodeMetrics(t *testing.T) {
	scrape := func(t *testing.T, n *node) map[string]*lab.ExpoFamily {
		t.Helper()
		fams, err := lab.ParseExposition(string(n.met.exposition()))
		if err != nil {
			t.Fatal(err)
		}
		if err := lab.CheckGroups(fams, testGroup); err != nil {
			t.Error(err)
		}
		return fams
	}
	// val is the node's sample of name with the labels kv, in its group.
	val := func(t *testing.T, fams map[string]*lab.ExpoFamily, name string, kv ...string) float64 {
		t.Helper()
		return lab.MustSampleValue(t, fams, name, lab.InGroup(testGroup, kv...)...)
	}
	t.Run("lead, then lose the lease", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second, "vip.priority=7")
		// A candidate whose term ends has not stepped down.
		nl.n.onTerm(termEvent{t: nl.term(), kind: evLost, err: errLeaseExpired})
		nl.lead()
		fams := scrape(t, nl.n)
		for _, w := range []struct {
			name string
			kv   []string
			v    float64
		}{
			{"vipd_leader", nil, 1},
			{"vipd_healthy", nil, 1}, // no check
			{"vipd_priority", nil, 7},
			{"vipd_state", []string{"state", "leader"}, 1},
			{"vipd_transitions_total", []string{"from", "waiting", "to", "candidate"}, 1},
			{"vipd_transitions_total", []string{"from", "candidate", "to", "leader"}, 1},
			{"vipd_stepdowns_total", []string{"reason", "lease_expired"}, 0},
			{"vipd_announcements_total", []string{"family", "ipv4"}, 1}, // the burst's first
			{"vipd_announcements_total", []string{"family", "ipv6"}, 1},
		} {
			if got := val(t, fams, w.name, w.kv...); got != w.v {
				t.Errorf("%s%v = %v, want %v", w.name, w.kv, got, w.v)
			}
		}
		nl.n.onTerm(termEvent{t: nl.term(), kind: evLost, err: errLeaseExpired})
		fams = scrape(t, nl.n)
		if v := val(t, fams, "vipd_stepdowns_total", "reason", "lease_expired"); v != 1 {
			t.Errorf("stepdowns{lease_expired} = %v, want 1", v)
		}
		if v := val(t, fams, "vipd_leader"); v != 0 {
			t.Errorf("vipd_leader %v after the step-down", v)
		}
		if v := val(t, fams, "vipd_transitions_total", "from", "leader", "to", "candidate"); v != 1 {
			t.Errorf("leader -> candidate %v, want 1", v)
		}
	})
	t.Run("outranked after winning", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second)
		nl.n.onTerm(termEvent{t: nl.term(), kind: evLost, err: fmt.Errorf("%w: n2 outranks", errOutranked)})
		if v := val(t, scrape(t, nl.n), "vipd_stepdowns_total", "reason", "outranked"); v != 1 {
			t.Errorf("stepdowns{outranked} = %v, want 1", v)
		}
	})
	t.Run("handover and stop", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second, "vip.check=tcp://127.0.0.1:6443", "vip.preempt.delay=0")
		if v := val(t, scrape(t, nl.n), "vipd_healthy"); v != 0 {
			t.Errorf("vipd_healthy %v with a check that has not passed yet, want 0", v)
		}
		nl.n.onHealth(healthEvent{healthy: true})
		if v := val(t, scrape(t, nl.n), "vipd_healthy"); v != 1 {
			t.Errorf("vipd_healthy %v after the check passed, want 1", v)
		}
		nl.lead()
		nl.n.onTerm(termEvent{t: nl.term(), kind: evRival, rival: rival{entry: entry{name: "n3", rank: rank{healthy: true, priority: 0}}, known: true}})
		nl.n.onHealth(healthEvent{healthy: false, reason: "3 checks failed"})
		nl.n.stop(syscall.SIGTERM) // a candidate now: no step-down
		fams := scrape(t, nl.n)
		if v := val(t, fams, "vipd_healthy"); v != 0 {
			t.Errorf("vipd_healthy %v after the check failed, want 0", v)
		}
		if v := val(t, fams, "vipd_stepdowns_total", "reason", "unhealthy"); v != 1 {
			t.Errorf("stepdowns{unhealthy} = %v, want 1", v)
		}
		if v := val(t, fams, "vipd_stepdowns_total", "reason", "stop"); v != 0 {
			t.Errorf("stepdowns{stop} = %v for a candidate's stop, want 0", v)
		}
		nl = newNodeLab(t, 2*time.Second)
		nl.lead()
		nl.n.stop(syscall.SIGTERM)
		fams = scrape(t, nl.n)
		if v := val(t, fams, "vipd_stepdowns_total", "reason", "stop"); v != 1 {
			t.Errorf("stepdowns{stop} = %v, want 1", v)
		}
		if v := val(t, fams, "vipd_state", "state", "waiting"); v != 1 {
			t.Errorf("state{waiting} = %v after the stop", v)
		}
	})
}

// TestMetricsScrapeWhileWriting: a scrape taken while the counters move is
// still consistent (+Inf = _count), and the writers never wait for it.
func TestMetricsScrapeWhileWriting(t *testing.T) {
	m := newMetrics(testGroup)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20000 {
			m.renewed(time.Duration(i%3000) * time.Millisecond)
			m.transition(nodeState(i%3), nodeState((i+1)%3))
		}
	}()
	for scrapes := 0; ; scrapes++ {
		select {
		case <-done:
			if _, err := lab.ParseExposition(string(m.exposition())); err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
		if _, err := lab.ParseExposition(string(m.exposition())); err != nil {
			t.Fatalf("scrape %d: %v", scrapes, err)
		}
	}
}

// TestMetricsConnLimit: the listener serves connLimit connections at once
// and closes further ones at once (said once in the log); a slot that
// frees serves a scrape again; the stop closes the connections still held
// and returns only after their goroutines have ended.
func TestMetricsConnLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(testGroup)
	m.loopRan()
	logs := &lab.SyncBuffer{}
	// An hour per connection: nothing here ends by its deadline, so the
	// held connections hold their slots until the test lets them go.
	s := newMetricsServer(m, &logger{w: logs}, time.Hour)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.acceptAll(ctx, ln)
		s.conns.Wait()
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedByServer reads c to its end: what the server sent, and
	// whether the server closed it (rather than our bound running out).
	closedByServer := func(c net.Conn) (string, bool) {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		var ne net.Error
		return string(b), !(errors.As(err, &ne) && ne.Timeout())
	}
	var held []net.Conn
	for range connLimit {
		held = append(held, dial()) // idle: no request
	}
	// The kernel's queue hands connections over in order: these come
	// after the held ones, with every slot taken.
	for i := range 3 {
		c := dial()
		io.WriteString(c, "GET /metrics HTTP/1.1\r\n\r\n")
		if got, closed := closedByServer(c); !closed || got != "" {
			t.Fatalf("connection %d beyond the limit: answered %.60q, closed %v; want closed at once, unanswered", connLimit+i+1, got, closed)
		}
	}
	if n := strings.Count(logs.String(), "closing further ones at once"); n != 1 {
		t.Errorf("%d lines about refusing, want 1:\n%s", n, logs.String())
	}
	// A slot frees when its client goes: a scrape is answered again (the
	// server sees the close a moment later, so the scrape may be refused
	// until then).
	held[0].Close()
	var answer string
	lab.WaitFor(t, 10*time.Second, "a scrape answered after a slot freed", func() bool {
		c := dial()
		io.WriteString(c, "GET /healthz HTTP/1.1\r\n\r\n")
		answer, _ = closedByServer(c)
		return answer != ""
	})
	if !strings.HasPrefix(answer, "HTTP/1.1 200 OK\r\n") {
		t.Errorf("GET /healthz: %q, want 200", answer)
	}
	// The stop closes the held connections and waits for their goroutines.
	stop()
	for i, c := range held[1:] {
		if got, closed := closedByServer(c); !closed || got != "" {
			t.Errorf("held connection %d after the stop: %q, closed %v; want closed by the server", i+2, got, closed)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not return within 10 s of its stop")
	}
	if n := len(s.slots); n != 0 {
		t.Errorf("%d slots still taken after the stop", n)
	}
}

// TestAlertRules: promtool accepts the example alert rules in docs/ and
// their unit tests pass, and every vipd_ name they use is one vipd
// exposes (a rename would otherwise leave an alert that never fires).
func TestAlertRules(t *testing.T) {
	if err := lab.PromtoolRules("docs/alerts.yml", "docs/alerts.test.yml"); err != nil {
		t.Fatal(err)
	}
	fams, err := lab.ParseExposition(string(sampleMetrics().exposition()))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"docs/alerts.yml", "docs/alerts.test.yml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		names := regexp.MustCompile(`\bvipd_[a-z_]+`).FindAllString(string(b), -1)
		if len(names) == 0 {
			t.Fatalf("%s names no vipd_ metric", file)
		}
		for _, name := range names {
			if _, ok := fams[name]; !ok {
				t.Errorf("%s uses %s, which vipd does not expose", file, name)
			}
		}
	}
}

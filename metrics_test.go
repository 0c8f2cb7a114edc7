package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scrape sends one request line to the metrics handler over a pipe and
// returns the parsed answer.
func scrape(t *testing.T, m *metrics, request string) (*http.Response, string) {
	t.Helper()
	client, server := net.Pipe()
	go m.answer(server)
	defer client.Close()
	go io.WriteString(client, request+"\r\nHost: x\r\nAccept: */*\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%q: body: %v", request, err)
	}
	return resp, string(body)
}

func TestMetricsEndpoint(t *testing.T) {
	m := &metrics{}
	resp, body := scrape(t, m, "GET /metrics HTTP/1.1")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"\nvipd_leader 0\n", "vipd_build_info{version=", "\ngo_goroutines ", "# TYPE vipd_leader gauge\n"} {
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
	if _, body := scrape(t, m, "GET /metrics?x=1 HTTP/1.1"); !strings.Contains(body, "\nvipd_leader 1\n") {
		t.Errorf("leader not shown:\n%s", body)
	}
	if resp, _ := scrape(t, m, "GET / HTTP/1.1"); resp.StatusCode != 404 {
		t.Errorf("GET /: %s, want 404", resp.Status)
	}
	if resp, _ := scrape(t, m, "POST /metrics HTTP/1.1"); resp.StatusCode != 405 {
		t.Errorf("POST /metrics: %s, want 405", resp.Status)
	}
}

// expoSample is one sample line of the text format.
type expoSample struct {
	name   string
	labels map[string]string
	value  float64
}

// expoFamily is one metric family: its HELP, TYPE and samples in order.
type expoFamily struct {
	help, typ string
	samples   []expoSample
}

// parseExposition reads the Prometheus text format strictly: each family
// has its HELP and TYPE once, before its samples, and its samples are
// contiguous; a histogram's buckets are cumulative, in increasing le, and
// end in +Inf equal to _count.
func parseExposition(text string) (map[string]*expoFamily, error) {
	fams := map[string]*expoFamily{}
	var cur string // the family whose samples may follow
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		errorf := func(f string, a ...any) error { return fmt.Errorf("line %d %q: %s", i+1, line, fmt.Sprintf(f, a...)) }
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			kw, rest, _ := strings.Cut(rest, " ")
			name, arg, _ := strings.Cut(rest, " ")
			f := fams[name]
			switch {
			case kw == "HELP" && f == nil:
				fams[name], cur = &expoFamily{help: arg}, name
			case kw == "HELP":
				return nil, errorf("second HELP for %s", name)
			case kw == "TYPE" && (f == nil || name != cur):
				return nil, errorf("TYPE without its HELP just before")
			case kw == "TYPE" && f.typ != "":
				return nil, errorf("second TYPE for %s", name)
			case kw == "TYPE" && (arg == "gauge" || arg == "counter" || arg == "histogram") && len(f.samples) == 0:
				f.typ = arg
			default:
				return nil, errorf("unexpected comment")
			}
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, errorf("%v", err)
		}
		f := fams[cur]
		if f == nil || f.typ == "" {
			return nil, errorf("sample before any HELP and TYPE")
		}
		base := s.name
		if f.typ == "histogram" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(s.name, suffix); ok {
					base = b
					break
				}
			}
		}
		if base != cur || (f.typ == "histogram" && base == s.name) {
			return nil, errorf("sample of %s outside its family (after the TYPE of %s)", s.name, cur)
		}
		f.samples = append(f.samples, s)
	}
	for name, f := range fams {
		if f.typ == "" || len(f.samples) == 0 {
			return nil, fmt.Errorf("%s: TYPE %q, %d samples", name, f.typ, len(f.samples))
		}
		if f.typ == "histogram" {
			if err := checkHistogram(name, f); err != nil {
				return nil, err
			}
		}
	}
	return fams, nil
}

// checkHistogram checks one histogram family (unlabelled apart from le).
func checkHistogram(name string, f *expoFamily) error {
	prevLE, prev := math.Inf(-1), -1.0
	var inf, count float64
	var haveInf, haveSum, haveCount bool
	for _, s := range f.samples {
		switch s.name {
		case name + "_bucket":
			if haveInf {
				return fmt.Errorf("%s: a bucket after +Inf", name)
			}
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if err != nil || le <= prevLE || s.value < prev {
				return fmt.Errorf("%s: bucket le=%q %v after le=%v %v: not increasing and cumulative", name, s.labels["le"], s.value, prevLE, prev)
			}
			prevLE, prev = le, s.value
			if math.IsInf(le, 1) {
				haveInf, inf = true, s.value
			}
		case name + "_sum":
			haveSum = true
		case name + "_count":
			haveCount, count = true, s.value
		}
	}
	if !haveInf || !haveSum || !haveCount || inf != count {
		return fmt.Errorf("%s: +Inf bucket %v (%v), _sum %v, _count %v (%v): want all, +Inf = _count", name, haveInf, inf, haveSum, haveCount, count)
	}
	return nil
}

// parseSample reads NAME[{k="v",...}] VALUE.
func parseSample(line string) (expoSample, error) {
	s := expoSample{labels: map[string]string{}}
	rest := line
	if i := strings.IndexAny(rest, "{ "); i > 0 {
		s.name, rest = rest[:i], rest[i:]
	} else {
		return s, fmt.Errorf("no name")
	}
	if strings.HasPrefix(rest, "{") {
		rest = rest[1:]
		for !strings.HasPrefix(rest, "}") {
			k, v, ok := strings.Cut(rest, `="`)
			if !ok || k == "" || strings.ContainsAny(k, ` ",{}`) {
				return s, fmt.Errorf("bad label at %q", rest)
			}
			rest = v
			var val strings.Builder
			for {
				if rest == "" {
					return s, fmt.Errorf("unterminated label value")
				}
				c := rest[0]
				rest = rest[1:]
				if c == '"' {
					break
				}
				if c == '\\' && rest != "" {
					c, rest = map[byte]byte{'\\': '\\', '"': '"', 'n': '\n'}[rest[0]], rest[1:]
				}
				val.WriteByte(c)
			}
			if _, dup := s.labels[k]; dup {
				return s, fmt.Errorf("label %s twice", k)
			}
			s.labels[k] = val.String()
			rest = strings.TrimPrefix(rest, ",")
		}
		rest = rest[1:]
	}
	v, ok := strings.CutPrefix(rest, " ")
	if !ok {
		return s, fmt.Errorf("no value")
	}
	var err error
	if s.value, err = strconv.ParseFloat(v, 64); err != nil {
		return s, fmt.Errorf("value: %v", err)
	}
	return s, nil
}

// value is the sample of name with exactly the labels given as k, v
// pairs; ok false if there is none.
func value(fams map[string]*expoFamily, name string, kv ...string) (float64, bool) {
	for _, f := range fams {
	samples:
		for _, s := range f.samples {
			if s.name != name || len(s.labels) != len(kv)/2 {
				continue
			}
			for i := 0; i < len(kv); i += 2 {
				if s.labels[kv[i]] != kv[i+1] {
					continue samples
				}
			}
			return s.value, true
		}
	}
	return 0, false
}

// mustValue is value, failing the test when the sample is missing.
func mustValue(t *testing.T, fams map[string]*expoFamily, name string, kv ...string) float64 {
	t.Helper()
	v, ok := value(fams, name, kv...)
	if !ok {
		t.Fatalf("no sample %s%v", name, kv)
	}
	return v
}

// promtoolCheck runs `promtool check metrics` on an exposition. Missing
// promtool fails rather than skips: the check is part of the contract.
func promtoolCheck(body []byte) error {
	path, err := exec.LookPath("promtool")
	if err != nil {
		return fmt.Errorf("promtool not found (%v): install Debian's prometheus package (apt-get install prometheus; CI's .ci/run does)", err)
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	// Its lint findings (names, units) come with exit status 3; any
	// output at all is a finding.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		return fmt.Errorf("promtool check metrics: %v: %s", err, out)
	}
	return nil
}

// sampleMetrics is a metrics value with some of everything counted.
func sampleMetrics() *metrics {
	m := &metrics{}
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
	fams, err := parseExposition(string(sampleMetrics().exposition()))
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{
		"vipd_leader": "gauge", "vipd_state": "gauge", "vipd_transitions_total": "counter", "vipd_stepdowns_total": "counter",
		"vipd_announcements_total": "counter", "vipd_lease_renewal_seconds": "histogram", "vipd_etcd_errors_total": "counter",
		"vipd_build_info": "gauge", "go_goroutines": "gauge", "process_resident_memory_bytes": "gauge",
	}
	for name, typ := range types {
		if f := fams[name]; f == nil || f.typ != typ || f.help == "" {
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
		{"vipd_build_info", []string{"version", version}, 1},
	}
	for _, w := range want {
		if got := mustValue(t, fams, w.name, w.kv...); got != w.v {
			t.Errorf("%s%v = %v, want %v", w.name, w.kv, got, w.v)
		}
	}
	if sum := mustValue(t, fams, "vipd_lease_renewal_seconds_sum"); math.Abs(sum-3.0075) > 1e-9 {
		t.Errorf("renewal sum %v, want 3.0075", sum)
	}
	// Every label value is pre-declared: the series exist from the start,
	// and there are exactly these many (nothing grows).
	counts := map[string]int{"vipd_state": 3, "vipd_transitions_total": 6, "vipd_stepdowns_total": int(nStepReasons),
		"vipd_announcements_total": 2, "vipd_lease_renewal_seconds": nBounds + 3, "vipd_etcd_errors_total": int(nEtcdOps)}
	for name, n := range counts {
		if got := len(fams[name].samples); got != n {
			t.Errorf("%s has %d series, want %d", name, got, n)
		}
	}
	for _, s := range fams["vipd_stepdowns_total"].samples {
		if r := s.labels["reason"]; !regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`).MatchString(r) {
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
		if _, err := parseExposition(text); err == nil {
			t.Errorf("%s: accepted:\n%s", name, text)
		}
	}
}

// TestMetricsPromtool: promtool accepts the exposition, and the check
// does catch what promtool objects to.
func TestMetricsPromtool(t *testing.T) {
	if err := promtoolCheck(sampleMetrics().exposition()); err != nil {
		t.Fatal(err)
	}
	if err := promtoolCheck((&metrics{}).exposition()); err != nil {
		t.Fatalf("fresh metrics: %v", err)
	}
	if err := promtoolCheck([]byte("# HELP vipd_x x\n# TYPE vipd_x counter\nvipd_x 1\n")); err == nil {
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
	scrape := func(t *testing.T, n *node) map[string]*expoFamily {
		t.Helper()
		fams, err := parseExposition(string(n.met.exposition()))
		if err != nil {
			t.Fatal(err)
		}
		return fams
	}
	t.Run("lead, then lose the lease", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second)
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
			{"vipd_state", []string{"state", "leader"}, 1},
			{"vipd_transitions_total", []string{"from", "waiting", "to", "candidate"}, 1},
			{"vipd_transitions_total", []string{"from", "candidate", "to", "leader"}, 1},
			{"vipd_stepdowns_total", []string{"reason", "lease_expired"}, 0},
			{"vipd_announcements_total", []string{"family", "ipv4"}, 1}, // the burst's first
			{"vipd_announcements_total", []string{"family", "ipv6"}, 1},
		} {
			if got := mustValue(t, fams, w.name, w.kv...); got != w.v {
				t.Errorf("%s%v = %v, want %v", w.name, w.kv, got, w.v)
			}
		}
		nl.n.onTerm(termEvent{t: nl.term(), kind: evLost, err: errLeaseExpired})
		fams = scrape(t, nl.n)
		if v := mustValue(t, fams, "vipd_stepdowns_total", "reason", "lease_expired"); v != 1 {
			t.Errorf("stepdowns{lease_expired} = %v, want 1", v)
		}
		if v := mustValue(t, fams, "vipd_leader"); v != 0 {
			t.Errorf("vipd_leader %v after the step-down", v)
		}
		if v := mustValue(t, fams, "vipd_transitions_total", "from", "leader", "to", "candidate"); v != 1 {
			t.Errorf("leader -> candidate %v, want 1", v)
		}
	})
	t.Run("outranked after winning", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second)
		nl.n.onTerm(termEvent{t: nl.term(), kind: evLost, err: fmt.Errorf("%w: n2 outranks", errOutranked)})
		if v := mustValue(t, scrape(t, nl.n), "vipd_stepdowns_total", "reason", "outranked"); v != 1 {
			t.Errorf("stepdowns{outranked} = %v, want 1", v)
		}
	})
	t.Run("handover and stop", func(t *testing.T) {
		nl := newNodeLab(t, 2*time.Second, "vip.check=tcp://127.0.0.1:6443", "vip.preempt.delay=0")
		nl.n.onHealth(healthEvent{healthy: true})
		nl.lead()
		nl.n.onTerm(termEvent{t: nl.term(), kind: evRival, rival: rival{entry: entry{name: "n3", rank: rank{healthy: true, priority: 0}}, known: true}})
		nl.n.onHealth(healthEvent{healthy: false, reason: "3 checks failed"})
		nl.n.stop(syscall.SIGTERM) // a candidate now: no step-down
		fams := scrape(t, nl.n)
		if v := mustValue(t, fams, "vipd_stepdowns_total", "reason", "unhealthy"); v != 1 {
			t.Errorf("stepdowns{unhealthy} = %v, want 1", v)
		}
		if v := mustValue(t, fams, "vipd_stepdowns_total", "reason", "stop"); v != 0 {
			t.Errorf("stepdowns{stop} = %v for a candidate's stop, want 0", v)
		}
		nl = newNodeLab(t, 2*time.Second)
		nl.lead()
		nl.n.stop(syscall.SIGTERM)
		fams = scrape(t, nl.n)
		if v := mustValue(t, fams, "vipd_stepdowns_total", "reason", "stop"); v != 1 {
			t.Errorf("stepdowns{stop} = %v, want 1", v)
		}
		if v := mustValue(t, fams, "vipd_state", "state", "waiting"); v != 1 {
			t.Errorf("state{waiting} = %v after the stop", v)
		}
	})
}

// TestMetricsScrapeWhileWriting: a scrape taken while the counters move is
// still consistent (+Inf = _count), and the writers never wait for it.
func TestMetricsScrapeWhileWriting(t *testing.T) {
	m := &metrics{}
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
			if _, err := parseExposition(string(m.exposition())); err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
		if _, err := parseExposition(string(m.exposition())); err != nil {
			t.Fatalf("scrape %d: %v", scrapes, err)
		}
	}
}

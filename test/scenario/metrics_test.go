package scenario

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// scrapeNode reads a lab node's /metrics from inside its namespace,
// checks it with promtool and parses it. The listener may take a moment
// after start, so a refused connection is tried again for a few seconds.
func scrapeNode(t *testing.T, nd *lab.Node) map[string]*expoFamily {
	t.Helper()
	return scrapeNodeAt(t, nd, labMetricsPort)
}

func scrapeNodeAt(t *testing.T, nd *lab.Node, port int) map[string]*expoFamily {
	t.Helper()
	url := fmt.Sprintf("http://%s:%d/metrics", nd.IP, port)
	var body []byte
	var err error
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var resp *http.Response
		if resp, err = lab.NSHTTP(nd.NS).Get(url); err == nil {
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
	if err := promtoolCheck(body); err != nil {
		t.Errorf("%s: %v", nd.Name, err)
	}
	fams, err := parseExposition(string(body))
	if err != nil {
		t.Fatalf("%s: %v\n%s", nd.Name, err, body)
	}
	return fams
}

// scrapeAll scrapes every running node until exactly one, the holder
// want, reports vipd_leader 1 (the monitor sees the address a moment
// before the node's state changes) or time runs out.
func scrapeAll(t *testing.T, l *lab.Lab, want *lab.Node) map[*lab.Node]map[string]*expoFamily {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		all := map[*lab.Node]map[string]*expoFamily{}
		var leaders []string
		for _, nd := range l.Nodes {
			if nd.Cmd == nil {
				continue
			}
			all[nd] = scrapeNode(t, nd)
			if v := mustValue(t, all[nd], "vipd_leader"); v == 1 {
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
			if v := mustValue(t, fams, "vipd_state", "state", "candidate"); v != 1 {
				t.Errorf("%s: vipd_state{candidate} %v, want 1", nd.Name, v)
			}
		}
	}

	l.Kill(old)
	next := l.HolderOtherThan(old, lab.MoveBound)
	after := scrapeAll(t, l, next)
	checkHolderMetrics(t, next, after[next])
	key := []string{"from", "candidate", "to", "leader"}
	if b, a := mustValue(t, before[next], "vipd_transitions_total", key...), mustValue(t, after[next], "vipd_transitions_total", key...); a != b+1 {
		t.Errorf("%s: vipd_transitions_total{candidate->leader} went from %v to %v over its takeover, want +1", next.Name, b, a)
	}
	for nd, fams := range after {
		if b, a := mustValue(t, before[nd], "vipd_lease_renewal_seconds_count"), mustValue(t, fams, "vipd_lease_renewal_seconds_count"); a <= b {
			t.Errorf("%s: renewal count went from %v to %v, want more", nd.Name, b, a)
		}
	}
}

// checkHolderMetrics checks what a holder must have counted.
func checkHolderMetrics(t *testing.T, nd *lab.Node, fams map[string]*expoFamily) {
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
	} {
		if v := mustValue(t, fams, c.Name, c.kv...); v < 1 {
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
	if v := mustValue(t, scrapeNodeAt(t, nd, port), "vipd_leader"); v != 1 {
		t.Errorf("vipd_leader %v before the SIGHUP, want 1", v)
	}
	l.Signal(nd, syscall.SIGHUP)
	lab.WaitLogCount(t, nd, "resumed the earlier run's lease", 1, 10*time.Second)
	// The leader transition follows that line by about a millisecond (seen
	// once: the scrape came first); as TestPrivilegesNonRoot, wait for it.
	lab.WaitLogCount(t, nd, "resumed; refreshed", 1, 5*time.Second)
	if v := mustValue(t, scrapeNodeAt(t, nd, port), "vipd_leader"); v != 1 {
		t.Errorf("vipd_leader %v after the SIGHUP, want 1", v)
	}
	if strings.Contains(nd.Log.String(), "retrying every 5 s") {
		t.Errorf("vip.metrics on port %d was not bound at once:\n%s", port, nd.Log.String())
	}
	if n := strings.Count(nd.Log.String(), "serving metrics on"); n != 2 {
		t.Errorf("%d \"serving metrics\" lines, want 2 (one per image):\n%s", n, nd.Log.String())
	}
}

// expoSample is one sample line of the text format.
type expoSample struct {
	Name   string
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
		base := s.Name
		if f.typ == "histogram" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(s.Name, suffix); ok {
					base = b
					break
				}
			}
		}
		if base != cur || (f.typ == "histogram" && base == s.Name) {
			return nil, errorf("sample of %s outside its family (after the TYPE of %s)", s.Name, cur)
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
		switch s.Name {
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
		s.Name, rest = rest[:i], rest[i:]
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
			if s.Name != name || len(s.labels) != len(kv)/2 {
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

// labMetricsPort is where every lab node serves /metrics, on its own IP.
const labMetricsPort = 9100

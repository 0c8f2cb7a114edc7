package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// fakeCandidates builds election entries in queue order (create revision
// ascending) from their values, with leases 0x101, 0x102, ...
func fakeCandidates(values ...string) []candidate {
	cs := make([]candidate, len(values))
	for i, v := range values {
		lease := clientv3.LeaseID(0x101 + i)
		cs[i] = candidate{entry: parseEntry([]byte(v)), key: fmt.Sprintf("/vipd/192.0.2.100/%x", lease),
			createRev: int64(10 + i), modRev: int64(10 + i), lease: lease}
	}
	return cs
}

// described is the info keys of candidates that all run version: every
// lease named.
func described(cs []candidate, version string) map[clientv3.LeaseID]string {
	m := map[clientv3.LeaseID]string{}
	for _, c := range cs {
		m[c.lease] = version
	}
	return m
}

func names(cs []candidate) []string {
	var s []string
	for _, c := range cs {
		s = append(s, c.name)
	}
	return s
}

func TestStatusOrder(t *testing.T) {
	const held = " since=1000 beat=2000"
	cases := []struct {
		name   string
		values []string
		holder string // "" none
		next   []string
	}{
		{"empty", nil, "", nil},
		{"holder and equals: queue order", []string{"a healthy 0" + held, "b healthy 0", "c healthy 0"}, "a", []string{"b", "c"}},
		{"rank before queue", []string{"a healthy 0" + held, "b healthy 0", "c healthy 5", "d unhealthy 9", "e healthy 5"}, "a", []string{"c", "e", "b", "d"}},
		{"unreadable last", []string{"a unhealthy 0" + held, "garbage here", "b unhealthy -100"}, "a", []string{"b", "garbage here"}},
		{"bare name is healthy 0", []string{"a healthy 0" + held, "old", "b healthy -1"}, "a", []string{"old", "b"}},
		// The oldest key has not claimed: it may still step aside for a
		// better one, which then goes first.
		{"deciding: no holder", []string{"a healthy 0", "b healthy 3", "c healthy 0"}, "", []string{"b", "a", "c"}},
		// Only the oldest key can hold; since= elsewhere does not make a holder.
		{"holder mark behind the oldest", []string{"a healthy 0", "b healthy 0" + held}, "", []string{"a", "b"}},
	}
	// The same entries without info keys, as vipd before 0.1.0 writes
	// them: an oldest key without since= may be a holder of a vipd from
	// before since= existed, and is named.
	cases = append(cases, []struct {
		name   string
		values []string
		holder string
		next   []string
	}{
		{"old: no since=", []string{"a healthy 0", "b healthy 3", "c healthy 0"}, "a", []string{"b", "c"}},
		{"old: bare name", []string{"old", "b healthy -1"}, "old", []string{"b"}},
	}...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cs := fakeCandidates(c.values...)
			v := described(cs, "0.1.0")
			if strings.HasPrefix(c.name, "old:") {
				v = nil
			}
			h, rest := splitHolder(cs, v)
			got := ""
			if h != nil {
				got = h.name
			}
			if got != c.holder || !slices.Equal(names(rest), c.next) {
				t.Errorf("holder %q, next %q; want %q, %q", got, names(rest), c.holder, c.next)
			}
		})
	}
}

func TestTakeoverOrderKeepsInput(t *testing.T) {
	cs := fakeCandidates("a healthy 0", "b healthy 3")
	takeoverOrder(cs)
	if names(cs)[0] != "a" {
		t.Fatalf("takeoverOrder reordered its input: %v", names(cs))
	}
}

func TestBuildStatus(t *testing.T) {
	now := time.UnixMilli(1_700_000_100_000)
	since, beat := now.Add(-90*time.Second), now.Add(-700*time.Millisecond)
	holder := "n1 healthy 0 since=" + strconv.FormatInt(since.UnixMilli(), 10) + " beat=" + strconv.FormatInt(beat.UnixMilli(), 10)
	cs := fakeCandidates(holder, "n2 healthy 0", "n3 unhealthy 7", "n4 healthy 2")
	leases := map[clientv3.LeaseID]leaseInfo{0x101: {left: 2, granted: 3}, 0x102: {left: 3, granted: 3}, 0x104: {left: 1, granted: 3}}

	vers := described(cs, "0.1.0+abc")
	delete(vers, 0x103)
	v := electionView{cs: cs, leases: leases, versions: vers}
	rep := buildStatus("/vipd/192.0.2.100", []string{"http://e:2379"}, v, "n2", now)
	h := rep.Holder
	if h == nil || h.Name != "n1" {
		t.Fatalf("holder %+v, want n1", h)
	}
	if !h.Since.Equal(since) || *h.HeldMS != 90_000 || *h.BeatAgeMS != 700 || h.LeaseTTL != 2 || h.TTLMS != 3000 || h.Stale || h.Self || h.Version != "0.1.0+abc" {
		t.Errorf("holder %+v", *h)
	}
	var next []string
	for _, c := range rep.Candidates {
		next = append(next, c.Name)
	}
	if !slices.Equal(next, []string{"n4", "n2", "n3"}) {
		t.Errorf("candidates %v, want n4 n2 n3 (rank, then queue)", next)
	}
	if c := rep.Candidates[1]; !c.Self || c.LeaseTTL != 3 || c.Rank != "healthy, priority 0" || c.Lease != "102" {
		t.Errorf("n2: %+v", c)
	}
	if c := rep.Candidates[2]; c.LeaseTTL != -1 || c.Healthy || c.Priority != 7 || c.Version != "" {
		t.Errorf("n3 (lease and version unknown): %+v", c)
	}

	// The same holder 3.5 s later has missed its TTL's worth of heartbeats.
	later := buildStatus("/vipd/192.0.2.100", nil, v, "", beat.Add(3500*time.Millisecond))
	if !later.Holder.Stale || *later.Holder.BeatAgeMS != 3500 {
		t.Errorf("holder 3.5 s after its heartbeat with a 3 s TTL: %+v, want stale", *later.Holder)
	}
	// Without the lease's TTL nobody can say.
	unknown := buildStatus("/vipd/192.0.2.100", nil, electionView{cs: cs, versions: vers}, "", beat.Add(time.Hour))
	if unknown.Holder.Stale || unknown.Holder.LeaseTTL != -1 {
		t.Errorf("holder with an unknown lease: %+v, want not stale, lease -1", *unknown.Holder)
	}

	deciding := fakeCandidates("x healthy 0", "y unhealthy 0", "z z")
	none := buildStatus("/vipd/192.0.2.100", nil, electionView{cs: deciding, versions: described(deciding, "0.1.0")}, "", now)
	if none.Holder != nil || len(none.Candidates) != 3 {
		t.Fatalf("no holder: %+v", none)
	}
	if z := none.Candidates[2]; !z.Unranked || z.Rank != "unranked" || z.Priority != 0 || z.Name != "z z" {
		t.Errorf("unreadable entry: %+v", z)
	}

	// A holder of a vipd before since= existed: named, its tenure unknown,
	// and the JSON leaves the times out rather than write zeros.
	old := buildStatus("/vipd/192.0.2.100", nil, electionView{cs: fakeCandidates("x healthy 0", "y healthy 0"), leases: leases}, "", now)
	if h := old.Holder; h == nil || h.Name != "x" || h.HeldMS != nil || h.BeatAgeMS != nil || h.Stale || h.TTLMS != 3000 || h.Version != "" {
		t.Fatalf("holder without since=: %+v", old.Holder)
	}
	b, _ := json.Marshal(old.Holder)
	for _, k := range []string{"since", "held_ms", "last_heartbeat", "heartbeat_age_ms", "version"} {
		if strings.Contains(string(b), `"`+k+`"`) {
			t.Errorf("holder without since= has %q in JSON: %s", k, b)
		}
	}
	// A holder fenced in the kernel is stale after the window it
	// advertises, not its TTL.
	fbeat := strconv.FormatInt(now.Add(-time.Second).UnixMilli(), 10)
	fenced := buildStatus("/vipd/192.0.2.100", nil, electionView{cs: fakeCandidates("x healthy 0 since="+fbeat+" beat="+fbeat+" fence=500", "y healthy 0"), leases: leases}, "", now)
	if h := fenced.Holder; h == nil || !h.Stale || h.FenceMS != 500 {
		t.Fatalf("fenced holder 1s after its last heartbeat: %+v", fenced.Holder)
	}
	var w bytes.Buffer
	writeStatus(&w, old)
	if !regexp.MustCompile(`(?m)^holder +x +healthy, priority 0 +vipd \? +TTL rule +lease 2s left +since unknown \(`).MatchString(w.String()) {
		t.Errorf("holder without since=:\n%s", w.String())
	}
}

func TestWriteStatus(t *testing.T) {
	now := time.UnixMilli(1_700_000_100_000)
	beat := now.Add(-4 * time.Second)
	cs := fakeCandidates("node-one healthy 0 since="+strconv.FormatInt(now.Add(-time.Hour).UnixMilli(), 10)+" beat="+strconv.FormatInt(beat.UnixMilli(), 10),
		"n2 healthy 0 fence=500", "n3 unhealthy 7")
	leases := map[clientv3.LeaseID]leaseInfo{0x101: {left: 1, granted: 3}, 0x102: {left: 2, granted: 3}}
	vers := described(cs, "0.1.0+abc1234")
	vers[0x102] = "0.2.0"
	rep := buildStatus("/vipd/192.0.2.100", []string{"http://e:2379"}, electionView{cs: cs, leases: leases, versions: vers}, "n2", now)
	var b bytes.Buffer
	writeStatus(&b, rep)
	out := b.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []*regexp.Regexp{
		regexp.MustCompile(`^group +/vipd/192\.0\.2\.100 \(etcd http://e:2379\)$`),
		regexp.MustCompile(`^holder +node-one +healthy, priority 0 +vipd 0\.1\.0\+abc1234 +TTL rule +lease 1s left +since .* \(for 1h0m0s\) +heartbeat 4s ago STALE \(older than its 3s TTL\)$`),
		regexp.MustCompile(`^next 1 +n2 \* +healthy, priority 0 +vipd 0\.2\.0 +kernel fence 500ms +lease 2s left$`),
		regexp.MustCompile(`^next 2 +n3 +unhealthy, priority 7 +vipd 0\.1\.0\+abc1234 +TTL rule +lease unknown$`),
		regexp.MustCompile(`^this node +no state file$`),
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %s", i+1, lines[i], re)
		}
	}
	// Names, ranks and versions in aligned columns: "lease" starts at one offset.
	col := strings.Index(lines[1], "lease")
	for _, l := range lines[2:4] {
		if strings.Index(l, "lease") != col {
			t.Errorf("columns not aligned:\n%s", out)
		}
	}
}

func TestLocalStatus(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.json")
	if l, err := localStatus(path, time.Now()); l != nil || err != nil {
		t.Fatalf("missing state file: %+v, %v; want nothing", l, err)
	}
	now := time.Now()
	rec := stateRecord{recordGroup: recordGroup{Name: "n1", Key: "/vipd/x"}, Written: now,
		recordHolding: recordHolding{State: "leader", StateSince: now.Add(-time.Minute), Holder: "n1",
			Deadline: now.Add(1500 * time.Millisecond), LastAnnounced: now.Add(-10 * time.Second), LastStepDown: "lease expired",
			SteppedDownAt: now.Add(-time.Hour)}}
	rec.PID = 0x7ffffff0 // no such process
	if err := writeAtomic(path, rec); err != nil {
		t.Fatal(err)
	}
	l, err := localStatus(path, now)
	if err != nil || l == nil {
		t.Fatalf("localStatus: %+v, %v", l, err)
	}
	if l.State != "leader" || l.Holder != "n1" || l.DeadlineLeftMS == nil || *l.DeadlineLeftMS != 1500 || l.PIDAlive || l.LastStepDown != "lease expired" {
		t.Errorf("local view %+v", *l)
	}
	if !pidAlive(1) {
		t.Errorf("pid 1 counted as not running")
	}
	var b bytes.Buffer
	writeLocalStatus(&b, l, "", now)
	for _, w := range []string{"state      leader since", "holder     n1", "deadline   1.5s left", "announced", "stepdown", "lease expired", "(not running)"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("local view lacks %q:\n%s", w, b.String())
		}
	}
}

// TestStatusEtcdDown needs no lab: nothing listens on the endpoint.
func TestStatusEtcdDown(t *testing.T) {
	for _, asJSON := range []bool{false, true} {
		args := []string{"-cmdline", "none", "-status"}
		if asJSON {
			args = append(args, "-json")
		}
		args = append(args, "vip.address=192.0.2.100", "vip.etcd=http://127.0.0.1:9", "vip.log=stderr", "vip.key=/vipd-test/"+t.Name())
		var stdout, stderr bytes.Buffer
		start := time.Now()
		code := vipd(args, &stdout, &stderr)
		took := time.Since(start)
		if code != exitRuntime || !strings.Contains(stderr.String(), "etcd unreachable at http://127.0.0.1:9: ") {
			t.Errorf("json %v: exit %d, stderr %q; want 1 and the unreachable line", asJSON, code, stderr.String())
		}
		if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); n != 0 {
			t.Errorf("json %v: %d lines on stderr, want one:\n%s", asJSON, n+1, stderr.String())
		}
		if took > 5*time.Second {
			t.Errorf("json %v: took %v", asJSON, took)
		}
		if asJSON {
			var rep statusReport
			if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || rep.Error == "" || rep.Holder != nil {
				t.Errorf("JSON %v: %+v\n%s", err, rep, stdout.String())
			}
		}
	}
}

func TestJSONNeedsStatus(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := vipd([]string{"-json", "vip.address=192.0.2.100"}, &stdout, &stderr); code != exitUsage {
		t.Fatalf("-json alone: exit %d, want 2 (%s)", code, stderr.String())
	}
}

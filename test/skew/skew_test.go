// Package skew is the version-skew test (issue 21): a 3-node lab running
// two vipd versions side by side, as during a rolling upgrade of a fleet.
// The older version (N-1) is built from git history, from the commit
// $VIPD_SKEW_BASE; the current one is the lab's (lab.Binaries, $VIPD).
// `make skew-test` runs it; without $VIPD_SKEW_BASE every test skips in
// one line, so `go test ./...` (make test) leaves it out.
package skew

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

var tmpDir string

// TestMain deletes namespaces that killed runs left behind, and the old
// binary's directory afterwards.
func TestMain(m *testing.M) {
	code := lab.Main(m)
	if tmpDir != "" {
		os.RemoveAll(tmpDir)
	}
	os.Exit(code)
}

var (
	oldOnce sync.Once
	oldBin  string
	oldErr  error
)

// oldVipd builds vipd at $VIPD_SKEW_BASE from `git archive` of that commit,
// as that era's `make vipd` did: CGO_ENABLED=0 go build -trimpath
// -ldflags '-s -w -X main.version=<git describe --always>'. It skips the
// test when $VIPD_SKEW_BASE is unset.
func oldVipd(t *testing.T) string {
	t.Helper()
	base := os.Getenv("VIPD_SKEW_BASE")
	if base == "" {
		t.Skip("the skew test runs only with VIPD_SKEW_BASE=<commit of the older vipd> (make skew-test)")
	}
	lab.NeedRoot(t)
	oldOnce.Do(func() { oldBin, oldErr = buildOld(base) })
	if oldErr != nil {
		t.Fatal(oldErr)
	}
	return oldBin
}

func buildOld(base string) (string, error) {
	root, err := lab.ModuleRoot()
	if err != nil {
		return "", err
	}
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", append([]string{"-C", root}, args...)...).Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	commit, err := git("rev-parse", "--verify", base+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("VIPD_SKEW_BASE=%s is not a commit: %v", base, err)
	}
	version, err := git("describe", "--tags", "--always", commit)
	if err != nil {
		return "", err
	}
	if tmpDir, err = os.MkdirTemp("", "vipd-skew-"); err != nil {
		return "", err
	}
	src := filepath.Join(tmpDir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return "", err
	}
	archive := exec.Command("sh", "-c", `git -C "$0" archive "$1" | tar -x -C "$2"`, root, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive %s: %v: %s", commit, err, out)
	}
	bin := filepath.Join(tmpDir, "vipd-"+version)
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", bin, ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build vipd at %s: %v: %s", commit, err, out)
	}
	return bin, nil
}

// skewLab is a 3-node lab (one etcd on the bridge, vip.ttl=2) with the
// prober running and each node's binary set, none started yet.
type skewLab struct {
	*lab.Lab
	P        *lab.Prober
	old, cur string
	rows     [][]string
}

func newSkewLab(t *testing.T, newer [3]bool) *skewLab {
	old := oldVipd(t)
	cur, _ := lab.Binaries(t)
	l := lab.New(t, 3, "vip.ttl=2")
	s := &skewLab{Lab: l, old: old, cur: cur}
	for i, nd := range l.Nodes {
		if !newer[i] {
			nd.Bin = old
		}
	}
	s.P = l.StartProber()
	t.Cleanup(func() {
		if o := l.Overlaps(); len(o) > 0 {
			t.Errorf("two holders at once: %v\n%s", o, l.Mon.History())
		}
	})
	return s
}

// ver names the version a node runs.
func (s *skewLab) ver(nd *lab.Node) string {
	if nd.Bin == s.old {
		return "old"
	}
	return "new"
}

func (s *skewLab) running(nd *lab.Node) bool { return nd.Cmd != nil }

// stop stops a node's vipd gracefully (SIGTERM) and waits for its exit.
func (s *skewLab) stop(nd *lab.Node) {
	s.T.Helper()
	s.Signal(nd, syscall.SIGTERM)
	if err := s.Wait(nd, 10*time.Second); err != nil {
		s.T.Fatalf("vipd (%s) on %s exited with %v after SIGTERM", s.ver(nd), nd.Name, err)
	}
}

// move takes the VIP from the holder `from` to `to`, of the other version,
// by SIGTERM or SIGKILL, with every other node stopped so that `to` is the
// only candidate; then it checks one holder, the client's neighbour entry,
// the client answered by `to`, and no overlap, restarts the nodes it
// stopped, and records the outage.
func (s *skewLab) move(from, to *lab.Node, sig syscall.Signal) {
	t := s.T
	t.Helper()
	if h := s.Holder(lab.MoveBound, time.Second); h != from {
		t.Fatalf("holder is %s, want %s", h.Name, from.Name)
	}
	var stopped []*lab.Node
	for _, nd := range s.Nodes {
		if nd != from && nd != to && s.running(nd) {
			s.stop(nd)
			stopped = append(stopped, nd)
		}
	}
	if !s.running(to) {
		t.Fatalf("%s is not running", to.Name)
	}
	how := map[syscall.Signal]string{syscall.SIGTERM: "graceful (SIGTERM)", syscall.SIGKILL: "crash (SIGKILL)"}[sig]
	t0 := time.Now()
	if sig == syscall.SIGKILL {
		s.Kill(from)
	} else {
		s.stop(from)
	}
	if h := s.HolderOtherThan(from, lab.MoveBound); h != to {
		t.Fatalf("%s %s -> %s: %s took the VIP", how, from.Name, to.Name, h.Name)
	}
	s.WaitHolder(to, lab.MoveBound)
	s.WaitClientNeighbour(to.MAC, 5*time.Second)
	s.P.WaitAnsweredBy(t, to.Name, t0, 5*time.Second)
	s.AssertNoOverlap()
	out, ok := s.P.Outage(t0, from.Name)
	o := "n/a"
	if ok {
		o = out.Round(time.Millisecond).String()
	}
	t.Logf("%s handover %s (%s) -> %s (%s): outage %s", how, from.Name, s.ver(from), to.Name, s.ver(to), o)
	s.rows = append(s.rows, []string{how, from.Name + " (" + s.ver(from) + ")", to.Name + " (" + s.ver(to) + ")", o})
	for _, nd := range stopped {
		s.Start(nd)
	}
	s.Start(from)
}

// checkStatus: the new `vipd -status` run on each node names the holder
// (whatever its version) and the other two as candidates, and agrees with
// each node's state file (lab.WaitStatus, the checks of
// test/scenario/status_test.go).
func (s *skewLab) checkStatus(h *lab.Node) {
	s.T.Helper()
	s.Holder(lab.MoveBound, time.Second)
	s.WaitStatus(h, lab.Others(s.Lab, h), 10*time.Second)
	s.T.Logf("the new -status on every node names %s (%s) as holder", h.Name, s.ver(h))
}

// TestSkew runs the skew tests below as subtests, so that without
// $VIPD_SKEW_BASE the package skips in one line.
func TestSkew(t *testing.T) {
	oldVipd(t)
	t.Run("mixed", testMixedVersions)
	t.Run("rolling", testRollingUpgrade)
}

// testMixedVersions: n1, n2, n3 run old, new, old, then new, old, new.
// In each layout: n1 is the first holder (the new -status on each node
// names it); n1 -> n2 graceful, n2 -> n3 graceful, n3 -> n2 crash; each
// move is across versions. The new -status names n2 at the end.
func testMixedVersions(t *testing.T) {
	for _, layout := range [][3]bool{{false, true, false}, {true, false, true}} {
		name := map[bool]string{false: "old", true: "new"}
		t.Run(name[layout[0]]+"-"+name[layout[1]]+"-"+name[layout[2]], func(t *testing.T) {
			s := newSkewLab(t, layout)
			n1, n2, n3 := s.Nodes[0], s.Nodes[1], s.Nodes[2]
			s.Start(n1)
			s.WaitHolder(n1, lab.ElectBound)
			s.Start(n2)
			time.Sleep(500 * time.Millisecond) // n2 queues before n3
			s.Start(n3)
			if h := s.Holder(lab.ElectBound, lab.SettleAfter); h != n1 {
				t.Fatalf("holder %s, want n1", h.Name)
			}
			s.AssertNoOverlap()
			s.WaitClientNeighbour(n1.MAC, 5*time.Second)
			s.checkStatus(n1)

			s.move(n1, n2, syscall.SIGTERM)
			s.move(n2, n3, syscall.SIGTERM)
			s.move(n3, n2, syscall.SIGKILL)
			s.checkStatus(n2)
			var r lab.Report
			r.Table("handovers across versions, "+t.Name(), []string{"fault", "from", "to", "client outage"}, s.rows)
		})
	}
}

// testRollingUpgrade: all three nodes run the old vipd; each in turn
// (n1, n2, n3) is stopped gracefully and started again with the new one,
// the client probing throughout. After every step exactly one node holds
// the VIP (the one that held it, if a candidate was upgraded), the
// client's neighbour entry names it and it answers; no two nodes ever held
// it at once. The client's outage per step is logged in a table (not
// asserted against a time). At the end the new -status on every node
// names the holder.
func testRollingUpgrade(t *testing.T) {
	s := newSkewLab(t, [3]bool{})
	for _, nd := range s.Nodes {
		s.Start(nd)
	}
	h := s.Holder(lab.ElectBound, lab.SettleAfter)
	s.WaitClientNeighbour(h.MAC, 5*time.Second)
	var rows [][]string
	for _, nd := range s.Nodes {
		h := s.Holder(lab.MoveBound, time.Second)
		was := h == nd
		t0 := time.Now()
		s.stop(nd)
		if was {
			s.HolderOtherThan(nd, lab.MoveBound)
		}
		nd.Bin = s.cur
		s.Start(nd)
		after := s.Holder(lab.ElectBound, lab.SettleAfter)
		if !was && after != h {
			// Equal priorities: a restarted candidate never takes the VIP
			// from a holder, whatever the versions.
			t.Errorf("upgrading %s, a candidate, moved the VIP from %s to %s\n%s", nd.Name, h.Name, after.Name, s.Mon.History())
		}
		s.WaitClientNeighbour(after.MAC, 5*time.Second)
		s.P.WaitAnsweredBy(t, after.Name, t0, 5*time.Second)
		s.AssertNoOverlap()
		t1 := time.Now()
		gap, _ := s.P.MaxGap(t0.Add(-time.Second), t1) // the gap may begin just before t0
		lost := s.P.Lost(t0, t1)
		outage := "none"
		if o, ok := s.P.Outage(t0, nd.Name); was && ok {
			outage = o.Round(time.Millisecond).String()
		}
		rows = append(rows, []string{nd.Name, fmt.Sprint(was), after.Name, outage,
			gap.Round(time.Millisecond).String(), fmt.Sprint(lost), t1.Sub(t0).Round(100 * time.Millisecond).String()})
	}
	for _, nd := range s.Nodes {
		if nd.Bin != s.cur {
			t.Fatalf("%s still runs the old vipd", nd.Name)
		}
	}
	s.checkStatus(s.Holder(lab.MoveBound, time.Second))
	var r lab.Report
	r.Table("rolling upgrade, old -> new, one node at a time", []string{"upgraded", "was holder", "holder after", "client outage", "largest probe gap", "probes lost", "step took"}, rows)
}

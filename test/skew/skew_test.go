// Package skew is the version-skew test (issue 21): a 3-node lab running
// two vipd versions side by side, as during a rolling upgrade of a fleet.
// The older version (N-1) is built from git history, from the commit
// $VIPD_SKEW_BASE; the current one is the lab's (lab.Binaries, $VIPD).
// `make skew-test` runs it; without $VIPD_SKEW_BASE every test skips in
// one line, so `go test ./...` (make test) leaves it out.
//
// The subtests of TestSkew: faults of the holder in both mixes
// (faults_test.go), an upgrade and a rollback in place by SIGHUP
// (inplace_test.go), a crash and restart with the other version
// (crash_test.go) and a rolling upgrade (below).
package skew

import (
	"cmp"
	"encoding/json"
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
	buildMu sync.Mutex
	built   = map[string]string{} // commit as given -> binary
)

// oldVipd builds vipd at $VIPD_SKEW_BASE (N-1) from `git archive` of that
// commit, as that era's `make vipd` did: CGO_ENABLED=0 go build -trimpath
// -ldflags '-s -w -X main.version=<git describe --always>'. It skips the
// test when $VIPD_SKEW_BASE is unset.
func oldVipd(t *testing.T) string {
	t.Helper()
	return vipdAt(t, "VIPD_SKEW_BASE")
}

// vipdAt builds vipd at the commit the environment variable names, once
// per commit.
func vipdAt(t *testing.T, env string) string {
	t.Helper()
	base := os.Getenv(env)
	if base == "" {
		t.Skipf("the skew test runs only with %s=<commit of the older vipd> (make skew-test)", env)
	}
	lab.NeedRoot(t)
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := built[base]; ok {
		return bin
	}
	bin, err := buildOld(base)
	if err != nil {
		t.Fatalf("%s: %v", env, err)
	}
	built[base] = bin
	return bin
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
		return "", fmt.Errorf("%s is not a commit: %v", base, err)
	}
	version, err := git("describe", "--tags", "--always", commit)
	if err != nil {
		return "", err
	}
	if tmpDir == "" {
		if tmpDir, err = os.MkdirTemp("", "vipd-skew-"); err != nil {
			return "", err
		}
	}
	src := filepath.Join(tmpDir, "src-"+commit)
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

// skewWindow is what the new vipd runs with: the kernel fence at a
// window shorter than the TTL, so that fenced and unfenced nodes mix in
// every subtest (an old vipd refuses the key, and waits a fenced holder's
// TTL, never less than its window).
const skewWindow = "vip.window=600ms"

// Start starts nd's vipd; the new one with skewWindow.
func (s *skewLab) Start(nd *lab.Node, extra ...string) {
	s.T.Helper()
	if release(s.T, cmp.Or(nd.Bin, s.cur)) == release(s.T, s.cur) {
		extra = append(extra, skewWindow)
	}
	s.Lab.Start(nd, extra...)
}

// ver names the version a node runs.
func (s *skewLab) ver(nd *lab.Node) string { return s.verOf(nd.Bin) }

// verOf names the version of a binary: the old one, or the lab's.
func (s *skewLab) verOf(bin string) string {
	if bin == s.old {
		return "old"
	}
	return "new"
}

// startAll starts every node, n1 first so that it is the first holder,
// then the others in order, half a second apart so that they queue in
// order; it returns once n1 holds, settled, and the client's neighbour
// entry names it.
func (s *skewLab) startAll() *lab.Node {
	s.T.Helper()
	n1 := s.Nodes[0]
	s.Start(n1)
	s.WaitHolder(n1, lab.ElectBound)
	for _, nd := range s.Nodes[1:] {
		s.Start(nd)
		time.Sleep(500 * time.Millisecond)
	}
	if h := s.Holder(lab.ElectBound, lab.SettleAfter); h != n1 {
		s.T.Fatalf("holder %s, want n1\n%s", h.Name, s.Mon.History())
	}
	s.WaitClientNeighbour(n1.MAC, 5*time.Second)
	return n1
}

// stop stops a node's vipd gracefully (SIGTERM) and waits for its exit.
func (s *skewLab) stop(nd *lab.Node) {
	s.T.Helper()
	s.Signal(nd, syscall.SIGTERM)
	if err := s.Wait(nd, 10*time.Second); err != nil {
		s.T.Fatalf("vipd (%s) on %s exited with %v after SIGTERM", s.ver(nd), nd.Name, err)
	}
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

// waitNamed waits (bounded) until `-status -json` of each version, run on
// every node, names h as the holder. Right after a move the election keys
// settle within a few heartbeats.
func (s *skewLab) waitNamed(h *lab.Node) {
	t := s.T
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range s.Nodes {
		for _, bin := range []string{s.old, s.cur} {
			for {
				got, err := s.statusHolder(nd, bin)
				if err == nil && got == h.Name {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("-status -json of the %s vipd on %s: holder %q (%v), want %s", s.verOf(bin), nd.Name, got, err, h.Name)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
}

// statusHolder is the holder that `bin -status -json` on nd names. The old
// version's report is not the lab's contract (contract.go decodes the
// current one strictly), so only the holder's name is read, leniently:
// that is what an operator's script of either era relies on.
func (s *skewLab) statusHolder(nd *lab.Node, bin string) (string, error) {
	r := s.StatusBy(bin, nd, "-json")
	var rep struct {
		Holder *struct {
			Name string `json:"name"`
		} `json:"holder"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		return "", fmt.Errorf("exit %d: %v; stderr %q", r.Code, err, r.Stderr)
	}
	if rep.Holder == nil {
		return "", fmt.Errorf("exit %d, no holder; stderr %q", r.Code, r.Stderr)
	}
	return rep.Holder.Name, nil
}

// nodeState is what the skew tests read of a node's state file, leniently
// (either version may have written it).
type nodeState struct {
	Version string `json:"version"`
	PID     int    `json:"pid"`
	State   string `json:"state"`
}

func stateOf(nd *lab.Node) (nodeState, error) {
	var st nodeState
	b, err := os.ReadFile(nd.StatePath())
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	return st, err
}

// release is the version string bin writes into its state file, from what
// `bin -version` prints: "vipd <version>" (the old one) or "vipd <version>,
// commit <commit>, ..." (the new one, which writes "<version>+<commit>"
// when the commit is known).
func release(t testing.TB, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "-version").Output()
	if err != nil {
		t.Fatalf("%s -version: %v", bin, err)
	}
	line, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "vipd ")
	if !ok {
		t.Fatalf("%s -version printed %q", bin, out)
	}
	fields := strings.Split(line, ", ")
	if len(fields) > 1 {
		if commit, ok := strings.CutPrefix(fields[1], "commit "); ok && commit != "unknown" {
			return fields[0] + "+" + commit
		}
	}
	return fields[0]
}

// install puts a copy of src at dst as a package manager does: a
// temporary file in dst's directory, made executable, renamed over dst, so
// that dst is at every moment either the old file or the whole new one (a
// running vipd keeps its old inode).
func install(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".vipd-*")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o755)
	}
	if err == nil {
		err = os.Rename(f.Name(), dst)
	}
	if err != nil {
		os.Remove(f.Name())
		t.Fatalf("install %s as %s: %v", src, dst, err)
	}
}

// outage is the client's outage around a fault at t0 as a table cell.
func (s *skewLab) outage(t0 time.Time, old string) string {
	o, ok := s.P.Outage(t0, old)
	if !ok {
		return "n/a"
	}
	return o.Round(time.Millisecond).String()
}

// logLines are the lines of the node's log, from byte off on, that contain
// any of words.
func logLines(nd *lab.Node, off int, words ...string) []string {
	var lines []string
	for _, l := range strings.Split(nd.Log.String()[off:], "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				lines = append(lines, l)
				break
			}
		}
	}
	return lines
}

// TestSkew runs the skew tests below as subtests, so that without
// $VIPD_SKEW_BASE the package skips in one line.
func TestSkew(t *testing.T) {
	oldVipd(t)
	t.Run("faults", testFaults)
	t.Run("in-place", testInPlace)
	t.Run("in-place-fenced", testInPlaceFenced)
	t.Run("crash-restart", testCrashRestart)
	t.Run("rolling", testRollingUpgrade)
	t.Run("before-since", testBeforeSince)
	t.Run("new-words", testNewWords)
}

// testBeforeSince: n1 runs a vipd from before the entry's since= and
// beat= ($VIPD_SKEW_PRE_TENURE, the commit before 6d22a5b), and holds;
// n2 and n3 run the new one. The new -status on every node names n1 as
// the holder, its tenure unknown and no version; once n1 is killed, it
// names the new holder as usual. Mixing this old a vipd with the new one
// is not supported (docs/operating.md, "Upgrades and versions"): only
// -status's reading of its entry is under test.
func testBeforeSince(t *testing.T) {
	pre := vipdAt(t, "VIPD_SKEW_PRE_TENURE")
	s := newSkewLab(t, [3]bool{false, true, true})
	n1 := s.Nodes[0]
	n1.Bin = pre
	s.startAll()
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range s.Nodes {
		for {
			err := namesOldHolder(s, nd, n1)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the new -status on %s, with %s's vipd from before since= holding: %v", nd.Name, n1.Name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("the new -status on %s:\n%s", s.Nodes[1].Name, s.StatusOn(s.Nodes[1]).Stdout)
	s.Kill(n1)
	h := s.HolderOtherThan(n1, lab.MoveBound)
	s.AssertNoOverlap()
	for _, nd := range s.Nodes[1:] {
		lab.WaitFor(t, 10*time.Second, "the new -status on "+nd.Name+" naming "+h.Name, func() bool {
			got, err := s.statusHolder(nd, s.cur)
			return err == nil && got == h.Name
		})
	}
}

// namesOldHolder: the new -status -json on nd names h, with no tenure and
// no version, and its text says the tenure is unknown.
func namesOldHolder(s *skewLab, nd, h *lab.Node) error {
	r := s.StatusOn(nd, "-json")
	rep, err := lab.ParseStatus([]byte(r.Stdout))
	switch {
	case err != nil:
		return fmt.Errorf("exit %d: %v; stderr %q", r.Code, err, r.Stderr)
	case r.Code != 0 || rep.Holder == nil:
		return fmt.Errorf("exit %d, no holder; stderr %q", r.Code, r.Stderr)
	case rep.Holder.Name != h.Name || rep.Holder.HeldMS != nil || rep.Holder.BeatAgeMS != nil || rep.Holder.Version != "" || rep.Holder.LeaseTTL < 0:
		return fmt.Errorf("holder %+v, want %s with its tenure and version unknown, its lease alive", *rep.Holder, h.Name)
	}
	human := s.StatusOn(nd)
	if human.Code != 0 || !strings.Contains(human.Stdout, "since unknown") {
		return fmt.Errorf("-status: exit %d:\n%s", human.Code, human.Stdout)
	}
	return nil
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

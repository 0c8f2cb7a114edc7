package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"time"
)

// StatusRun is one `vipd -status` as run inside a node's namespace.
type StatusRun struct {
	Code           int
	Stdout, Stderr string
	Took           time.Duration
}

// StatusOn runs `vipd -status` (plus flags) on the node with the words its
// daemon runs with (startWrapped), and the node's own /run (lab.run).
func (l *Lab) StatusOn(nd *Node, flags ...string) StatusRun {
	l.T.Helper()
	bin, _ := Binaries(l.T)
	return l.StatusBy(bin, nd, flags...)
}

// StatusBy is StatusOn with another vipd binary: a skew test asks each
// version.
func (l *Lab) StatusBy(bin string, nd *Node, flags ...string) StatusRun {
	l.T.Helper()
	argv := append([]string{bin, "-cmdline", "none", "-status"}, flags...)
	argv = append(argv, "vip.address="+l.VIPWord(), "vip.interface=eth0", "vip.etcd="+l.EtcdURLs(),
		"vip.name="+nd.Name, "vip.log=stderr")
	return l.statusRun(nd, append(argv, l.Opt.Args...))
}

// StatusBare runs `vipd -status` (plus flags) on the node with no settings
// at all, as an operator on the node would: it asks the vipd running there
// through its status socket in the node's /run.
func (l *Lab) StatusBare(nd *Node, flags ...string) StatusRun {
	l.T.Helper()
	bin, _ := Binaries(l.T)
	return l.statusRun(nd, append([]string{bin, "-status"}, flags...))
}

// VipdOn runs the lab's vipd with exactly these arguments (-drain, say) in
// the node's namespace with the node's /run, as an operator on the node.
func (l *Lab) VipdOn(nd *Node, args ...string) StatusRun {
	l.T.Helper()
	bin, _ := Binaries(l.T)
	return l.statusRun(nd, append([]string{bin}, args...))
}

// statusRun runs argv in the node's namespace with the node's /run.
func (l *Lab) statusRun(nd *Node, argv []string) StatusRun {
	l.T.Helper()
	cmd := nd.Command(argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := StatusRun{Stdout: stdout.String(), Stderr: stderr.String(), Took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		l.T.Fatalf("%v on %s: %v", argv, nd.Name, err)
	}
	return r
}

// StatusJSON runs `vipd -status -json` on the node and parses it strictly
// (contract.go).
func (l *Lab) StatusJSON(nd *Node) (StatusReport, StatusRun) {
	l.T.Helper()
	r := l.StatusOn(nd, "-json")
	rep, err := ParseStatus([]byte(r.Stdout))
	if err != nil {
		l.T.Fatalf("-status -json on %s (exit %d): %v\n%s\nstderr: %s", nd.Name, r.Code, err, r.Stdout, r.Stderr)
	}
	return rep, r
}

// statusShows checks one node's -status, human and JSON, against the
// expected holder and candidates (any order among the candidates: ranks
// are equal, so the order is the queue's, which this test does not
// know). It returns what is wrong, "" if nothing.
func (l *Lab) statusShows(nd *Node, holder string, cands []string) string {
	rep, r := l.StatusJSON(nd)
	if r.Code != 0 || rep.Holder == nil {
		return fmt.Sprintf("-status -json on %s: exit %d, holder %v, stderr %q", nd.Name, r.Code, rep.Holder, r.Stderr)
	}
	var got []string
	for _, c := range rep.Candidates {
		got = append(got, c.Name)
	}
	slices.Sort(got)
	if rep.Holder.Name != holder || !slices.Equal(got, cands) {
		return fmt.Sprintf("-status -json on %s: holder %s, candidates %v; want %s, %v", nd.Name, rep.Holder.Name, got, holder, cands)
	}
	h := rep.Holder
	// One clock in the lab: the heartbeat is at most a leader's renewal
	// interval old (TTL/4 = 500 ms), plus the time to ask.
	if h.BeatAgeMS == nil || h.HeldMS == nil || h.Stale || *h.BeatAgeMS < -50 || *h.BeatAgeMS > 1500 || h.LeaseTTL < 0 || h.TTLMS != 2000 || h.Since.After(rep.At) {
		return fmt.Sprintf("-status -json on %s: holder %+v", nd.Name, *h)
	}
	for _, c := range append([]StatusCandidate{h.StatusCandidate}, rep.Candidates...) {
		if c.LeaseTTL < 0 || c.Self != (c.Name == nd.Name) {
			return fmt.Sprintf("-status -json on %s: candidate %+v", nd.Name, c)
		}
		if wrong := l.versionShown(c); wrong != "" {
			return fmt.Sprintf("-status -json on %s: %s", nd.Name, wrong)
		}
	}
	// The local view: the node's own state file. A killed vipd leaves its
	// file behind, with a pid that is gone.
	lv := rep.Local
	switch want := "candidate"; {
	case nd.Cmd == nil && lv != nil && lv.PIDAlive:
		return fmt.Sprintf("-status -json on %s, whose vipd is gone: local view %+v, want its pid not running", nd.Name, *lv)
	case nd.Cmd == nil:
	case lv == nil:
		return fmt.Sprintf("-status -json on %s: no local view (%s)", nd.Name, rep.LocalError)
	case nd.Name == holder && (lv.State != "leader" || lv.Holder != holder):
		return fmt.Sprintf("-status -json on holder %s: local view %+v", nd.Name, *lv)
	case nd.Name != holder && lv.State != want:
		return fmt.Sprintf("-status -json on %s: local view %+v, want state %s", nd.Name, *lv, want)
	case !lv.PIDAlive || lv.PID != nd.Cmd.Process.Pid || lv.Name != nd.Name:
		return fmt.Sprintf("-status -json on %s: local view %+v, want pid %d running", nd.Name, *lv, nd.Cmd.Process.Pid)
	}

	human := l.StatusOn(nd)
	if human.Code != 0 {
		return fmt.Sprintf("-status on %s: exit %d, stderr %q", nd.Name, human.Code, human.Stderr)
	}
	if !regexp.MustCompile(`(?m)^holder +` + regexp.QuoteMeta(holder) + `( \*)? +healthy, priority 0 +vipd \S+( +kernel fence \S+| +TTL rule)? +lease \d+s left +since `).MatchString(human.Stdout) {
		return fmt.Sprintf("-status on %s does not name %s as holder:\n%s", nd.Name, holder, human.Stdout)
	}
	for i, c := range rep.Candidates {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^next %d +%s( \*)? +healthy, priority 0 +vipd \S+( +kernel fence \S+| +TTL rule)? +lease \d+s left$`, i+1, regexp.QuoteMeta(c.Name))).MatchString(human.Stdout) {
			return fmt.Sprintf("-status on %s does not list %s as candidate %d:\n%s", nd.Name, c.Name, i+1, human.Stdout)
		}
	}
	return ""
}

// versionShown checks the version -status shows for a node against the
// one its state file names: the same, or none for a vipd that publishes
// none (a build before 0.1.0, in the skew test); the lab's own binary
// always publishes it.
func (l *Lab) versionShown(c StatusCandidate) string {
	i := slices.IndexFunc(l.Nodes, func(nd *Node) bool { return nd.Name == c.Name })
	if i < 0 {
		return fmt.Sprintf("entry of %q, no node of the lab", c.Name)
	}
	nd := l.Nodes[i]
	rec, err := ReadState(nd.StatePath())
	switch {
	case err != nil:
		return fmt.Sprintf("%s's state file: %v", nd.Name, err)
	case c.Version == "" && nd.Bin == "":
		return fmt.Sprintf("no version for %s, which runs the lab's vipd (state file: %q)", nd.Name, rec.Version)
	case c.Version != "" && c.Version != rec.Version:
		return fmt.Sprintf("%s shown as vipd %s, its state file says %s", nd.Name, c.Version, rec.Version)
	}
	return ""
}

// WaitStatus waits (bounded) until -status on every node shows holder and
// cands: right after a change, the election keys settle within a few
// heartbeats.
func (l *Lab) WaitStatus(holder *Node, cands []string, within time.Duration) {
	l.T.Helper()
	deadline := time.Now().Add(within)
	for _, nd := range l.Nodes {
		for {
			wrong := l.statusShows(nd, holder.Name, cands)
			if wrong == "" {
				break
			}
			if time.Now().After(deadline) {
				l.T.Fatal(wrong)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// OtherNodes is every node of the lab but those given.
func OtherNodes(l *Lab, except ...*Node) []*Node {
	var out []*Node
	for _, nd := range l.Nodes {
		if !slices.Contains(except, nd) {
			out = append(out, nd)
		}
	}
	return out
}

func Others(l *Lab, except ...*Node) []string {
	var s []string
	for _, nd := range l.Nodes {
		if !slices.Contains(except, nd) {
			s = append(s, nd.Name)
		}
	}
	slices.Sort(s)
	return s
}

package lab

// statusRun is one `vipd -status` as run inside a node's namespace.
type statusRun struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// statusOn runs `vipd -status` (plus flags) on the node with the words its
// daemon runs with (startWrapped), and the node's own /run (lab.run).
func (l *lab) statusOn(nd *labNode, flags ...string) statusRun {
	l.t.Helper()
	bin, _ := binaries(l.t)
	args := append([]string{"-c", `mount --bind "$0" /run && exec "$@"`, nd.runDir, bin, "-cmdline", "none", "-status"}, flags...)
	args = append(args, "vip.address="+l.vipWord(), "vip.interface=eth0", "vip.etcd="+l.etcdURLs(),
		"vip.name="+nd.name, "vip.log=stderr")
	args = append(args, l.opt.args...)
	cmd := nd.ns.command("sh", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := statusRun{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		l.t.Fatalf("-status on %s: %v", nd.name, err)
	}
	return r
}

// statusJSON runs `vipd -status -json` on the node and parses it.
func (l *lab) statusJSON(nd *labNode) (statusReport, statusRun) {
	l.t.Helper()
	r := l.statusOn(nd, "-json")
	var rep statusReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		l.t.Fatalf("-status -json on %s (exit %d): %v\n%s\nstderr: %s", nd.name, r.code, err, r.stdout, r.stderr)
	}
	return rep, r
}

// statusShows checks one node's -status, human and JSON, against the
// expected holder and candidates (any order among the candidates: ranks
// are equal, so the order is the queue's, which this test does not
// know). It returns what is wrong, "" if nothing.
func (l *lab) statusShows(nd *labNode, holder string, cands []string) string {
	rep, r := l.statusJSON(nd)
	if r.code != 0 || rep.Holder == nil {
		return fmt.Sprintf("-status -json on %s: exit %d, holder %v, stderr %q", nd.name, r.code, rep.Holder, r.stderr)
	}
	var got []string
	for _, c := range rep.Candidates {
		got = append(got, c.Name)
	}
	slices.Sort(got)
	if rep.Holder.Name != holder || !slices.Equal(got, cands) {
		return fmt.Sprintf("-status -json on %s: holder %s, candidates %v; want %s, %v", nd.name, rep.Holder.Name, got, holder, cands)
	}
	h := rep.Holder
	// One clock in the lab: the heartbeat is at most a leader's renewal
	// interval old (TTL/4 = 500 ms), plus the time to ask.
	if h.Stale || h.BeatAgeMS < -50 || h.BeatAgeMS > 1500 || h.LeaseTTL < 0 || h.TTLMS != 2000 || h.Since.After(rep.At) {
		return fmt.Sprintf("-status -json on %s: holder %+v", nd.name, *h)
	}
	for _, c := range rep.Candidates {
		if c.LeaseTTL < 0 || c.Self != (c.Name == nd.name) {
			return fmt.Sprintf("-status -json on %s: candidate %+v", nd.name, c)
		}
	}
	// The local view: the node's own state file. A killed vipd leaves its
	// file behind, with a pid that is gone.
	lv := rep.Local
	switch want := "candidate"; {
	case nd.cmd == nil && lv != nil && lv.PIDAlive:
		return fmt.Sprintf("-status -json on %s, whose vipd is gone: local view %+v, want its pid not running", nd.name, *lv)
	case nd.cmd == nil:
	case lv == nil:
		return fmt.Sprintf("-status -json on %s: no local view (%s)", nd.name, rep.LocalError)
	case nd.name == holder && (lv.State != "leader" || lv.Holder != holder):
		return fmt.Sprintf("-status -json on holder %s: local view %+v", nd.name, *lv)
	case nd.name != holder && lv.State != want:
		return fmt.Sprintf("-status -json on %s: local view %+v, want state %s", nd.name, *lv, want)
	case !lv.PIDAlive || lv.PID != nd.cmd.Process.Pid || lv.Name != nd.name:
		return fmt.Sprintf("-status -json on %s: local view %+v, want pid %d running", nd.name, *lv, nd.cmd.Process.Pid)
	}

	human := l.statusOn(nd)
	if human.code != 0 {
		return fmt.Sprintf("-status on %s: exit %d, stderr %q", nd.name, human.code, human.stderr)
	}
	if !regexp.MustCompile(`(?m)^holder +` + regexp.QuoteMeta(holder) + `( \*)? +healthy, priority 0 +lease \d+s left +since `).MatchString(human.stdout) {
		return fmt.Sprintf("-status on %s does not name %s as holder:\n%s", nd.name, holder, human.stdout)
	}
	for i, c := range rep.Candidates {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^next %d +%s( \*)? +healthy, priority 0 +lease \d+s left$`, i+1, regexp.QuoteMeta(c.Name))).MatchString(human.stdout) {
			return fmt.Sprintf("-status on %s does not list %s as candidate %d:\n%s", nd.name, c.Name, i+1, human.stdout)
		}
	}
	return ""
}

// waitStatus waits (bounded) until -status on every node shows holder and
// cands: right after a change, the election keys settle within a few
// heartbeats.
func (l *lab) waitStatus(holder *labNode, cands []string, within time.Duration) {
	l.t.Helper()
	deadline := time.Now().Add(within)
	for _, nd := range l.nodes {
		for {
			wrong := l.statusShows(nd, holder.name, cands)
			if wrong == "" {
				break
			}
			if time.Now().After(deadline) {
				l.t.Fatal(wrong)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func others(l *lab, except ...*labNode) []string {
	var s []string
	for _, nd := range l.nodes {
		if !slices.Contains(except, nd) {
			s = append(s, nd.name)
		}
	}
	slices.Sort(s)
	return s
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// `vipd -status` answers an operator's first question: who holds the VIP,
// who is next, and what this node thinks. It reads the election entries
// (elect.go) once, asks for each lease's time left, and reads the local
// state file. Everything it says about time comes from the holder's own
// clock (its entry's since= and beat=) or from etcd (lease time left).

// statusTimeout bounds the questions to etcd; diagnosing an unreachable
// etcd adds at most one more second (diagnose), so the command finishes
// within a few seconds whatever state etcd is in.
const statusTimeout = 3 * time.Second

// statusReport is what -status prints; its JSON form is for scripts
// (docs/operating.md, "Status"). Durations are milliseconds and times RFC 3339, so
// that a script needs no Go duration parser.
type statusReport struct {
	Key        string            `json:"key"`
	Endpoints  []string          `json:"endpoints"`
	At         time.Time         `json:"at"`                // when asked, this node's clock
	Error      string            `json:"error,omitempty"`   // etcd could not be asked
	Holder     *statusHolder     `json:"holder"`            // null: nobody holds the VIP
	Candidates []statusCandidate `json:"candidates"`        // everyone else, in takeover order
	Drained    []string          `json:"drained,omitempty"` // the names with a drain mark (drain.go), running or not
	Local      *statusLocal      `json:"local,omitempty"`   // this node's state file, if there is one
	LocalError string            `json:"local_error,omitempty"`
}

// statusCandidate is one election entry.
type statusCandidate struct {
	Name     string `json:"name"`
	Rank     string `json:"rank"` // "healthy, priority 0", or "unranked" for an entry vipd cannot read
	Healthy  bool   `json:"healthy"`
	Unable   bool   `json:"unable,omitempty"`  // it failed to hold the VIP and ranks below every able node until it may try again
	Drained  bool   `json:"drained,omitempty"` // its entry says it is drained: below every undrained node
	Priority int    `json:"priority"`          // 0 when unranked
	Unranked bool   `json:"unranked,omitempty"`
	Key      string `json:"key"`
	Lease    string `json:"lease"`        // hex, as etcdctl prints it
	LeaseTTL int64  `json:"lease_left_s"` // etcd's whole seconds; -1: expired or unknown
	Self     bool   `json:"this_node,omitempty"`
	Version  string `json:"version,omitempty"` // its info key's (elect.go); empty: none, a vipd before 0.1.0
	// FenceMS is the window its entry advertises (fence=MS): it fences
	// itself in the kernel by it while it holds; 0: no kernel fence, the
	// TTL rule.
	FenceMS int64 `json:"fence_window_ms,omitempty"`
}

// statusHolder is the candidate that has claimed the VIP. Since, Beat
// and their ages are left out for a holder whose vipd writes no since=
// and beat= (a version before 6d22a5b, which still holds).
type statusHolder struct {
	statusCandidate
	Since     time.Time `json:"since,omitzero"`             // its tenure's start, its clock
	HeldMS    *int64    `json:"held_ms,omitempty"`          // At - Since
	Beat      time.Time `json:"last_heartbeat,omitzero"`    // its clock
	BeatAgeMS *int64    `json:"heartbeat_age_ms,omitempty"` // At - Beat: negative when its clock runs ahead of ours
	TTLMS     int64     `json:"ttl_ms,omitempty"`           // its lease's granted TTL; 0: unknown
	// Stale: its heartbeat is older than its TTL, so by its own deadline
	// it has stepped down (or is frozen or cut off); the other candidates
	// remove its key shortly.
	Stale bool `json:"stale"`
}

// statusLocal is this node's state file (statefile.go), as -status sees it.
type statusLocal struct {
	Path           string    `json:"path"`
	Name           string    `json:"name"`
	State          string    `json:"state"`
	StateSince     time.Time `json:"state_since"`
	Holder         string    `json:"holder,omitempty"`
	DeadlineLeftMS *int64    `json:"deadline_left_ms,omitempty"` // negative: passed
	LastAnnounced  time.Time `json:"last_announcement,omitzero"`
	LastStepDown   string    `json:"last_stepdown,omitempty"`
	SteppedDownAt  time.Time `json:"last_stepdown_at,omitzero"`
	PID            int       `json:"pid"`
	PIDAlive       bool      `json:"pid_alive"`
	Written        time.Time `json:"written"`
}

// leaseInfo is what etcd says of one lease.
type leaseInfo struct {
	left, granted int64 // seconds; left -1: expired
}

// runStatus is `vipd -status` with a configuration: it asks etcd itself,
// prints the report and returns the exit code. Failures go to stderr
// whatever vip.log says.
func runStatus(st setup, asJSON bool, stdout, stderr io.Writer) int {
	rep := statusReport{Key: st.cfg.Key, Endpoints: st.cfg.Etcd, Candidates: []statusCandidate{}}
	v, err := askEtcd(st)
	now := time.Now() // the answers' time, not the question's
	if err == nil {
		rep = buildStatus(st.cfg.Key, st.cfg.Etcd, v, st.cfg.Name, now)
	} else {
		rep.At = now
		rep.Error = err.Error()
	}
	return printStatus([]statusReport{rep}, asJSON, stdout, stderr)
}

// runLocalStatus is `vipd -status` with no settings: it asks each vipd
// running on this node through its status socket (statussock.go). It
// returns false, having printed nothing, when no vipd answers: then the
// configuration is read as usual. A socket nobody answers on is one that
// a vipd killed on this node left behind; each is named on stderr.
func runLocalStatus(paths []string, asJSON bool, stdout, stderr io.Writer) (int, bool) {
	var reps []statusReport
	for _, p := range paths {
		rep, err := askDaemon(p)
		if err != nil {
			fmt.Fprintf(stderr, "vipd: %v\n", err)
			continue
		}
		reps = append(reps, rep)
	}
	if len(reps) == 0 {
		return 0, false
	}
	return printStatus(reps, asJSON, stdout, stderr), true
}

// printStatus adds this node's state file to each report and prints them:
// JSON, one object (an array of them for several groups), or for people,
// one after the other. The exit code is 0 when every group has a holder.
func printStatus(reps []statusReport, asJSON bool, stdout, stderr io.Writer) int {
	code := exitOK
	for i := range reps {
		rep := &reps[i]
		var err error
		rep.Local, err = localStatus(statePath(rep.Key), rep.At)
		if err != nil {
			rep.LocalError = err.Error()
		}
		switch {
		case rep.Error != "":
			fmt.Fprintf(stderr, "vipd: etcd unreachable at %s: %s\n", strings.Join(rep.Endpoints, ","), rep.Error)
			code = exitRuntime
		case rep.Holder == nil:
			fmt.Fprintf(stderr, "vipd: no holder of %s: %d candidates\n", rep.Key, len(rep.Candidates))
			code = exitRuntime
		}
	}
	switch {
	case asJSON && len(reps) == 1:
		b, _ := json.MarshalIndent(reps[0], "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	case asJSON:
		b, _ := json.MarshalIndent(reps, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	default:
		for i, rep := range reps {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			writeStatus(stdout, rep)
		}
	}
	return code
}

// askEtcd reads the election with a client of its own, bounded by
// statusTimeout. Its error says why etcd could not be asked, with what a
// plain connection attempt finds out.
func askEtcd(st setup) (electionView, error) {
	cli, err := newEtcdClient(st.cfg.Etcd, st.tls, time.Second)
	if err != nil {
		return electionView{}, fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()
	// Without an etcd leader a read would wait out the whole timeout;
	// with this it fails at once and says why.
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), statusTimeout)
	defer cancel()
	v, err := readElection(ctx, cli, st.cfg.Key)
	if err != nil {
		return v, fmt.Errorf("%w%s", err, diagnose(st.cfg.Etcd, st.tls))
	}
	return v, nil
}

// electionView is what -status reads from etcd: the election entries in
// queue order, what etcd says of their leases, and the version each
// node's info key names (elect.go), by lease.
type electionView struct {
	cs       []candidate
	leases   map[clientv3.LeaseID]leaseInfo
	versions map[clientv3.LeaseID]string
	marks    []string // names with a drain mark
}

// readElection reads the election entries under key, their leases and
// the info keys.
func readElection(ctx context.Context, cli *clientv3.Client, key string) (electionView, error) {
	cs, _, err := listCandidates(ctx, cli, key)
	if err != nil {
		return electionView{}, fmt.Errorf("read the election under %s: %w", key, err)
	}
	return electionView{cs: cs, leases: leaseInfos(ctx, cli, cs), versions: versions(ctx, cli, key), marks: drainedNames(ctx, cli, key)}, nil
}

// drainedNames reads the group's drain marks: the names, sorted; none if
// etcd does not answer.
func drainedNames(ctx context.Context, cli *clientv3.Client, key string) []string {
	resp, err := cli.Get(ctx, drainPrefix(key), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil
	}
	var names []string
	for _, kv := range resp.Kvs {
		names = append(names, strings.TrimPrefix(string(kv.Key), drainPrefix(key)))
	}
	return names // etcd returns keys sorted
}

// versions reads the info keys beside the election under key: the
// version each node runs, by lease. If etcd does not answer, none is
// known, and -status says so rather than fail.
func versions(ctx context.Context, cli *clientv3.Client, key string) map[clientv3.LeaseID]string {
	out := map[clientv3.LeaseID]string{}
	resp, err := cli.Get(ctx, infoPrefix(key), clientv3.WithPrefix())
	if err != nil {
		return out
	}
	for _, kv := range resp.Kvs {
		id, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), infoPrefix(key)), 16, 64)
		if err != nil || id == 0 {
			continue
		}
		for _, w := range strings.Fields(string(kv.Value)) {
			if v, ok := strings.CutPrefix(w, "version="); ok && v != "" {
				out[clientv3.LeaseID(id)] = v
			}
		}
	}
	return out
}

// leaseInfos asks for every candidate's lease at once; a lease etcd does
// not answer for is left out (shown as unknown).
func leaseInfos(ctx context.Context, cli *clientv3.Client, cs []candidate) map[clientv3.LeaseID]leaseInfo {
	var mu sync.Mutex
	out := map[clientv3.LeaseID]leaseInfo{}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			resp, err := cli.TimeToLive(ctx, c.lease)
			if err != nil {
				return
			}
			mu.Lock()
			out[c.lease] = leaseInfo{left: resp.TTL, granted: resp.GrantedTTL}
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// splitHolder finds the holder among the election entries, which are in
// queue order (oldest first): the oldest key leads the election, and it
// holds the VIP once it has claimed, which writes since= and beat= into its
// entry. An oldest key without them, of a vipd that has an info key
// (0.1.0 and later), is a candidate still deciding whether to claim or to
// step aside for a better-ranked one: nobody holds the VIP yet. Without an
// info key it may be a vipd from before since= existed (6d22a5b), whose
// leading key holds: it is named as the holder, its tenure unknown (for
// the moment of a claim, this names a deciding vipd of 0.1.0 before its
// info key is written, or of c483f6d). The rest are in the order they
// would take over.
func splitHolder(cs []candidate, versions map[clientv3.LeaseID]string) (*candidate, []candidate) {
	if len(cs) > 0 && (cs[0].holds() || versions[cs[0].lease] == "") {
		h := cs[0]
		return &h, takeoverOrder(cs[1:])
	}
	return nil, takeoverOrder(cs)
}

// takeoverOrder sorts candidates as they would take over: the claim goes
// to the best rank, the first in the queue (the oldest key) among equals
// (bestOf), and then to the best of the rest. sort.Slice, which leader.go
// links already (bestRival), rather than a generic sort: it keeps the
// binary smaller.
func takeoverOrder(cs []candidate) []candidate {
	out := slices.Clone(cs)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.rank.above(b.rank) || b.rank.above(a.rank) {
			return a.rank.above(b.rank)
		}
		return a.createRev < b.createRev
	})
	return out
}

// buildStatus is the report on the entries cs (queue order) and their
// leases, as of now. self is this node's vip.name ("" if unknown).
func buildStatus(key string, endpoints []string, v electionView, self string, now time.Time) statusReport {
	rep := statusReport{Key: key, Endpoints: endpoints, At: now, Candidates: []statusCandidate{}, Drained: v.marks}
	h, rest := splitHolder(v.cs, v.versions)
	if h != nil {
		sh := &statusHolder{statusCandidate: statusOf(*h, v, self)}
		l, ok := v.leases[h.lease]
		if ok && l.granted > 0 {
			sh.TTLMS = (time.Duration(l.granted) * time.Second).Milliseconds()
		}
		if h.holds() {
			since, beat := time.UnixMilli(h.since), time.UnixMilli(h.beat)
			held, age := now.Sub(since).Milliseconds(), now.Sub(beat).Milliseconds()
			sh.Since, sh.HeldMS, sh.Beat, sh.BeatAgeMS = since, &held, beat, &age
			window := sh.TTLMS
			if sh.FenceMS > 0 && (window == 0 || sh.FenceMS < window) {
				window = sh.FenceMS
			}
			sh.Stale = window > 0 && age > window
		}
		rep.Holder = sh
	}
	for _, c := range rest {
		rep.Candidates = append(rep.Candidates, statusOf(c, v, self))
	}
	return rep
}

func statusOf(c candidate, v electionView, self string) statusCandidate {
	s := statusCandidate{Name: c.name, Rank: c.rank.String(), Healthy: c.rank.healthy, Unable: c.rank.unable, Drained: c.rank.drained, Priority: c.rank.priority,
		Key: c.key, Lease: strconv.FormatInt(int64(c.lease), 16), LeaseTTL: -1, Self: self != "" && c.name == self,
		Version: v.versions[c.lease], FenceMS: c.window}
	if c.rank == unranked {
		s.Rank, s.Priority, s.Unranked, s.Unable, s.Drained = "unranked", 0, true, false, false
	}
	if l, ok := v.leases[c.lease]; ok {
		s.LeaseTTL = l.left
	}
	return s
}

// localStatus reads this node's state file: nil without one (no vipd has
// run for this group since boot, or it stopped gracefully).
func localStatus(path string, now time.Time) (*statusLocal, error) {
	r, err := readState(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	l := &statusLocal{Path: path, Name: r.Name, State: r.State, StateSince: r.StateSince, Holder: r.Holder,
		LastAnnounced: r.LastAnnounced, LastStepDown: r.LastStepDown, SteppedDownAt: r.SteppedDownAt,
		PID: r.PID, PIDAlive: pidAlive(r.PID), Written: r.Written}
	if !r.Deadline.IsZero() {
		left := r.Deadline.Sub(now).Milliseconds()
		l.DeadlineLeftMS = &left
	}
	return l, nil
}

// pidAlive says whether a process with this pid exists (it may belong to
// someone else: EPERM still means it exists).
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// writeStatus prints the report for people: one line per election entry,
// holder first, then the candidates in takeover order, names and ranks in
// aligned columns; then the local view.
func writeStatus(w io.Writer, rep statusReport) {
	fmt.Fprintf(w, "group      %s (etcd %s)\n", rep.Key, strings.Join(rep.Endpoints, ","))
	nameW, rankW := 0, 0
	all := rep.Candidates
	if rep.Holder != nil {
		all = append([]statusCandidate{rep.Holder.statusCandidate}, all...)
	}
	for _, c := range all {
		nameW, rankW = max(nameW, len(c.Name)+len(statusSelfMark(c))), max(rankW, len(c.Rank))
	}
	verW, fenceW := 0, 0
	for _, c := range all {
		verW, fenceW = max(verW, len(statusVersion(c))), max(fenceW, len(statusFence(c)))
	}
	row := func(role string, c statusCandidate) string {
		return fmt.Sprintf("%-10s %-*s  %-*s  %-*s  %-*s  lease %s", role, nameW, c.Name+statusSelfMark(c), rankW, c.Rank,
			verW, statusVersion(c), fenceW, statusFence(c), statusLeaseLeft(c.LeaseTTL))
	}
	if h := rep.Holder; h != nil && h.HeldMS == nil {
		fmt.Fprintf(w, "%s  since unknown (no since=/beat= in its entry: a vipd before 0.1.0)\n", row("holder", h.statusCandidate))
	} else if h != nil {
		beat := "heartbeat " + statusAgo(time.Duration(*h.BeatAgeMS)*time.Millisecond)
		if h.Stale {
			limit, what := time.Duration(h.TTLMS)*time.Millisecond, "TTL"
			if h.FenceMS > 0 && (h.TTLMS == 0 || h.FenceMS < h.TTLMS) {
				limit, what = time.Duration(h.FenceMS)*time.Millisecond, "fenced window"
			}
			beat += fmt.Sprintf(" STALE (older than its %v %s)", limit, what)
		}
		fmt.Fprintf(w, "%s  since %s (for %s)  %s\n", row("holder", h.statusCandidate),
			h.Since.Format(statusStamp), statusSpan(time.Duration(*h.HeldMS)*time.Millisecond), beat)
	} else if rep.Error != "" {
		fmt.Fprintf(w, "holder     unknown: etcd unreachable (see stderr)\n")
	} else {
		fmt.Fprintf(w, "holder     none\n")
	}
	for i, c := range rep.Candidates {
		fmt.Fprintf(w, "%s\n", row(fmt.Sprintf("next %d", i+1), c))
	}
	if len(rep.Drained) > 0 {
		fmt.Fprintf(w, "drained    %s (vipd -undrain NAME)\n", strings.Join(rep.Drained, ", "))
	}
	writeLocalStatus(w, rep.Local, rep.LocalError, rep.At)
}

// statusVersion is the column naming a node's vipd: "vipd 0.1.0+abc1234",
// or "vipd ?" for one that publishes no version (before 0.1.0, or its
// info key is not written yet).
func statusVersion(c statusCandidate) string {
	if c.Version == "" {
		return "vipd ?"
	}
	return "vipd " + c.Version
}

// statusFence is the column naming the fence a node holds by: "kernel
// fence 500ms" (the window it advertises) or "TTL rule" (no kernel fence:
// its address lifetime, and takeover after its lease TTL).
func statusFence(c statusCandidate) string {
	if c.FenceMS > 0 {
		return "kernel fence " + (time.Duration(c.FenceMS) * time.Millisecond).String()
	}
	return "TTL rule"
}

func statusSelfMark(c statusCandidate) string {
	if c.Self {
		return " *"
	}
	return ""
}

func writeLocalStatus(w io.Writer, l *statusLocal, readErr string, now time.Time) {
	switch {
	case readErr != "":
		fmt.Fprintf(w, "this node  state file unreadable: %s\n", readErr)
		return
	case l == nil:
		fmt.Fprintf(w, "this node  no state file\n")
		return
	}
	pid := "not running"
	if l.PIDAlive {
		pid = "running"
	}
	fmt.Fprintf(w, "this node  %s, %s (written %s ago)\n", l.Name, l.Path, statusSpan(now.Sub(l.Written)))
	fmt.Fprintf(w, "  state      %s since %s (%s)\n", l.State, l.StateSince.Format(statusStamp), statusSpan(now.Sub(l.StateSince)))
	if l.Holder != "" {
		fmt.Fprintf(w, "  holder     %s\n", l.Holder)
	}
	if l.DeadlineLeftMS != nil {
		fmt.Fprintf(w, "  deadline   %s\n", statusLeft(time.Duration(*l.DeadlineLeftMS)*time.Millisecond))
	}
	if !l.LastAnnounced.IsZero() {
		fmt.Fprintf(w, "  announced  %s (%s ago)\n", l.LastAnnounced.Format(statusStamp), statusSpan(now.Sub(l.LastAnnounced)))
	}
	if l.LastStepDown != "" {
		fmt.Fprintf(w, "  stepdown   %s (%s ago): %s\n", l.SteppedDownAt.Format(statusStamp), statusSpan(now.Sub(l.SteppedDownAt)), l.LastStepDown)
	}
	fmt.Fprintf(w, "  pid        %d (%s)\n", l.PID, pid)
}

const statusStamp = "2006-01-02 15:04:05.000 MST"

// span is a duration short enough to read at a glance.
func statusSpan(d time.Duration) string {
	switch a := d.Abs(); {
	case a < 10*time.Second:
		return d.Round(time.Millisecond).String()
	case a < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

func statusAgo(d time.Duration) string {
	if d < 0 {
		return statusSpan(-d) + " in the future (clock skew)"
	}
	return statusSpan(d) + " ago"
}

func statusLeft(d time.Duration) string {
	if d < 0 {
		return "passed " + statusSpan(-d) + " ago"
	}
	return statusSpan(d) + " left"
}

func statusLeaseLeft(secs int64) string {
	if secs < 0 {
		return "unknown"
	}
	return strconv.FormatInt(secs, 10) + "s left"
}

package soak

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestMain first deletes namespaces that killed runs left behind.
func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// TestSoak is `make soak` (issue 9, "Proof of a long life"): the three-node
// cluster lab (vipd and an etcd member on each node, a dual-stack VIP, a
// client probing both VIPs every 10 ms) under a random schedule of faults,
// each healed before the next, for VIPD_SOAK (a Go duration). Meanwhile an
// unrelated address comes and goes on the holder's eth0 every 200–400 ms,
// and the invariants are checked all the time:
//
//   - never two holders (kernel address events from every node namespace);
//   - the client's IPv4 and IPv6 neighbour entries name the holder's MAC
//     within a second once the holder has held the VIP for a second, and no
//     node announces the VIP while it does not hold it;
//   - one node holds both VIPs within a bound after every heal;
//   - after a final graceful stop, no VIP left anywhere and no vipd left.
//
// It also samples every vipd's RSS, live heap (its runtime's gctrace
// lines: GODEBUG=gctrace=1) and goroutines (with vip.metrics), and reports
// the trend of each process lifetime: the live heap and the goroutines
// must be flat, the RSS only bounded (it also follows the runtime's
// settling: the scavenger, fragmentation). The schedule comes from a
// seed that is printed; VIPD_SOAK_SEED replays it (the same faults, order,
// targets and hold times; the timing of the machine differs). VIPD_SOAK_MD
// names a file to append the Markdown tables to; VIPD_SOAK_LOGS the file
// for the full logs (default: in the temp directory, named after the seed).

// unableFirst is vipd's first back-off after it failed to hold the VIP
// (it doubles with each failure): part of the behaviour the soak checks,
// written down here rather than read from the daemon's code.
const unableFirst = 10 * time.Second

const (
	soakGarp          = 5
	soakGarpInterval  = 300 * time.Millisecond
	soakBurst         = (soakGarp-1)*soakGarpInterval + 100*time.Millisecond // a takeover burst, with slack
	soakMetricsPort   = 9180
	soakSettle        = time.Second
	soakBound         = lab.TTL + 3*time.Second   // a holder after a heal
	soakEtcdBound     = 2*lab.TTL + 6*time.Second // after partitions and etcd faults: raft may elect
	soakNeighGrace    = time.Second               // the holder has held the VIP this long...
	soakNeighLimit    = time.Second               // ...and the client's entry disagrees this long: a violation
	soakAnnounceSlack = 50 * time.Millisecond     // an announcement after the sender lost the VIP
	soakEventLag      = 250 * time.Millisecond    // an announcement before its sender's gain is seen
	soakSample        = 10 * time.Second
	soakWarmup        = 2 * time.Minute  // of each process, left out of its trend
	soakMinSpan       = 5 * time.Minute  // a trend needs this much after the warm-up
	soakFlatSpan      = 10 * time.Minute // "flat" is judged on series at least this long
	soakFlatHeap      = 1.0              // live heap, MiB per hour (gctrace reports whole MB)
	soakMaxRSS        = 32.0             // MiB, at any sample (issue 2: an idle leader ≤ 25 MiB)
	soakFlatGoroutine = 30.0             // goroutines per hour
)

// soakFault is one kind of fault: run injects it (calling s.inject at the
// moment of injection), holds it and heals it (setting f.healed).
type soakFault struct {
	Name     string
	bound    time.Duration // for a holder after the heal; 0: soakBound
	restarts bool          // it restarts the holder's vipd
	Run      func(s *soak, f *soakRun)
}

var soakFaults = []soakFault{
	{Name: "SIGKILL holder", restarts: true, Run: (*soak).faultKill},
	{Name: "SIGTERM holder", restarts: true, Run: (*soak).faultTerm},
	{Name: "SIGSTOP/SIGCONT holder", Run: (*soak).faultFreeze},
	{Name: "SIGSTOP/SIGCONT new holder mid-burst", restarts: true, Run: (*soak).faultFreezeMidBurst},
	{Name: "partition holder", bound: soakEtcdBound, Run: (*soak).faultPartition},
	{Name: "etcd member loss", bound: soakEtcdBound, Run: (*soak).faultEtcdMember},
	{Name: "etcd leader move", bound: soakEtcdBound, Run: (*soak).faultEtcdLeader},
	{Name: "link down/up holder", Run: (*soak).faultLink},
	{Name: "VIP deleted by hand on holder", Run: (*soak).faultDeleteVIP},
	{Name: "service dies on holder", Run: (*soak).faultService},
	// Re-executes in place: the VIP stays. Not on the long-lived node,
	// whose resource trend would start again.
	{Name: "SIGHUP holder", restarts: true, Run: (*soak).faultReload},
	// Issue 19: the restart paths and mistakes that once made a second
	// holder, or pulled the VIP away again and again.
	{Name: "SIGHUP or SIGKILL + restart of an elected node waiting on a squatter", restarts: true, Run: (*soak).faultRestartWaiting},
	{Name: "second vipd started on a node", Run: (*soak).faultSecondVipd},
	{Name: "preferred node cannot add the address", Run: (*soak).faultUnable},
}

// soakRun is one injected fault.
type soakRun struct {
	n        int
	kind     *soakFault
	h        *lab.Node // the holder before the fault
	Gained   time.Time // when h gained the IPv4 VIP
	target   string
	act      time.Time // the fault's first action (a mid-burst freeze begins with a handover)
	Start    time.Time // the moment of injection
	age      time.Duration
	midBurst bool // injected while the holder was still in its takeover burst
	healed   time.Time
	toHolder time.Duration // heal → one holder of both VIPs
	end      time.Time     // the next fault's first action: the end of this one's window
	out4     time.Duration // longest stretch without an answer in [start, end], IPv4
	out6     time.Duration
	note     []string
	hold     time.Duration // set: overrides the random hold (a freeze that moves the VIP)
}

type violation struct {
	At     time.Time
	kind   string
	detail string
}

// Violation kinds, in the order of the report.
const (
	vOverlap  = "two holders at once"
	vNeigh    = "client neighbour entry not the holder's"
	vStale    = "announcement by a node that did not hold the VIP"
	vBound    = "no holder within the bound after a heal"
	vExit     = "vipd exited unexpectedly or uncleanly"
	vLeftAddr = "VIP left after vipd stopped"
	vLeftProc = "vipd process left after the final stop"
	vSquat    = "VIP added while another host answered for it"
	vSecond   = "a second vipd ran beside the first"
	vUnable   = "a node that cannot hold failed more than once per back-off"
)

var soakViolationKinds = []string{vOverlap, vNeigh, vStale, vBound, vExit, vLeftAddr, vLeftProc, vSquat, vSecond, vUnable}

type soak struct {
	T        *testing.T
	l        *lab.Lab
	seed     uint64
	rng      *rand.Rand
	t0       time.Time // the lab monitor's start: times in its history match ours
	bin      string
	metrics  bool
	tr4, tr6 *holderTrack
	p4, p6   *lab.Prober
	arp, na  *lab.Capture
	clientRT *lab.Observer
	neigh    []*neighWatch
	stale    []*staleWatch
	quit     chan struct{}
	quitOnce sync.Once
	wg       sync.WaitGroup
	churn    churnStats

	Mu         sync.Mutex
	procs      []*proc // per node, nil while its vipd is not running
	series     map[int]*resSeries
	runs       []*soakRun
	violations []*violation
	Events     []string
	logs       []*lab.SyncBuffer // per node, every vipd run with a header
	overlapsN  int
	neighErrs  int
	finalAt    time.Time
	aborted    bool // the schedule stopped early: no holder for long
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

// between is a random duration in [lo, hi).
func (s *soak) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

func TestSoak(t *testing.T) {
	spec := os.Getenv("VIPD_SOAK")
	if spec == "" {
		t.Skip("the soak runs with `sudo make soak` (VIPD_SOAK=<duration>)")
	}
	dur, err := time.ParseDuration(spec)
	if err != nil || dur <= 0 {
		t.Fatalf("VIPD_SOAK=%q: want a positive Go duration such as 30m", spec)
	}
	// go test's -timeout cannot follow VIPD_SOAK; this is the same bound,
	// and like it, it ends the run with every goroutine's stack.
	overrun := time.AfterFunc(dur+10*time.Minute, func() { panic(fmt.Sprintf("soak still running %v after its %v of faults", 10*time.Minute, dur)) })
	defer overrun.Stop()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("VIPD_SOAK_SEED"); v != "" {
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("VIPD_SOAK_SEED=%q: want an unsigned integer", v)
		}
	}
	wall := time.Now()
	fmt.Printf("soak: %v, seed %d (replay the schedule with VIPD_SOAK_SEED=%d)\n", dur, seed, seed)

	s := newSoak(t, seed)
	deadline := time.Now().Add(dur)
	s.say("faults for %v from now; kinds: %d, each at least once", dur, len(soakFaults))
	// A shuffled round robin: every kind once per round, and the first
	// round is always completed, so that a short soak covers every kind.
	for round := 0; (round == 0 || time.Now().Before(deadline)) && !s.aborted; round++ {
		for _, i := range s.rng.Perm(len(soakFaults)) {
			if s.aborted || round > 0 && !time.Now().Before(deadline) {
				break
			}
			s.runFault(&soakFaults[i])
		}
	}
	s.final()
	s.report(dur, wall)
}

// soakWords are extra vip.* words for every node from $VIPD_SOAK_WORDS
// (space-separated), e.g. vip.window=600ms for the kernel fence's short
// window; named in the report.
func soakWords() []string { return strings.Fields(os.Getenv("VIPD_SOAK_WORDS")) }

func newSoak(t *testing.T, seed uint64) *soak {
	bin, _ := lab.Binaries(t)
	s := &soak{T: t, seed: seed, rng: newRand(seed), bin: bin, quit: make(chan struct{}), series: map[int]*resSeries{}}
	s.metrics = s.metricsSupported()
	l := lab.NewWith(t, lab.Options{Nodes: 3, Cluster: true, DualStack: true,
		Args: []string{"vip.ttl=2", fmt.Sprintf("vip.garp=%d", soakGarp), "vip.garp.interval=" + soakGarpInterval.String(),
			// Every node checks its own lab service (test/lab/service.go),
			// so that ranks and handovers live through the faults too.
			"vip.check=" + lab.CheckURL, "vip.check.interval=500ms", "vip.check.timeout=500ms", "vip.preempt.delay=2s"}})
	l.Opt.Args = append(l.Opt.Args, soakWords()...)
	s.l, s.t0 = l, l.Mon.Start
	s.procs = make([]*proc, len(l.Nodes))
	for range l.Nodes {
		s.logs = append(s.logs, &lab.SyncBuffer{})
	}
	t.Cleanup(s.writeLogs)
	tr := startHolderTracks(t, l.Nodes, netip.MustParseAddr(lab.VIP), netip.MustParseAddr(lab.VIP6))
	s.tr4, s.tr6 = tr[0], tr[1]
	l.StartServices()               // the health endpoints, and the echo the probers measure
	s.p4 = l.StartProberTo(lab.VIP) // the probers also keep the client's neighbour entries in use
	s.p6 = l.StartProberTo(lab.VIP6)
	s.arp, s.na = lab.CaptureARP(t, l.Client), lab.CaptureNA(t, l.Client)
	var err error
	if s.clientRT, err = l.Client.Dial(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.clientRT.Close() })
	s.neigh = []*neighWatch{{family: "IPv4", Vip: netip.MustParseAddr(lab.VIP), tr: s.tr4},
		{family: "IPv6", Vip: netip.MustParseAddr(lab.VIP6), tr: s.tr6}}
	s.stale = []*staleWatch{{what: "IPv4 gratuitous ARP", c: s.arp, tr: s.tr4}, {what: "IPv6 unsolicited NA", c: s.na, tr: s.tr6}}

	for _, nd := range l.Nodes {
		s.startVipd(nd)
	}
	if s.WaitHolder(lab.ElectBound, soakSettle) == nil {
		t.Fatalf("no single holder of both VIPs within %v of the start", lab.ElectBound)
	}
	s.say("first holder: %s", l.Nodes[s.mustSingle()].Name)

	// The churn's connections, one per node namespace, and eth0's index.
	var rts []*lab.Observer
	var index []uint32
	for _, nd := range l.Nodes {
		r, err := nd.NS.Dial()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		links, err := r.Links()
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(links, func(l lab.Link) bool { return l.Name == "eth0" })
		if i < 0 {
			t.Fatalf("no eth0 in %s", nd.Name)
		}
		rts, index = append(rts, r), append(index, links[i].Index)
	}
	s.wg.Add(3)
	go s.runChecker()
	go s.runChurn(rts, index, seed+1)
	go s.runSampler()
	t.Cleanup(s.stopWatchers) // after a t.Fatal too, before the lab goes
	return s
}

// metricsSupported asks the binary whether it knows vip.metrics (the lead
// is adding it); without it the soak reports goroutines as n/a.
func (s *soak) metricsSupported() bool {
	cmd := exec.Command(s.bin, "-cmdline", "none", "-check", "vip.address="+lab.VIP, "vip.interface=eth0",
		"vip.etcd=http://"+lab.EtcdIP+":2379", fmt.Sprintf("vip.metrics=192.0.2.11:%d", soakMetricsPort))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		fmt.Printf("soak: vip.metrics is supported: goroutines from /metrics\n")
		return true
	case errors.As(err, &exit) && exit.ExitCode() == 2 && strings.Contains(string(out), "vip.metrics"):
		fmt.Printf("soak: this vipd has no vip.metrics (%s): goroutines are n/a\n", strings.TrimSpace(string(out)))
		return false
	}
	s.T.Fatalf("vipd -check with vip.metrics: %v: %s", err, out)
	return false
}

func (s *soak) stopWatchers() {
	s.quitOnce.Do(func() { close(s.quit) })
	s.wg.Wait()
}

// say prints a line of the soak's own log, on the monitor's clock.
func (s *soak) say(format string, args ...any) {
	line := fmt.Sprintf("soak %s: %s", rel(s.t0, time.Now()), fmt.Sprintf(format, args...))
	fmt.Println(line)
	s.Mu.Lock()
	s.Events = append(s.Events, line)
	s.Mu.Unlock()
}

func (s *soak) violate(at time.Time, kind, detail string) *violation {
	v := &violation{At: at, kind: kind, detail: detail}
	s.Mu.Lock()
	s.violations = append(s.violations, v)
	s.Mu.Unlock()
	s.say("VIOLATION (%s) at %s: %s", kind, rel(s.t0, at), detail)
	return v
}

// --- vipd processes -------------------------------------------------------

// startVipd runs vipd on the node as lab.start does, with vip.metrics when
// the binary has it, and its output also kept in the node's soak log.
// vipdArgs are the words every soak vipd runs with, plus extra.
func (s *soak) vipdArgs(nd *lab.Node, extra ...string) []string {
	l := s.l
	args := []string{s.bin, "-cmdline", "none", "vip.address=" + l.VIPWord(), "vip.interface=eth0", "vip.etcd=" + l.EtcdURLs(),
		"vip.name=" + nd.Name, "vip.log=stderr"}
	args = append(args, l.Opt.Args...)
	if s.metrics {
		args = append(args, fmt.Sprintf("vip.metrics=%s:%d", nd.IP, soakMetricsPort))
	}
	return append(args, extra...)
}

func (s *soak) startVipd(nd *lab.Node, extra ...string) {
	i := lab.IndexOf(s.l.Nodes, nd)
	nd.Cmd = nd.Command(s.vipdArgs(nd, extra...)...)
	nd.Cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1") // the live heap after every GC, on stderr
	nd.Log = &lab.SyncBuffer{}
	w := io.MultiWriter(nd.Log, s.logs[i])
	nd.Cmd.Stdout, nd.Cmd.Stderr = w, w
	if err := nd.Cmd.Start(); err != nil {
		s.T.Fatalf("start vipd on %s: %v", nd.Name, err)
	}
	fmt.Fprintf(s.logs[i], "=== %s %s: vipd started, pid %d\n", rel(s.t0, time.Now()), time.Now().Format("15:04:05.000"), nd.Cmd.Process.Pid)
	nd.Exit = make(chan error, 1)
	go func(cmd *exec.Cmd, exit chan error) { exit <- cmd.Wait() }(nd.Cmd, nd.Exit)
	s.Mu.Lock()
	s.procs[i] = &proc{Node: i, pid: nd.Cmd.Process.Pid, Start: time.Now()}
	s.Mu.Unlock()
	// A signal that comes before vipd has installed its handler (while
	// `ip netns exec` or the Go runtime is still starting it) takes the
	// default action: the process dies of it, which is no stop vipd can
	// handle. Its first log line comes after the handler is in place.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(nd.Log.String(), "vipd: starting ") {
			return
		}
	}
	s.say("vipd on %s has not logged its start within 5 s", nd.Name)
}

// waitExit waits for the node's vipd to exit; ok is false on timeout.
func (s *soak) waitExit(nd *lab.Node, timeout time.Duration) (err error, ok bool) {
	select {
	case err = <-nd.Exit:
	case <-time.After(timeout):
		return nil, false
	}
	s.exited(nd, err)
	return err, true
}

func (s *soak) exited(nd *lab.Node, err error) {
	i := lab.IndexOf(s.l.Nodes, nd)
	nd.Cmd = nil
	fmt.Fprintf(s.logs[i], "=== %s: vipd exited: %v\n", rel(s.t0, time.Now()), err)
	s.Mu.Lock()
	s.procs[i] = nil
	s.Mu.Unlock()
}

func (s *soak) Signal(nd *lab.Node, sig syscall.Signal) {
	if nd.Cmd == nil {
		return
	}
	if err := syscall.Kill(-nd.Cmd.Process.Pid, sig); err != nil {
		s.say("signal %v to %s: %v", sig, nd.Name, err)
	}
	if sig == syscall.SIGSTOP || sig == syscall.SIGCONT {
		s.Mu.Lock()
		if p := s.procs[lab.IndexOf(s.l.Nodes, nd)]; p != nil {
			p.frozen = sig == syscall.SIGSTOP
		}
		s.Mu.Unlock()
	}
}

// gracefulStop sends SIGTERM and checks the contract of a stop: exit 0
// within 10 s, and neither VIP left behind on the node.
func (s *soak) gracefulStop(nd *lab.Node) {
	s.Signal(nd, syscall.SIGCONT)
	s.Signal(nd, syscall.SIGTERM)
	s.checkStop(nd)
}

// checkStop waits for a vipd that was sent SIGTERM and checks the stop.
func (s *soak) checkStop(nd *lab.Node) {
	err, ok := s.waitExit(nd, 10*time.Second)
	if !ok {
		s.violate(time.Now(), vExit, fmt.Sprintf("vipd on %s still running 10 s after SIGTERM; killed", nd.Name))
		syscall.Kill(-nd.Cmd.Process.Pid, syscall.SIGKILL)
		err, _ = s.waitExit(nd, 10*time.Second)
	} else if err != nil {
		s.violate(time.Now(), vExit, fmt.Sprintf("vipd on %s exited with %v after SIGTERM, want status 0", nd.Name, err))
	}
	if left := s.vipsIn(nd.NS); len(left) > 0 {
		s.violate(time.Now(), vLeftAddr, fmt.Sprintf("%s still has %v right after its vipd stopped", nd.Name, left))
	}
}

// checkExits restarts any vipd that exited without being told to.
func (s *soak) checkExits() {
	for i, nd := range s.l.Nodes {
		if nd.Cmd == nil {
			continue
		}
		select {
		case err := <-nd.Exit:
			s.exited(nd, err)
			log := strings.Split(strings.TrimSpace(nd.Log.String()), "\n")
			s.violate(time.Now(), vExit, fmt.Sprintf("vipd on %s exited by itself (%v); its last lines:\n%s",
				nd.Name, err, strings.Join(log[max(0, len(log)-10):], "\n")))
			s.startVipd(s.l.Nodes[i])
		default:
		}
	}
}

// vipsIn lists the VIPs present in a namespace right now.
func (s *soak) vipsIn(ns *lab.NS) []string {
	r, err := ns.Dial()
	if err != nil {
		s.T.Fatal(err)
	}
	defer r.Close()
	addrs, err := r.Addrs()
	if err != nil {
		s.T.Fatal(err)
	}
	var found []string
	for _, a := range addrs {
		if ip := a.IP; ip == netip.MustParseAddr(lab.VIP) || ip == netip.MustParseAddr(lab.VIP6) {
			found = append(found, ip.String())
		}
	}
	return found
}

// --- holders ---------------------------------------------------------------

// waitHolder waits until one node holds both VIPs, nobody else holds
// either, it is live, and it has held them for settle; nil on timeout.
func (s *soak) WaitHolder(timeout, settle time.Duration) *lab.Node {
	end := time.Now().Add(timeout)
	for {
		i, since4, ok4 := s.tr4.single()
		j, since6, ok6 := s.tr6.single()
		if ok4 && ok6 && i == j && time.Since(since4) >= settle && time.Since(since6) >= settle && s.live(i, since4, since6) {
			return s.l.Nodes[i]
		}
		if time.Now().After(end) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// live says whether node i's vipd runs, is not frozen, and was started
// before the given gains: a copy of the VIP that a killed or frozen vipd
// left is the kernel's until its lifetime ends, not a holder; unless the
// vipd started since has resumed the lease of the one killed (resume.go),
// which makes the copy its own.
func (s *soak) live(i int, gains ...time.Time) bool {
	s.Mu.Lock()
	p := s.procs[i]
	var start time.Time
	frozen := p == nil || p.frozen
	if p != nil {
		start = p.Start
	}
	s.Mu.Unlock()
	if frozen {
		return false
	}
	for _, g := range gains {
		if g.Before(start) && !s.resumed(i) {
			return false
		}
	}
	return true
}

// resumed says whether node i's current vipd resumed an earlier lease.
func (s *soak) resumed(i int) bool {
	log := s.l.Nodes[i].Log
	return log != nil && strings.Contains(log.String(), "resumed the earlier run's lease")
}

func (s *soak) mustSingle() int {
	i, _, ok := s.tr4.single()
	if !ok {
		s.T.Fatalf("no single holder")
	}
	return i
}

func (s *soak) holdersNow() string {
	return fmt.Sprintf("IPv4 held by %v, IPv6 by %v", s.l.Names(s.tr4.holders()), s.l.Names(s.tr6.holders()))
}

// --- the schedule ----------------------------------------------------------

// runFault prepares a healthy cluster, runs one fault, and checks and
// measures the recovery.
func (s *soak) runFault(k *soakFault) {
	s.runFaultHold(k, 0)
}

// soakKeep is the node whose vipd is never restarted, so that one process
// lives through the whole soak and its resource trend means something.
const soakKeep = 0

func (s *soak) runFaultHold(k *soakFault, hold time.Duration) {
	f := &soakRun{n: len(s.runs) + 1, kind: k, hold: hold}
	s.checkExits()
	if !s.prepare(f) {
		return
	}
	for try := 0; k.restarts && f.h == s.l.Nodes[soakKeep] && try < 3; try++ {
		// A fault that restarts the holder found the long-lived node
		// holding: a freeze (itself a fault, recorded as one) moves the
		// VIP first.
		s.say("next: %s, but %s holds, whose vipd lives through the soak: a freeze moves the VIP off it first", k.Name, f.h.Name)
		s.runFaultHold(&soakFaults[slices.IndexFunc(soakFaults, func(k soakFault) bool { return k.Name == "SIGSTOP/SIGCONT holder" })], 3*time.Second)
		f.n = len(s.runs) + 1
		if s.aborted || !s.prepare(f) {
			return
		}
	}
	s.finish(time.Now())
	f.act = time.Now()
	k.Run(s, f)
	if f.healed.IsZero() {
		f.healed = time.Now()
	}
	s.Mu.Lock()
	s.runs = append(s.runs, f)
	s.Mu.Unlock()

	bound := k.bound
	if bound == 0 {
		bound = soakBound
	}
	h := s.WaitHolder(bound, 0)
	if h == nil {
		s.violate(f.healed.Add(bound), vBound, fmt.Sprintf("no single holder of both VIPs %v after healing #%d (%s): %s",
			bound, f.n, k.Name, s.holdersNow()))
		if h = s.WaitHolder(time.Minute, 0); h == nil {
			s.abort("still no single holder a minute later: " + s.holdersNow())
			return
		}
	}
	f.toHolder = time.Since(f.healed)
	s.say("#%d healed at %s; %s holds both VIPs %dms later%s",
		f.n, rel(s.t0, f.healed), h.Name, f.toHolder.Milliseconds(), strings.Join(append([]string{""}, f.note...), "; "))
}

// finish closes the window of the last fault at end (the next fault's first
// action, or the final stop): its outage is measured over the whole
// recovery, up to a settled holder that the client reaches.
func (s *soak) finish(end time.Time) {
	if len(s.runs) == 0 {
		return
	}
	f := s.runs[len(s.runs)-1]
	out4, out6 := longestGap(s.p4, f.Start, end), longestGap(s.p6, f.Start, end)
	s.Mu.Lock()
	f.end, f.out4, f.out6 = end, out4, out6
	s.Mu.Unlock()
	s.say("#%d %s: client-visible outage %dms (IPv4), %dms (IPv6)", f.n, f.kind.Name, out4.Milliseconds(), out6.Milliseconds())
}

// abort stops the schedule after a failure that leaves nothing to fault;
// the final checks and the report still run.
func (s *soak) abort(why string) {
	s.violate(time.Now(), vBound, why+"; the schedule stops here")
	s.aborted = true
}

// prepare waits for a healthy cluster and picks the moment: usually a
// settled holder and a random pause, sometimes inside a fresh holder's
// takeover burst. It draws the same random numbers whatever happens, so
// that a seed replays the same schedule. False: the soak was aborted.
func (s *soak) prepare(f *soakRun) bool {
	early, offset, pause := s.rng.IntN(3) == 0, s.between(100*time.Millisecond, 1500*time.Millisecond), s.between(0, 2*time.Second)
	if !s.EtcdHealthy(30 * time.Second) {
		s.say("warning: not every etcd member is healthy 30 s after the last heal; going on")
	}
	h := s.WaitHolder(30*time.Second, 0)
	if h == nil {
		s.violate(time.Now(), vBound, fmt.Sprintf("no single holder of both VIPs for 30 s before fault #%d: %s", f.n, s.holdersNow()))
		if h = s.WaitHolder(time.Minute, 0); h == nil {
			s.abort("still no single holder a minute later: " + s.holdersNow())
			return false
		}
	}
	// The client must reach the holder again before the next fault: a
	// stale neighbour entry takes seconds to be found out.
	if !s.p4.AnsweredBy(h.Name, time.Now(), 30*time.Second) || !s.p6.AnsweredBy(h.Name, time.Now(), 30*time.Second) {
		s.say("warning: the client is not answered by the holder %s after 30 s; going on", h.Name)
	}
	gained := s.tr4.heldSince(lab.IndexOf(s.l.Nodes, h))
	if early && time.Since(gained) < soakBurst {
		time.Sleep(time.Until(gained.Add(offset)))
	} else {
		s.WaitHolder(30*time.Second, soakSettle)
		time.Sleep(pause)
	}
	if f.h = s.WaitHolder(30*time.Second, 0); f.h == nil {
		s.abort(fmt.Sprintf("no single holder for 30 s before fault #%d: %s", f.n, s.holdersNow()))
		return false
	}
	f.Gained = s.tr4.heldSince(lab.IndexOf(s.l.Nodes, f.h))
	return true
}

// inject records the moment of injection.
func (s *soak) inject(f *soakRun, target string) {
	f.Start, f.target = time.Now(), target
	if i, gained, ok := s.tr4.single(); ok {
		f.age = f.Start.Sub(gained)
		f.midBurst = f.age < soakBurst && s.l.Nodes[i] == f.h
	}
	burst := ""
	if f.midBurst {
		burst = fmt.Sprintf(" (mid-burst: %s gained the VIP %dms ago)", f.h.Name, f.age.Milliseconds())
	}
	s.say("#%d %s on %s%s", f.n, f.kind.Name, target, burst)
}

func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

func (s *soak) faultKill(f *soakRun) {
	h, hold := f.h, s.between(500*time.Millisecond, 3*time.Second)
	s.inject(f, h.Name)
	s.Signal(h, syscall.SIGKILL)
	if _, ok := s.waitExit(h, 10*time.Second); !ok {
		s.T.Fatalf("vipd on %s survived SIGKILL for 10 s", h.Name) // the lab is broken, not vipd
	}
	sleepUntil(f.Start.Add(hold))
	s.startVipd(h)
	f.healed = time.Now()
}

// faultReload: vipd re-executes itself, keeps its lease and the VIP
// (resume.go); whatever happens meanwhile must keep the invariants.
func (s *soak) faultReload(f *soakRun) {
	h := f.h
	s.inject(f, h.Name)
	s.Signal(h, syscall.SIGHUP)
	sleepUntil(f.Start.Add(s.between(200*time.Millisecond, time.Second)))
	f.healed = time.Now()
}

func (s *soak) faultTerm(f *soakRun) {
	h, hold := f.h, s.between(200*time.Millisecond, 2*time.Second)
	s.inject(f, h.Name)
	s.gracefulStop(h)
	sleepUntil(f.Start.Add(hold))
	s.startVipd(h)
	f.healed = time.Now()
}

// faultService takes the holder's service away (its check fails, and the
// holder hands over to a healthy node once vip.check.fall checks have
// failed and vip.preempt.delay has passed since it took the VIP) and
// brings it back after the hold, whether or not the VIP has moved.
func (s *soak) faultService(f *soakRun) {
	h, hold := f.h, s.between(time.Second, 5*time.Second)
	s.inject(f, h.Name)
	h.Service.Down()
	sleepUntil(f.Start.Add(hold))
	h.Service.Up()
	f.healed = time.Now()
}

func (s *soak) faultFreeze(f *soakRun) {
	h, hold := f.h, s.between(500*time.Millisecond, 5*time.Second)
	if f.hold > 0 {
		hold = f.hold
	}
	s.inject(f, h.Name)
	s.Signal(h, syscall.SIGSTOP)
	sleepUntil(f.Start.Add(hold))
	s.Signal(h, syscall.SIGCONT)
	f.healed = time.Now()
	f.note = append(f.note, fmt.Sprintf("frozen %dms", hold.Milliseconds()))
}

// faultFreezeMidBurst makes a fresh takeover (the holder stops gracefully
// and comes back as a candidate), freezes the new holder 0.1–1.5 s after it
// gained the VIP, inside its announcement burst, and resumes it after the
// next holder has taken over and finished its own burst (issue 9, defect 2).
func (s *soak) faultFreezeMidBurst(f *soakRun) {
	old, offset, hold := f.h, s.between(100*time.Millisecond, 1500*time.Millisecond), s.between(3*time.Second, 6*time.Second)
	s.gracefulStop(old)
	s.startVipd(old)
	var n *lab.Node
	for end := time.Now().Add(lab.MoveBound); time.Now().Before(end) && n == nil; time.Sleep(5 * time.Millisecond) {
		if i, _, ok := s.tr4.single(); ok && s.l.Nodes[i] != old {
			n = s.l.Nodes[i]
		}
	}
	if n == nil {
		s.inject(f, "nobody")
		f.note = append(f.note, "no new holder after the handover: "+s.holdersNow())
		return
	}
	f.h = n
	sleepUntil(s.tr4.heldSince(lab.IndexOf(s.l.Nodes, n)).Add(offset))
	s.inject(f, n.Name)
	s.Signal(n, syscall.SIGSTOP)
	sleepUntil(f.Start.Add(hold))
	s.Signal(n, syscall.SIGCONT)
	f.healed = time.Now()
	f.note = append(f.note, fmt.Sprintf("frozen %dms after its gain, for %dms", f.age.Milliseconds(), hold.Milliseconds()))
}

func (s *soak) faultPartition(f *soakRun) {
	h, hold := f.h, s.between(time.Second, 5*time.Second)
	s.inject(f, h.Name)
	s.l.Partition(h)
	sleepUntil(f.Start.Add(hold))
	s.l.Heal(h)
	f.healed = time.Now()
}

func (s *soak) faultEtcdMember(f *soakRun) {
	m, hold := s.l.Etcd[s.rng.IntN(len(s.l.Etcd))], s.between(time.Second, 6*time.Second)
	roles := []string{"etcd " + m.Name}
	if m.Name == f.h.Name {
		roles = append(roles, "holder's node")
	}
	if s.l.EtcdLeader() == m {
		roles = append(roles, "raft leader")
	}
	s.inject(f, strings.Join(roles, ", "))
	s.l.StopMember(m)
	sleepUntil(f.Start.Add(hold))
	s.l.StartEtcd(m)
	f.healed = time.Now()
}

func (s *soak) faultEtcdLeader(f *soakRun) {
	pick := s.rng.IntN(len(s.l.Etcd) - 1)
	leader := s.l.EtcdLeader()
	var others []*lab.EtcdMember
	for _, m := range s.l.Etcd {
		if m != leader {
			others = append(others, m)
		}
	}
	to := others[pick%len(others)]
	what := "etcd " + to.Name
	if to.Name == f.h.Name {
		what += " (holder's node)"
	}
	s.inject(f, what)
	if err := s.MoveEtcdLeader(to); err != nil {
		f.note = append(f.note, err.Error())
	}
	f.healed = time.Now()
}

func (s *soak) faultLink(f *soakRun) {
	h, hold := f.h, s.between(500*time.Millisecond, 3*time.Second)
	s.inject(f, h.Name)
	h.NS.IP(s.T, "link", "set", "eth0", "down")
	sleepUntil(f.Start.Add(hold))
	h.NS.IP(s.T, "link", "set", "eth0", "up")
	// Link down takes the node's IPv6 addresses with it; put its own back.
	own := fmt.Sprintf("%s%d", lab.Prefix6, 10+lab.IndexOf(s.l.Nodes, h)+1)
	if !strings.Contains(h.NS.IP(s.T, "-6", "addr", "show", "dev", "eth0"), own+"/64") {
		h.NS.IP(s.T, "addr", "add", own+"/64", "dev", "eth0", "nodad")
	}
	f.healed = time.Now()
}

func (s *soak) faultDeleteVIP(f *soakRun) {
	which := [][]string{{lab.VIP + "/32"}, {lab.VIP6 + "/128"}, {lab.VIP + "/32", lab.VIP6 + "/128"}}[s.rng.IntN(3)]
	h := f.h
	s.inject(f, h.Name+" ("+strings.Join(which, " and ")+")")
	for _, a := range which {
		if out, err := exec.Command("ip", "-n", h.NS.Name, "addr", "del", a, "dev", "eth0").CombinedOutput(); err != nil {
			f.note = append(f.note, fmt.Sprintf("delete %s: %v: %s", a, err, strings.TrimSpace(string(out))))
		}
	}
	f.healed = time.Now()
}

// faultRestartWaiting (issue 19, defect 1): a squatter (the bridge's
// host, answering for the IPv4 VIP as a frozen holder's kernel copy would)
// and the holder killed: the node elected next waits for the squatter. It
// is then sent SIGHUP, or killed and started again at once. No node may
// add the VIP while the squatter answers (a waiting node once resumed as
// holder after a restart). The squatter goes, the old holder comes back.
func (s *soak) faultRestartWaiting(f *soakRun) {
	h, kill, hold := f.h, s.rng.IntN(2) == 1, s.between(2*time.Second, 4*time.Second)
	from := map[*lab.Node]int{}
	for _, nd := range s.l.Nodes {
		if nd.Log != nil {
			from[nd] = len(nd.Log.String())
		}
	}
	s.inject(f, h.Name)
	s.l.Lan.IP(s.T, "addr", "add", lab.VIP+"/32", "dev", "br0")
	s.Signal(h, syscall.SIGKILL)
	if _, ok := s.waitExit(h, 10*time.Second); !ok {
		s.T.Fatalf("vipd on %s survived SIGKILL for 10 s", h.Name)
	}
	var w *lab.Node
	for end := time.Now().Add(lab.MoveBound); w == nil && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		for _, nd := range s.l.Nodes {
			if nd != h && nd.Cmd != nil && strings.Contains(nd.Log.String()[from[nd]:], "waiting for it to go quiet") {
				w = nd
			}
		}
	}
	switch {
	case w == nil:
		f.note = append(f.note, "no node was seen waiting for the squatter")
	case w == s.l.Nodes[soakKeep]:
		f.note = append(f.note, w.Name+" waited: the long-lived node, not restarted")
	case kill:
		f.note = append(f.note, w.Name+" waited: SIGKILL + restart")
		s.Signal(w, syscall.SIGKILL)
		if _, ok := s.waitExit(w, 10*time.Second); !ok {
			s.T.Fatalf("vipd on %s survived SIGKILL for 10 s", w.Name)
		}
		s.startVipd(w)
	default:
		f.note = append(f.note, w.Name+" waited: SIGHUP")
		s.Signal(w, syscall.SIGHUP)
	}
	for seen := false; !seen && time.Now().Before(f.Start.Add(hold+time.Second)); time.Sleep(50 * time.Millisecond) {
		for _, i := range s.tr4.holders() {
			if nd := s.l.Nodes[i]; nd != h && !seen {
				s.violate(time.Now(), vSquat, fmt.Sprintf("%s holds %s while the bridge's host answers for it", nd.Name, lab.VIP))
				seen = true
			}
		}
	}
	sleepUntil(f.Start.Add(hold + time.Second))
	s.l.Lan.IP(s.T, "addr", "del", lab.VIP+"/32", "dev", "br0")
	s.startVipd(h)
	f.healed = time.Now()
}

// faultSecondVipd (issue 19, defect 2): a second vipd for the same group
// is started on a node (a bare `vipd` run by hand). It must exit 1 at
// once, naming the first one's pid, and touch nothing.
func (s *soak) faultSecondVipd(f *soakRun) {
	nd := s.l.Nodes[s.rng.IntN(len(s.l.Nodes))]
	s.inject(f, nd.Name)
	out, code, ran, err := nd.RunBounded(s.vipdArgs(nd), 10*time.Second)
	if err != nil {
		s.T.Fatalf("a second vipd on %s: %v", nd.Name, err)
	}
	if err := lab.SecondRefused(out, code, ran, nd.Cmd.Process.Pid); err != nil {
		s.violate(time.Now(), vSecond, fmt.Sprintf("on %s: %v", nd.Name, err))
	}
	f.healed = time.Now()
}

// faultUnable (issue 19, defect 3): a node other than the holder (and the
// long-lived one) gets vip.priority=10 but IPv6 off on its link, so it
// cannot add the dual-stack VIP. Every failure ranks it unable for a
// back-off (10 s, doubling), so it may fail at most once per back-off
// (once it pulled the VIP away every few seconds, for ever). Then IPv6 is
// back and the node runs as before.
func (s *soak) faultUnable(f *soakRun) {
	var cands []*lab.Node
	for i, nd := range s.l.Nodes {
		if nd != f.h && i != soakKeep {
			cands = append(cands, nd)
		}
	}
	nd, hold := cands[s.rng.IntN(len(cands))], s.between(12*time.Second, 25*time.Second)
	s.inject(f, nd.Name)
	nd.NS.Sysctl(s.T, "net.ipv6.conf.eth0.disable_ipv6", "1")
	s.gracefulStop(nd)
	s.startVipd(nd, "vip.priority=10")
	sleepUntil(f.Start.Add(hold))
	failures := strings.Count(nd.Log.String(), "ranking this node unable")
	// At most one failure per back-off: the first, then one each time a
	// back-off (10 s, 20 s, ...) has run out within the hold.
	allowed := 1
	for b, sum := unableFirst, unableFirst; sum < hold; b, sum = 2*b, sum+2*b {
		allowed++
	}
	f.note = append(f.note, fmt.Sprintf("%s failed to hold %d times in %v (at most %d allowed)", nd.Name, failures, hold.Round(time.Second), allowed))
	if failures > allowed {
		s.violate(time.Now(), vUnable, fmt.Sprintf("%s failed to hold %d times in %v, want at most %d", nd.Name, failures, hold.Round(time.Second), allowed))
	}
	nd.NS.Sysctl(s.T, "net.ipv6.conf.eth0.disable_ipv6", "0")
	if own := fmt.Sprintf("%s%d", lab.Prefix6, 10+lab.IndexOf(s.l.Nodes, nd)+1); !strings.Contains(nd.NS.IP(s.T, "-6", "addr", "show", "dev", "eth0"), own+"/64") {
		nd.NS.IP(s.T, "addr", "add", own+"/64", "dev", "eth0", "nodad")
	}
	s.gracefulStop(nd)
	s.startVipd(nd)
	f.healed = time.Now()
}

// etcdHealthy waits (bounded) for every member to answer /health.
func (s *soak) EtcdHealthy(timeout time.Duration) bool {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if !slices.ContainsFunc(s.l.Etcd, func(m *lab.EtcdMember) bool { return !s.l.EtcdHealthy(m) }) {
			return true
		}
	}
	return false
}

// moveEtcdLeader is lab.moveEtcdLeader without the t.Fatal: a move that
// does not happen is noted, not the end of the soak.
func (s *soak) MoveEtcdLeader(to *lab.EtcdMember) error {
	id, _, err := s.l.EtcdStatus(to)
	if err != nil {
		return fmt.Errorf("status of etcd member %s: %v", to.Name, err)
	}
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		from := s.l.EtcdLeader()
		if from == to {
			return nil
		}
		if from != nil {
			resp, err := s.l.ClientHTTP().Post(from.ClientURL()+"/v3/maintenance/transfer-leadership", "application/json",
				strings.NewReader(`{"targetID":"`+id+`"}`))
			if err == nil {
				resp.Body.Close()
			}
		}
	}
	return fmt.Errorf("etcd member %s did not become raft leader within 10 s", to.Name)
}

// longestGap is the longest stretch without an answered probe around
// [from, to]: from the last answer sent before from, through every answer
// sent until to, and up to to.
func longestGap(p *lab.Prober, from, to time.Time) time.Duration {
	p.Mu.Lock()
	var sent []time.Time
	var before time.Time
	for _, a := range p.Answers {
		switch {
		case !a.Sent.After(from):
			if a.Sent.After(before) {
				before = a.Sent
			}
		case !a.Sent.After(to):
			sent = append(sent, a.Sent)
		}
	}
	p.Mu.Unlock()
	slices.SortFunc(sent, func(a, b time.Time) int { return a.Compare(b) })
	if before.IsZero() {
		before = from
	}
	var gap time.Duration
	last := before
	for _, t := range append(sent, to) {
		gap = max(gap, t.Sub(last))
		last = t
	}
	return gap
}

// --- the continuous checks ---------------------------------------------

// neighWatch follows one of the client's neighbour entries against the
// holder of that VIP.
type neighWatch struct {
	family string
	Vip    netip.Addr
	tr     *holderTrack
	Start  time.Time // of the current mismatch; zero if none
	want   string
	seen   []string
	v      *violation // reported for the current mismatch
}

// staleWatch checks the captured announcements of one VIP against the
// holder timeline.
type staleWatch struct {
	what                   string
	c                      *lab.Capture
	tr                     *holderTrack
	Done                   int        // frames checked
	last                   *violation // to group a burst of stale frames into one violation
	lastDetail, lastSender string
	lastT                  time.Time
	lastN                  int
	maxLead                time.Duration // the most a frame came before its sender's gain was seen
}

func (s *soak) runChecker() {
	defer s.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.quit:
			s.checkOverlaps()
			s.checkAnnouncements(true)
			return
		case <-tick.C:
			s.checkOverlaps()
			s.checkNeighbours()
			s.checkAnnouncements(false)
		}
	}
}

var overlapAtRE = regexp.MustCompile(` at ([0-9.]+)s `)

func (s *soak) checkOverlaps() {
	o := s.l.Overlaps()
	for _, msg := range o[min(s.overlapsN, len(o)):] {
		at := time.Now()
		if m := overlapAtRE.FindStringSubmatch(msg); m != nil {
			sec, _ := strconv.ParseFloat(m[1], 64)
			at = s.t0.Add(time.Duration(sec * float64(time.Second)))
		}
		s.violate(at, vOverlap, msg)
	}
	s.overlapsN = len(o)
}

func (s *soak) nodeNames() []string {
	var names []string
	for _, nd := range s.l.Nodes {
		names = append(names, nd.Name)
	}
	return names
}

func (s *soak) nodeByMAC(mac string) int {
	return slices.IndexFunc(s.l.Nodes, func(nd *lab.Node) bool { return nd.MAC == mac })
}

func (s *soak) macName(mac string) string {
	switch i := s.nodeByMAC(mac); {
	case mac == "":
		return "no MAC"
	case i >= 0:
		return mac + " = " + s.l.Nodes[i].Name
	}
	return mac + " = no lab node"
}

func (s *soak) checkNeighbours() {
	entries, err := neighbours(s.clientRT)
	if err != nil {
		s.neighErrs++
		return
	}
	now := time.Now()
	for _, w := range s.neigh {
		node, since, ok := w.tr.single()
		e := entries[w.Vip]
		if !ok || now.Sub(since) < soakNeighGrace || e.MAC == s.l.Nodes[node].MAC {
			if w.v != nil {
				s.Mu.Lock()
				w.v.detail += fmt.Sprintf("; it lasted %.2fs, seen: %s", now.Sub(w.Start).Seconds(), strings.Join(w.seen, ", "))
				s.Mu.Unlock()
			}
			w.Start, w.v, w.seen = time.Time{}, nil, nil
			continue
		}
		want := s.l.Nodes[node].MAC
		if w.Start.IsZero() || w.want != want {
			w.Start, w.want, w.v, w.seen = now, want, nil, nil
		}
		if got := fmt.Sprintf("%s %s", s.macName(e.MAC), nudName(e.state)); !slices.Contains(w.seen, got) {
			w.seen = append(w.seen, got)
		}
		if w.v == nil && now.Sub(w.Start) > soakNeighLimit {
			w.v = s.violate(w.Start, vNeigh, fmt.Sprintf("%s: the client's entry for %s was %s (%s) from %s while %s (%s) had held the VIP since %s",
				w.family, w.Vip, s.macName(e.MAC), nudName(e.state), rel(s.t0, w.Start), s.l.Nodes[node].Name, want, rel(s.t0, since)))
		}
	}
}

// checkAnnouncements flags every captured announcement of a VIP from a MAC
// whose node did not hold that VIP within soakAnnounceSlack of the frame.
// Frames younger than 300 ms wait: their address event may be on its way.
func (s *soak) checkAnnouncements(all bool) {
	cutoff := time.Now().Add(-300 * time.Millisecond)
	if all {
		cutoff = time.Now().Add(time.Hour)
	}
	for _, w := range s.stale {
		w.c.Mu.Lock()
		var frames []lab.Captured
		for _, fr := range w.c.Frames[w.Done:] {
			if fr.At.After(cutoff) {
				break
			}
			frames = append(frames, fr)
		}
		w.c.Mu.Unlock()
		w.Done += len(frames)
		for _, fr := range frames {
			node := s.nodeByMAC(fr.Sender)
			if node >= 0 {
				if ok, lead := w.tr.heldNear(node, fr.At, soakAnnounceSlack, soakEventLag); ok {
					w.maxLead = max(w.maxLead, lead)
					continue
				}
			}
			if w.last != nil && w.lastSender == fr.Sender && fr.At.Sub(w.lastT) < 2*time.Second {
				w.lastN++
				w.lastT = fr.At
				s.Mu.Lock()
				w.last.detail = fmt.Sprintf("%s (%d frames, the last at %s)", w.lastDetail, w.lastN, rel(s.t0, fr.At))
				s.Mu.Unlock()
				continue
			}
			w.lastDetail = fmt.Sprintf("%s for the VIP from %s at %s (%s); holders then: %s", w.what, s.macName(fr.Sender),
				rel(s.t0, fr.At), fr.At.Format("15:04:05.000"), w.tr.At(fr.At, s.nodeNames(), s.t0))
			w.last, w.lastSender, w.lastT, w.lastN = s.violate(fr.At, vStale, w.lastDetail), fr.Sender, fr.At, 1
		}
	}
}

// --- the end ----------------------------------------------------------------

// final stops every vipd gracefully and checks that nothing is left.
func (s *soak) final() {
	if s.WaitHolder(time.Minute, soakSettle) == nil {
		s.violate(time.Now(), vBound, "no settled holder at the end: "+s.holdersNow())
	}
	s.finish(time.Now())
	s.Mu.Lock()
	s.finalAt = time.Now()
	s.Mu.Unlock()
	s.say("final: stopping every vipd with SIGTERM")
	for _, nd := range s.l.Nodes {
		s.Signal(nd, syscall.SIGCONT)
		s.Signal(nd, syscall.SIGTERM)
	}
	for _, nd := range s.l.Nodes {
		if nd.Cmd != nil {
			s.checkStop(nd)
		}
	}
	time.Sleep(500 * time.Millisecond)
	s.stopWatchers()
	for _, ns := range append([]*lab.NS{s.l.Lan, s.l.Client}, nsOf(s.l.Nodes)...) {
		if left := s.vipsIn(ns); len(left) > 0 {
			s.violate(time.Now(), vLeftAddr, fmt.Sprintf("%v still in namespace %s after every vipd stopped", left, ns.Name))
		}
	}
	for _, p := range vipdProcesses(s.bin) {
		s.violate(time.Now(), vLeftProc, p)
	}
}

func nsOf(nodes []*lab.Node) []*lab.NS {
	var ns []*lab.NS
	for _, nd := range nodes {
		ns = append(ns, nd.NS)
	}
	return ns
}

func msMedMax(v []time.Duration) string {
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d / %d", lab.Median(v).Milliseconds(), slices.Max(v).Milliseconds())
}

// report prints the tables, appends them to $VIPD_SOAK_MD, and fails the
// test on any violation.
func (s *soak) report(dur time.Duration, wall time.Time) {
	s.Mu.Lock()
	defer s.Mu.Unlock()
	r := &lab.Report{}
	version, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	head := fmt.Sprintf("Soak: %v of faults, seed %d, vipd %s, %d faults, %s wall time; 3 nodes (vipd + etcd member each), dual-stack VIP, vip.ttl=2, vip.garp=%d every %v",
		dur, s.seed, strings.TrimSpace(string(version)), len(s.runs), time.Since(wall).Round(time.Second), soakGarp, soakGarpInterval)
	if w := soakWords(); len(w) > 0 {
		head += ", " + strings.Join(w, " ")
	}
	if s.aborted {
		head += "; ABORTED early (see the violations)"
	}
	fmt.Printf("\n%s\n", head)
	r.MD.WriteString("\n" + head + "\n")

	// Violations by the fault during which (or after which) they happened.
	attributed := map[string]int{}
	for _, v := range s.violations {
		attributed[s.phase(v.At)]++
	}
	var rows [][]string
	for i := range soakFaults {
		k := &soakFaults[i]
		var out4, out6, heal []time.Duration
		n, mid := 0, 0
		for _, f := range s.runs {
			if f.kind != k {
				continue
			}
			n++
			if f.midBurst {
				mid++
			}
			out4, out6, heal = append(out4, f.out4), append(out6, f.out6), append(heal, f.toHolder)
		}
		rows = append(rows, []string{k.Name, strconv.Itoa(n), strconv.Itoa(mid), msMedMax(out4), msMedMax(out6), msMedMax(heal), strconv.Itoa(attributed[k.Name])})
	}
	for _, p := range []string{"before the first fault", "final stop"} {
		if attributed[p] > 0 {
			rows = append(rows, []string{"(" + p + ")", "-", "-", "-", "-", "-", strconv.Itoa(attributed[p])})
		}
	}
	r.Table(fmt.Sprintf("Faults: the client-visible outage is the longest stretch without an answered probe (one every 10 ms per VIP) from the injection until the next fault, which waits for a settled holder that the client reaches; mid-burst counts injections within %v of the holder's gain", soakBurst),
		[]string{"fault", "injected", "mid-burst", "IPv4 outage median / max (ms)", "IPv6 outage median / max (ms)", "heal → one holder median / max (ms)", "violations"}, rows)

	byKind := map[string]int{}
	for _, v := range s.violations {
		byKind[v.kind]++
	}
	checks := map[string]string{
		vOverlap: "kernel address events from every node namespace, both VIPs",
		vNeigh:   fmt.Sprintf("IPv4 and IPv6 entries every 100 ms; wrong for > %v once the holder had held the VIP %v", soakNeighLimit, soakNeighGrace),
		vStale: fmt.Sprintf("gratuitous ARP / unsolicited NA captured at the client from a node that did not hold the VIP from %v before the frame to %v after it (its gain may be seen late)",
			soakAnnounceSlack, soakEventLag),
		vBound:    fmt.Sprintf("%v after a heal (%v after partitions and etcd faults), and before each fault", soakBound, soakEtcdBound),
		vExit:     "a vipd that exited by itself, or not with status 0 within 10 s of SIGTERM",
		vLeftAddr: "on the node right after each SIGTERM, and in every namespace after the final stop",
		vLeftProc: "processes running the vipd binary after the final stop",
		vSquat:    "no node other than the killed holder holds the IPv4 VIP while the squatter (the bridge's host) answers for it, every 50 ms",
		vSecond:   "a second vipd for the same group on a node exits 1 within 10 s, saying which pid holds the group",
		vUnable:   "failures to hold of the node that cannot add the IPv6 VIP, against its back-off (10 s, doubling)",
	}
	rows = nil
	for _, k := range soakViolationKinds {
		rows = append(rows, []string{k, strconv.Itoa(byKind[k]), checks[k]})
	}
	r.Table("Invariants (violations must be 0)", []string{"invariant", "violations", "checked"}, rows)

	rows = nil
	flatNote := ""
	for i, nd := range s.l.Nodes {
		var best *resSeries
		var bestRSS, bestHeap, bestG trend
		lives := 0
		maxRSS := 0.0 // over every process of the node, warm-up included
		for _, sr := range s.series {
			if sr.Node != i {
				continue
			}
			lives++
			for _, x := range sr.samples {
				maxRSS = max(maxRSS, float64(x.rss)/(1<<20))
			}
			tr := sr.trend(func(x resSample) (float64, bool) { return float64(x.rss) / (1 << 20), true })
			if best == nil || tr.span > bestRSS.span {
				best, bestRSS = sr, tr
				bestHeap = sr.trend(func(x resSample) (float64, bool) { return x.heapMB, x.heapMB >= 0 })
				bestG = sr.trend(func(x resSample) (float64, bool) { return float64(x.goroutines), x.goroutines >= 0 })
			}
		}
		row := []string{nd.Name, strconv.Itoa(lives), "-", fmt.Sprintf("%.1f", maxRSS), "-", "-", "-", "n/a", "n/a", "-"}
		if s.metrics {
			row[7], row[8] = "-", "-"
		}
		if best != nil && bestRSS.span > 0 {
			row[2] = bestRSS.span.Round(time.Second).String()
			row[4] = fmt.Sprintf("%.1f → %.1f", bestRSS.First, bestRSS.last)
			if bestHeap.span > 0 {
				row[5] = fmt.Sprintf("%.0f → %.0f", bestHeap.First, bestHeap.last)
				if bestHeap.ok {
					row[6] = fmt.Sprintf("%+.2f", bestHeap.perHour)
				}
			}
			if bestG.span > 0 {
				row[7] = fmt.Sprintf("%.0f → %.0f", bestG.First, bestG.last)
				if bestG.ok {
					row[8] = fmt.Sprintf("%+.1f", bestG.perHour)
				}
			}
			verdict := fmt.Sprintf("too short to judge (< %v)", soakFlatSpan)
			if bestHeap.ok && bestRSS.span >= soakFlatSpan {
				verdict = "yes"
				if bestHeap.perHour > soakFlatHeap || (bestG.ok && bestG.perHour > soakFlatGoroutine) {
					verdict = "NO"
				}
			}
			if maxRSS > soakMaxRSS {
				verdict = "NO (RSS)"
			}
			if strings.HasPrefix(verdict, "NO") {
				s.T.Errorf("%s's vipd: live heap %+.2f MiB/h (limit %.1f), goroutines %+.1f/h (limit %.0f), RSS up to %.1f MiB (limit %.0f)",
					nd.Name, bestHeap.perHour, soakFlatHeap, bestG.perHour, soakFlatGoroutine, maxRSS, soakMaxRSS)
			}
			row[9] = verdict
		}
		rows = append(rows, row)
	}
	if !s.metrics {
		flatNote = "; goroutines n/a: this vipd has no vip.metrics"
	}
	r.Table(fmt.Sprintf("Resources per node: the longest-lived vipd process (n1's is never restarted), sampled every %v, trend by least squares after a %v warm-up (flat: live heap ≤ %.0f MiB/h and ≤ %.0f goroutines/h over ≥ %v; RSS bounded: ≤ %.0f MiB at every sample of every process)%s",
		soakSample, soakWarmup, soakFlatHeap, soakFlatGoroutine, soakFlatSpan, soakMaxRSS, flatNote),
		[]string{"node", "vipd processes sampled", "longest trend", "RSS max (MiB)", "RSS first → last (MiB)", "live heap first → last (MB)", "live heap slope (MiB/h)", "goroutines first → last", "goroutines slope (/h)", "flat"}, rows)

	c := &s.churn
	c.Mu.Lock()
	var per []string
	for _, nd := range s.l.Nodes {
		per = append(per, fmt.Sprintf("%s %d", nd.Name, c.perNode[nd.Name]))
	}
	churnRow := []string{"unrelated address (198.51.100.x/32 + 2001:db8:5100::x/128) added / removed on the holder's eth0",
		fmt.Sprintf("%d / %d (%s); %d errors%s; %d steps without a single holder", c.adds, c.dels, strings.Join(per, ", "), c.errs,
			map[bool]string{true: " (last: " + c.lastErr + ")", false: ""}[c.errs > 0], c.skippedNoHold)}
	c.Mu.Unlock()
	s.arp.Mu.Lock()
	nARP := len(s.arp.Frames)
	s.arp.Mu.Unlock()
	s.na.Mu.Lock()
	nNA := len(s.na.Frames)
	s.na.Mu.Unlock()
	r.Table("Background", []string{"what", "count"}, [][]string{churnRow,
		{"announcements of the VIPs seen by the client (ARP / NA)", fmt.Sprintf("%d / %d", nARP, nNA)},
		{"the most an announcement came before its sender's address event was seen (IPv4 / IPv6; allowed: " + soakEventLag.String() + ")",
			fmt.Sprintf("%dms / %dms", s.stale[0].maxLead.Milliseconds(), s.stale[1].maxLead.Milliseconds())},
		{"neighbour table reads that failed", strconv.Itoa(s.neighErrs)}})

	if len(s.violations) > 0 {
		var sb strings.Builder
		fmt.Fprintf(&sb, "\nViolations (times on the soak's clock; see the logs file for vipd's own lines):\n\n")
		for _, v := range s.violations {
			fmt.Fprintf(&sb, "- %s, during %s: **%s**: %s\n", rel(s.t0, v.At), s.phase(v.At), v.kind, v.detail)
		}
		fmt.Print(sb.String())
		r.MD.WriteString(sb.String())
	}
	if path := os.Getenv("VIPD_SOAK_MD"); path != "" {
		if abs, err := r.Append(path, "TestSoak"); err != nil {
			s.T.Errorf("VIPD_SOAK_MD: %v", err)
		} else {
			fmt.Printf("\n(tables appended to %s)\n", abs)
		}
	}
	if len(s.violations) > 0 {
		s.T.Errorf("%d invariant violations (listed above; replay with VIPD_SOAK_SEED=%d)", len(s.violations), s.seed)
	}
}

// phase names the fault during (or after) which t fell. The caller holds
// s.mu.
func (s *soak) phase(t time.Time) string {
	if !s.finalAt.IsZero() && !t.Before(s.finalAt) {
		return "final stop"
	}
	name := "before the first fault"
	for _, f := range s.runs {
		if !f.Start.IsZero() && !t.Before(f.Start) {
			name = f.kind.Name
		}
	}
	return name
}

// writeLogs keeps everything for a post-mortem: the soak's events, the
// violations, the address histories and every vipd run's output.
func (s *soak) writeLogs() {
	path := os.Getenv("VIPD_SOAK_LOGS")
	if path == "" {
		path = filepath.Join(os.TempDir(), fmt.Sprintf("vipd-soak-%d.log", s.seed))
	}
	s.Mu.Lock()
	defer s.Mu.Unlock()
	var sb strings.Builder
	fmt.Fprintf(&sb, "# soak seed %d\n\n## events\n%s\n\n## violations\n", s.seed, strings.Join(s.Events, "\n"))
	for _, v := range s.violations {
		fmt.Fprintf(&sb, "%s %s: %s\n", rel(s.t0, v.At), v.kind, v.detail)
	}
	if s.l != nil {
		fmt.Fprintf(&sb, "\n## IPv4 VIP address events (monitor)\n%s\n\n## IPv6 VIP address events\n%s\n", s.l.Mon.History(), s.l.Mon6.History())
		for i, nd := range s.l.Nodes {
			fmt.Fprintf(&sb, "\n## vipd on %s\n%s", nd.Name, s.logs[i].String())
		}
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		fmt.Printf("soak: logs: %v\n", err)
		return
	}
	fmt.Printf("soak: logs in %s\n", path)
}

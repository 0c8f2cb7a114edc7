package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestMain first deletes namespaces that killed runs left behind.
func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// `make bench` runs these with -benchtime 1x: each run does its own trials,
// prints tables and appends them as Markdown to $VIPD_BENCH_MD (default
// benchMD). Nothing here asserts a time.

// benchMD is where the tables go without $VIPD_BENCH_MD: a path from the
// module root (a relative $VIPD_BENCH_MD is taken from there too). The
// measurements' history section is the end of that file.
const benchMD = "docs/measured.md"

// writeReport appends the run's tables to $VIPD_BENCH_MD or benchMD.
func writeReport(b *testing.B, r *lab.Report) {
	path := os.Getenv("VIPD_BENCH_MD")
	if path == "" {
		path = benchMD
	}
	abs, err := r.Append(path, b.Name())
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\n(tables appended to %s)\n", abs)
}

func benchTrials() int {
	if n, err := strconv.Atoi(os.Getenv("VIPD_BENCH_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 10
}

// stats is min / median / p95 / max in milliseconds.
func stats(vals []time.Duration) []string {
	if len(vals) == 0 {
		return []string{"0", "-", "-", "-", "-"}
	}
	v := slices.Clone(vals)
	slices.Sort(v)
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 0, 64) }
	p95 := v[min(len(v)-1, int(0.95*float64(len(v))))]
	return []string{strconv.Itoa(len(v)), ms(v[0]), ms(v[len(v)/2]), ms(p95), ms(v[len(v)-1])}
}

// A fault is one way to lose the holder. inject returns a function that
// undoes it once the VIP has moved (nil if there is nothing to undo).
type fault struct {
	Name    string
	prepare func(l *lab.Lab) *lab.Node // picks the holder to fault (nil: whoever holds)
	inject  func(l *lab.Lab, h *lab.Node) (undo func())
	Etcd    bool // only where etcd runs (not for keepalived)
	check   bool // runs the lab services and the daemons' health checks
}

var faults = []fault{
	{Name: "graceful (SIGTERM)", inject: func(l *lab.Lab, h *lab.Node) func() {
		l.Signal(h, syscall.SIGTERM)
		return func() { l.Wait(h, 10*time.Second); restart(l, h) }
	}},
	// The daemon dies, the node stays up. vipd's address goes with its
	// lifetime; keepalived's stays until someone removes it.
	{Name: "crash (SIGKILL)", inject: func(l *lab.Lab, h *lab.Node) func() {
		l.Signal(h, syscall.SIGKILL)
		return func() { l.Wait(h, 10*time.Second); clearVIP(l, h); restart(l, h) }
	}},
	// The node dies, as after a power loss: cut off first (so that nothing
	// it sends on the way down gets out), then the daemon killed. With
	// etcd on the nodes this also takes an etcd member away.
	{Name: "node loss (cut off + SIGKILL)", inject: func(l *lab.Lab, h *lab.Node) func() {
		l.Partition(h)
		l.Signal(h, syscall.SIGKILL)
		return func() { l.Wait(h, 10*time.Second); clearVIP(l, h); l.Heal(h); restart(l, h) }
	}},
	{Name: "freeze (SIGSTOP)", inject: func(l *lab.Lab, h *lab.Node) func() {
		l.Signal(h, syscall.SIGSTOP)
		return func() { l.Signal(h, syscall.SIGCONT); clearVIP(l, h) }
	}},
	{Name: "partition (cut off the LAN)", inject: func(l *lab.Lab, h *lab.Node) func() {
		l.Partition(h)
		return func() { l.Heal(h); clearVIP(l, h) }
	}},
	// Node loss again, with the holder's node hosting etcd's raft leader:
	// etcd elects a new leader, which extends every lease.
	{Name: "node loss, holder's node hosts etcd's leader", Etcd: true,
		prepare: (*lab.Lab).HolderWithEtcdLeader,
		inject: func(l *lab.Lab, h *lab.Node) func() {
			l.Partition(h)
			l.Signal(h, syscall.SIGKILL)
			return func() { l.Wait(h, 10*time.Second); clearVIP(l, h); l.Heal(h); restart(l, h) }
		}},
	serviceDies,
}

// serviceDies takes the holder's service away (health endpoint and echo
// together) while its daemon runs on: the outage includes the check's
// detection time, by design: fall failures, the first of them up to one
// interval after the fault. The service comes back when
// the VIP has moved; the VIP stays where it went (equal ranks), and the
// next trial waits until the old holder's check has risen again.
var serviceDies = fault{Name: "service dies (check fails)", check: true,
	prepare: func(l *lab.Lab) *lab.Node {
		l.WaitServicesUp(lab.ServiceCheckSettle)
		return l.Holder(3*lab.ElectBound, 0)
	},
	inject: func(l *lab.Lab, h *lab.Node) func() {
		h.Service.Down()
		return h.Service.Up
	}}

// startTargets starts what the client's probes reach on every node: the
// lab services for the service fault, the plain echo responders otherwise.
// Either way it is started before the daemons, so that every check passes
// from the first.
func startTargets(l *lab.Lab, f fault) {
	if f.check {
		l.StartServices()
		return
	}
	l.StartResponders()
}

// settleChecks lets the daemons just started run their checks up to rise
// before the first trial; serviceDies.prepare covers the later ones.
func settleChecks(l *lab.Lab, f fault) {
	if f.check {
		time.Sleep(lab.ServiceCheckSettle)
	}
}

// clearVIP waits for a vipd node's copy of the VIP to go by its lifetime;
// a keepalived node keeps it, so it is removed by hand there, as an
// operator would have to.
func clearVIP(l *lab.Lab, nd *lab.Node) {
	if nd.Restart == nil {
		l.WaitGone(nd, 10*time.Second)
		return
	}
	if nd.Cmd == nil && l.HasVIP(nd) {
		nd.NS.IP(l.T, "addr", "del", lab.VIP+"/32", "dev", "eth0")
	}
}

// restart starts the node's daemon again the way it was started.
func restart(l *lab.Lab, nd *lab.Node) {
	if nd.Restart != nil {
		nd.Restart()
		return
	}
	l.Start(nd)
}

// client is what the client namespace watches: probers for the IPv4 and
// IPv6 VIPs, and captures of the announcements (all but p may be nil).
type client struct {
	p, p6   *lab.Prober
	arp, na *lab.Capture
}

// result is what one trial measured.
type result struct {
	Outage, outage6 time.Duration // client-visible, IPv4 and IPv6
	moved           time.Duration // until the next node held the address
	garp, na        time.Duration // address added to the first announcement seen
}

// trial injects a fault on the current holder and measures the handover.
func trial(b *testing.B, l *lab.Lab, c client, f fault, settle time.Duration) (result, bool) {
	// Each trial is one fault on a healthy cluster: the member cut off in
	// the previous trial must have rejoined first.
	waitEtcdHealthy(b, l)
	h := l.Holder(3*lab.ElectBound, settle)
	if f.prepare != nil {
		h = f.prepare(l)
	}
	t0 := time.Now()
	undo := f.inject(l, h)
	defer undo()
	// Not holderOtherThan: a keepalived node that was killed or frozen
	// keeps the address, so there may be two holders for a while.
	var next *lab.Node
	lab.WaitFor(b, 3*lab.MoveBound, "another node to take the VIP", func() bool {
		held, _ := l.Mon.Current()
		for _, i := range held {
			if l.Nodes[i] != h {
				next = l.Nodes[i]
				return true
			}
		}
		return false
	})
	gained := l.Mon.GainedAt(lab.IndexOf(l.Nodes, next))
	r := result{moved: gained.Sub(t0)}
	// A trial whose new holder does not answer is recorded as failed; it
	// does not end the series.
	if !c.p.AnsweredBy(next.Name, t0, 5*time.Second) {
		fmt.Printf("%s: trial failed: %s holds the VIP but does not answer the client\n", b.Name(), next.Name)
		return r, false
	}
	out, ok := c.p.Outage(t0, h.Name)
	r.Outage = out
	if c.p6 != nil && !c.p6.AnsweredBy(next.Name, t0, 5*time.Second) {
		fmt.Printf("%s: trial failed: %s holds the IPv6 VIP but does not answer the client\n", b.Name(), next.Name)
		return r, false
	}
	if c.p6 != nil {
		out6, ok6 := c.p6.Outage(t0, h.Name)
		r.outage6, ok = out6, ok && ok6
	}
	// The frame and the netlink event are stamped by different goroutines:
	// the difference can come out a little below zero.
	if c.arp != nil {
		lab.WaitFor(b, 5*time.Second, "the takeover's gratuitous ARP", func() bool { return !c.arp.First(next.MAC, t0).IsZero() })
		r.garp = c.arp.First(next.MAC, t0).Sub(gained)
	}
	if c.na != nil {
		gained6 := l.Mon6.GainedAt(lab.IndexOf(l.Nodes, next))
		lab.WaitFor(b, 5*time.Second, "the takeover's neighbour advertisement", func() bool { return !c.na.First(next.MAC, t0).IsZero() })
		r.na = c.na.First(next.MAC, t0).Sub(gained6)
	}
	return r, ok
}

// waitEtcdHealthy waits until every etcd member answers its health check.
func waitEtcdHealthy(b testing.TB, l *lab.Lab) {
	lab.WaitFor(b, 30*time.Second, "every etcd member to be healthy", func() bool {
		for _, m := range l.Etcd {
			if !l.EtcdHealthy(m) {
				return false
			}
		}
		return true
	})
}

// series are the results of the trials of one fault.
type series struct {
	outs, outs6, moves, garps, nas []time.Duration
	failed                         int // trials that measured nothing
}

func measure(b *testing.B, l *lab.Lab, c client, f fault, trials int, settle time.Duration) series {
	var s series
	for i := 0; i < trials; i++ {
		// A real fault meets the holder's renewal cycle at any phase. The
		// holder a trial begins with often took the VIP in the previous
		// trial and is found settled exactly settle after that, which
		// would put every fault at the same phase; the trials spread it
		// evenly over a second instead.
		phase := time.Duration(i%10) * 100 * time.Millisecond
		r, ok := trial(b, l, c, f, settle+phase)
		if !ok {
			s.failed++
			continue
		}
		s.outs, s.outs6, s.moves = append(s.outs, r.Outage), append(s.outs6, r.outage6), append(s.moves, r.moved)
		s.garps, s.nas = append(s.garps, r.garp), append(s.nas, r.na)
	}
	return s
}

// row is one line of the outage table.
func row(daemon, fault string, s series, ipv6 bool, overlaps string) []string {
	v6 := "-"
	if ipv6 {
		v6 = stats(s.outs6)[2]
	}
	st := stats(s.outs)
	if s.failed > 0 {
		st[0] += fmt.Sprintf(" (+%d failed)", s.failed)
	}
	return append(append([]string{daemon, fault}, st...), v6, stats(s.moves)[2], overlaps)
}

// msStats is min / median / p95 / max with sub-millisecond precision.
func msStats(vals []time.Duration) []string {
	st := stats(vals)
	v := slices.Clone(vals)
	slices.Sort(v)
	if len(v) == 0 {
		return st
	}
	f := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }
	return []string{st[0], f(v[0]), f(v[len(v)/2]), f(v[min(len(v)-1, int(0.95*float64(len(v))))]), f(v[len(v)-1])}
}

type benchConfig struct {
	Name      string
	EtcdFlags []string
	words     []string
	noFence   bool // VIPD_TEST_NO_KERNEL_FENCE: the TTL rule, as before the kernel fence
}

// fastEtcd are the tuned etcd timers of the benchmark's second rows.
var fastEtcd = []string{"--heartbeat-interval=50", "--election-timeout=500"}

// benchWindow is the kernel-fenced window of the fenced rows: the
// shortest that keeps the VIP in place in steady state on this machine
// (docs/design.md, section 8a); BenchmarkEtcdDisturbance measures what it
// costs when etcd hiccups.
const benchWindow = "vip.window=400ms"

// BenchmarkFailover measures client-visible outages for each fault, for
// vipd (default etcd timers and tuned ones) and for keepalived in the same
// topology with the same prober.
func BenchmarkFailover(b *testing.B) {
	r := &lab.Report{}
	trials := benchTrials()
	vipdRuns := []benchConfig{
		{"vipd, vip.ttl=2, no kernel fence, etcd default timers", nil, []string{"vip.ttl=2"}, true},
		{"vipd, vip.ttl=2, no kernel fence, etcd --heartbeat-interval=50 --election-timeout=500", fastEtcd, []string{"vip.ttl=2"}, true},
		{"vipd, kernel fence, vip.ttl=2 " + benchWindow + ", etcd default timers", nil, []string{"vip.ttl=2", benchWindow}, false},
		{"vipd, kernel fence, vip.ttl=2 " + benchWindow + ", etcd --heartbeat-interval=50 --election-timeout=500", fastEtcd, []string{"vip.ttl=2", benchWindow}, false},
	}
	medians := map[string]map[string]time.Duration{} // config → fault → median
	var rows [][]string
	var garps, nas []time.Duration
	for _, cfg := range vipdRuns {
		medians[cfg.Name] = map[string]time.Duration{}
		for _, f := range faults {
			b.Run(cfg.Name+"/"+f.Name, func(b *testing.B) {
				if cfg.noFence {
					b.Setenv("VIPD_TEST_NO_KERNEL_FENCE", "1") // vipd inherits the environment
				}
				words := cfg.words
				if f.check {
					words = append(slices.Clone(words), lab.ServiceCheckWords...)
				}
				l := lab.NewWith(b, lab.Options{Nodes: 3, Cluster: true, DualStack: true, EtcdFlags: cfg.EtcdFlags, Args: words})
				startTargets(l, f)
				c := client{p: l.StartProberTo(lab.VIP), p6: l.StartProberTo(lab.VIP6), arp: lab.CaptureARP(b, l.Client), na: lab.CaptureNA(b, l.Client)}
				l.StartAll()
				settleChecks(l, f)
				s := measure(b, l, c, f, trials, time.Second)
				garps, nas = append(garps, s.garps...), append(nas, s.nas...)
				medians[cfg.Name][f.Name] = lab.Median(s.outs)
				rows = append(rows, row(cfg.Name, f.Name, s, true, strconv.Itoa(len(l.Overlaps()))))
				if f.check {
					// Handing over on a failed check is vipd's own path
					// (issue 10): it must keep the one-holder rule too.
					l.AssertNoOverlap()
				}
			})
		}
	}

	r.Table("vipd: address added (kernel event) to the first announcement received by the client, every vipd trial (ms)",
		[]string{"announcement", "n", "min", "median", "p95", "max"},
		[][]string{append([]string{"IPv4 gratuitous ARP"}, msStats(garps)...), append([]string{"IPv6 unsolicited NA"}, msStats(nas)...)})

	kaRows, kaMedians := keepalivedRuns(b, trials)
	rows = append(rows, kaRows...)
	r.Table(fmt.Sprintf("Client-visible outage, 3 nodes, a UDP probe to each VIP every 10 ms, %d trials each (ms); vipd runs a dual-stack VIP (192.0.2.100 + 2001:db8::100), keepalived IPv4 only; "+
		"%q: vip.check / track_script on %s every %v, fall %d, rise %d (the outage includes the detection, %v to %v)",
		trials, serviceDies.Name, lab.CheckURL, lab.ServiceCheckInterval, lab.ServiceCheckFall, lab.ServiceCheckRise, (lab.ServiceCheckFall-1)*lab.ServiceCheckInterval, lab.ServiceCheckFall*lab.ServiceCheckInterval),
		[]string{"daemon and timers", "fault", "n", "min", "median", "p95", "max", "IPv6 median", "median to next holder", "overlaps (two holders)"}, rows)

	var ratio [][]string
	for _, base := range []string{vipdRuns[0].Name, vipdRuns[2].Name, vipdRuns[3].Name} {
		for ka, m := range kaMedians {
			// Only where both lose the service: a keepalived node whose daemon
			// was killed or frozen keeps answering (with two holders), which is
			// no outage to compare with. keepalived has no etcd, so its node
			// loss is the comparison for both of vipd's.
			for _, pair := range [][2]fault{{faults[0], faults[0]}, {faults[2], faults[2]}, {faults[5], faults[2]}, {serviceDies, serviceDies}} {
				if km := m[pair[1].Name]; km > 0 && medians[base][pair[0].Name] > 0 {
					ratio = append(ratio, []string{base, pair[0].Name, ka + ", " + pair[1].Name,
						fmt.Sprintf("%.2f", float64(medians[base][pair[0].Name])/float64(km))})
				}
			}
		}
	}
	slices.SortStableFunc(ratio, func(a, b []string) int { return strings.Compare(a[1]+a[2], b[1]+b[2]) })
	r.Table("Median outage ratio, vipd / keepalived, same run",
		[]string{"vipd", "vipd fault", "keepalived and fault", "vipd / keepalived"}, ratio)
	writeReport(b, r)
}

// keepalivedRuns runs graceful, crash and partition against keepalived with
// its default advert_int 1 and with 0.3 (VRRPv3).
func keepalivedRuns(b *testing.B, trials int) ([][]string, map[string]map[string]time.Duration) {
	if _, err := exec.LookPath("keepalived"); err != nil {
		fmt.Println("keepalived not installed (apt-get install keepalived): comparison skipped")
		return nil, nil
	}
	curl, _ := exec.LookPath("curl")
	var rows [][]string
	medians := map[string]map[string]time.Duration{}
	for _, advert := range []string{"1", "0.3"} {
		name := "keepalived, advert_int " + advert
		medians[name] = map[string]time.Duration{}
		for _, f := range faults {
			if f.Etcd {
				continue
			}
			b.Run(name+"/"+f.Name, func(b *testing.B) {
				if f.check && curl == "" {
					b.Skip("curl not installed (apt-get install curl): keepalived's track_script uses it")
				}
				l := lab.NewWith(b, lab.Options{Nodes: 3, NoEtcd: true})
				startTargets(l, f)
				p := l.StartProberTo(lab.VIP)
				for _, nd := range l.Nodes {
					startKeepalived(l, nd, advert, f.check)
				}
				settleChecks(l, f)
				if f.Name == faults[4].Name {
					most := 0
					for i := 0; i < trials; i++ {
						most = max(most, keepalivedPartition(b, l))
					}
					rows = append(rows, []string{name, f.Name, strconv.Itoa(trials), "-", "-", "-", "-", "-", "-",
						fmt.Sprintf("%d (up to %d masters at once)", len(l.Mon.Overlaps()), most)})
					return
				}
				s := measure(b, l, client{p: p}, f, trials, 2*time.Second)
				medians[name][f.Name] = lab.Median(s.outs)
				rows = append(rows, row(name, f.Name, s, false, strconv.Itoa(len(l.Overlaps()))))
			})
		}
	}
	return rows, medians
}

// keepalivedPartition cuts the master off and counts the holders before
// healing. keepalived has no fencing: the cut-off master keeps the address.
func keepalivedPartition(b *testing.B, l *lab.Lab) int {
	h := l.Holder(3*lab.ElectBound, 2*time.Second)
	l.Partition(h)
	deadline := time.Now().Add(10 * time.Second)
	most := 1
	for time.Now().Before(deadline) && most < 2 {
		held, _ := l.Mon.Current()
		most = max(most, len(held))
		time.Sleep(20 * time.Millisecond)
	}
	l.Heal(h)
	return most
}

// startKeepalived runs keepalived (VRRP only) on the node with equal
// priorities, as a plain VRRP setup would. With check, the instance tracks
// the lab service's health endpoint with the service fault's interval,
// fall and rise: a tracked script without a weight puts the instance in
// FAULT while it fails, which gives up the address.
func startKeepalived(l *lab.Lab, nd *lab.Node, advert string, check bool) {
	dir := l.T.TempDir()
	version := "2"
	if strings.Contains(advert, ".") {
		version = "3" // sub-second adverts need VRRPv3
	}
	global := fmt.Sprintf("    router_id %s\n    vrrp_version %s\n    vrrp_garp_master_delay 1\n", nd.Name, version)
	var script, track string
	if check {
		global, script, track = global+keepalivedScriptDefs, keepalivedScript(l.T), keepalivedTrack
	}
	conf := fmt.Sprintf(`global_defs {
%s}
%svrrp_instance VI {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int %s
    virtual_ipaddress {
        %s/32 dev eth0
    }
%s}
`, global, script, advert, lab.VIP, track)
	confPath := filepath.Join(dir, "keepalived.conf")
	lab.WriteFile(l.T, confPath, conf)
	nd.Restart = func() { runKeepalived(l, nd, dir, confPath) }
	nd.Restart()
}

// Scripts run as root with script security on: keepalived then refuses a
// script that a non-root user could replace, and does not look for a
// keepalived_script user.
const (
	keepalivedScriptDefs = "    script_user root\n    enable_script_security\n"
	keepalivedTrack      = "    track_script {\n        chk_service\n    }\n"
)

// keepalivedScript is the vrrp_script block of the service check: curl
// fails on a refused connection and on any status but 2xx, like vip.check.
func keepalivedScript(t testing.TB) string {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("keepalived's check needs curl: %v", err)
	}
	sec := int(lab.ServiceCheckInterval.Seconds())
	return fmt.Sprintf(`vrrp_script chk_service {
    script "%s -fsS -m %d -o /dev/null %s"
    interval %d
    timeout %d
    fall %d
    rise %d
}
`, curl, sec, lab.CheckURL, sec, sec, lab.ServiceCheckFall, lab.ServiceCheckRise)
}

func runKeepalived(l *lab.Lab, nd *lab.Node, dir, conf string) {
	// A killed keepalived leaves its pid files, and its orphaned child may
	// linger as a zombie with the pid they name: keepalived would take
	// that for "daemon is already running".
	pids := []string{filepath.Join(dir, "k.pid"), filepath.Join(dir, "v.pid")}
	for _, p := range pids {
		os.Remove(p)
	}
	nd.Cmd = nd.NS.Command("keepalived", "--dont-fork", "--log-console", "--vrrp", "--use-file", conf,
		"--pid", pids[0], "--vrrp_pid", pids[1])
	nd.Log = &lab.SyncBuffer{}
	nd.Cmd.Stdout, nd.Cmd.Stderr = nd.Log, nd.Log
	if err := nd.Cmd.Start(); err != nil {
		l.T.Fatalf("start keepalived on %s: %v", nd.Name, err)
	}
	nd.Exit = make(chan error, 1)
	go func(cmd *exec.Cmd, exit chan error) { exit <- cmd.Wait() }(nd.Cmd, nd.Exit)
}

// BenchmarkIdle measures the binary and an idle leader and follower: RSS,
// CPU time and the requests each sends to etcd, over VIPD_BENCH_IDLE
// (default 30s).
func BenchmarkIdle(b *testing.B) {
	r := &lab.Report{}
	bin, _ := lab.Binaries(b)
	st, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	idle := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv("VIPD_BENCH_IDLE")); err == nil {
		idle = d
	}

	l := lab.New(b, 2, "vip.ttl=2")
	l.StartAll()
	leader, follower := l.HolderAndOther()
	cpu0 := map[*lab.Node]time.Duration{leader: cpuTime(b, leader), follower: cpuTime(b, follower)}
	msgs0 := etcdMessages(b, l)
	time.Sleep(idle)
	msgs := etcdMessages(b, l) - msgs0

	rows := [][]string{{"binary size, stripped, CGO_ENABLED=0", fmt.Sprintf("%.1f MiB", float64(st.Size())/(1<<20))}}
	for _, nd := range []*lab.Node{leader, follower} {
		role := "leader"
		if nd == follower {
			role = "follower"
		}
		used := cpuTime(b, nd) - cpu0[nd]
		rows = append(rows,
			[]string{role + " RSS", fmt.Sprintf("%.1f MiB", float64(lab.RSS(b, nd))/(1<<20))},
			[]string{role + " CPU", fmt.Sprintf("%.2f%% (%.1f s per hour)", 100*used.Seconds()/idle.Seconds(), used.Seconds()*3600/idle.Seconds())})
	}
	rows = append(rows, []string{"etcd requests per node", fmt.Sprintf("%.1f per second", msgs/idle.Seconds()/2)})
	r.Table(fmt.Sprintf("Resources, idle %v, vip.ttl=2", idle), []string{"measure", "value"}, rows)
	writeReport(b, r)
}

// etcdMessages is the number of gRPC messages etcd has received, from its
// /metrics.
func etcdMessages(b testing.TB, l *lab.Lab) float64 {
	resp, err := l.ClientHTTP().Get(l.Etcd[0].ClientURL() + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "grpc_server_msg_received_total{") {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// cpuTime is user+system time of the node's vipd, from /proc/PID/stat.
func cpuTime(b testing.TB, nd *lab.Node) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", nd.Cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

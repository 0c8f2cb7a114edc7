// Command vipd keeps one shared IP address on exactly one node of a cluster,
// elected through an etcd lease, announced with gratuitous ARP.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// version and commit are stamped by the Makefile (-X main.version=...
// -X main.commit=...): version from the file VERSION, commit from git
// (12 hex digits, "-dirty" when the tree had uncommitted changes, or
// "unknown"). A plain `go build` leaves them "dev" and "unknown".
var (
	version = "dev"
	commit  = "unknown"
)

// licence is vipd's licence (LICENSE, NOTICE).
const licence = "Apache-2.0"

// release is the one string that names this build in the log, the state
// file, the metrics and the health checks' User-Agent: the version and,
// when known, the commit as semver build metadata ("0.1.0+abc123def456").
func release() string {
	if commit == "" || commit == "unknown" {
		return version
	}
	return version + "+" + commit
}

// versionLine is what `vipd -version` prints.
func versionLine() string {
	return fmt.Sprintf("vipd %s, commit %s, %s %s/%s, licence %s", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, licence)
}

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1 // could not start at all (no rtnetlink, no etcd client)
	exitUsage   = 2 // bad input: flags or configuration
)

func main() {
	crashBySignal()
	os.Exit(vipd(os.Args[1:], os.Stdout, os.Stderr))
}

// crashBySignal makes a Go panic or fatal runtime error end the process
// by SIGABRT, after the same traceback, instead of with the runtime's
// exit status 2: 2 is vipd's status for bad input, which supervisors are
// told not to restart (docs/deploying.md, "Supervisors"), while a crash
// must be restarted at once so that the new vipd resumes the lease.
func crashBySignal() { debug.SetTraceback("crash") }

func vipd(argv []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cmdlinePath := fs.String("cmdline", "/proc/cmdline", "read vip.* words from `PATH` (\"none\": no kernel command line)")
	check := fs.Bool("check", false, "validate the configuration, print it as vip.key=value lines and exit")
	status := fs.Bool("status", false, "show who holds the VIP and who is next, and this node's state file, and exit (0: there is a holder); with no settings, ask each vipd running here")
	asJSON := fs.Bool("json", false, "with -status: print one JSON object")
	showVersion := fs.Bool("version", false, "print the version and exit")
	drain := fs.Bool("drain", false, "mark node NAME (default: this node) drained: it ranks below every undrained node, a drained holder hands the VIP over at once; the mark stays in etcd until -undrain")
	undrain := fs.Bool("undrain", false, "remove node NAME's (default: this node's) drain mark")
	move := fs.Bool("move", false, "hand the VIP over now to node NAME (default: the next in takeover order), gracefully, and say when it holds it")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: vipd [-cmdline PATH] [-check | -status [-json] | -move [NAME] | -drain [NAME] | -undrain [NAME]] [-version] [vip.key=value ...]\n")
		fs.PrintDefaults()
		printSettings(stderr)
	}
	if err := fs.Parse(argv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *asJSON && !*status {
		fmt.Fprintf(stderr, "vipd: -json goes with -status\n")
		return exitUsage
	}
	if n := countTrue(*check, *status, *drain, *undrain, *move); n > 1 {
		fmt.Fprintf(stderr, "vipd: -check, -status, -move, -drain and -undrain go one at a time\n")
		return exitUsage
	}
	words, name, err := splitName(fs.Args(), *drain || *undrain || *move)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitUsage
	}
	if *showVersion {
		fmt.Fprintln(stdout, versionLine())
		return exitOK
	}

	// A SIGHUP while the configuration loads (a config device can take
	// its time) is kept for the loop, not the default end of the process.
	signals := make(chan os.Signal, 1)
	if !*check && !*status && !*drain && !*undrain && !*move {
		signal.Notify(signals, syscall.SIGHUP)
	}

	// -status, -move, -drain and -undrain with no settings ask the vipd
	// running here (statussock.go): what it uses is what the operator
	// means.
	explicit := len(words) > 0
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "cmdline" })
	local := !explicit && (*status || *drain || *undrain || *move)
	if local {
		verb := "status"
		switch {
		case *drain:
			verb = "drain"
		case *undrain:
			verb = "undrain"
		case *move:
			verb = "move"
		}
		if code, ok := askRunning(verb, name, *asJSON, stdout, stderr); ok {
			return code
		}
	}

	cmdline, err := readCmdline(*cmdlinePath)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitUsage
	}
	st, err := loadSettings(words, cmdline)
	if err != nil {
		if local {
			err = fmt.Errorf("no vipd answers in %s, and no configuration: %w", runDir, err)
		}
		return failConfig(stderr, st.log, err)
	}
	if *check {
		for _, w := range st.cfg.WordsWithSources(st.sources) {
			fmt.Fprintln(stdout, w)
		}
		fmt.Fprintf(stdout, "# state file: %s\n", statePath(st.cfg.Key))
		fmt.Fprintf(stdout, "%s%s\n", checkFenceLine, fenceAvailable(st.cfg))
		return exitOK
	}
	if *status {
		return runStatus(st, *asJSON, stdout, stderr)
	}
	if *drain || *undrain {
		return runDrain(st, name, *drain, stdout, stderr)
	}
	if *move {
		return runMove(st, name, stdout, stderr)
	}
	return serve(st, signals, stderr)
}

// askRunning has the vipd running on this node do verb (status, drain,
// undrain, move) through its status socket; false when none answers.
func askRunning(verb, name string, asJSON bool, stdout, stderr io.Writer) (int, bool) {
	if verb == "status" {
		return runLocalStatus(statusSockets(), asJSON, stdout, stderr)
	}
	return runLocal(statusSockets(), strings.TrimSpace(verb+" "+name), stdout, stderr)
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// splitName takes the NAME of -move, -drain and -undrain (a word without "=")
// out of the settings words.
func splitName(args []string, takesName bool) (words []string, name string, err error) {
	for _, a := range args {
		switch {
		case strings.Contains(a, "="):
			words = append(words, a)
		case !takesName:
			return nil, "", fmt.Errorf("%q: not a vip.key=value word", a)
		case name != "":
			return nil, "", fmt.Errorf("%q: one NAME at most (%q given already)", a, name)
		default:
			if err := validName(a); err != nil {
				return nil, "", fmt.Errorf("NAME %q: %v", a, err)
			}
			name = a
		}
	}
	return words, name, nil
}

// printSettings lists every vip.* key with its default and meaning, for -h.
func printSettings(w io.Writer) {
	fmt.Fprintf(w, "\nsettings: vip.key=value words, from arguments, the kernel command line and vip.config (in that precedence)\n")
	for _, s := range settings {
		def := s.def
		switch {
		case s.required:
			def = "required"
		case s.defFunc != nil:
			def = "see meaning"
		case def == "":
			def = "empty"
		}
		fmt.Fprintf(w, "  %-20s %-12s %s\n", s.key, def, s.usage)
	}
}

// setup is everything vipd runs with, from every source.
type setup struct {
	cfg      Config
	sources  map[string]string // where each setting came from, for -check
	tls      *tls.Config       // etcd client TLS; nil for plain http
	checkTLS *tls.Config       // health check TLS; nil without an https check
	log      *logger           // set as soon as vip.log is known
}

// loadSettings reads the config source first (arguments and the kernel
// command line override what it says, TLS paths included), then the TLS
// files. A *configError is bad input; anything else is runtime trouble.
func loadSettings(args, cmdline []string) (setup, error) {
	var st setup
	boot, err := bootstrapConfig(args, cmdline)
	if err != nil {
		return st, err
	}
	if st.log, err = openLogger(boot.Log, os.Stderr); err != nil {
		return st, &configError{Key: "vip.log", Value: boot.Log, Reason: err.Error()}
	}
	hostname, _ := os.Hostname() // the parser ignores names many hosts share

	var loaded loadedConfig
	if boot.ConfigSource != "" {
		spec, _ := parseConfigSpec(boot.ConfigSource) // validated by bootstrapConfig
		effectiveTLS := func(fileWords []string) map[string]string {
			c, _, err := parseConfigSources(args, cmdline, fileWords, hostname)
			if err != nil {
				return nil // reported by the full parse below
			}
			return tlsPaths(c)
		}
		if loaded, err = loadConfig(spec, boot.ConfigTimeout, st.log, effectiveTLS); err != nil {
			return st, err
		}
	}
	if st.cfg, st.sources, err = parseConfigSources(args, cmdline, loaded.words, hostname); err != nil {
		return st, err
	}
	if st.cfg.Log != boot.Log { // set in the config file
		if st.log, err = openLogger(st.cfg.Log, os.Stderr); err != nil {
			return st, &configError{Key: "vip.log", Value: st.cfg.Log, Reason: err.Error()}
		}
	}
	files := loaded.files
	if boot.ConfigSource == "" {
		if files, err = readTLSFiles(st.cfg); err != nil {
			return st, err
		}
	}
	if st.tls, err = etcdTLS(st.cfg.etcdConfig, files, st.log); err != nil {
		return st, err
	}
	st.checkTLS, err = checkTLS(st.cfg.healthConfig, files)
	return st, err
}

// failConfig reports a configuration that could not be loaded: bad input
// exits 2; a device that never appeared or would not mount exits 1.
func failConfig(stderr io.Writer, log *logger, err error) int {
	var ce *configError
	if errors.As(err, &ce) || log == nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitUsage
	}
	log.fail(stderr, "%v", err)
	return exitRuntime
}

// readCmdline reads the kernel command line words. A missing /proc (a very
// early init) is not an error; a file named with -cmdline that cannot be
// read is.
func readCmdline(path string) ([]string, error) {
	if path == "none" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && path == "/proc/cmdline" {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("-cmdline %s: %w", path, err)
	}
	return splitCmdline(string(b)), nil
}

func serve(st setup, signals chan os.Signal, stderr io.Writer) int {
	cfg, tlsCfg, log := st.cfg, st.tls, st.log
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	rt, err := dialRTNL(0)
	if err != nil {
		log.fail(stderr, "%v", err)
		return exitRuntime
	}
	defer rt.Close()
	watch, err := watchRTNL(0)
	if err != nil {
		log.fail(stderr, "%v", err)
		return exitRuntime
	}
	// Bound while vipd still may: a port below 1024 needs
	// CAP_NET_BIND_SERVICE, which the drop takes away.
	var metricsLn *metricsListener
	if cfg.Metrics != "" {
		metricsLn = listenMetrics(cfg.Metrics)
	}
	// The kernel fence is loaded while vipd still has CAP_BPF; a SIGHUP's
	// image adopts the one handed over instead.
	kf := startFence(rt, cfg.Addresses, cfg.Key, log)
	if f, ok := kf.(*kernelFence); ok {
		defer f.stop(log) // a graceful stop removes the filter; an exec keeps it
	}
	dropPrivileges(cfg.ConfigSource, log) // the config partition is read and unmounted by now

	// The lock comes before etcd or the address is touched, and after the
	// drop: a /run/vipd that vipd may not write is no place for it (nor
	// for the state file).
	lock, lockErr := lockGroup(lockPath(cfg.Key))
	var held *heldError
	switch {
	case errors.As(lockErr, &held):
		log.fail(stderr, "%v", lockErr)
		return exitRuntime
	case lockErr != nil:
		log.warnf("no lock against a second vipd for this group: %v (running on; start no other vipd for %s on this node)", lockErr, cfg.Key)
	}
	defer lock.release()

	// The client does not connect here: an unreachable etcd is waited for
	// by the lease loop, with logs.
	window := cfg.TTL
	if _, fenced := kf.(*kernelFence); fenced {
		window = cmp.Or(cfg.Window, cfg.TTL)
	}
	cli, err := newEtcdClient(cfg.Etcd, tlsCfg, etcdDeadAfter(window))
	if err != nil {
		log.fail(stderr, "etcd client for %s: %v", strings.Join(cfg.Etcd, ","), err)
		return exitRuntime
	}
	defer cli.Close()

	// The status socket only with the lock: without it, a socket at the
	// path may be another vipd's.
	if lockErr == nil {
		if ss := listenStatus(cfg, cli, tlsCfg, log); ss != nil {
			ctx, stopStatus := context.WithCancel(context.Background())
			defer stopStatus()
			go ss.serve(ctx)
		}
	}

	deps := realDeps(rt, cli, tlsCfg, log)
	deps.kfence, deps.beforeSend = kf, stopBeforeSend(log)
	kfHand, _ := kf.(*kernelFence)
	var nextFenced atomic.Bool // the new image's -check named the kernel fence
	deps.checkConfig = func() error {
		fenced, err := checkReload()
		nextFenced.Store(fenced)
		return err
	}
	deps.reexec = func(r stateRecord) error {
		if kfHand != nil && kfHand.inForce() && !nextFenced.Load() {
			return handOffUnfenced(r, kfHand, func() error { return reexec(r, lock, metricsLn) }, log)
		}
		return reexec(r, lock, metricsLn, kfHand)
	}
	n := newNode(cfg, log, deps)
	n.rs.sf = &stateFile{path: statePath(cfg.Key), log: log}
	n.boot.load(bootMarkerPath(cfg.Key))
	if n.rs.resume = settleEarlier(cfg, rt, cli, log); n.rs.resume != nil {
		n.rs.resuming = true
	}
	chk, err := newChecker(cfg.healthConfig, st.checkTLS)
	if err != nil {
		log.fail(stderr, "%v", err)
		return exitRuntime
	}
	if n.rs.resume != nil {
		n.stand.healthy = n.rs.resume.healthy || chk == nil
		n.met.ranked(n.stand.rank())
		if chk != nil {
			chk.carry(n.rs.resume.healthy)
		}
	}
	if chk != nil {
		ctx, stopCheck := context.WithCancel(context.Background())
		defer stopCheck()
		go chk.run(ctx, n.in.health)
	}
	n.met.loopRan() // the loop starts below: /healthz counts from here, not from the image's start
	if cfg.Metrics != "" {
		ctx, stopMetrics := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); serveMetrics(ctx, metricsLn, cfg.Metrics, n.met, log) }()
		defer func() { stopMetrics(); <-done }() // its connections closed, their goroutines ended
	}
	drainCtx, stopDrain := context.WithCancel(context.Background())
	defer stopDrain()
	go watchMarks(drainCtx, cli, drainPrefix(cfg.Key), n.in.drain)
	go watchMarks(drainCtx, cli, movePrefix(cfg.Key), n.in.move)
	go keepWatching(watch, n.in.rtnl)
	n.run(signals)
	log.infof("stopped")
	return exitOK
}

// newEtcdClient is the etcd client of the daemon and of -status.
//
// gRPC raises the keepalive interval to at least 10 s, but it also sets
// the keepalive timeout as TCP_USER_TIMEOUT: a connection to a member
// whose node vanished is dropped one second after a request to it goes
// unanswered, instead of taking a third of our requests (round robin)
// with it for much longer.
//
// gRPC's own reconnect backoff grows to 120 s: after an etcd outage (or a
// node that boots before its etcd exists) vipd would find etcd back up to
// two minutes late. It is capped at a second: a failed connection attempt
// costs one SYN.
//
// deadAfter is that timeout: a second, or less for a node fenced in the
// kernel with a short window (etcdDeadAfter), whose failover must not wait
// a second for a vanished member's connection to be dropped.
func newEtcdClient(endpoints []string, tlsCfg *tls.Config, deadAfter time.Duration) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		TLS:                  tlsCfg,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: deadAfter,
		DialOptions:          []grpc.DialOption{grpc.WithConnectParams(etcdReconnect())},
		Logger:               zap.NewNop(),
	})
}

// etcdDeadAfter is how long a request may go unanswered at the TCP level
// before its connection is dropped: half the failure-detection window, at
// least 300 ms (below that one lost segment and its retransmission would
// drop a healthy connection), at most a second.
func etcdDeadAfter(window time.Duration) time.Duration {
	return min(max(window/2, 300*time.Millisecond), time.Second)
}

// etcdReconnect is how gRPC retries a connection to an etcd endpoint.
func etcdReconnect() grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: 5 * time.Second,
	}
}

// keepWatching feeds kernel events to the node for as long as vipd runs; if
// the subscription fails it is opened again and the node told to resync.
func keepWatching(w *rtnlWatch, out chan<- rtnlEvent) {
	for {
		w.run(out) // returns after reporting its error
		w.Close()
		for {
			time.Sleep(time.Second)
			var err error
			if w, err = watchRTNL(0); err == nil {
				break
			}
		}
		out <- rtnlEvent{resync: true}
	}
}

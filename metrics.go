package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// metrics is what the node publishes for /metrics and /healthz. The
// node's loop and its term's goroutines write it; the HTTP handler reads
// it. Every value is an atomic, so that a slow scrape holds nothing the
// loop waits for, and every label set is fixed, so that nothing grows with
// time. A nil *metrics (a term started by a test) records nothing.
type metrics struct {
	// group is vip.key: the group label of vipd's own families, so that
	// one query (sum by (group) (vipd_leader)) covers a group's nodes
	// and a process that served several groups later would still
	// expose one series per group.
	group         string
	state         atomic.Int32 // a nodeState
	transitions   [nStates][nStates]atomic.Uint64
	stepdowns     [nStepReasons]atomic.Uint64
	announcements [2]atomic.Uint64 // IPv4, IPv6
	renewals      histogram
	etcdErrors    [nEtcdOps]atomic.Uint64
	healthy       atomic.Bool  // the check's verdict, as published in the rank
	drained       atomic.Bool  // an operator's drain mark, as published in the rank
	priority      atomic.Int64 // vip.priority, as published in the rank
	// loopMark is when the node's loop last finished handling an event,
	// as time since imageStart (monotonic: a step of the wall clock
	// neither fails nor hides a wedged loop); 0 before its first.
	loopMark atomic.Int64
}

// newMetrics is a group's metrics before anything has happened: healthy,
// as a node without a check is (the node sets its own verdict at once).
func newMetrics(group string) *metrics {
	m := &metrics{group: group}
	m.healthy.Store(true)
	return m
}

// imageStart is when this process image started: package variables are
// set before main, in every image, so a SIGHUP re-exec (same pid, counters
// back at 0) starts it afresh. process_start_time_seconds is this, not the
// pid's start in /proc: it must say when the counters last started from 0,
// which a re-exec does and the pid's start time does not show.
var imageStart = time.Now()

// nStates is the number of nodeState values.
const nStates = int(stateBootstrap) + 1

// transition records a change of the node's state.
func (m *metrics) transition(from, to nodeState) {
	if m == nil || from == to {
		return
	}
	m.transitions[from][to].Add(1)
	m.state.Store(int32(to))
}

// steppedDown records why the node gave up the VIP or the election it had
// won.
func (m *metrics) steppedDown(r stepReason) {
	if m != nil {
		m.stepdowns[r].Add(1)
	}
}

// announced records one announcement of ip: a gratuitous ARP (its request
// and reply forms) for IPv4, an unsolicited neighbour advertisement for
// IPv6.
func (m *metrics) announced(ip netip.Addr) {
	if m == nil {
		return
	}
	i := 0
	if ip.Is6() {
		i = 1
	}
	m.announcements[i].Add(1)
}

// renewed records the round trip of one answered lease renewal.
func (m *metrics) renewed(d time.Duration) {
	if m != nil {
		m.renewals.observe(d)
	}
}

// ranked records the rank the node publishes: the check's verdict, the
// drain mark and vip.priority.
func (m *metrics) ranked(r rank) {
	if m != nil {
		m.healthy.Store(r.healthy)
		m.drained.Store(r.drained)
		m.priority.Store(int64(r.priority))
	}
}

// loopRan marks the node's loop alive now (/healthz).
func (m *metrics) loopRan() {
	if m != nil {
		m.loopMark.Store(int64(time.Since(imageStart)))
	}
}

// loopAge is how long ago the loop last marked itself alive; before its
// first mark, how long ago the image started.
func (m *metrics) loopAge() time.Duration {
	return time.Since(imageStart) - time.Duration(m.loopMark.Load())
}

// etcdFailed records a failed etcd request.
func (m *metrics) etcdFailed(op etcdOp) {
	if m != nil {
		m.etcdErrors[op].Add(1)
	}
}

// stepReason is why a node stepped down: the label of
// vipd_stepdowns_total. The sentinel errors (elect.go, node.go) carry
// details that would make a label without bound; these do not.
type stepReason int

const (
	stepDeadline     stepReason = iota // the renewal or heartbeat was not acknowledged in time
	stepLeaseExpired                   // etcd expired the lease
	stepKeyGone                        // the election key was removed
	stepOutranked                      // won the campaign, stepped aside for a better rank
	stepClaimFailed                    // won the campaign, but the claim failed
	stepStalled                        // setting the address returned too late
	stepAddFailed                      // the address could not be added or put back
	stepLinkDown                       // the interface went down or away
	stepUnhealthy                      // handed over: the health check failed here
	stepPriority                       // handed over to a higher vip.priority
	stepDrained                        // handed over: an operator drained this node (vipd -drain)
	stepMoved                          // handed over: an operator moved the VIP (vipd -move)
	stepBootEnded                      // a bootstrap hold ended: etcd answered and this node was not elected in time, or another host claimed the VIP
	stepStop                           // stopped by a signal
	stepForeign                        // won the campaign, stepped aside: another host kept answering for the VIP
	stepOther                          // none of the above: a bug if it ever counts
	nStepReasons
)

func (r stepReason) String() string {
	return [...]string{"deadline", "lease_expired", "key_gone", "outranked", "claim_failed", "stalled",
		"add_failed", "link_down", "unhealthy", "priority", "drained", "moved", "bootstrap_ended", "stop", "foreign", "other"}[r]
}

// stepReasonOf maps a step-down error to its reason. The deadline comes
// first: it is what a node that lost etcd sees, whatever else follows.
func stepReasonOf(err error) stepReason {
	for _, c := range []struct {
		target error
		r      stepReason
	}{
		{errDeadline, stepDeadline},
		{errLeaseExpired, stepLeaseExpired},
		{errKeyGone, stepKeyGone},
		{errOutranked, stepOutranked},
		{errClaim, stepClaimFailed},
		{errSession, stepClaimFailed},
		{errStalled, stepStalled},
		{errAddFailed, stepAddFailed},
		{errLinkDown, stepLinkDown},
		{errLinkGone, stepLinkDown},
		{errFenceLost, stepLinkDown},
		{errForeign, stepForeign},
		{errBootEnded, stepBootEnded},
		{errBootYield, stepBootEnded},
	} {
		if errors.Is(err, c.target) {
			return c.r
		}
	}
	return stepOther
}

// handoverReason is why a node with rank own hands over to one with rank
// to, in the order the ranks are compared (rank.go).
func handoverReason(own, to rank) stepReason {
	switch {
	case own.drained && !to.drained:
		return stepDrained
	case !own.healthy && to.healthy:
		return stepUnhealthy
	case to.moved && !own.moved:
		return stepMoved
	}
	return stepPriority
}

// etcdOp is the request that failed: the label of vipd_etcd_errors_total.
type etcdOp int

const (
	opGrant     etcdOp = iota // a new term's lease
	opRenew                   // a lease renewal
	opHeartbeat               // the holder's heartbeat
	opCampaign                // the campaign (the election library's requests)
	opClaim                   // reading the candidates and claiming the key
	opRead                    // a candidate's look at the holder, the rivals' list
	opWrite                   // the rank, a stale holder's key, the release mark
	opRevoke                  // giving the lease back
	nEtcdOps
)

func (o etcdOp) String() string {
	return [...]string{"grant", "renew", "heartbeat", "campaign", "claim", "read", "write", "revoke"}[o]
}

// renewalBounds are the upper bounds of the renewal histogram's buckets: a
// LAN etcd answers in a millisecond or two; the top ones are renewals that
// came close to costing the address (at vip.ttl=2 a leader renews every
// 500 ms).
func renewalBounds() [nBounds]time.Duration {
	ms := time.Millisecond
	return [...]time.Duration{ms, 5 * ms / 2, 5 * ms, 10 * ms, 25 * ms, 50 * ms, 100 * ms, 250 * ms, 500 * ms, time.Second, 5 * time.Second / 2}
}

// nBounds is the number of renewalBounds.
const nBounds = 11

// histogram counts observations per bucket (not cumulative: one Add per
// observation), the last bucket being above every bound. The exposition
// sums them up and derives the count from the same reads, so that +Inf
// and _count agree however the scrape interleaves with observe.
type histogram struct {
	counts [nBounds + 1]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for _, b := range renewalBounds() {
		if d <= b {
			break
		}
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// serveMetrics serves /metrics (the Prometheus text format) and /healthz
// on addr until ctx ends, starting with ln when it is there (bound before
// the privileges were dropped: listenMetrics). It returns once every
// connection it took is closed and its goroutine has ended: serve waits
// for that at a stop. A SIGHUP re-exec needs no such wait: the exec ends
// every goroutine and closes every connection (close-on-exec), and only
// the listener's duplicate (inherit) crosses to the new image.
// Both the format and the bit of HTTP/1.1 a scrape needs (one GET, then
// close) are written directly: net/http's server alone would add half a
// MiB to a binary that must stay under 14 MiB, and a client library more.
// A listen failure (the address is not on this node yet, early at boot) is
// retried, and logged once.
func serveMetrics(ctx context.Context, ln *metricsListener, addr string, m *metrics, log *logger) {
	s := newMetricsServer(m, log, scrapeTimeout)
	defer s.conns.Wait()
	logged := false
	for ctx.Err() == nil {
		if ln == nil {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				if !logged {
					log.warnf("vip.metrics=%s: %v (retrying every 5 s)", addr, err)
					logged = true
				}
				sleepCtx(ctx, 5*time.Second)
				continue
			}
			ln = &metricsListener{Listener: l, addr: addr}
		}
		log.infof("serving metrics on http://%s/metrics", ln.Addr())
		s.acceptAll(ctx, ln)
		ln.Close()
		ln = nil
		if ctx.Err() == nil {
			// Out of file descriptors, say: not a loop that spins.
			log.warnf("vip.metrics=%s: accept failed; listening again in 5 s", addr)
			sleepCtx(ctx, 5*time.Second)
		}
	}
}

// connLimit is how many connections the metrics listener serves at once:
// a Prometheus server or two, a liveness probe and an operator's curl.
const connLimit = 4

// metricsServer serves the listener's connections, connLimit at once.
// Each connection's goroutine is counted in conns; the one that started
// it (serveMetrics) waits for them all before it returns.
type metricsServer struct {
	m       *metrics
	log     *logger
	timeout time.Duration  // per connection: scrapeTimeout
	slots   chan struct{}  // one token per connection being served
	conns   sync.WaitGroup // the connections' goroutines
	full    bool           // refusing: said once per spell
}

func newMetricsServer(m *metrics, log *logger, timeout time.Duration) *metricsServer {
	return &metricsServer{m: m, log: log, timeout: timeout, slots: make(chan struct{}, connLimit)}
}

// acceptAll accepts connections until ctx ends (it closes ln then) or
// accepting fails. A connection beyond connLimit is closed at once rather
// than left in the kernel's queue until a slot frees: behind connections
// that may each take scrapeTimeout, a queued scrape would mostly be
// answered after its client gave up, and after a flood the queue would be
// thousands of dead connections to chew through before the next real
// scrape. Closed at once, a client learns now that it was turned away
// (Prometheus marks the target down for that scrape), the queue stays
// empty, and a flood costs one accept and one close per connection: no
// goroutine, no buffer.
func (s *metricsServer) acceptAll(ctx context.Context, ln net.Listener) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return // closed by ctx, or the listener failed
		}
		select {
		case s.slots <- struct{}{}:
		default:
			conn.Close()
			s.refused()
			continue
		}
		if len(s.slots) == 1 {
			s.full = false // nothing else in service: a refusing spell is over
		}
		s.conns.Add(1)
		go s.serveConn(ctx, conn)
	}
}

// refused says, once per spell of refusals, that connections are turned
// away; a flood would otherwise write a line per connection.
func (s *metricsServer) refused() {
	if !s.full {
		s.full = true
		s.log.warnf("vip.metrics: %d connections in service already; closing further ones at once until they end", connLimit)
	}
}

// serveConn answers one connection within s.timeout, or until ctx ends
// (the stop closes the connection), and gives its slot back.
func (s *metricsServer) serveConn(ctx context.Context, conn net.Conn) {
	defer s.conns.Done()
	defer func() { <-s.slots }()
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(s.timeout))
	s.m.answer(conn)
}

// metricsListener is the vip.metrics socket. It is bound before vipd drops
// its privileges, so that a port below 1024 works, and handed across a
// SIGHUP re-exec (as the lock is: lock.go), since the new image could not
// bind such a port again.
type metricsListener struct {
	net.Listener
	addr string // vip.metrics as configured
}

const metricsFDEnv = "VIPD_METRICS_FD"

// listenMetrics binds vip.metrics, or adopts the socket a re-exec handed
// over when the setting is unchanged. nil means not bound yet (the address
// may not be on this node yet, early at boot): serveMetrics retries.
func listenMetrics(addr string) *metricsListener {
	if v, ok := os.LookupEnv(metricsFDEnv); ok {
		os.Unsetenv(metricsFDEnv)
		if ln := adoptMetrics(v, addr); ln != nil {
			return ln
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil // serveMetrics logs it and retries
	}
	return &metricsListener{Listener: l, addr: addr}
}

// adoptMetrics takes the handed-over socket "FD ADDR" if it was bound for
// addr; a socket for another address is closed (the setting changed).
func adoptMetrics(word, addr string) *metricsListener {
	fdText, was, _ := strings.Cut(word, " ")
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 3 {
		return nil
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil // not ours: left alone
	}
	f := os.NewFile(uintptr(fd), "vip.metrics")
	defer f.Close() // FileListener keeps a duplicate
	if was != addr {
		return nil
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil
	}
	return &metricsListener{Listener: l, addr: addr}
}

// inherit makes a duplicate of the socket survive the exec that follows
// and returns the environment word that names it; undo closes the
// duplicate if the exec fails. A socket that cannot be handed over (it
// failed and serveMetrics listens anew) is not: the new image binds
// vip.metrics itself, and says so if it cannot.
func (ln *metricsListener) inherit() (env string, undo func(), err error) {
	none := func() {}
	if ln == nil {
		return "", none, nil
	}
	tl, ok := ln.Listener.(*net.TCPListener)
	if !ok {
		return "", none, nil
	}
	f, err := tl.File() // a duplicate, close-on-exec
	if err != nil {
		return "", none, nil
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
		f.Close()
		return "", none, nil
	}
	return fmt.Sprintf("%s=%d %s", metricsFDEnv, f.Fd(), ln.addr), func() { f.Close() }, nil
}

// scrapeTimeout bounds one connection, so that a client that never
// finishes its request holds a slot (connLimit) for no longer.
const scrapeTimeout = 5 * time.Second

// answer reads one request and answers it: the metrics for GET /metrics,
// the loop's liveness for GET /healthz, 404 for another path, 405 for
// another method. The connection is closed after the answer.
func (m *metrics) answer(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReaderSize(io.LimitReader(conn, 16<<10), 4096)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	for { // the headers, up to the empty line; none of them matter here
		h, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if strings.TrimRight(h, "\r\n") == "" {
			break
		}
	}
	method, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
	target, _, _ := strings.Cut(rest, " ")
	path, _, _ := strings.Cut(target, "?")
	status, ctype, body := "200 OK", "text/plain; version=0.0.4; charset=utf-8", []byte(nil)
	switch {
	case method != "GET" && method != "HEAD":
		status, ctype, body = "405 Method Not Allowed", "text/plain", []byte("only GET\n")
	case path == "/metrics":
		body = m.exposition()
	case path == "/healthz":
		status, ctype, body = m.liveness()
	default:
		status, ctype, body = "404 Not Found", "text/plain", []byte("metrics are on /metrics, liveness on /healthz\n")
	}
	fmt.Fprintf(conn, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", status, ctype, len(body))
	if method != "HEAD" {
		conn.Write(body)
	}
}

// loopBound is how long the node's loop may go without handling an event
// before /healthz fails. The loop wakes itself every pulseEvery (node.go)
// even when nothing happens, and what it handles does not wait on the
// network (etcd requests and health checks run in goroutines of their
// own; only the stop waits, and the process ends after it), so a loop
// silent for ten pulses is wedged, not busy. A wedged loop cannot renew
// the address's lifetime, step down or hand over: a holder's kernel drops
// the VIP at its deadline (under vip.ttl, 3 s by default) and the node
// never takes it again, which is what a restart by the liveness probe
// mends. The bound does not follow vip.ttl: it is about the loop, not the
// lease. The probe adds its own period and failure threshold on top.
const loopBound = 10 * time.Second

// liveness is /healthz: 200 while the node's loop has run within
// loopBound, 503 once it has not.
func (m *metrics) liveness() (status, ctype string, body []byte) {
	if age := m.loopAge(); age > loopBound {
		return "503 Service Unavailable", "text/plain", fmt.Appendf(nil, "the loop has handled nothing for %v (bound %v)\n", age.Round(time.Millisecond), loopBound)
	}
	return "200 OK", "text/plain", []byte("ok\n")
}

// exposition renders every metric, each family's HELP and TYPE once,
// then its samples. vipd's own families carry the group label; the build,
// the Go runtime and the process are the process's, not a group's.
func (m *metrics) exposition() []byte {
	var e expo
	g := label("group", m.group)
	state := nodeState(m.state.Load())
	e.family("vipd_leader", "gauge", "1 while this node holds the VIP.")
	e.sample("vipd_leader", g, boolValue(state == stateLeader))
	e.family("vipd_state", "gauge", "The node's state: 1 for the current one, 0 for the others.")
	for s := range nodeState(nStates) {
		e.sample("vipd_state", joinLabels(g, label("state", s.String())), boolValue(s == state))
	}
	e.family("vipd_healthy", "gauge", "The health check's verdict as this node publishes it in its rank: 1 healthy (always, without vip.check), 0 unhealthy.")
	e.sample("vipd_healthy", g, boolValue(m.healthy.Load()))
	e.family("vipd_drained", "gauge", "1 while an operator's drain mark (vipd -drain) ranks this node below every undrained node.")
	e.sample("vipd_drained", g, boolValue(m.drained.Load()))
	e.family("vipd_priority", "gauge", "This node's vip.priority as it publishes it in its rank.")
	e.sample("vipd_priority", g, float64(m.priority.Load()))
	e.family("vipd_transitions_total", "counter", "State transitions of this node.")
	for from := range nodeState(nStates) {
		for to := range nodeState(nStates) {
			if from != to {
				e.sample("vipd_transitions_total", joinLabels(g, label("from", from.String()), label("to", to.String())), float64(m.transitions[from][to].Load()))
			}
		}
	}
	e.family("vipd_stepdowns_total", "counter", "Times this node gave up the VIP or the election it had won, by reason.")
	for r := range stepReason(nStepReasons) {
		e.sample("vipd_stepdowns_total", joinLabels(g, label("reason", r.String())), float64(m.stepdowns[r].Load()))
	}
	e.family("vipd_announcements_total", "counter", "Announcements of a VIP sent: gratuitous ARP (request and reply forms) for ipv4, unsolicited neighbour advertisement for ipv6.")
	for i, f := range []string{"ipv4", "ipv6"} {
		e.sample("vipd_announcements_total", joinLabels(g, label("family", f)), float64(m.announcements[i].Load()))
	}
	m.renewals.write(&e, "vipd_lease_renewal_seconds", g, "Round trip of answered lease renewals.")
	e.family("vipd_etcd_errors_total", "counter", "Failed etcd requests, by what they were for.")
	for o := range etcdOp(nEtcdOps) {
		e.sample("vipd_etcd_errors_total", joinLabels(g, label("op", o.String())), float64(m.etcdErrors[o].Load()))
	}
	e.family("vipd_build_info", "gauge", "The running vipd's version, with the commit as build metadata.")
	e.sample("vipd_build_info", label("version", release()), 1)
	e.family("go_goroutines", "gauge", "Number of goroutines that currently exist.")
	e.sample("go_goroutines", "", float64(runtime.NumGoroutine()))
	if rss, ok := residentBytes(); ok {
		e.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
		e.sample("process_resident_memory_bytes", "", float64(rss))
	}
	e.family("process_start_time_seconds", "gauge", "Start time of this process image since unix epoch in seconds: a SIGHUP re-exec keeps the pid and starts it, and the counters, afresh.")
	e.sample("process_start_time_seconds", "", float64(imageStart.UnixMicro())/1e6)
	return e.b.Bytes()
}

// write renders the histogram: cumulative buckets, +Inf, _sum and _count,
// each with the labels ls ("" or label(...) joined by commas) and le.
func (h *histogram) write(e *expo, name, ls, help string) {
	e.family(name, "histogram", help)
	var n uint64
	for i, b := range renewalBounds() {
		n += h.counts[i].Load()
		e.sample(name+"_bucket", joinLabels(ls, label("le", formatValue(b.Seconds()))), float64(n))
	}
	n += h.counts[len(h.counts)-1].Load()
	e.sample(name+"_bucket", joinLabels(ls, label("le", "+Inf")), float64(n))
	e.sample(name+"_sum", ls, time.Duration(h.sum.Load()).Seconds())
	e.sample(name+"_count", ls, float64(n))
}

// expo is the Prometheus text format (version 0.0.4) being written.
type expo struct{ b bytes.Buffer }

func (e *expo) family(name, typ, help string) {
	fmt.Fprintf(&e.b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// sample writes one line; labels is "" or label(...) joined by commas.
func (e *expo) sample(name, labels string, v float64) {
	e.b.WriteString(name)
	if labels != "" {
		e.b.WriteString("{" + labels + "}")
	}
	e.b.WriteString(" " + formatValue(v) + "\n")
}

// joinLabels joins label(...) strings, leaving out empty ones.
func joinLabels(ls ...string) string {
	return strings.Join(slices.DeleteFunc(ls, func(l string) bool { return l == "" }), ",")
}

// label is name="value", the value escaped as the text format asks.
func label(name, value string) string {
	return name + `="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(value) + `"`
}

func formatValue(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// residentBytes reads this process's resident set size from /proc.
func residentBytes() (int64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}

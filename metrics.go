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
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// metrics is what the node publishes for /metrics. The node's loop and
// its term's goroutines write it; the HTTP handler reads it. Every value is
// an atomic, so that a slow scrape holds nothing the loop waits for, and
// every label set is fixed, so that nothing grows with time. A nil
// *metrics (a term started by a test) records nothing.
type metrics struct {
	state         atomic.Int32 // a nodeState
	transitions   [nStates][nStates]atomic.Uint64
	stepdowns     [nStepReasons]atomic.Uint64
	announcements [2]atomic.Uint64 // IPv4, IPv6
	renewals      histogram
	etcdErrors    [nEtcdOps]atomic.Uint64
}

// nStates is the number of nodeState values.
const nStates = int(stateLeader) + 1

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
	stepStop                           // stopped by a signal
	stepForeign                        // won the campaign, stepped aside: another host kept answering for the VIP
	stepOther                          // none of the above: a bug if it ever counts
	nStepReasons
)

func (r stepReason) String() string {
	return [...]string{"deadline", "lease_expired", "key_gone", "outranked", "claim_failed", "stalled",
		"add_failed", "link_down", "unhealthy", "priority", "stop", "foreign", "other"}[r]
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
		{errForeign, stepForeign},
	} {
		if errors.Is(err, c.target) {
			return c.r
		}
	}
	return stepOther
}

// handoverReason is why a node with rank own hands over to one with rank
// to: health outranks priority (rank.go).
func handoverReason(own, to rank) stepReason {
	if !own.healthy && to.healthy {
		return stepUnhealthy
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

// serveMetrics serves the Prometheus text format on addr until ctx ends,
// starting with ln when it is there (bound before the privileges were
// dropped: listenMetrics).
// Both the format and the bit of HTTP/1.1 a scrape needs (one GET, then
// close) are written directly: net/http's server alone would add half a
// MiB to a binary that must stay under 14 MiB, and a client library more.
// A listen failure (the address is not on this node yet, early at boot) is
// retried, and logged once.
func serveMetrics(ctx context.Context, ln *metricsListener, addr string, m *metrics, log *logger) {
	logged := false
	for ctx.Err() == nil {
		if ln == nil {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				if !logged {
					log.warnf("vip.metrics=%s: %v (retrying every 5 s)", addr, err)
					logged = true
				}
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
				}
				continue
			}
			ln = &metricsListener{Listener: l, addr: addr}
		}
		log.infof("serving metrics on http://%s/metrics", ln.Addr())
		stop := context.AfterFunc(ctx, func() { ln.Close() })
		for {
			conn, err := ln.Accept()
			if err != nil {
				break // closed by ctx, or the listener failed: listen again
			}
			go m.answer(conn) // ends within scrapeTimeout
		}
		stop()
		ln.Close()
		ln = nil
		if ctx.Err() == nil {
			// Out of file descriptors, say: not a loop that spins.
			log.warnf("vip.metrics=%s: accept failed; listening again in 5 s", addr)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
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
// finishes its request holds nothing for long.
const scrapeTimeout = 5 * time.Second

// answer reads one request and answers it: the metrics for GET /metrics,
// 404 for another path, 405 for another method. The connection is closed
// after the answer.
func (m *metrics) answer(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(scrapeTimeout))
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
	case path != "/metrics":
		status, ctype, body = "404 Not Found", "text/plain", []byte("metrics are on /metrics\n")
	default:
		body = m.exposition()
	}
	fmt.Fprintf(conn, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", status, ctype, len(body))
	if method != "HEAD" {
		conn.Write(body)
	}
}

// exposition renders every metric, each family's HELP and TYPE once,
// then its samples.
func (m *metrics) exposition() []byte {
	var e expo
	state := nodeState(m.state.Load())
	leader := 0.0
	if state == stateLeader {
		leader = 1
	}
	e.family("vipd_leader", "gauge", "1 while this node holds the VIP.")
	e.sample("vipd_leader", "", leader)
	e.family("vipd_state", "gauge", "The node's state: 1 for the current one, 0 for the others.")
	for s := range nodeState(nStates) {
		e.sample("vipd_state", label("state", s.String()), boolValue(s == state))
	}
	e.family("vipd_transitions_total", "counter", "State transitions of this node.")
	for from := range nodeState(nStates) {
		for to := range nodeState(nStates) {
			if from != to {
				e.sample("vipd_transitions_total", label("from", from.String())+","+label("to", to.String()), float64(m.transitions[from][to].Load()))
			}
		}
	}
	e.family("vipd_stepdowns_total", "counter", "Times this node gave up the VIP or the election it had won, by reason.")
	for r := range stepReason(nStepReasons) {
		e.sample("vipd_stepdowns_total", label("reason", r.String()), float64(m.stepdowns[r].Load()))
	}
	e.family("vipd_announcements_total", "counter", "Announcements of a VIP sent: gratuitous ARP (request and reply forms) for ipv4, unsolicited neighbour advertisement for ipv6.")
	for i, f := range []string{"ipv4", "ipv6"} {
		e.sample("vipd_announcements_total", label("family", f), float64(m.announcements[i].Load()))
	}
	m.renewals.write(&e, "vipd_lease_renewal_seconds", "Round trip of answered lease renewals.")
	e.family("vipd_etcd_errors_total", "counter", "Failed etcd requests, by what they were for.")
	for o := range etcdOp(nEtcdOps) {
		e.sample("vipd_etcd_errors_total", label("op", o.String()), float64(m.etcdErrors[o].Load()))
	}
	e.family("vipd_build_info", "gauge", "The running vipd's version, with the commit as build metadata.")
	e.sample("vipd_build_info", label("version", release()), 1)
	e.family("go_goroutines", "gauge", "Number of goroutines that currently exist.")
	e.sample("go_goroutines", "", float64(runtime.NumGoroutine()))
	if rss, ok := residentBytes(); ok {
		e.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
		e.sample("process_resident_memory_bytes", "", float64(rss))
	}
	return e.b.Bytes()
}

// write renders the histogram: cumulative buckets, +Inf, _sum and _count.
func (h *histogram) write(e *expo, name, help string) {
	e.family(name, "histogram", help)
	var n uint64
	for i, b := range renewalBounds() {
		n += h.counts[i].Load()
		e.sample(name+"_bucket", label("le", formatValue(b.Seconds())), float64(n))
	}
	n += h.counts[len(h.counts)-1].Load()
	e.sample(name+"_bucket", label("le", "+Inf"), float64(n))
	e.sample(name+"_sum", "", time.Duration(h.sum.Load()).Seconds())
	e.sample(name+"_count", "", float64(n))
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

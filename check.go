package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The health check (docs/design.md, section 3): vip.check is probed every
// vip.check.interval, and vip.check.rise/fall consecutive results change
// this node's health, which is part of its rank in the election.
//
// The HTTP client is written by hand over net.Dialer and crypto/tls, like
// the metrics server: net/http's client (Transport, Client) is not linked
// into vipd otherwise, and using it added 608 KiB to the static binary
// (measured with go1.26: 14,368,930 to 14,991,522 bytes), more than the
// 14 MiB budget leaves. A health check needs one GET and the status line,
// nothing else of HTTP.

// checkTarget is a parsed vip.check value.
type checkTarget struct {
	scheme     string // "tcp", "http" or "https"
	hostname   string // without brackets or port: for the loopback rule and TLS
	addr       string // HOST:PORT to dial
	requestURI string // http(s): path ("/" when empty) and query
}

// parseCheckTarget reads tcp://HOST:PORT, http://HOST:PORT/PATH or
// https://HOST:PORT/PATH. HOST is an IP address (IPv6 in brackets) or a DNS
// name; the port is required, because a guessed one would check the wrong
// service.
func parseCheckTarget(v string) (checkTarget, error) {
	const form = "must be tcp://HOST:PORT, http://HOST:PORT/PATH or https://HOST:PORT/PATH"
	// The request target goes into the request line as written: no byte
	// there may end or split it.
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f {
			return checkTarget{}, errors.New("must be printable ASCII without spaces (percent-encode the rest)")
		}
	}
	u, err := url.Parse(v)
	if err != nil {
		return checkTarget{}, errors.New(form)
	}
	t := checkTarget{scheme: u.Scheme, hostname: u.Hostname(), addr: u.Host}
	switch {
	case u.Scheme != "tcp" && u.Scheme != "http" && u.Scheme != "https":
		return t, errors.New(form)
	case u.Opaque != "" || u.Host == "":
		return t, errors.New(form)
	case u.User != nil:
		return t, errors.New("user info is not supported")
	case strings.Contains(v, "#"):
		return t, errors.New("must not have a fragment")
	case u.Scheme == "tcp" && (u.Path != "" || strings.Contains(v, "?")):
		return t, errors.New("a tcp check has no path or query")
	}
	if err := validCheckHost(u.Host, t.hostname); err != nil {
		return t, err
	}
	if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return t, errors.New("needs a port from 1 to 65535")
	}
	if u.Scheme != "tcp" {
		t.requestURI = u.RequestURI()
	}
	return t, nil
}

// validCheckHost accepts an IP literal (IPv6 in brackets, without a zone)
// or a DNS name.
func validCheckHost(host, hostname string) error {
	if strings.HasPrefix(host, "[") {
		if a, err := netip.ParseAddr(hostname); err != nil || !a.Is6() || a.Zone() != "" {
			return errors.New("the host in brackets must be an IPv6 address without a zone")
		}
		return nil
	}
	if strings.Contains(hostname, ":") {
		return errors.New("an IPv6 host must be in brackets: [2001:db8::1]:PORT")
	}
	if _, err := netip.ParseAddr(hostname); err == nil {
		return nil
	}
	return validDNSName(hostname)
}

// validDNSName takes letters, digits, '-' and '_' in dot-separated labels
// of 1 to 63 bytes. A numeric last label is refused: "300.1.1.1" is a
// mistyped address, not a name to look up.
func validDNSName(s string) error {
	bad := errors.New("the host must be an IP address or a DNS name")
	if len(s) > 253 {
		return bad
	}
	labels := strings.Split(strings.TrimSuffix(s, "."), ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return bad
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return bad
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return bad
	}
	return nil
}

// loopback says whether the target cannot leave this machine, the one case
// where an https check may go without a CA: whoever answers there is
// already trusted with the node.
func (t checkTarget) loopback() bool {
	if strings.EqualFold(t.hostname, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(t.hostname)
	return err == nil && a.Unmap().IsLoopback()
}

// checkTLS builds the TLS configuration of an https check from files already
// in memory (a config partition is unmounted by now), like etcdTLS. It
// returns nil without an https check.
func checkTLS(c healthConfig, files map[string]loadedFile) (*tls.Config, error) {
	if !strings.HasPrefix(c.Check, "https://") {
		return nil, nil
	}
	t, err := parseCheckTarget(c.Check)
	if err != nil {
		return nil, &configError{Key: "vip.check", Value: c.Check, Reason: err.Error()}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.hostname}
	ca, ok := files["vip.check.ca"]
	switch {
	case ok:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca.data) {
			return nil, &configError{Key: "vip.check.ca", Value: ca.path, Reason: "no PEM certificate in it"}
		}
		cfg.RootCAs = pool
	case c.CheckCA != "":
		return nil, fmt.Errorf("vip.check.ca %s was not read", c.CheckCA)
	case t.loopback():
		// Loopback only (the parser refuses others): the checker also makes
		// sure that the connection really is to a loopback address.
		cfg.InsecureSkipVerify = true
	default:
		return nil, &configError{Key: "vip.check", Value: c.Check, Reason: "needs vip.check.ca"}
	}
	return cfg, nil
}

// healthEvent is a change of this node's health, after rise/fall.
type healthEvent struct {
	healthy bool
	reason  string // e.g. "3 checks failed: dial tcp 127.0.0.1:6443: connect: connection refused" or "2 checks passed"
}

// healthCounter turns check results into health changes: the state starts
// unhealthy; rise consecutive successes make it healthy, fall consecutive
// failures make it unhealthy. It has no clock, so it is tested by sequence.
//
// A node that starts unhealthy and stays so would never say why; so the
// first verdict is reported too: fall failures before any event make one
// unhealthy event, which changes nothing but is logged with its reason.
type healthCounter struct {
	rise, fall int
	healthy    bool
	streak     int  // consecutive results that disagree with the state
	decided    bool // an event has been returned
	fails      int  // consecutive failures before that
}

// add records one result (err nil: passed) and returns the event when the
// state changes, or the first verdict.
func (h *healthCounter) add(err error) (healthEvent, bool) {
	ev, ok := h.count(err)
	if !h.decided && err != nil && !ok {
		if h.fails++; h.fails >= h.fall {
			ev, ok = healthEvent{reason: fmt.Sprintf("%s failed: %v", plural(h.fall, "check"), err)}, true
		}
	}
	h.decided = h.decided || ok
	if err == nil {
		h.fails = 0
	}
	return ev, ok
}

// count applies rise and fall.
func (h *healthCounter) count(err error) (healthEvent, bool) {
	if (err == nil) == h.healthy {
		h.streak = 0
		return healthEvent{}, false
	}
	h.streak++
	if err == nil && h.streak >= h.rise {
		h.healthy, h.streak = true, 0
		return healthEvent{healthy: true, reason: plural(h.rise, "check") + " passed"}, true
	}
	if err != nil && h.streak >= h.fall {
		h.healthy, h.streak = false, 0
		return healthEvent{reason: fmt.Sprintf("%s failed: %v", plural(h.fall, "check"), err)}, true
	}
	return healthEvent{}, false
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// checker runs the health check.
type checker struct {
	target            checkTarget
	url               string // as configured, for messages
	tls               *tls.Config
	interval, timeout time.Duration
	count             healthCounter
}

// newChecker returns nil, nil when cfg.Check is empty.
func newChecker(cfg healthConfig, tlsCfg *tls.Config) (*checker, error) {
	if cfg.Check == "" {
		return nil, nil
	}
	t, err := parseCheckTarget(cfg.Check)
	if err != nil {
		return nil, &configError{Key: "vip.check", Value: cfg.Check, Reason: err.Error()}
	}
	if t.scheme == "https" && tlsCfg == nil {
		return nil, fmt.Errorf("health check %s: no TLS configuration (checkTLS)", cfg.Check)
	}
	if cfg.CheckInterval <= 0 || cfg.CheckTimeout <= 0 || cfg.CheckRise < 1 || cfg.CheckFall < 1 {
		return nil, fmt.Errorf("health check %s: interval, timeout, rise and fall must be positive", cfg.Check)
	}
	return &checker{
		target: t, url: cfg.Check, tls: tlsCfg,
		interval: cfg.CheckInterval, timeout: cfg.CheckTimeout,
		count: healthCounter{rise: cfg.CheckRise, fall: cfg.CheckFall},
	}, nil
}

// run checks every interval (the first check at once), each bounded by the
// timeout, and sends a healthEvent on out each time the state changes. It
// returns when ctx ends, leaving no goroutine, connection or timer behind.
// carry starts the counting from an earlier run's verdict (a resumed
// lease, resume.go): a re-executed vipd whose check starts over would
// otherwise call itself unhealthy until rise checks pass, and a leader
// that is unhealthy hands the VIP over at once.
func (c *checker) carry(healthy bool) {
	c.count.healthy, c.count.decided = healthy, true
}

func (c *checker) run(ctx context.Context, out chan<- healthEvent) {
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		err := c.checkOnce(ctx)
		if ctx.Err() != nil {
			return // cut short by the end, not a result
		}
		if ev, changed := c.count.add(err); changed {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// checkOnce runs one check within the timeout; nil means it passed.
func (c *checker) checkOnce(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.target.addr)
	if err != nil {
		return err // net.OpError names the address: "dial tcp 127.0.0.1:6443: ..."
	}
	defer conn.Close()
	if c.target.scheme == "tcp" {
		return nil
	}
	// The deadline bounds every read and write, so a server that stalls
	// cannot stretch the check past the timeout; ending ctx early (vipd
	// stopping) expires it at once.
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("GET %s: %w", c.url, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var rw io.ReadWriter = conn
	if c.target.scheme == "https" {
		if err := c.verifyLoopback(conn); err != nil {
			return err
		}
		tc := tls.Client(conn, c.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("GET %s: TLS handshake: %w", c.url, err)
		}
		rw = tc
	}
	return c.get(rw)
}

// verifyLoopback refuses an unverified TLS connection that is not to a
// loopback address: "localhost" comes from /etc/hosts or DNS, which might
// not say loopback.
func (c *checker) verifyLoopback(conn net.Conn) error {
	if !c.tls.InsecureSkipVerify {
		return nil
	}
	ap, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return fmt.Errorf("GET %s: %s is not a loopback address, and without vip.check.ca only loopback goes unverified", c.url, conn.RemoteAddr())
	}
	return nil
}

// maxStatusLine and maxDrain bound what one check reads: the status line,
// then a little of the rest so that the server sees an orderly close
// rather than a reset for unread data.
const (
	maxStatusLine = 512
	maxDrain      = 4096
)

// get sends a GET and passes on a 2xx status. Only the status line is
// parsed: the answer is the status, nothing else.
func (c *checker) get(rw io.ReadWriter) error {
	req := "GET " + c.target.requestURI + " HTTP/1.1\r\nHost: " + c.target.addr +
		"\r\nUser-Agent: vipd/" + release() + "\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(rw, req); err != nil {
		return fmt.Errorf("GET %s: %w", c.url, err)
	}
	br := bufio.NewReaderSize(rw, maxStatusLine)
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			err = errors.New("status line too long")
		}
		return fmt.Errorf("GET %s: reading the status line: %w", c.url, err)
	}
	code, status, err := parseStatusLine(string(line))
	if err != nil {
		return fmt.Errorf("GET %s: %w", c.url, err)
	}
	_, _ = io.CopyN(io.Discard, br, maxDrain) // a courtesy: errors change nothing
	if code < 200 || code > 299 {
		return fmt.Errorf("GET %s: status %s", c.url, status)
	}
	return nil
}

// parseStatusLine reads "HTTP/1.x NNN reason" and returns the code and
// "NNN reason".
func parseStatusLine(line string) (int, string, error) {
	line = strings.TrimRight(line, "\r\n")
	proto, status, _ := strings.Cut(line, " ")
	if !strings.HasPrefix(proto, "HTTP/1.") || len(status) < 3 || strings.Trim(status[:3], "0123456789") != "" ||
		(len(status) > 3 && status[3] != ' ') {
		return 0, "", fmt.Errorf("not an HTTP/1 status line: %.80q", line)
	}
	code, _ := strconv.Atoi(status[:3])
	return code, status, nil
}

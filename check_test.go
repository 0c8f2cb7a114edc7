package main

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"vipd/test/lab"
)

// Every server here listens on 127.0.0.1 inside the test process.

func TestParseCheckTarget(t *testing.T) {
	tests := []struct {
		in                     string
		scheme, hostname, addr string
		requestURI             string
		loopback               bool
	}{
		{"tcp://127.0.0.1:6443", "tcp", "127.0.0.1", "127.0.0.1:6443", "", true},
		{"tcp://127.9.9.9:1", "tcp", "127.9.9.9", "127.9.9.9:1", "", true},
		{"tcp://[::1]:6443", "tcp", "::1", "[::1]:6443", "", true},
		{"tcp://192.0.2.5:65535", "tcp", "192.0.2.5", "192.0.2.5:65535", "", false},
		{"http://192.0.2.5:8080", "http", "192.0.2.5", "192.0.2.5:8080", "/", false},
		{"http://h.example:80/healthz?verbose=1", "http", "h.example", "h.example:80", "/healthz?verbose=1", false},
		{"https://LocalHost:6443/readyz", "https", "LocalHost", "LocalHost:6443", "/readyz", true},
		{"https://[2001:db8::5]:6443/a%2Fb?", "https", "2001:db8::5", "[2001:db8::5]:6443", "/a%2Fb?", false},
		{"https://localhost.example:6443/", "https", "localhost.example", "localhost.example:6443", "/", false},
	}
	for _, tt := range tests {
		got, err := parseCheckTarget(tt.in)
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		want := checkTarget{scheme: tt.scheme, hostname: tt.hostname, addr: tt.addr, requestURI: tt.requestURI}
		if got != want || got.loopback() != tt.loopback {
			t.Errorf("%s: got %+v loopback %v, want %+v loopback %v", tt.in, got, got.loopback(), want, tt.loopback)
		}
	}
}

func TestParseStatusLine(t *testing.T) {
	for line, want := range map[string]int{
		"HTTP/1.1 200 OK\r\n":                  200,
		"HTTP/1.0 204\r\n":                     204,
		"HTTP/1.1 503 Service Unavailable\r\n": 503,
		"HTTP/1.1 299 whatever it says here\n": 299,
		"HTTP/2 200\r\n":                       -1,
		"HTTP/1.1 20 OK\r\n":                   -1,
		"HTTP/1.1 2000 OK\r\n":                 -1,
		"HTTP/1.1 2x0 OK\r\n":                  -1,
		"SSH-2.0-OpenSSH_9.6\r\n":              -1,
		"\r\n":                                 -1,
	} {
		code, _, err := parseStatusLine(line)
		if want < 0 {
			if err == nil {
				t.Errorf("%q: code %d, want an error", line, code)
			}
			continue
		}
		if err != nil || code != want {
			t.Errorf("%q: %d, %v; want %d", line, code, err, want)
		}
	}
}

// TestHealthCounter replays results (P passed, F failed) and expects a
// change exactly where the want string says (H healthy, U unhealthy).
func TestHealthCounter(t *testing.T) {
	tests := []struct {
		rise, fall int
		results    string
		want       string
	}{
		{2, 3, "FFPFPPPFFPFFFPP", ".....H......U.H"},
		{2, 3, "PP", ".H"},
		{2, 3, "FFFFFF", "..U..."}, // starts unhealthy: failures change nothing, but the first verdict is told
		{2, 3, "FFPFFPP", "......H"},
		{2, 3, "PPFFFPFFF", ".H..U...."},
		{1, 1, "PFPPFFP", "HUH.U.H"},
		{3, 1, "PPFPPPF", "..U..HU"},
		{5, 2, "PPPPFPPPPPFPFF", ".........H...U"},
	}
	for _, tt := range tests {
		h := healthCounter{rise: tt.rise, fall: tt.fall}
		var got strings.Builder
		for i, r := range tt.results {
			var err error
			if r == 'F' {
				err = fmt.Errorf("failure %d", i)
			}
			ev, changed := h.add(err)
			switch {
			case !changed:
				got.WriteByte('.')
			case ev.healthy:
				got.WriteByte('H')
				if want := strconv.Itoa(tt.rise) + " check"; !strings.HasPrefix(ev.reason, want) || !strings.HasSuffix(ev.reason, " passed") {
					t.Errorf("rise=%d: reason %q", tt.rise, ev.reason)
				}
			default:
				got.WriteByte('U')
				if want := fmt.Sprintf(" failed: failure %d", i); !strings.HasSuffix(ev.reason, want) || !strings.HasPrefix(ev.reason, strconv.Itoa(tt.fall)+" check") {
					t.Errorf("fall=%d: reason %q, want the count and the last failure", tt.fall, ev.reason)
				}
			}
		}
		if got.String() != tt.want {
			t.Errorf("rise=%d fall=%d results %s: changes %s, want %s", tt.rise, tt.fall, tt.results, got.String(), tt.want)
		}
	}
}

func TestHealthCounterReasons(t *testing.T) {
	h := healthCounter{rise: 2, fall: 3}
	h.add(nil)
	if ev, _ := h.add(nil); ev.reason != "2 checks passed" || !ev.healthy {
		t.Errorf("rise event %+v", ev)
	}
	refused := errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")
	h.add(refused)
	h.add(refused)
	if ev, _ := h.add(refused); ev.reason != "3 checks failed: dial tcp 127.0.0.1:6443: connect: connection refused" || ev.healthy {
		t.Errorf("fall event %+v", ev)
	}
	one := healthCounter{rise: 1, fall: 1}
	if ev, _ := one.add(nil); ev.reason != "1 check passed" {
		t.Errorf("rise=1 event %+v", ev)
	}
}

// checkConfig is the check settings for url, rise and fall 1.
func checkConfig(url string, timeout time.Duration) healthConfig {
	return healthConfig{Check: url, CheckInterval: timeout, CheckTimeout: timeout, CheckRise: 1, CheckFall: 1}
}

// checkOnceFor runs one check of url and returns its result and duration.
func checkOnceFor(t *testing.T, url string, tlsCfg *tls.Config, timeout time.Duration) (error, time.Duration) {
	t.Helper()
	c, err := newChecker(checkConfig(url, timeout), tlsCfg)
	if err != nil || c == nil {
		t.Fatalf("newChecker(%s): %v, %v", url, c, err)
	}
	start := time.Now()
	err = c.checkOnce(context.Background())
	return err, time.Since(start)
}

// statusServer answers /NNN with status NNN and records what it was sent.
type statusServer struct {
	*httptest.Server
	mu       sync.Mutex
	host     string
	closeReq bool
	uri      string
}

func newStatusServer(t *testing.T, tlsCert *tls.Certificate) *statusServer {
	s := &statusServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.host, s.closeReq, s.uri = r.Host, r.Close, r.RequestURI
		s.mu.Unlock()
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			code = http.StatusOK
		}
		if code == http.StatusFound {
			w.Header().Set("Location", "/200")
		}
		w.WriteHeader(code)
		if code != http.StatusNoContent {
			fmt.Fprint(w, strings.Repeat("body ", 10000)) // more than a check reads
		}
	}))
	quiet(s.Server)
	if tlsCert != nil {
		s.TLS = &tls.Config{Certificates: []tls.Certificate{*tlsCert}}
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// quiet drops the server's log of handshakes that the tests fail on purpose.
func quiet(s *httptest.Server) {
	s.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
}

// selfSignedServer is an https server with httptest's own certificate
// (for 127.0.0.1), which no CA of ours signed.
func selfSignedServer(t *testing.T) *httptest.Server {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	quiet(s)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// rawServer runs serve on every connection to a loopback listener.
func rawServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); serve(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// stall reads what it is sent and never answers.
func stall(c net.Conn) {
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// closedPort is a loopback port where nothing listens any more.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// checkPKI is a CA and a server certificate for 127.0.0.1 (and, as a
// second certificate, one from another CA).
type checkPKI struct {
	caPEM, otherCAPEM []byte
	server            tls.Certificate
}

func newCheckPKI(t *testing.T) checkPKI {
	t.Helper()
	p := &lab.PKI{Dir: t.TempDir()}
	caKey, ca, caDER := p.Issue(t, "check CA", nil, nil, nil)
	_, _, otherDER := p.Issue(t, "other CA", nil, nil, nil)
	srvKey, _, srvDER := p.Issue(t, "check server", []net.IP{net.IPv4(127, 0, 0, 1)}, caKey, ca)
	pair, err := tls.LoadX509KeyPair(p.Write(t, "srv.pem", "CERTIFICATE", srvDER), p.WriteKey(t, "srv-key.pem", srvKey))
	if err != nil {
		t.Fatal(err)
	}
	return checkPKI{
		caPEM:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		otherCAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherDER}),
		server:     pair,
	}
}

// mustCheckTLS is checkTLS for an already valid configuration.
func mustCheckTLS(t *testing.T, url string, caPEM []byte) *tls.Config {
	t.Helper()
	cfg := checkConfig(url, time.Second)
	files := map[string]loadedFile{}
	if caPEM != nil {
		cfg.CheckCA = "ca.pem"
		files["vip.check.ca"] = loadedFile{path: "ca.pem", data: caPEM}
	}
	tlsCfg, err := checkTLS(cfg, files)
	if err != nil || tlsCfg == nil {
		t.Fatalf("checkTLS(%s): %v, %v", url, tlsCfg, err)
	}
	return tlsCfg
}

func TestCheckOnce(t *testing.T) {
	pki := newCheckPKI(t)
	plain := newStatusServer(t, nil)
	verified := newStatusServer(t, &pki.server)
	selfSigned := selfSignedServer(t)
	tcpUp := rawServer(t, func(c net.Conn) {})
	stalled := rawServer(t, stall)
	headersOnly := rawServer(t, func(c net.Conn) { // ignores Connection: close
		fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
		stall(c)
	})
	trickle := rawServer(t, func(c net.Conn) {
		for _, b := range []byte("HTTP/1.1 200 OK\r\n") {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	ssh := rawServer(t, func(c net.Conn) { fmt.Fprint(c, "SSH-2.0-OpenSSH_9.6\r\n") })
	long := rawServer(t, func(c net.Conn) { fmt.Fprint(c, "HTTP/1.1 200 "+strings.Repeat("O", 600)+"\r\n\r\n") })
	hangUp := rawServer(t, func(c net.Conn) { c.Close() })
	down := closedPort(t)

	const timeout = 500 * time.Millisecond
	plainURL := plain.URL // http://127.0.0.1:PORT
	verifiedURL := verified.URL
	tests := []struct {
		name    string
		url     string
		tls     *tls.Config
		wantErr string // "" means the check passes
		slow    bool   // the check runs into the timeout
	}{
		{"tcp up", "tcp://" + tcpUp, nil, "", false},
		{"tcp refused", "tcp://" + down, nil, "dial tcp " + down + ": connect: connection refused", false},
		{"http 200", plainURL + "/200", nil, "", false},
		{"http 204", plainURL + "/204", nil, "", false},
		{"http no path", plainURL, nil, "", false},
		{"http 503", plainURL + "/503", nil, "GET " + plainURL + "/503: status 503 Service Unavailable", false},
		{"http 302 is not followed", plainURL + "/302", nil, "status 302 Found", false},
		{"http 404", plainURL + "/404", nil, "status 404 Not Found", false},
		{"http 500", plainURL + "/500", nil, "status 500 Internal Server Error", false},
		{"http refused", "http://" + down + "/", nil, "connect: connection refused", false},
		{"http never answers", "http://" + stalled + "/", nil, "i/o timeout", true},
		{"http trickles", "http://" + trickle + "/", nil, "i/o timeout", true},
		{"http body never ends", "http://" + headersOnly + "/", nil, "", true},
		{"http hangs up", "http://" + hangUp + "/", nil, "reading the status line", false},
		{"not http", "http://" + ssh + "/", nil, `not an HTTP/1 status line: "SSH-2.0-OpenSSH_9.6"`, false},
		{"status line too long", "http://" + long + "/", nil, "status line too long", false},
		{"https with CA", verifiedURL + "/200", mustCheckTLS(t, verifiedURL, pki.caPEM), "", false},
		{"https with CA 503", verifiedURL + "/503", mustCheckTLS(t, verifiedURL, pki.caPEM), "status 503", false},
		{"https other CA", verifiedURL + "/200", mustCheckTLS(t, verifiedURL, pki.otherCAPEM), "certificate signed by unknown authority", false},
		{"https loopback without CA", selfSigned.URL + "/", mustCheckTLS(t, selfSigned.URL, nil), "", false},
		{"https self-signed with a CA", selfSigned.URL + "/", mustCheckTLS(t, selfSigned.URL, pki.caPEM), "certificate signed by unknown authority", false},
		{"https to plain http", "https://" + strings.TrimPrefix(plainURL, "http://") + "/", mustCheckTLS(t, "https://"+strings.TrimPrefix(plainURL, "http://"), nil), "TLS handshake", false},
		{"https handshake never answers", "https://" + stalled + "/", mustCheckTLS(t, "https://"+stalled, nil), "TLS handshake", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err, took := checkOnceFor(t, tt.url, tt.tls, timeout)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("check failed: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("check error %v, want one containing %q", err, tt.wantErr)
			}
			// A check never outlasts its timeout (plus scheduling slack);
			// only a stalling server makes it take that long.
			if took > timeout+200*time.Millisecond {
				t.Errorf("check took %v, timeout %v", took, timeout)
			}
			if tt.slow && took < timeout-50*time.Millisecond {
				t.Errorf("check took only %v against a stalling server (timeout %v)", took, timeout)
			}
			if !tt.slow && took > timeout/2 {
				t.Errorf("check took %v against a server that answers", took)
			}
		})
	}

	// What went over the wire: the path and query, the Host header, and
	// Connection: close.
	if err, _ := checkOnceFor(t, plainURL+"/204?a=1&b=%20", nil, timeout); err != nil {
		t.Fatal(err)
	}
	plain.mu.Lock()
	defer plain.mu.Unlock()
	if want := strings.TrimPrefix(plainURL, "http://"); plain.host != want || !plain.closeReq || plain.uri != "/204?a=1&b=%20" {
		t.Errorf("request: Host %q, Connection: close %v, URI %q; want %q, true, /204?a=1&b=%%20", plain.host, plain.closeReq, plain.uri, want)
	}
}

func TestCheckHTTPSLocalhostWithoutCA(t *testing.T) {
	if addrs, err := net.LookupHost("localhost"); err != nil || len(addrs) == 0 {
		t.Skipf("localhost does not resolve here: %v", err)
	}
	srv := selfSignedServer(t)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "https://"))
	url := "https://localhost:" + port + "/"
	if err, _ := checkOnceFor(t, url, mustCheckTLS(t, url, nil), time.Second); err != nil {
		t.Fatal(err)
	}
}

// remoteConn is a connection that claims a remote address.
type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }

func TestCheckUnverifiedOnlyToLoopback(t *testing.T) {
	c := &checker{url: "https://localhost:6443/", tls: &tls.Config{InsecureSkipVerify: true}}
	for addr, ok := range map[string]bool{"127.0.0.1:6443": true, "127.3.2.1:6443": true, "[::1]:6443": true, "192.0.2.7:6443": false, "[2001:db8::7]:6443": false} {
		ap, _ := net.ResolveTCPAddr("tcp", addr)
		err := c.verifyLoopback(remoteConn{remote: ap})
		if (err == nil) != ok {
			t.Errorf("%s: %v", addr, err)
		}
	}
	c.tls = &tls.Config{}
	ap, _ := net.ResolveTCPAddr("tcp", "192.0.2.7:6443")
	if err := c.verifyLoopback(remoteConn{remote: ap}); err != nil {
		t.Errorf("verified TLS to a remote host: %v", err)
	}
}

func TestCheckTLS(t *testing.T) {
	pki := newCheckPKI(t)
	ca := map[string]loadedFile{"vip.check.ca": {path: "ca.pem", data: pki.caPEM}}
	for _, tt := range []struct {
		name     string
		cfg      healthConfig
		files    map[string]loadedFile
		wantNil  bool
		insecure bool
		wantErr  string
	}{
		{"no check", healthConfig{}, nil, true, false, ""},
		{"tcp", healthConfig{Check: "tcp://127.0.0.1:1"}, nil, true, false, ""},
		{"http", healthConfig{Check: "http://127.0.0.1:1/"}, nil, true, false, ""},
		{"loopback without CA", healthConfig{Check: "https://127.0.0.1:1/"}, nil, false, true, ""},
		{"::1 without CA", healthConfig{Check: "https://[::1]:1/"}, nil, false, true, ""},
		{"with CA", healthConfig{Check: "https://api.example.com:6443/", CheckCA: "ca.pem"}, ca, false, false, ""},
		{"loopback with CA is verified", healthConfig{Check: "https://127.0.0.1:1/", CheckCA: "ca.pem"}, ca, false, false, ""},
		{"CA not PEM", healthConfig{Check: "https://192.0.2.1:1/", CheckCA: "ca.pem"},
			map[string]loadedFile{"vip.check.ca": {path: "ca.pem", data: []byte("junk")}}, false, false, `vip.check.ca="ca.pem": no PEM certificate in it`},
		{"CA not read", healthConfig{Check: "https://192.0.2.1:1/", CheckCA: "ca.pem"}, nil, false, false, "vip.check.ca ca.pem was not read"},
		{"remote without CA", healthConfig{Check: "https://192.0.2.1:1/"}, nil, false, false, `vip.check="https://192.0.2.1:1/": needs vip.check.ca`},
	} {
		cfg, err := checkTLS(tt.cfg, tt.files)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: error %v, want %q", tt.name, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantNil != (cfg == nil):
			t.Errorf("%s: config %+v", tt.name, cfg)
		case cfg != nil && (cfg.InsecureSkipVerify != tt.insecure || (cfg.RootCAs == nil) != tt.insecure):
			t.Errorf("%s: InsecureSkipVerify %v, RootCAs %v", tt.name, cfg.InsecureSkipVerify, cfg.RootCAs != nil)
		}
	}
}

func TestNewChecker(t *testing.T) {
	if c, err := newChecker(healthConfig{CheckInterval: time.Second, CheckTimeout: time.Second, CheckRise: 2, CheckFall: 3}, nil); c != nil || err != nil {
		t.Errorf("no check: %v, %v; want nil, nil", c, err)
	}
	if _, err := newChecker(checkConfig("https://127.0.0.1:1/", time.Second), nil); err == nil {
		t.Error("https check without a TLS configuration")
	}
	if _, err := newChecker(checkConfig("ftp://127.0.0.1:1/", time.Second), nil); err == nil {
		t.Error("bad check URL accepted")
	}
}

// settableServer answers with whatever status is set.
type settableServer struct {
	*httptest.Server
	mu   sync.Mutex
	code int
}

func newSettableServer(t *testing.T, code int) *settableServer {
	s := &settableServer{code: code}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		w.WriteHeader(s.code)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *settableServer) set(code int) {
	s.mu.Lock()
	s.code = code
	s.mu.Unlock()
}

func waitEvent(t *testing.T, events <-chan healthEvent, within time.Duration) healthEvent {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(within):
		t.Fatalf("no health event within %v", within)
		return healthEvent{}
	}
}

// noEvent asserts that nothing arrives for a while.
func noEvent(t *testing.T, events <-chan healthEvent, wait time.Duration) {
	t.Helper()
	select {
	case ev := <-events:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(wait):
	}
}

func TestCheckerRun(t *testing.T) {
	srv := newSettableServer(t, http.StatusOK)
	const interval = 50 * time.Millisecond
	c, err := newChecker(healthConfig{Check: srv.URL + "/readyz", CheckInterval: interval, CheckTimeout: interval, CheckRise: 2, CheckFall: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan healthEvent)
	done := make(chan struct{})
	go func() { c.run(ctx, events); close(done) }()
	defer func() { cancel(); <-done }()

	// Two passes: the first at once, the second one interval later.
	start := time.Now()
	if ev := waitEvent(t, events, 2*time.Second); !ev.healthy || ev.reason != "2 checks passed" {
		t.Fatalf("first event %+v", ev)
	}
	if took := time.Since(start); took < interval-10*time.Millisecond || took > 10*interval {
		t.Errorf("healthy after %v with rise=2 and interval %v", took, interval)
	}
	noEvent(t, events, 3*interval)

	srv.set(http.StatusServiceUnavailable)
	start = time.Now()
	ev := waitEvent(t, events, 2*time.Second)
	if ev.healthy || !strings.HasPrefix(ev.reason, "3 checks failed: GET "+srv.URL+"/readyz: status 503") {
		t.Fatalf("second event %+v", ev)
	}
	// Three failures are at least two intervals apart from the first.
	if took := time.Since(start); took < 2*interval-10*time.Millisecond {
		t.Errorf("unhealthy after %v with fall=3 and interval %v", took, interval)
	}

	srv.set(http.StatusNoContent)
	if ev := waitEvent(t, events, 2*time.Second); !ev.healthy {
		t.Fatalf("third event %+v", ev)
	}
}

func TestCheckerFirstCheckAtOnce(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {})
	c, err := newChecker(healthConfig{Check: "tcp://" + addr, CheckInterval: time.Hour, CheckTimeout: time.Second, CheckRise: 1, CheckFall: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan healthEvent, 1)
	go c.run(ctx, events)
	if ev := waitEvent(t, events, time.Second); !ev.healthy || ev.reason != "1 check passed" {
		t.Fatalf("event %+v", ev)
	}
}

// TestCheckerStops: run returns soon after ctx ends, whether it is
// waiting for the next tick, in the middle of a check against a server that
// stalls, or blocked on a send nobody receives; and it leaves no goroutine.
func TestCheckerStops(t *testing.T) {
	stalled := rawServer(t, stall)
	up := newSettableServer(t, http.StatusOK)
	pki := newCheckPKI(t)
	verified := newStatusServer(t, &pki.server)
	for _, tt := range []struct {
		name     string
		url      string
		tls      *tls.Config
		interval time.Duration
		read     bool // whether anyone reads the events
	}{
		{"between checks", up.URL + "/", nil, time.Hour, true},
		{"during a stalled check", "http://" + stalled + "/", nil, time.Hour, true},
		{"during a stalled handshake", "https://" + stalled + "/", mustCheckTLS(t, "https://"+stalled, nil), time.Hour, true},
		{"blocked on the send", up.URL + "/", nil, 10 * time.Millisecond, false},
		{"https, checking often", verified.URL + "/", mustCheckTLS(t, verified.URL, pki.caPEM), 5 * time.Millisecond, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			c, err := newChecker(healthConfig{Check: tt.url, CheckInterval: tt.interval, CheckTimeout: tt.interval, CheckRise: 1, CheckFall: 1}, tt.tls)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			events := make(chan healthEvent)
			done := make(chan struct{})
			go func() { c.run(ctx, events); close(done) }()
			readDone := make(chan struct{})
			go func() {
				defer close(readDone)
				for tt.read {
					select {
					case <-events:
					case <-done:
						return
					}
				}
			}()
			time.Sleep(200 * time.Millisecond)
			cancel()
			start := time.Now()
			select {
			case <-done:
			case <-time.After(time.Second):
				t.Fatal("run did not return within 1s of the end of its context")
			}
			if took := time.Since(start); took > 250*time.Millisecond {
				t.Errorf("run returned %v after the end of its context", took)
			}
			<-readDone
			// Goroutines of the test servers may take a moment to see
			// the connections close.
			var now int
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if now = runtime.NumGoroutine(); now <= before {
					return
				}
			}
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after\n%s", before, now, buf[:runtime.Stack(buf, true)])
		})
	}
}

// TestCheckCAFromConfigSource: a relative vip.check.ca resolves next to
// the config file (inside a partition, the same code reads it while
// mounted), and its bytes reach checkTLS.
func TestCheckCAFromConfigSource(t *testing.T) {
	pki := newCheckPKI(t)
	dir := t.TempDir()
	lab.WriteFile(t, dir+"/check-ca.pem", string(pki.caPEM))
	lab.WriteFile(t, dir+"/vipd.conf", "vip.address=192.0.2.10\nvip.etcd=http://192.0.2.1:2379\n"+
		"vip.check=https://192.0.2.5:6443/readyz\nvip.check.ca=check-ca.pem\n")
	spec, err := parseConfigSpec(dir + "/vipd.conf")
	if err != nil {
		t.Fatal(err)
	}
	lc, err := loadConfig(spec, time.Second, nil, func(words []string) map[string]string {
		c, _, err := parseConfigSources(nil, nil, words, "")
		if err != nil {
			t.Fatalf("config file words %q: %v", words, err)
		}
		return tlsPaths(c)
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parseConfigSources(nil, nil, lc.words, "")
	if err != nil {
		t.Fatal(err)
	}
	if f := lc.files["vip.check.ca"]; string(f.data) != string(pki.caPEM) || f.path != "check-ca.pem" {
		t.Fatalf("vip.check.ca loaded as %q from %q", f.data, f.path)
	}
	etcd, err := etcdTLS(cfg.etcdConfig, lc.files, &logger{w: io.Discard})
	if etcd != nil || err != nil {
		t.Fatalf("etcdTLS with only a check CA: %+v, %v", etcd, err)
	}
	tlsCfg, err := checkTLS(cfg.healthConfig, lc.files)
	if err != nil || tlsCfg == nil || tlsCfg.RootCAs == nil || tlsCfg.InsecureSkipVerify || tlsCfg.ServerName != "192.0.2.5" {
		t.Fatalf("checkTLS: %+v, %v", tlsCfg, err)
	}

	// A CA file that is not there is bad input naming the key and the path.
	lab.WriteFile(t, dir+"/vipd.conf", "vip.address=192.0.2.10\nvip.etcd=http://192.0.2.1:2379\n"+
		"vip.check=https://192.0.2.5:6443/readyz\nvip.check.ca=missing.pem\n")
	_, err = loadConfig(spec, time.Second, nil, func(words []string) map[string]string {
		c, _, _ := parseConfigSources(nil, nil, words, "")
		return tlsPaths(c)
	})
	var ce *configError
	if !errors.As(err, &ce) || ce.Key != "vip.check.ca" || ce.Value != "missing.pem" {
		t.Fatalf("missing CA: %v", err)
	}
}

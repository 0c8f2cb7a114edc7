package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// A lab service stands for what the VIP fronts on a node: an HTTP health
// endpoint (GET /healthz answers 200, port 8080, every address) for vipd's
// vip.check or keepalived's track_script, and the node's UDP echo responder,
// which is what the client prober measures. down takes both away at once, so
// "the service dies" means that the check fails and that clients go
// unanswered; the sockets are closed, so connections are refused at once
// instead of hanging until a timeout.

const (
	ServicePort = 8080
	CheckURL    = "http://127.0.0.1:8080/healthz" // as seen from inside a node's namespace
)

type Service struct {
	T     testing.TB
	Nd    *Node
	Mu    sync.Mutex
	http  *http.Server // nil while down
	echo  *echo
	since time.Time // when it last came up
}

// StartServices brings up a service in every node namespace (also reachable
// as nd.service) and takes them down when the test ends. Use it instead of
// startResponders: both answer on the echo port.
func (l *Lab) StartServices() []*Service {
	var svcs []*Service
	for _, nd := range l.Nodes {
		s := &Service{T: l.T, Nd: nd}
		l.T.Cleanup(s.Down) // before the namespace goes
		s.Up()
		nd.Service = s
		svcs = append(svcs, s)
	}
	return svcs
}

// Up opens the health endpoint and the echo responder (no-op if up).
func (s *Service) Up() {
	s.T.Helper()
	s.Mu.Lock()
	defer s.Mu.Unlock()
	if s.http != nil {
		return
	}
	var ln net.Listener
	err := s.Nd.NS.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", ServicePort))
		return err
	})
	if err != nil {
		s.T.Fatalf("health endpoint in %s: %v", s.Nd.Name, err)
	}
	echo, err := startEcho(s.Nd)
	if err != nil {
		ln.Close()
		s.T.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.http, s.echo, s.since = &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}, echo, time.Now()
	go s.http.Serve(ln)
}

// upFor is how long the service has been up (0 while down).
func (s *Service) upFor() time.Duration {
	s.Mu.Lock()
	defer s.Mu.Unlock()
	if s.http == nil {
		return 0
	}
	return time.Since(s.since)
}

// WaitServicesUp waits (bounded) until every node's service has been up for
// d, e.g. for its health check to have risen again.
func (l *Lab) WaitServicesUp(d time.Duration) {
	l.T.Helper()
	WaitFor(l.T, d+30*time.Second, fmt.Sprintf("every service to be up for %v", d), func() bool {
		for _, nd := range l.Nodes {
			if nd.Service == nil || nd.Service.upFor() < d {
				return false
			}
		}
		return true
	})
}

// Down closes both sockets and any open HTTP connection (no-op if down).
func (s *Service) Down() {
	s.Mu.Lock()
	defer s.Mu.Unlock()
	if s.http == nil {
		return
	}
	s.http.Close()
	s.echo.Close()
	s.http, s.echo = nil, nil
}

// NSHTTP is an HTTP client whose connections start in ns, without
// keep-alive: each request is a new connection, as a check makes.
func NSHTTP(ns *NS) *http.Client {
	return &http.Client{
		Timeout: time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := ns.Do(func() (err error) {
				c, err = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}},
	}
}

// HealthStatus GETs url from ns: the status code, or the error.
func HealthStatus(ns *NS, url string) (int, error) {
	resp, err := NSHTTP(ns).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// EchoFrom sends one probe from ns to addr's echo port and returns the name
// in the answer ("" if none came within timeout).
func EchoFrom(ns *NS, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.Dial("udp", net.JoinHostPort(addr, fmt.Sprint(labEchoPort)))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("echo socket in %s: %w", ns.Name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("probe")); err != nil {
		return "", fmt.Errorf("echo probe to %s: %w", addr, err)
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return "", nil // refused (ICMP port unreachable) or timed out: no answer
	}
	return string(buf[len("probe"):n]), nil
}

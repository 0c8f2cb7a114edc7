package scenario

import (
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestLabService proves the helper that the health-gated tests and the
// service-failure benchmark rely on: up answers (the check's URL inside the
// node, the node's address from the client, the echo), down refuses, up
// again answers again.
func TestLabService(t *testing.T) {
	l := lab.NewWith(t, lab.Options{Nodes: 2, NoEtcd: true})
	svcs := l.StartServices()
	s, other := svcs[0], svcs[1]
	nodeURL := fmt.Sprintf("http://%s:%d/healthz", s.Nd.IP, lab.ServicePort)

	wantUp := func(when string) {
		t.Helper()
		for _, c := range []struct {
			NS  *lab.NS
			url string
		}{{s.Nd.NS, lab.CheckURL}, {l.Client, nodeURL}} {
			if code, err := lab.HealthStatus(c.NS, c.url); err != nil || code != http.StatusOK {
				t.Fatalf("%s: GET %s from %s: status %d, error %v; want 200", when, c.url, c.NS.Name, code, err)
			}
		}
		if name, err := lab.EchoFrom(l.Client, s.Nd.IP, time.Second); err != nil || name != s.Nd.Name {
			t.Fatalf("%s: echo from %s answered %q (%v), want %q", when, s.Nd.IP, name, err, s.Nd.Name)
		}
	}
	wantDown := func(when string) {
		t.Helper()
		for _, c := range []struct {
			NS  *lab.NS
			url string
		}{{s.Nd.NS, lab.CheckURL}, {l.Client, nodeURL}} {
			if code, err := lab.HealthStatus(c.NS, c.url); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("%s: GET %s from %s: status %d, error %v; want connection refused", when, c.url, c.NS.Name, code, err)
			}
		}
		if name, err := lab.EchoFrom(l.Client, s.Nd.IP, 300*time.Millisecond); err != nil || name != "" {
			t.Fatalf("%s: echo from %s answered %q (%v), want no answer", when, s.Nd.IP, name, err)
		}
	}

	wantUp("up")
	s.Down()
	wantDown("down")
	// Only this node's service went: the other one still answers.
	if code, err := lab.HealthStatus(other.Nd.NS, lab.CheckURL); err != nil || code != http.StatusOK {
		t.Fatalf("the other node's service: status %d, error %v; want 200", code, err)
	}
	s.Down() // twice is harmless
	s.Up()
	wantUp("up again")
}

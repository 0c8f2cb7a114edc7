package scenario

// TestLabService proves the helper that the health-gated tests and the
// service-failure benchmark rely on: up answers (the check's URL inside the
// node, the node's address from the client, the echo), down refuses, up
// again answers again.
func TestLabService(t *testing.T) {
	l := newLabWith(t, labOptions{nodes: 2, noEtcd: true})
	svcs := l.startServices()
	s, other := svcs[0], svcs[1]
	nodeURL := fmt.Sprintf("http://%s:%d/healthz", s.nd.ip, labServicePort)

	wantUp := func(when string) {
		t.Helper()
		for _, c := range []struct {
			ns  *testNS
			url string
		}{{s.nd.ns, labCheckURL}, {l.client, nodeURL}} {
			if code, err := healthStatus(c.ns, c.url); err != nil || code != http.StatusOK {
				t.Fatalf("%s: GET %s from %s: status %d, error %v; want 200", when, c.url, c.ns.name, code, err)
			}
		}
		if name, err := echoFrom(l.client, s.nd.ip, time.Second); err != nil || name != s.nd.name {
			t.Fatalf("%s: echo from %s answered %q (%v), want %q", when, s.nd.ip, name, err, s.nd.name)
		}
	}
	wantDown := func(when string) {
		t.Helper()
		for _, c := range []struct {
			ns  *testNS
			url string
		}{{s.nd.ns, labCheckURL}, {l.client, nodeURL}} {
			if code, err := healthStatus(c.ns, c.url); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("%s: GET %s from %s: status %d, error %v; want connection refused", when, c.url, c.ns.name, code, err)
			}
		}
		if name, err := echoFrom(l.client, s.nd.ip, 300*time.Millisecond); err != nil || name != "" {
			t.Fatalf("%s: echo from %s answered %q (%v), want no answer", when, s.nd.ip, name, err)
		}
	}

	wantUp("up")
	s.down()
	wantDown("down")
	// Only this node's service went: the other one still answers.
	if code, err := healthStatus(other.nd.ns, labCheckURL); err != nil || code != http.StatusOK {
		t.Fatalf("the other node's service: status %d, error %v; want 200", code, err)
	}
	s.down() // twice is harmless
	s.up()
	wantUp("up again")
}

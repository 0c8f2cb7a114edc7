package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// scrape sends one request line to the metrics handler over a pipe and
// returns the parsed answer.
func scrape(t *testing.T, m *metrics, request string) (*http.Response, string) {
	t.Helper()
	client, server := net.Pipe()
	go m.answer(server)
	defer client.Close()
	go io.WriteString(client, request+"\r\nHost: x\r\nAccept: */*\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%q: body: %v", request, err)
	}
	return resp, string(body)
}

func TestMetricsEndpoint(t *testing.T) {
	m := &metrics{}
	resp, body := scrape(t, m, "GET /metrics HTTP/1.1")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"\nvipd_leader 0\n", "vipd_build_info{version=", "\ngo_goroutines ", "# TYPE vipd_leader gauge\n"} {
		if !strings.Contains("\n"+body, want) {
			t.Errorf("GET /metrics lacks %q:\n%s", want, body)
		}
	}
	// Every sample line is NAME[{LABELS}] VALUE after its HELP and TYPE.
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		if strings.HasPrefix(line, "# ") {
			continue
		}
		if f := strings.Fields(line); len(f) != 2 {
			t.Errorf("sample line %q is not NAME VALUE", line)
		}
	}
	m.leader.Store(true)
	if _, body := scrape(t, m, "GET /metrics?x=1 HTTP/1.1"); !strings.Contains(body, "\nvipd_leader 1\n") {
		t.Errorf("leader not shown:\n%s", body)
	}
	if resp, _ := scrape(t, m, "GET / HTTP/1.1"); resp.StatusCode != 404 {
		t.Errorf("GET /: %s, want 404", resp.Status)
	}
	if resp, _ := scrape(t, m, "POST /metrics HTTP/1.1"); resp.StatusCode != 405 {
		t.Errorf("POST /metrics: %s, want 405", resp.Status)
	}
}

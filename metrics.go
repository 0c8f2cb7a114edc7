package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// metrics is what the node publishes for /metrics. The node's loop writes
// it; the HTTP handler reads it; atomics keep the two apart without a lock
// that a slow scrape could hold.
type metrics struct {
	leader atomic.Bool
}

// serveMetrics serves the Prometheus text format on addr until ctx ends.
// Both the format and the bit of HTTP/1.1 a scrape needs (one GET, then
// close) are written directly: net/http's server alone would add half a
// MiB to a binary that must stay under 14 MiB, and a client library more.
// A listen failure (the address is not on this node yet, early at boot) is
// retried, and logged once.
func serveMetrics(ctx context.Context, addr string, m *metrics, log *logger) {
	logged := false
	for ctx.Err() == nil {
		ln, err := net.Listen("tcp", addr)
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

// exposition renders every metric.
func (m *metrics) exposition() []byte {
	var b bytes.Buffer
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", name, help, name, name, strconv.FormatFloat(v, 'g', -1, 64))
	}
	leader := 0.0
	if m.leader.Load() {
		leader = 1
	}
	gauge("vipd_leader", "1 while this node holds the VIP.", leader)
	fmt.Fprintf(&b, "# HELP vipd_build_info The running vipd's version.\n# TYPE vipd_build_info gauge\nvipd_build_info{version=%q} 1\n", version)
	gauge("go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	if rss, ok := residentBytes(); ok {
		gauge("process_resident_memory_bytes", "Resident memory size in bytes.", float64(rss))
	}
	return b.Bytes()
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

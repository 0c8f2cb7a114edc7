package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
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
// The format is written directly: a client library would add megabytes to
// a binary that must stay small, for a handful of lines. A listen failure
// (the address is not on this node yet, early at boot) is retried, and
// logged once.
func serveMetrics(ctx context.Context, addr string, m *metrics, log *logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(m.exposition())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
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
		if err := srv.Serve(ln); errors.Is(err, http.ErrServerClosed) {
			return
		}
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

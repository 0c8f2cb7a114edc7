package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"
)

// What a term makes of etcd's failures: the metric, and the reason a plain
// connection attempt can tell.

// failed counts a failed etcd request (err set), unless ctx ended: a
// request the term's end cut off has not failed.
func (t *term) failed(ctx context.Context, op etcdOp, err error) {
	if err != nil && ctx.Err() == nil {
		t.cfg.met.etcdFailed(op)
	}
}

// diagnose says why etcd cannot be reached where a plain connection attempt
// can tell: the client library waits for a connection and reports only a
// deadline, which hides a refused connection or a certificate mismatch.
func diagnose(endpoints []string, tlsCfg *tls.Config) string {
	// In parallel: the term waits for this before it retries.
	errs := make([]error, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Go(func() { errs[i] = dialEndpoint(ep, tlsCfg, time.Second) })
	}
	wg.Wait()
	var reasons []string
	for i, err := range errs {
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", endpoints[i], err))
		}
	}
	if len(reasons) == 0 {
		return ""
	}
	return " [" + strings.Join(reasons, "; ") + "]"
}

// dialEndpoint connects to an etcd endpoint and, for https, completes the
// TLS handshake.
func dialEndpoint(endpoint string, tlsCfg *tls.Config, timeout time.Duration) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "2379")
	}
	conn, err := net.DialTimeout("tcp", host, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if u.Scheme != "https" {
		return nil
	}
	cfg := &tls.Config{}
	if tlsCfg != nil {
		cfg = tlsCfg.Clone()
	}
	cfg.ServerName = u.Hostname()
	conn.SetDeadline(time.Now().Add(timeout))
	return tls.Client(conn, cfg).Handshake()
}

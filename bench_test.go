package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// `make bench` runs these with -benchtime 1x: each run does its own trials
// and prints a table. Nothing here asserts a time.

func benchTrials() int {
	if n, err := strconv.Atoi(os.Getenv("VIPD_BENCH_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 10
}

// arpCapture records the gratuitous ARP requests the client namespace sees.
type arpCapture struct {
	mu     sync.Mutex
	frames []capturedARP
	conn   *packet.Conn
}

type capturedARP struct {
	at     time.Time
	sender string
}

func captureARP(b testing.TB, ns *testNS) *arpCapture {
	c := &arpCapture{}
	err := ns.do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c.conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
		return err
	})
	if err != nil {
		b.Fatalf("capture ARP in %s: %v", ns.name, err)
	}
	b.Cleanup(func() { c.conn.Close() })
	vip := netip.MustParseAddr(labVIP)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			at := time.Now()
			var f ethernetFrame
			var p arpPacket
			if f.UnmarshalBinary(buf[:n]) != nil || p.UnmarshalBinary(f.Payload) != nil {
				continue
			}
			if p.SenderIP == vip && p.TargetIP == vip {
				c.mu.Lock()
				c.frames = append(c.frames, capturedARP{at: at, sender: p.SenderHardwareAddr.String()})
				c.mu.Unlock()
			}
		}
	}()
	return c
}

// first is the first announcement from mac at or after t (zero if none).
func (c *arpCapture) first(mac string, after time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.frames {
		if f.sender == mac && !f.at.Before(after) {
			return f.at
		}
	}
	return time.Time{}
}

type series struct {
	name string
	unit time.Duration
	vals []time.Duration
}

func (s *series) row() string {
	if len(s.vals) == 0 {
		return fmt.Sprintf("| %-38s | %3d | %8s | %8s | %8s | %8s |", s.name, 0, "-", "-", "-", "-")
	}
	v := slices.Clone(s.vals)
	slices.Sort(v)
	pct := func(p float64) time.Duration { return v[min(len(v)-1, int(p*float64(len(v))))] }
	f := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/float64(s.unit), 'f', 2, 64) }
	return fmt.Sprintf("| %-38s | %3d | %8s | %8s | %8s | %8s |", s.name, len(v), f(v[0]), f(pct(0.5)), f(pct(0.95)), f(v[len(v)-1]))
}

func printTable(title, unit string, rows []*series) {
	fmt.Printf("\n%s\n\n| %-38s | %3s | %8s | %8s | %8s | %8s |\n|%s|-----|----------|----------|----------|----------|\n",
		title, "measure ("+unit+")", "n", "min", "median", "p95", "max", strings.Repeat("-", 40))
	for _, r := range rows {
		fmt.Println(r.row())
	}
}

// BenchmarkFailover measures, with vip.ttl=2 and etcd's default timers:
// SIGTERM on the holder to the next node holding the address; SIGKILL on
// the holder to the next node holding it; and the time from the address
// being added to the first gratuitous ARP seen by the client.
func BenchmarkFailover(b *testing.B) {
	l := newLab(b, 3, "vip.ttl=2")
	l.startAll()
	capture := captureARP(b, l.client)
	trials := benchTrials()

	graceful := &series{name: "graceful: SIGTERM to next holder", unit: time.Millisecond}
	crash := &series{name: "crash: SIGKILL to next holder", unit: time.Millisecond}
	announce := &series{name: "address added to first GARP on wire", unit: time.Millisecond}

	for _, tc := range []struct {
		sig syscall.Signal
		s   *series
	}{{syscall.SIGTERM, graceful}, {syscall.SIGKILL, crash}} {
		for i := 0; i < trials; i++ {
			old := l.holder(electBound, time.Second)
			t0 := time.Now()
			l.signal(old, tc.sig)
			next := l.holderOtherThan(old, moveBound)
			added := l.mon.gainedAt(slices.Index(l.nodes, next))
			tc.s.vals = append(tc.s.vals, added.Sub(t0))
			// Frames and netlink events are stamped by different goroutines:
			// the difference can be a little below zero.
			waitFor(b, 5*time.Second, "the takeover announcement", func() bool { return !capture.first(next.mac, t0).IsZero() })
			announce.vals = append(announce.vals, capture.first(next.mac, t0).Sub(added))
			l.wait(old, 5*time.Second)
			l.waitGone(old, 5*time.Second) // a crashed node's copy expires by its lifetime
			l.start(old)
		}
	}
	l.assertNoOverlap()
	printTable(fmt.Sprintf("Failover, 3 nodes, vip.ttl=2, etcd default timers, %d trials each", trials), "ms",
		[]*series{graceful, crash, announce})
}

// BenchmarkIdle measures the binary and an idle leader and follower: RSS and
// CPU time over a quiet minute (VIPD_BENCH_IDLE, default 30s).
func BenchmarkIdle(b *testing.B) {
	bin, _ := binaries(b)
	st, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	idle := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv("VIPD_BENCH_IDLE")); err == nil {
		idle = d
	}

	l := newLab(b, 2, "vip.ttl=2")
	l.startAll()
	leader := l.holder(electBound, time.Second)
	follower := l.nodes[0]
	if follower == leader {
		follower = l.nodes[1]
	}
	cpu0 := map[*labNode]time.Duration{leader: cpuTime(b, leader), follower: cpuTime(b, follower)}
	time.Sleep(idle)
	fmt.Printf("\nResources (stripped static binary, idle %v, vip.ttl=2)\n\n", idle)
	fmt.Printf("| measure | value |\n|---|---|\n")
	fmt.Printf("| binary size, stripped, CGO_ENABLED=0 | %.1f MiB |\n", float64(st.Size())/(1<<20))
	for _, nd := range []*labNode{leader, follower} {
		role := "leader"
		if nd == follower {
			role = "follower"
		}
		used := cpuTime(b, nd) - cpu0[nd]
		fmt.Printf("| %s RSS | %.1f MiB |\n", role, float64(rss(b, nd))/(1<<20))
		fmt.Printf("| %s CPU | %.2f%% (%.1f s per hour) |\n", role, 100*used.Seconds()/idle.Seconds(), used.Seconds()*3600/idle.Seconds())
	}
}

// cpuTime is user+system time of the node's vipd, from /proc/PID/stat.
func cpuTime(b testing.TB, nd *labNode) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", nd.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func rss(b testing.TB, nd *labNode) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", nd.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

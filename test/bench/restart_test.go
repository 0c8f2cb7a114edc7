package bench

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRestart measures what a client sees when the holder's vipd is
// restarted without a failover (issue 11): SIGHUP (re-exec in place) and
// SIGKILL followed by an immediate start (crash resume). Per trial: the
// longest stretch between two answered probes beyond one probe interval
// (0 when no probe was lost), the probes lost, and whether another node
// took the VIP.
func BenchmarkRestart(b *testing.B) {
	r := &report{b: b}
	trials := benchTrials()
	restarts := []struct {
		name    string
		restart func(l *lab, h *labNode)
	}{
		{"SIGHUP of the holder's vipd", func(l *lab, h *labNode) {
			n := countLines(h, "resumed the earlier run's lease")
			l.signal(h, syscall.SIGHUP)
			waitFor(b, 10*time.Second, "the re-executed vipd to resume", func() bool {
				return countLines(h, "resumed the earlier run's lease") > n
			})
		}},
		{"SIGKILL + restart of the holder's vipd", func(l *lab, h *labNode) {
			l.kill(h)
			l.start(h)
			waitFor(b, 10*time.Second, "the restarted vipd to resume", func() bool {
				return countLines(h, "resumed the earlier run's lease") > 0
			})
		}},
	}
	var rows [][]string
	for _, rs := range restarts {
		b.Run(rs.name, func(b *testing.B) {
			l := newLabWith(b, labOptions{nodes: 3, cluster: true, dualStack: true, args: []string{"vip.ttl=2"}})
			p := l.startProber()
			l.startAll()
			h := l.holder(electBound, time.Second)
			gains := l.mon.gains()
			var outs []time.Duration
			lost := 0
			for i := 0; i < trials; i++ {
				// Spread the restart over the holder's renewal cycle.
				time.Sleep(time.Second + time.Duration(i%10)*100*time.Millisecond)
				t0 := time.Now()
				rs.restart(l, h)
				time.Sleep(time.Second)
				from, to := t0.Add(-2*probeInterval), time.Now().Add(-100*time.Millisecond)
				gap, _ := p.maxGap(from, to)
				outs = append(outs, max(0, gap-probeInterval))
				lost += p.lost(from, to)
			}
			moves := l.mon.gains() - gains
			rows = append(rows, append(append([]string{"vipd, vip.ttl=2", rs.name}, stats(outs)...),
				strconv.Itoa(lost), strconv.Itoa(moves), strconv.Itoa(len(l.overlaps()))))
		})
	}
	r.table(fmt.Sprintf("Restart without failover, 3 nodes, a UDP probe to the VIP every 10 ms, %d trials each: longest gap between answers beyond one probe interval (ms), probes lost, VIP moves", trials),
		[]string{"daemon", "restart", "n", "min", "median", "p95", "max", "probes lost (all trials)", "holder changes", "overlaps"}, rows)
	r.write()
}

// countLines is how many lines of the node's current vipd log contain s.
func countLines(nd *labNode, s string) int {
	if nd.log == nil {
		return 0
	}
	return strings.Count(nd.log.String(), s)
}

package bench

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// BenchmarkRestart measures what a client sees when the holder's vipd is
// restarted without a failover (issue 11): SIGHUP (re-exec in place) and
// SIGKILL followed by an immediate start (crash resume). Per trial: the
// longest stretch between two answered probes beyond one probe interval
// (0 when no probe was lost), the probes lost, and whether another node
// took the VIP.
func BenchmarkRestart(b *testing.B) {
	r := &lab.Report{}
	trials := benchTrials()
	restarts := []struct {
		Name    string
		Restart func(l *lab.Lab, h *lab.Node)
	}{
		{"SIGHUP of the holder's vipd", func(l *lab.Lab, h *lab.Node) {
			n := countLines(h, "resumed the earlier run's lease")
			l.Signal(h, syscall.SIGHUP)
			lab.WaitFor(b, 10*time.Second, "the re-executed vipd to resume", func() bool {
				return countLines(h, "resumed the earlier run's lease") > n
			})
		}},
		{"SIGKILL + restart of the holder's vipd", func(l *lab.Lab, h *lab.Node) {
			l.Kill(h)
			l.Start(h)
			lab.WaitFor(b, 10*time.Second, "the restarted vipd to resume", func() bool {
				return countLines(h, "resumed the earlier run's lease") > 0
			})
		}},
	}
	var rows [][]string
	for _, rs := range restarts {
		b.Run(rs.Name, func(b *testing.B) {
			l := lab.NewWith(b, lab.Options{Nodes: 3, Cluster: true, DualStack: true, Args: []string{"vip.ttl=2"}})
			p := l.StartProber()
			l.StartAll()
			h := l.Holder(lab.ElectBound, time.Second)
			gains := l.Mon.Gains()
			var outs []time.Duration
			lost := 0
			for i := 0; i < trials; i++ {
				// Spread the restart over the holder's renewal cycle.
				time.Sleep(time.Second + time.Duration(i%10)*100*time.Millisecond)
				t0 := time.Now()
				rs.Restart(l, h)
				time.Sleep(time.Second)
				from, to := t0.Add(-2*lab.ProbeInterval), time.Now().Add(-100*time.Millisecond)
				gap, _ := p.MaxGap(from, to)
				outs = append(outs, max(0, gap-lab.ProbeInterval))
				lost += p.Lost(from, to)
			}
			moves := l.Mon.Gains() - gains
			rows = append(rows, append(append([]string{"vipd, vip.ttl=2", rs.Name}, stats(outs)...),
				strconv.Itoa(lost), strconv.Itoa(moves), strconv.Itoa(len(l.Overlaps()))))
		})
	}
	r.Table(fmt.Sprintf("Restart without failover, 3 nodes, a UDP probe to the VIP every 10 ms, %d trials each: longest gap between answers beyond one probe interval (ms), probes lost, VIP moves", trials),
		[]string{"daemon", "restart", "n", "min", "median", "p95", "max", "probes lost (all trials)", "holder changes", "overlaps"}, rows)
	writeReport(b, r)
}

// countLines is how many lines of the node's current vipd log contain s.
func countLines(nd *lab.Node, s string) int {
	if nd.Log == nil {
		return 0
	}
	return strings.Count(nd.Log.String(), s)
}

package bench

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// A disturbance is etcd trouble that takes no vipd node away: whether it
// moves the VIP depends only on the failure-detection window.
type disturbance struct {
	Name string
	do   func(l *lab.Lab, ids map[*lab.EtcdMember]string) // ids: each member's, read before any is frozen
}

var disturbances = []disturbance{
	{"etcd leader moved (transfer-leadership)", func(l *lab.Lab, ids map[*lab.EtcdMember]string) {
		from := l.EtcdLeader()
		for _, m := range l.Etcd {
			if m != from {
				l.MoveEtcdLeader(m)
				return
			}
		}
	}},
	{"etcd leader frozen until another leads (SIGSTOP)", func(l *lab.Lab, ids map[*lab.EtcdMember]string) {
		m := l.EtcdLeader()
		if m == nil {
			l.T.Fatal("no etcd leader")
		}
		signalMember(l, m, syscall.SIGSTOP)
		defer signalMember(l, m, syscall.SIGCONT)
		lab.WaitFor(l.T, 15*time.Second, "another etcd member to lead", func() bool {
			for _, o := range l.Etcd {
				if o == m {
					continue
				}
				if _, leader, err := l.EtcdStatus(o); err == nil && leader != "" && leader != ids[m] {
					return true
				}
			}
			return false
		})
	}},
	{"etcd stalled 1 s (every member SIGSTOPped)", func(l *lab.Lab, ids map[*lab.EtcdMember]string) {
		for _, m := range l.Etcd {
			signalMember(l, m, syscall.SIGSTOP)
		}
		time.Sleep(time.Second)
		for _, m := range l.Etcd {
			signalMember(l, m, syscall.SIGCONT)
		}
	}},
}

func signalMember(l *lab.Lab, m *lab.EtcdMember, sig syscall.Signal) {
	if err := m.Cmd.Process.Signal(sig); err != nil {
		l.T.Fatalf("signal %v to etcd member %s: %v", sig, m.Name, err)
	}
}

// BenchmarkEtcdDisturbance counts how often etcd trouble alone (a leader
// change, a frozen leader, a one-second stall of the whole cluster) moves
// the VIP and how long the client goes unanswered, for the TTL rule, the
// kernel fence at the default window (the TTL) and at the short window
// of the failover rows: what a short window costs.
func BenchmarkEtcdDisturbance(b *testing.B) {
	r := &lab.Report{}
	trials := benchTrials()
	configs := []benchConfig{
		{"vipd, vip.ttl=2, no kernel fence, etcd default timers", nil, []string{"vip.ttl=2"}, true},
		{"vipd, kernel fence, vip.ttl=2 vip.window=ttl (default), etcd default timers", nil, []string{"vip.ttl=2"}, false},
		{"vipd, kernel fence, vip.ttl=2 " + benchWindow + ", etcd default timers", nil, []string{"vip.ttl=2", benchWindow}, false},
		{"vipd, kernel fence, vip.ttl=2 " + benchWindow + ", etcd --heartbeat-interval=50 --election-timeout=500", fastEtcd, []string{"vip.ttl=2", benchWindow}, false},
	}
	var rows [][]string
	for _, cfg := range configs {
		for _, d := range disturbances {
			b.Run(cfg.Name+"/"+d.Name, func(b *testing.B) {
				if cfg.noFence {
					b.Setenv("VIPD_TEST_NO_KERNEL_FENCE", "1")
				}
				l := lab.NewWith(b, lab.Options{Nodes: 3, Cluster: true, EtcdFlags: cfg.EtcdFlags, Args: cfg.words})
				ids := map[*lab.EtcdMember]string{}
				for _, m := range l.Etcd {
					id, _, err := l.EtcdStatus(m)
					if err != nil {
						b.Fatalf("status of etcd member %s: %v", m.Name, err)
					}
					ids[m] = id
				}
				p := l.StartProber() // the responders too: the client's gaps are measured
				for _, nd := range l.Nodes {
					l.Start(nd)
				}
				moved, moves := 0, 0
				var gaps []time.Duration
				for i := 0; i < trials; i++ {
					waitEtcdHealthy(b, l)
					l.Holder(3*lab.ElectBound, time.Second+time.Duration(i%10)*100*time.Millisecond)
					g0, t0 := l.Mon.Gains(), time.Now()
					d.do(l, ids)
					time.Sleep(3 * time.Second) // the VIP moves, if it does, within this
					if n := l.Mon.Gains() - g0; n > 0 {
						moved, moves = moved+1, moves+n
					}
					gap, _ := p.MaxGap(t0, time.Now())
					gaps = append(gaps, gap)
				}
				rows = append(rows, append([]string{cfg.Name, d.Name, strconv.Itoa(trials), strconv.Itoa(moved), strconv.Itoa(moves)},
					stats(gaps)[2], stats(gaps)[4], strconv.Itoa(len(l.Overlaps()))))
			})
		}
	}
	r.Table(fmt.Sprintf("etcd trouble without a node lost, 3 nodes each hosting an etcd member, a UDP probe to the VIP every 10 ms, %d trials each: trials in which the VIP moved, and the longest client gap per trial (ms, median and max)", trials),
		[]string{"daemon and window", "disturbance", "trials", "trials the VIP moved", "moves", "longest gap median", "longest gap max", "overlaps"}, rows)
	writeReport(b, r)
}

package demo

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestMain first deletes namespaces that killed runs left behind.
func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// TestDemo is `make demo`: the three-node lab with a live view; the holder
// is crashed, then stopped, and the failovers are measured. It runs only
// when VIPD_DEMO is set, and cleans up on Ctrl-C as on success.
func TestDemo(t *testing.T) {
	if os.Getenv("VIPD_DEMO") == "" {
		t.Skip("the demo runs with `sudo make demo`")
	}
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(interrupted)

	d := &demo{Start: time.Now(), interrupted: interrupted}
	d.say("building the lab: 3 nodes, each with vipd and an etcd member; a client probing %s every 10 ms", lab.VIP)
	l := lab.NewWith(t, lab.Options{Nodes: 3, Cluster: true, Args: []string{"vip.ttl=2"}})
	p := l.StartProber()
	l.StartAll()
	d.l, d.p = l, p

	if !d.watch(6*time.Second, func() bool { h, since := l.Mon.Current(); return len(h) == 1 && time.Since(since) > 3*time.Second }) {
		return
	}
	h := l.Holder(time.Second, 0)
	l.TouchVIP()
	time.Sleep(100 * time.Millisecond)
	d.say("%s holds %s; the client's neighbour entry says %s", h.Name, lab.VIP, l.ClientNeighbour())

	for _, step := range []struct {
		what string
		sig  syscall.Signal
	}{{"crashing", syscall.SIGKILL}, {"stopping", syscall.SIGTERM}} {
		h = l.Holder(time.Second, 0)
		d.say("")
		d.say("%s vipd on %s (%v)", step.what, h.Name, step.sig)
		t0 := time.Now()
		l.Signal(h, step.sig)
		if !d.watch(8*time.Second, func() bool {
			n, _ := l.Mon.Current()
			return len(n) == 1 && l.Nodes[n[0]] != h && p.LastAnswerFrom(l.Nodes[n[0]].Name).After(t0)
		}) {
			return
		}
		n, _ := l.Mon.Current()
		next := l.Nodes[n[0]]
		out, _ := p.Outage(t0, h.Name)
		d.say("measured: %s held %s %v after the signal; the client went %v without an answer; its neighbour entry now says %s",
			next.Name, lab.VIP, l.Mon.GainedAt(n[0]).Sub(t0).Round(time.Millisecond), out.Round(time.Millisecond), l.ClientNeighbour())
		l.Wait(h, 5*time.Second)
		l.Start(h)
		if !d.watch(3*time.Second, func() bool { return false }) {
			return
		}
	}
	if o := l.Mon.Overlaps(); len(o) > 0 {
		t.Errorf("two holders at once: %v", o)
	} else {
		d.say("never two holders at once. Cleaning up.")
	}
}

type demo struct {
	Start       time.Time
	l           *lab.Lab
	p           *lab.Prober
	interrupted chan os.Signal
	holders     string
	answering   string
	logLines    map[*lab.SyncBuffer]int // lines of each vipd log already shown
}

func (d *demo) say(format string, args ...any) {
	fmt.Printf("%6.2fs  %s\n", time.Since(d.Start).Seconds(), fmt.Sprintf(format, args...))
}

// watch prints what changes (holders, who answers the client, vipd state
// changes) for up to d, or until done; false if interrupted.
func (d *demo) watch(limit time.Duration, done func() bool) bool {
	if d.logLines == nil {
		d.logLines = map[*lab.SyncBuffer]int{}
	}
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		select {
		case sig := <-d.interrupted:
			d.say("%v: stopping the demo and cleaning up", sig)
			return false
		case <-time.After(20 * time.Millisecond):
		}
		held, _ := d.l.Mon.Current()
		if s := strings.Join(d.l.Names(held), ","); s != d.holders {
			d.holders = s
			if s == "" {
				s = "nobody"
			}
			d.say("address: %s holds %s", s, lab.VIP)
		}
		answering := "no answer"
		for _, nd := range d.l.Nodes {
			if time.Since(d.p.LastAnswerFrom(nd.Name)) < 100*time.Millisecond {
				answering = "answered by " + nd.Name
			}
		}
		if answering != d.answering {
			d.answering = answering
			d.say("client: %s", answering)
		}
		for _, nd := range d.l.Nodes {
			if nd.Log == nil {
				continue
			}
			lines := strings.Split(strings.TrimSpace(nd.Log.String()), "\n")
			for _, line := range lines[min(d.logLines[nd.Log], len(lines)):] {
				if strings.Contains(line, " -> ") {
					_, msg, _ := strings.Cut(line, "vipd: ")
					d.say("vipd %s: %s", nd.Name, msg)
				}
			}
			d.logLines[nd.Log] = len(lines)
		}
		if done() {
			return true
		}
	}
	return true
}

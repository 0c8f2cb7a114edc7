package skew

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// newHolderBound is the one timing bound: after the holder is
// killed or stopped, another node holds the VIP within TTL + 3 s, from the
// signal to the monitor seeing the address on the new holder.
const newHolderBound = lab.TTL + 3*time.Second

// faultsPerMix: SIGKILL and SIGTERM of the holder, alternated, this many
// in all (half of each).
const faultsPerMix = 10

// testFaults: in the mixes old-new-old (2 old + 1 new) and new-old-new
// (1 old + 2 new), all three nodes running, the holder is killed (SIGKILL)
// or stopped (SIGTERM), alternately, 5 times each. After each fault
// another node holds the VIP within TTL + 3 s, never two at once, the
// client's neighbour entry names it and it answers the client, and
// `-status -json` of both versions on every node names it; then the
// signalled node starts again with the same binary, so the mix stays.
// Which node takes over is the election's: the table says from which
// version to which. At the end the new -status (strict, with candidates
// and local views) names the holder on every node. After a SIGKILL the
// client's outage is shorter than the time to the new holder: the killed
// node's kernel keeps the VIP until its lifetime ends (the fence), and the
// lab's responder there, which is not vipd, answers until then.
func testFaults(t *testing.T) {
	for _, layout := range [][3]bool{{false, true, false}, {true, false, true}} {
		t.Run(layoutName(layout), func(t *testing.T) {
			s := newSkewLab(t, layout)
			s.startAll()
			var rows [][]string
			for i := range faultsPerMix {
				sig := syscall.SIGKILL
				if i%2 == 1 {
					sig = syscall.SIGTERM
				}
				rows = append(rows, s.fault(sig))
			}
			s.checkStatus(s.Holder(lab.MoveBound, time.Second))
			var r lab.Report
			r.Table(fmt.Sprintf("faults of the holder, %s (vip.ttl=2; bound on the new holder %v)", t.Name(), newHolderBound),
				[]string{"fault", "from", "to", "time to new holder", "client outage"}, rows)
		})
	}
}

func layoutName(layout [3]bool) string {
	name := map[bool]string{false: "old", true: "new"}
	return name[layout[0]] + "-" + name[layout[1]] + "-" + name[layout[2]]
}

// fault signals the holder (SIGKILL or SIGTERM), checks the takeover and
// starts the signalled node again; it returns the table row.
func (s *skewLab) fault(sig syscall.Signal) []string {
	t := s.T
	t.Helper()
	from := s.Holder(lab.MoveBound, time.Second)
	t0 := time.Now()
	how := "SIGKILL"
	if sig == syscall.SIGKILL {
		s.Kill(from)
	} else {
		how = "SIGTERM"
		s.stop(from)
	}
	to := s.HolderOtherThan(from, lab.MoveBound)
	took := s.Mon.GainedAt(lab.IndexOf(s.Nodes, to)).Sub(t0)
	if took <= 0 || took > newHolderBound {
		t.Errorf("%s of %s (%s): %s (%s) held the VIP %v after the signal, want within %v\n%s",
			how, from.Name, s.ver(from), to.Name, s.ver(to), took, newHolderBound, s.Mon.History())
	}
	s.WaitClientNeighbour(to.MAC, 5*time.Second)
	s.P.WaitAnsweredBy(t, to.Name, t0, 5*time.Second)
	s.AssertNoOverlap()
	s.Start(from)
	s.waitNamed(to)
	row := []string{how, from.Name + " (" + s.ver(from) + ")", to.Name + " (" + s.ver(to) + ")",
		took.Round(time.Millisecond).String(), s.outage(t0, from.Name)}
	t.Logf("%s of %s: new holder %s after %s, client outage %s; -status of both versions names it", how, row[1], row[2], row[3], row[4])
	return row
}

package skew

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// testNewWords: the words later versions add to the election entry
// (drained=1 here) do not confuse N-1, which skips them. n1 runs the old
// vipd and holds; n3, new, is drained. Both versions' -status name n1 as
// the holder and list n2 and n3 by their names; when n1 stops, the new
// n2 takes the VIP, not the drained n3, and both -status name it.
func testNewWords(t *testing.T) {
	s := newSkewLab(t, [3]bool{false, true, true})
	n1, n2, n3 := s.Nodes[0], s.Nodes[1], s.Nodes[2]
	s.startAll()
	if r := s.VipdOn(n3, "-drain"); r.Code != 0 {
		t.Fatalf("vipd -drain on n3: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	lab.WaitFor(t, 5*time.Second, "the old -status listing n2 and n3 by name", func() bool {
		return s.candidatesBy(n1, s.old) == "n2,n3"
	})
	s.waitNamed(n1)
	s.stop(n1)
	if h := s.HolderOtherThan(n1, lab.MoveBound); h != n2 {
		t.Fatalf("%s took the VIP from the old holder; want n2 (n3 is drained)\n%s", h.Name, s.Mon.History())
	}
	s.Start(n1)
	s.waitNamed(n2)
	s.AssertNoOverlap()
	if r := s.VipdOn(n2, "-undrain", "n3"); r.Code != 0 {
		t.Fatalf("vipd -undrain n3: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	s.Signal(n2, syscall.SIGTERM) // the next holder may be any of the two
	s.HolderOtherThan(n2, lab.MoveBound)
	s.AssertNoOverlap()
}

// candidatesBy is the candidates (not the holder) that `bin -status
// -json` on nd names, sorted and joined, read leniently as statusHolder
// does.
func (s *skewLab) candidatesBy(nd *lab.Node, bin string) string {
	r := s.StatusBy(bin, nd, "-json")
	var rep struct {
		Candidates []struct {
			Name string `json:"name"`
		} `json:"candidates"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		return fmt.Sprintf("exit %d: %v", r.Code, err)
	}
	var names []string
	for _, c := range rep.Candidates {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

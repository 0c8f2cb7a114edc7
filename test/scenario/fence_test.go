package scenario

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestFenceFreezeBeforeSend (issue 24): the holder is frozen after the
// deadline check of a takeover burst frame and before its sendto (the test
// hook VIPD_TEST_STOP_BEFORE_SEND stops the process right there), the
// other node takes the VIP over, and then the frozen one resumes. Without
// the kernel fence the frame leaves late, announcing the VIP from a node
// that no longer holds it: no check in user space can close that window.
// With the fence the kernel drops it, and the client's neighbour entry
// stays with the new holder.
func TestFenceFreezeBeforeSend(t *testing.T) {
	for _, withFence := range []bool{false, true} {
		name := map[bool]string{false: "without the kernel fence", true: "with the kernel fence"}[withFence]
		t.Run(name, func(t *testing.T) {
			l := lab.New(t, 2, "vip.ttl=2")
			l.StartProber()
			arp := lab.CaptureARP(t, l.Client)
			n1, n2 := l.Nodes[0], l.Nodes[1]
			wrapper := []string{"env", "VIPD_TEST_STOP_BEFORE_SEND=3"}
			if !withFence {
				wrapper = append(wrapper, "VIPD_TEST_NO_KERNEL_FENCE=1")
			}
			l.StartWrapped(n1, wrapper)
			lab.WaitFor(t, lab.ElectBound, "n1 stopped before its third announcement", func() bool { return stopped(n1.Cmd.Process.Pid) })
			if withFence && strings.Contains(n1.Log.String(), "no kernel fence") {
				l.Signal(n1, syscall.SIGCONT)
				t.Skipf("this kernel refuses the kernel fence:\n%s", n1.Log.String())
			}
			if !l.HasVIP(n1) {
				t.Fatalf("n1 stopped without holding the VIP:\n%s", n1.Log.String())
			}
			l.Start(n2)
			l.HolderOtherThan(n1, lab.MoveBound)
			l.WaitHolder(n2, lab.MoveBound)
			l.WaitClientNeighbour(n2.MAC, 5*time.Second)
			resumed := time.Now()
			l.Signal(n1, syscall.SIGCONT)
			time.Sleep(time.Second)
			late := arp.First(n1.MAC, resumed)
			switch {
			case !withFence && late.IsZero():
				t.Fatalf("the frozen frame did not leave after SIGCONT: the test did not hit the window\n%s", n1.Log.String())
			case !withFence:
				t.Logf("without the kernel fence n1's frozen announcement left %v after SIGCONT, while n2 held the VIP", late.Sub(resumed).Round(time.Millisecond))
			case !late.IsZero():
				t.Fatalf("with the kernel fence n1's frozen announcement left %v after SIGCONT\n%s", late.Sub(resumed).Round(time.Millisecond), n1.Log.String())
			default:
				lab.WaitLogCount(t, n1, "dropped by the kernel fence", 1, time.Second)
				l.WaitClientNeighbour(n2.MAC, time.Second)
				t.Logf("with the kernel fence n1's frozen announcement was dropped; n2 keeps the client")
			}
			l.AssertNoOverlap()
		})
	}
}

// stopped says whether the process is stopped (state T in /proc).
func stopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && strings.HasPrefix(rest, "T")
}

package boot

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A pause that no clock inside the VM sees: qemu's monitor stops the VM
// (as a live migration or a snapshot does) and lets it go on. The guest's
// monotonic clock stands still meanwhile, so vipd cannot see the pause;
// what it sends afterwards is watched on the bridge.

// monitor runs one command on the VM's qemu monitor and waits for its
// prompt to come back.
func (v *vm) monitor(t *testing.T, cmd string) {
	t.Helper()
	c, err := net.DialTimeout("unix", v.mon, 5*time.Second)
	if err != nil {
		t.Fatalf("vm%d monitor: %v", v.n, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	prompt := func() {
		var got []byte
		buf := make([]byte, 512)
		for !bytes.Contains(got, []byte("(qemu)")) {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("vm%d monitor, %q: %v (read %q)", v.n, cmd, err, got)
			}
			got = append(got, buf[:n]...)
		}
	}
	prompt() // the banner
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		t.Fatalf("vm%d monitor: %v", v.n, err)
	}
	prompt()
}

// arpSeen is one ARP frame for the VIP from a VM: a gratuitous one (sender
// and target address both the VIP: vipd's announcement), or its kernel's
// answer to a request.
type arpSeen struct {
	at   time.Time
	mac  string
	garp bool
}

// arpWatch captures ARP on the bridge and asks for the VIP every 50 ms, so
// that every host that still has the address shows itself.
type arpWatch struct {
	fd     int
	mu     sync.Mutex
	frames []arpSeen
	stop   chan struct{}
	done   sync.WaitGroup
	closed sync.Once
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// watchARP starts the capture and the requests; close ends both.
func (l *bootLab) watchARP(t *testing.T) *arpWatch {
	t.Helper()
	w := &arpWatch{fd: -1, stop: make(chan struct{})}
	var ifindex int
	err := l.inNS(func() error {
		ifi, err := net.InterfaceByName("br0")
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		w.fd, err = syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ARP)))
		if err != nil {
			return err
		}
		return syscall.Bind(w.fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ARP), Ifindex: ifi.Index})
	})
	if err != nil {
		if w.fd >= 0 {
			syscall.Close(w.fd)
		}
		t.Fatalf("ARP capture on br0: %v", err)
	}
	tv := syscall.Timeval{Usec: 100000} // reads wake up to see stop
	syscall.SetsockoptTimeval(w.fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	vip := net.ParseIP(bootVIP).To4()
	w.done.Add(2)
	go func() {
		defer w.done.Done()
		buf := make([]byte, 1600)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			n, _, err := syscall.Recvfrom(w.fd, buf, 0)
			if err != nil || n < 42 {
				continue
			}
			f := buf[:n]
			sender, spa, tpa := net.HardwareAddr(f[22:28]).String(), net.IP(f[28:32]), net.IP(f[38:42])
			if !spa.Equal(vip) || sender == bootBridge {
				continue
			}
			w.mu.Lock()
			w.frames = append(w.frames, arpSeen{at: time.Now(), mac: sender, garp: tpa.Equal(vip)})
			w.mu.Unlock()
		}
	}()
	bridge, _ := net.ParseMAC(bootBridge)
	req := append(append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, bridge...), 0x08, 0x06, // Ethernet
		0, 1, 8, 0, 6, 4, 0, 1) // ARP request, Ethernet/IPv4
	req = append(append(append(append(req, bridge...), net.ParseIP(bootEtcdIP).To4()...), make([]byte, 6)...), vip...)
	to := &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ARP), Ifindex: ifindex, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	go func() {
		defer w.done.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
				syscall.Sendto(w.fd, req, 0, to)
			}
		}
	}()
	return w
}

// close may be called again: the second call does nothing.
func (w *arpWatch) close() {
	w.closed.Do(func() {
		close(w.stop)
		w.done.Wait()
		syscall.Close(w.fd)
	})
}

// from counts the gratuitous ARPs for the VIP that mac sent after since,
// and says when mac last answered for the VIP at all.
func (w *arpWatch) from(mac string, since time.Time) (garps int, last time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.frames {
		if f.mac != mac || f.at.Before(since) {
			continue
		}
		if f.garp {
			garps++
		}
		last = f.at
	}
	return garps, last
}

// arpSpan is when one MAC first and last answered for the VIP (or
// announced it) in a capture.
type arpSpan struct {
	mac         string
	first, last time.Time
}

// spans is every MAC that answered for the VIP, in the order each first
// did: one holder after another gives spans that do not overlap.
func (w *arpWatch) spans() []arpSpan {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []arpSpan
	at := map[string]int{}
	for _, f := range w.frames {
		i, ok := at[f.mac]
		if !ok {
			i = len(out)
			at[f.mac] = i
			out = append(out, arpSpan{mac: f.mac, first: f.at})
		}
		out[i].last = f.at
	}
	return out
}

// pauseHolder stops the holder's VM for 10 s; another VM takes over
// meanwhile. After cont, the resumed VM must send no gratuitous ARP for
// the VIP and stop answering for it within 2 s (its kernel may answer ARP
// requests until vipd, told by etcd that its lease is gone, removes the
// address). It returns the new holder.
func pauseHolder(t *testing.T, l *bootLab, h *vm) *vm {
	w := l.watchARP(t)
	defer w.close()
	h.monitor(t, "stop")
	stopped := time.Now()
	next, seen := l.waitHolder(h, 10*time.Second)
	if next == nil {
		h.monitor(t, "cont")
		t.Fatalf("no other VM took the VIP while vm%d was paused", h.n)
	}
	t.Logf("vm%d paused → vm%d holds: %v", h.n, next.n, seen.Sub(stopped).Round(time.Millisecond))
	time.Sleep(time.Until(stopped.Add(10 * time.Second)))
	logFrom := len(h.vipdLines())
	h.monitor(t, "cont")
	resumed := time.Now()
	time.Sleep(3 * time.Second)
	garps, last := w.from(h.mac, resumed)
	kept := "never answered for it"
	if !last.IsZero() {
		kept = "answered for it until " + last.Sub(resumed).Round(time.Millisecond).String() + " after cont"
	}
	t.Logf("vm%d after cont: %d gratuitous ARPs for the VIP; its kernel %s; vipd said:\n%s", h.n, garps, kept,
		strings.Join(h.vipdLines()[logFrom:], "\n"))
	if garps > 0 {
		t.Errorf("vm%d announced the VIP %d times after its pause, while vm%d held it", h.n, garps, next.n)
	}
	if !last.IsZero() && last.Sub(resumed) > 2*time.Second {
		t.Errorf("vm%d still answered for the VIP %v after cont, want its address gone within 2 s", h.n, last.Sub(resumed))
	}
	if now, _ := l.waitHolder(h, time.Second); now != next {
		t.Errorf("after the pause the client reaches vm%v, want vm%d", vmNum(now), next.n)
	}
	return next
}

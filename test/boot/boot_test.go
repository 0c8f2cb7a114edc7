package boot

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBoot: three VMs boot Debian's cloud kernel with the initramfs (busybox
// init from docs/busybox, vipd started by inittab with no arguments), two
// configured by the kernel command line alone, one by a config partition
// (LABEL=VIPCFG) alone; vm2 with the default vip.log, and on arm64 (its
// kernel, busybox and vipd under qemu-system-aarch64 -M virt; the others
// are amd64): the cluster is of mixed architectures. One run covers, in
// order: booting before etcd exists; exactly one holder; the holder's
// wall clock stepped an hour; the holder's VM paused for 10 s by qemu
// (pause_test.go); a graceful stop (SIGTERM through the control line); a
// power loss (the holder's qemu killed); a graceful stop between the two
// VMs left. Every VM has vip.bootstrap=vm1: before etcd exists, vm1
// alone holds the VIP, without an election; when etcd starts, the
// election takes over with one handover at most and never two holders.
// The times are reported; the bounds are the issues' (TTL + 2 s, issue
// 12; the VIP within 10 s of vm1's boot, issue 23).
func TestBoot(t *testing.T) {
	l := newBootLab(t)
	// vip.garp.refresh=1s: a paused holder's refresh falls due right after
	// it resumes (pauseHolder). vip.bootstrap=vm1 goes on every VM, as an
	// image would have it (vm3 reads it from its partition): only the VM
	// whose vip.name (here its hostname) is vm1 acts on it.
	words := "vip.address=" + bootVIP + " vip.etcd=http://" + bootEtcdIP + ":2379 vip.ttl=" + bootTTL.String() + " vip.garp.refresh=1s vip.log=kmsg vip.bootstrap=vm1"
	disk := l.configDisk(strings.ReplaceAll(words, " ", "\n") + "\n")
	vms := []*vm{
		l.boot(l.amd64, 1, "vm1", words, ""),
		// vm2 keeps the default vip.log=auto: under busybox init stderr is
		// /dev/console, so its lines must still go through /dev/kmsg.
		// vm2 is arm64: its kernel, busybox and vipd, under qemu-system-aarch64.
		l.boot(l.arm64, 2, "vm2", strings.Replace(words, " vip.log=kmsg", "", 1), ""),
		l.boot(l.amd64, 3, "", "vip.config=LABEL=VIPCFG", disk), // no hostname: vipd names itself by MAC
	}
	booted := time.Now()
	// Every host that answers for the VIP, from before any vipd starts
	// until the election has settled: vm1 alone before etcd, one handover
	// at most after it.
	w := l.watchARP(t)
	defer w.close() // closed below; again only if the test stops before

	// Before etcd: vm1 (vip.bootstrap=vm1) probes and holds the VIP without
	// an election. The 10 s count from its vipd's "starting" line, as the
	// host sees the console (polled every 100 ms), not from qemu's start:
	// how long a kernel takes to boot under TCG on a shared machine is not
	// vipd's doing.
	if !l.waitConsole("vipd: starting ", bootTimeout, vms[0]) {
		t.Fatal("vm1's vipd did not start")
	}
	// The kernel fence loads before that line, or a warning says why not.
	if n := vms[0].count("no kernel fence"); n > 0 {
		t.Errorf("vm1's vipd runs without its kernel fence:\n%s", strings.Join(vms[0].vipdLines(), "\n"))
	}
	vipdUp := vms[0].started.Add(vms[0].up)
	b, seen := l.waitHolder(nil, time.Until(vipdUp.Add(10*time.Second)))
	if b == nil {
		b, seen = l.waitHolder(nil, 20*time.Second)
		t.Errorf("the client did not reach the VIP within 10 s of vm1's vipd starting, with etcd absent (later: vm%v after %v)", vmNum(b), seen.Sub(vipdUp))
	}
	if b == nil {
		t.FailNow()
	}
	if b != vms[0] {
		t.Errorf("before etcd the client reaches vm%d, want vm1 (vip.bootstrap=vm1)", b.n)
	}
	firstARP := "none"
	if sp := w.spans(); len(sp) > 0 {
		firstARP = sp[0].first.Sub(vipdUp).Round(time.Millisecond).String()
	}
	t.Logf("etcd absent: the client reaches vm%d %v after vm1's vipd started (%v after its qemu started; the first ARP for the VIP %v after)",
		b.n, seen.Sub(vipdUp).Round(time.Millisecond), seen.Sub(vms[0].started).Round(time.Millisecond), firstARP)

	// Its state line comes right after its first announcement.
	if !l.waitConsole("candidate -> bootstrap: without an election (bootstrap)", bootTimeout, vms[0]) {
		t.Errorf("vm1's console does not say it holds without an election: %s", vms[0].excerpt())
	}

	// Before etcd: vipd starts, campaigns and waits, saying so once.
	if !l.waitConsole("etcd unreachable", bootTimeout, vms...) {
		t.Fatal("not every VM's vipd reported that etcd is unreachable")
	}
	for _, v := range vms {
		// The kernel's banner names its version: each VM runs its own
		// architecture's kernel.
		if !strings.Contains(v.consoleText(), "Linux version "+v.g.kver+" ") {
			t.Errorf("vm%d's console has no banner of %s", v.n, v.g.kver)
		}
		if strings.Contains(v.consoleText(), "rc: insmod") {
			t.Errorf("vm%d: a module did not load: %s", v.n, v.excerpt())
		}
		t.Logf("vm%d (%s): vipd up and waiting for etcd %v after qemu started", v.n, v.g.arch, v.up.Round(100*time.Millisecond))
		// vm1 entered bootstrap once; the others, not named, never.
		want := 0
		if v == vms[0] {
			want = 1
		}
		if n := v.count("-> bootstrap"); n != want {
			t.Errorf("vm%d entered bootstrap %d times before etcd, want %d: %s", v.n, n, want, v.excerpt())
		}
	}
	time.Sleep(time.Until(booted.Add(30 * time.Second)))
	etcdStart := time.Now()
	ready := l.startEtcd()
	// The election's holder: vm1 keeps its bootstrap hold's address if it
	// is elected. Otherwise it lets go at the elected VM's probe (bootstrap
	// over), which may come before etcd answers vm1 itself (each vipd
	// retries on its own back-off), or its hold lapses within a TTL of
	// etcd's first answer to vm1; the elected VM, which waited for it as
	// for any squatter, takes the VIP. So TTL + 2 s count from the first
	// of those two lines on vm1's console, as the host sees it; the client
	// must reach the VM whose console says it leads.
	if !l.waitConsoleAny(30*time.Second, vms[0], "etcd answers: the bootstrap hold ends", "bootstrap over: ") {
		t.Fatalf("etcd did not answer vm1, nor did vm1 let go for an elected VM, within 30 s of etcd being ready: %s", vms[0].excerpt())
	}
	answered := vms[0].started.Add(vms[0].up)
	h, seen := l.waitLeader(time.Until(answered.Add(bootTTL + 2*time.Second)))
	if h == nil {
		h, seen = l.waitLeader(30 * time.Second)
		t.Errorf("no VM was elected and held the VIP within TTL + 2 s of etcd's first answer to vm1, or of vm1 letting go (later: vm%v after %v)", vmNum(h), seen.Sub(answered))
	}
	if h == nil {
		t.FailNow()
	}
	t.Logf("etcd ready → it answered vm1, or vm1 let go, %v later → vm%d elected and holds the VIP %v later (%v after etcd ready)",
		answered.Sub(ready).Round(time.Millisecond), h.n, seen.Sub(answered).Round(time.Millisecond), seen.Sub(ready).Round(time.Millisecond))
	kmsg := regexp.MustCompile(`(?m)^\[\s*\d+\.\d+\] vipd: `) // the kernel's own prefix: written to /dev/kmsg
	for _, v := range vms {
		if len(kmsg.FindAllString(v.consoleText(), -1)) < 3 {
			t.Errorf("vm%d: vipd's lines did not reach the console through /dev/kmsg", v.n)
		}
		if n := v.count("etcd unreachable"); n != 1 {
			t.Errorf("vm%d logged %d lines about the unreachable etcd, want 1 (not one per retry)", v.n, n)
		}
	}

	// Exactly one holder: one MAC answers ARP for the VIP, and it is the
	// one whose console says it leads.
	time.Sleep(bootTTL)
	if macs := l.answering(); len(macs) != 1 || !macs[h.mac] {
		t.Fatalf("MACs answering for %s: %v, want only vm%d's %s", bootVIP, macs, h.n, h.mac)
	}
	// From the boot until now: vm1 answered first, nobody else before etcd
	// started, and then at most one handover, to the elected VM, the old
	// holder silent before the new one answered.
	w.close()
	sp := w.spans()
	var who []string
	for _, s := range sp {
		who = append(who, s.mac)
	}
	switch {
	case len(sp) == 0 || sp[0].mac != vms[0].mac:
		t.Errorf("MACs that answered for the VIP from the boot on, in order: %v; want vm1's %s first", who, vms[0].mac)
	case len(sp) > 2 || sp[len(sp)-1].mac != h.mac:
		t.Errorf("MACs that answered for the VIP from the boot on, in order: %v; want vm1's, then at most one handover, to vm%d's %s", who, h.n, h.mac)
	case len(sp) == 2 && sp[1].first.Before(etcdStart):
		t.Errorf("%s answered for the VIP %v before etcd started; vm1 alone may", sp[1].mac, etcdStart.Sub(sp[1].first))
	case len(sp) == 2 && !sp[0].last.Before(sp[1].first):
		t.Errorf("two holders: vm1 answered for the VIP until %v after vm%d first did", sp[0].last.Sub(sp[1].first), h.n)
	case len(sp) == 2:
		t.Logf("etcd's arrival: one handover, vm1 → vm%d; the VIP answered nobody for %v (ARP asked every 50 ms)", h.n, sp[1].first.Sub(sp[0].last).Round(time.Millisecond))
	default:
		t.Logf("etcd's arrival: no handover, vm1 elected")
	}
	for _, v := range vms {
		leads := v.count("-> leader") > v.count("leader -> ")
		if leads != (v == h) {
			t.Errorf("vm%d's console says leading=%v; the client sees vm%d", v.n, leads, h.n)
		}
	}
	if vms[2].count(`as "52:54:00:00:53:03"`) == 0 {
		t.Errorf("vm3 (no hostname) did not campaign under its MAC")
	}
	if vms[0].count(`as "vm1"`) == 0 {
		t.Errorf("vm1 did not campaign under its hostname")
	}

	// The wall clock steps an hour: nothing may happen.
	steps := h.count("leader -> ")
	h.control(t, "clock")
	if !waitFor(5*time.Second, func() bool { return strings.Contains(h.consoleText(), "ctl: wall clock stepped") }) {
		t.Fatalf("vm%d did not step its clock", h.n)
	}
	time.Sleep(3 * bootTTL)
	if now := l.holder(); now != h || h.count("leader -> ") != steps {
		t.Fatalf("after the clock step: holder vm%v, vm%d stepped down %d times", vmNum(now), h.n, h.count("leader -> ")-steps)
	}

	// A pause no clock inside sees (qemu's stop, 10 s, then cont).
	h = pauseHolder(t, l, h)
	time.Sleep(2 * bootTTL) // the paused VM's vipd has stepped down and joined as a candidate

	// Graceful: SIGTERM through the control line.
	next := handOver(t, l, h)

	// Power loss of the holder.
	time.Sleep(2 * bootTTL) // the restarted vipd has joined as a candidate
	h = next
	t0 := time.Now()
	h.kill()
	next, seen = l.waitHolder(h, bootTTL+2*time.Second)
	if next == nil {
		next, seen = l.waitHolder(h, 30*time.Second)
		t.Errorf("no VM held the VIP within TTL + 2 s of vm%d's power loss (later: vm%v after %v)", h.n, vmNum(next), seen.Sub(t0))
	} else {
		t.Logf("power loss of vm%d → vm%d holds: %v", h.n, next.n, seen.Sub(t0).Round(time.Millisecond))
	}
	if macs := l.answering(); len(macs) != 1 {
		t.Errorf("after the power loss, MACs answering: %v", macs)
	}

	// The two VMs left hand over once more, so that the arm64 VM (vm2)
	// takes part in a graceful handover in every run: here, unless it was
	// the one powered off, which had then taken the VIP at the first.
	if next != nil {
		handOver(t, l, next)
	}
	// vipd exited only by SIGTERM (status 0), on which vipd-respawn
	// says nothing: any line of its means a failure or a bad setting.
	for _, v := range vms {
		if strings.Contains(v.consoleText(), "vipd-respawn: ") {
			t.Errorf("vm%d: vipd exited other than by SIGTERM: %s", v.n, v.excerpt())
		}
	}
	// Once etcd had answered, a vipd that vipd-respawn started again did
	// not hold without an election: vm1 entered bootstrap once, at boot.
	if n := vms[0].count("-> bootstrap"); n != 1 {
		t.Errorf("vm1 entered bootstrap %d times, want once (before etcd): %s", n, vms[0].excerpt())
	}
	t.Logf("vm1's console (vip.bootstrap=vm1), the init's and vipd's lines:\n%s", vms[0].excerpt())
	t.Logf("vm2's console (arm64), the init's and vipd's lines:\n%s", vms[1].excerpt())
	t.Logf("vm3's console (config partition), the init's and vipd's lines:\n%s", vms[2].excerpt())
}

// handOver sends the holder's vipd SIGTERM through the control line:
// another VM must hold the VIP within 10 s. docs/busybox/vipd-respawn
// must start vipd again (exit 0: after 1 s), as a candidate. It returns
// the new holder.
func handOver(t *testing.T, l *bootLab, h *vm) *vm {
	stops := h.count("stopping on terminated")
	starts := h.count("vipd: starting ")
	t0 := time.Now()
	h.control(t, "stop")
	next, seen := l.waitHolder(h, 10*time.Second)
	if next == nil {
		t.Fatalf("no other VM took the VIP after vm%d's vipd got SIGTERM", h.n)
	}
	t.Logf("graceful stop of vm%d's vipd → vm%d holds: %v", h.n, next.n, seen.Sub(t0).Round(time.Millisecond))
	if h.count("stopping on terminated") == stops {
		t.Errorf("vm%d's vipd did not log its graceful stop", h.n)
	}
	if waitFor(10*time.Second, func() bool { return h.count("vipd: starting ") > starts }) {
		t.Logf("vm%d's vipd started again %v after the SIGTERM", h.n, time.Since(t0).Round(100*time.Millisecond))
	} else {
		t.Errorf("vm%d: vipd-respawn did not start vipd again within 10 s of its graceful stop", h.n)
	}
	return next
}

func vmNum(v *vm) any {
	if v == nil {
		return "none"
	}
	return v.n
}

func waitFor(timeout time.Duration, ok func() bool) bool {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if ok() {
			return true
		}
	}
	return ok()
}

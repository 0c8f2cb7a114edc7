package main

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"vipd/test/lab"
)

// TestMain first deletes namespaces that killed runs left behind.
func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// This file pins the kernel fact that vipd's fence rests on (docs/design.md, section 2)
// and measures its slack.
//
// The kernel removes an address whose valid_lft has run out, but only when its
// lifetime check runs (check_lifetime in net/ipv4/devinet.c, addrconf_verify
// in net/ipv6/addrconf.c, one per network namespace and family). Every add or
// change of an address (IPv6: also a delete) runs the check at once, and the
// check never schedules its next run sooner than 1 s later
// (ADDRCONF_TIMER_FUZZ_MAX). It counts an address as expired 20 ms early
// (ADDRCONF_TIMER_FUZZ_MINUS). So, measured on Linux 6.18 (HZ=250):
//
//   - an address set with valid_lft 1 and left alone goes 1.0–1.25 s later
//     (the timer is rounded up to a whole second when that costs < 0.25 s);
//     with valid_lft 3, 3.0–3.55 s (the timer wheel's coarser granularity for
//     timers more than 2 s ahead);
//   - when another address in the same namespace is added or changed shortly
//     before the expiry (up to 20 ms before it), the check runs then, finds
//     the address not yet expired, and next runs 1 s later: the address lives
//     until ~2.0 s (N + 1 s for valid_lft N). A change within the last 20 ms,
//     or any later one, removes it at once instead, so repeated changes
//     bring the removal forward rather than push it further out;
//   - the same goes for a change of another address with a lifetime (another
//     VIP's refresh); a refresh of the address itself simply restarts its own
//     lifetime;
//   - changes in other namespaces do not run this namespace's check.
//
// The fence arithmetic in node.go relies on this: an address refreshed at R
// (taken after setAddr returns) with lifetime N may stay in a frozen holder's
// kernel until R + N + 1 s + ε, and that moment must come before any
// candidate can add the address. ε is the lateness of the kernel's worker
// (the timer wheel, the CPU, the rtnl lock); TestKernelLifetimeSlack
// measures it. If this test fails on a new kernel, the fact changed:
// re-examine that arithmetic (and docs/design.md, section 2) before changing the test.
//
// VIPD_KERNEL_TRIALS=N runs TestKernelLifetimeSlack, which measures the
// distribution of removal times over N trials per scenario and family.

// lifetimeLab is one namespace with a veth end eth0 (its peer in a second
// namespace) and a time-stamped stream of its address events.
type lifetimeLab struct {
	ns, peer       *lab.NS
	r, rp          *rtnl  // rtnetlink in ns and in peer
	index, pindex  uint32 // eth0 in ns and in peer
	events         chan stampedEvent
	vip, unrelated netip.Prefix
}

// stampedEvent is an rtnetlink event with the time it was read.
type stampedEvent struct {
	at time.Time
	ev rtnlEvent
}

func newLifetimeLab(t *testing.T, family string) *lifetimeLab {
	t.Helper()
	l := &lifetimeLab{ns: lab.NewNS(t, "kl"+family), peer: lab.NewNS(t, "klpeer"+family)}
	// No IPv6 link-local address on eth0: its add and its end of duplicate
	// address detection would be unrelated changes we did not schedule.
	l.ns.Sysctl(t, "net.ipv6.conf.default.addr_gen_mode", "1")
	l.peer.Sysctl(t, "net.ipv6.conf.default.addr_gen_mode", "1")
	lab.Veth(t, l.ns, "eth0", l.peer, "eth0")
	switch family {
	case "4":
		l.vip = netip.MustParsePrefix("192.0.2.100/32")
		l.unrelated = netip.MustParsePrefix("192.0.2.50/32")
	case "6":
		l.vip = netip.MustParsePrefix("2001:db8::100/128")
		l.unrelated = netip.MustParsePrefix("2001:db8::50/128")
	default:
		t.Fatalf("family %q", family)
	}
	var err error
	if l.r, err = dialRTNL(l.ns.Fd(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.r.Close() })
	if l.rp, err = dialRTNL(l.peer.Fd(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.rp.Close() })
	l.index = linkIndex(t, l.r, "eth0")
	l.pindex = linkIndex(t, l.rp, "eth0")

	w, err := watchRTNL(l.ns.Fd(t))
	if err != nil {
		t.Fatal(err)
	}
	raw := make(chan rtnlEvent, 256)
	l.events = make(chan stampedEvent, 1024)
	go w.run(raw)
	go func() {
		for ev := range raw {
			l.events <- stampedEvent{at: time.Now(), ev: ev}
			if ev.err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { w.Close() })
	return l
}

func linkIndex(t *testing.T, r *rtnl, name string) uint32 {
	t.Helper()
	links, err := r.links()
	if err != nil {
		t.Fatal(err)
	}
	l, ok := findLink(links, nil, name, netip.Addr{})
	if !ok {
		t.Fatalf("%s not listed: %+v", name, links)
	}
	return l.Index
}

// addPermanent adds (or replaces) an address without lifetimes, as
// `ip addr add` does; IPv6 without duplicate address detection.
func addPermanent(r *rtnl, index uint32, p netip.Prefix) error {
	return replaceAddr(r, vipMessage(index, p))
}

// replaceAddr adds or replaces an address exactly as m says.
func replaceAddr(r *rtnl, m *addrMessage) error {
	body, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = r.execute(unix.RTM_NEWADDR, netlink.Acknowledge|netlink.Create|netlink.Replace, body)
	return err
}

// changeKind is the unrelated address change a trial makes.
type changeKind int

const (
	changeAdd     changeKind = iota // add a new address with a lifetime (DHCP, another vipd)
	changeAddPerm                   // add a new permanent address (ip addr add, kube-proxy, CNI)
	changeReplace                   // replace the lifetime of an existing address (another vipd's refresh)
	changeDelete                    // delete an existing permanent address
	changeSelf                      // replace the VIP itself with lifetime 1 s (vipd's own refresh)
	changeOtherNS                   // add a new address in another namespace
)

func (k changeKind) String() string {
	return [...]string{"add", "add-permanent", "replace", "delete", "self-refresh", "other-netns"}[k]
}

// prepare puts the unrelated address in the state the change needs.
func (l *lifetimeLab) prepare(k changeKind) error {
	var err error
	switch k {
	case changeAdd, changeAddPerm:
		_, err = l.r.delAddr(l.index, l.unrelated)
	case changeReplace:
		err = l.r.setAddr(l.index, l.unrelated, time.Hour)
	case changeDelete:
		err = addPermanent(l.r, l.index, l.unrelated)
	case changeOtherNS:
		_, err = l.rp.delAddr(l.pindex, l.unrelated)
	}
	return err
}

// change makes the unrelated change; first says whether it is the first of
// the trial (a repeated add or delete becomes a replace or an add).
func (l *lifetimeLab) change(k changeKind, first bool) error {
	var err error
	switch {
	case k == changeSelf:
		err = l.r.setAddr(l.index, l.vip, time.Second)
	case k == changeOtherNS:
		err = l.rp.setAddr(l.pindex, l.unrelated, time.Hour)
	case k == changeAddPerm || (k == changeDelete && !first):
		err = addPermanent(l.r, l.index, l.unrelated)
	case k == changeDelete:
		_, err = l.r.delAddr(l.index, l.unrelated)
	default:
		err = l.r.setAddr(l.index, l.unrelated, time.Hour)
	}
	return err
}

// lifetimeTrial is one VIP set with lifetime 1 s and its removal by the kernel.
type lifetimeTrial struct {
	set0, set1 time.Time   // just before and just after setAddr
	changes    []time.Time // just before each unrelated change
	changeEnds []time.Time // just after each unrelated change
	present    bool        // still listed at the check time (if any)
	removed    time.Time   // RTM_DELADDR read; zero if none within the limit
}

// since is the removal time after setAddr returned.
func (tr lifetimeTrial) since() time.Duration { return tr.removed.Sub(tr.set1) }

// lastChangeBefore is the last change that started before the removal.
func (tr lifetimeTrial) lastChangeBefore() (time.Time, bool) {
	var last time.Time
	for _, c := range tr.changes {
		if c.Before(tr.removed) {
			last = c
		}
	}
	return last, !last.IsZero()
}

// trialSpec says when the unrelated changes happen, after setAddr returns:
// at each offset in at, then (if every > 0) every `every` after the last
// offset until the removal.
type trialSpec struct {
	lifetime time.Duration // of the VIP; 1 s if zero
	kind     changeKind
	at       []time.Duration
	every    time.Duration
	checkAt  time.Duration // if > 0, list the addresses then
	limit    time.Duration // give up waiting for the removal
}

// run sets the VIP with its lifetime (1 s by default) through setAddr, makes
// the changes, and waits for the kernel to report the VIP's removal.
func (l *lifetimeLab) run(spec trialSpec) (lifetimeTrial, error) {
	var tr lifetimeTrial
	if err := l.prepare(spec.kind); err != nil {
		return tr, fmt.Errorf("prepare %v: %w", spec.kind, err)
	}
	if _, err := l.r.delAddr(l.index, l.vip); err != nil {
		return tr, err
	}
	l.drain()

	removed := make(chan time.Time, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		removed <- l.waitRemoval(stop)
	}()
	defer func() { close(stop); wg.Wait() }()

	lifetime := spec.lifetime
	if lifetime == 0 {
		lifetime = time.Second
	}
	tr.set0 = time.Now()
	if err := l.r.setAddr(l.index, l.vip, lifetime); err != nil {
		return tr, err
	}
	tr.set1 = time.Now()

	var schedule []time.Duration
	schedule = append(schedule, spec.at...)
	if spec.every > 0 && len(schedule) > 0 {
		for next := schedule[len(schedule)-1] + spec.every; next < spec.limit; next += spec.every {
			schedule = append(schedule, next)
		}
	}
	if spec.checkAt > 0 {
		schedule = append(schedule, -spec.checkAt) // negative: a check, not a change
	}
	slices.SortFunc(schedule, func(a, b time.Duration) int { return int(absDuration(a) - absDuration(b)) })

	deadline := time.NewTimer(spec.limit)
	defer deadline.Stop()
	for _, s := range schedule {
		wait := time.NewTimer(time.Until(tr.set1.Add(absDuration(s))))
		select {
		case tr.removed = <-removed:
			wait.Stop()
		case <-wait.C:
		}
		if !tr.removed.IsZero() {
			break
		}
		if s < 0 {
			_, tr.present = l.listed(l.vip)
			continue
		}
		tr.changes = append(tr.changes, time.Now())
		err := l.change(spec.kind, len(tr.changes) == 1)
		tr.changeEnds = append(tr.changeEnds, time.Now())
		if err != nil {
			return tr, fmt.Errorf("%v at %v: %w", spec.kind, s, err)
		}
	}
	if tr.removed.IsZero() {
		select {
		case tr.removed = <-removed:
		case <-deadline.C:
			l.r.delAddr(l.index, l.vip)
			return tr, fmt.Errorf("%s not removed within %v of setAddr", l.vip, spec.limit)
		}
	}
	if tr.removed.IsZero() {
		return tr, fmt.Errorf("the rtnetlink watch failed")
	}
	return tr, nil
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// drain discards the events queued so far (earlier trials' leftovers).
func (l *lifetimeLab) drain() {
	time.Sleep(20 * time.Millisecond)
	for {
		select {
		case <-l.events:
		default:
			return
		}
	}
}

// waitRemoval returns the time the VIP's RTM_DELADDR was read, after its
// RTM_NEWADDR; zero if the watch failed or stop was closed first.
func (l *lifetimeLab) waitRemoval(stop <-chan struct{}) time.Time {
	added := false
	for {
		select {
		case se := <-l.events:
			switch {
			case se.ev.err != nil:
				return time.Time{}
			case se.ev.resync:
				// Lost events: the removal time is unknown.
				return time.Time{}
			case se.ev.addr == nil || se.ev.addr.prefix() != l.vip:
			case !se.ev.deleted:
				added = true
			case added:
				return se.at
			}
		case <-stop:
			return time.Time{}
		}
	}
}

// listed says whether p is on eth0 now.
func (l *lifetimeLab) listed(p netip.Prefix) (addrMessage, bool) {
	addrs, err := l.r.addrs(unix.AF_UNSPEC)
	if err != nil {
		return addrMessage{}, false
	}
	for _, a := range addrs {
		if a.Index == l.index && a.prefix() == p {
			return a, true
		}
	}
	return addrMessage{}, false
}

func fmtMS(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + " ms" }

// TestKernelLifetimeWorstCase pins the fact described at the top of this
// file, for IPv4 and IPv6 (in parallel: each family has its own check, and
// each runs in namespaces of its own).
//
// A busy machine can only make a removal late (a late timer or worker, the
// rtnl lock held by someone else) or make this process's own change late
// (after the VIP expired, when the check removes it at once). Such a trial is
// run again, up to three attempts, and logged. A removal too early, or the
// same outcome three times, fails.
func TestKernelLifetimeWorstCase(t *testing.T) {
	lab.NeedRoot(t)
	const attempts = 3
	for _, family := range []string{"4", "6"} {
		t.Run("IPv"+family, func(t *testing.T) {
			t.Parallel()
			l := newLifetimeLab(t, family)

			// trial runs spec until ok accepts it or attempts run out.
			trial := func(what string, spec trialSpec, ok func(lifetimeTrial) bool) (lifetimeTrial, bool) {
				for attempt := 1; ; attempt++ {
					tr, err := l.run(spec)
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					if ok(tr) || attempt == attempts {
						return tr, ok(tr)
					}
					t.Logf("%s, attempt %d: %s removed %s after setAddr (changes made %v after it); again",
						what, attempt, l.vip, fmtMS(tr.since()), changeOffsets(tr))
				}
			}

			// (a) Nothing else happens: gone 1.0–1.25 s after setAddr (the
			// kernel rounds its timer up to a whole second when that costs
			// less than 0.25 s; 1.4 s allows for a busy machine). Not before
			// 1 s after the call, less one jiffy (4 ms at HZ=250) and the
			// 20 ms the kernel counts an address expired early.
			quiet := trialSpec{kind: changeAdd, limit: 4 * time.Second}
			tr, _ := trial("quiet", quiet, func(tr lifetimeTrial) bool { return tr.since() <= 1400*time.Millisecond })
			t.Logf("quiet: %s removed %s after setAddr returned (%s after it was called)",
				l.vip, fmtMS(tr.since()), fmtMS(tr.removed.Sub(tr.set0)))
			if tr.removed.Sub(tr.set0) < 980*time.Millisecond || tr.since() > 1400*time.Millisecond {
				t.Errorf("quiet: %s removed %s after setAddr, want 1.0–1.4 s (the kernel's expiry changed: re-examine the fence arithmetic in node.go)",
					l.vip, fmtMS(tr.since()))
			}

			// (b) An unrelated address added 0.95 s after setAddr: the check
			// runs then and next runs 1 s later, so the VIP is still there at
			// 1.5 s and gone at ~2.0 s.
			worst := trialSpec{kind: changeAdd, at: []time.Duration{950 * time.Millisecond},
				checkAt: 1500 * time.Millisecond, limit: 4 * time.Second}
			tr, _ = trial("unrelated add at 0.95 s", worst, func(tr lifetimeTrial) bool {
				return tr.present && tr.since() >= 1500*time.Millisecond && tr.since() <= 2500*time.Millisecond
			})
			change := tr.changes[0]
			t.Logf("unrelated add %s after setAddr returned; %s removed %s after setAddr returned, %s after the add; listed at 1.5 s: %v",
				fmtMS(change.Sub(tr.set1)), l.vip, fmtMS(tr.since()), fmtMS(tr.removed.Sub(change)), tr.present)
			if !tr.present || tr.since() < 1500*time.Millisecond {
				t.Errorf("unrelated add at 0.95 s: %s removed %s after setAddr, want it still there at 1.5 s (the kernel no longer delays the check: re-examine the fence arithmetic in node.go)",
					l.vip, fmtMS(tr.since()))
			}
			if tr.since() > 2500*time.Millisecond {
				t.Errorf("unrelated add at 0.95 s: %s removed %s after setAddr, want by 2.5 s (the delay grew: re-examine the fence arithmetic in node.go)",
					l.vip, fmtMS(tr.since()))
			}

			// (c) The same add in another namespace does not delay it.
			other := trialSpec{kind: changeOtherNS, at: []time.Duration{950 * time.Millisecond}, limit: 4 * time.Second}
			tr, _ = trial("add in another namespace at 0.95 s", other, func(tr lifetimeTrial) bool { return tr.since() <= 1400*time.Millisecond })
			t.Logf("add in another namespace %s after setAddr returned: %s removed %s after setAddr returned",
				fmtMS(tr.changes[0].Sub(tr.set1)), l.vip, fmtMS(tr.since()))
			if tr.since() > 1400*time.Millisecond {
				t.Errorf("add in another namespace at 0.95 s: %s removed %s after setAddr, want 1.0–1.4 s (namespaces interfere: re-examine the fence arithmetic in node.go)",
					l.vip, fmtMS(tr.since()))
			}
		})
	}
}

// changeOffsets lists when a trial's changes started, after setAddr returned.
func changeOffsets(tr lifetimeTrial) []string {
	var s []string
	for _, c := range tr.changes {
		s = append(s, fmtMS(c.Sub(tr.set1)))
	}
	return s
}

// TestKernelLifetimeSlack measures how late the kernel removes an expired
// address, for the slack ε in the fence arithmetic. It runs only with
// VIPD_KERNEL_TRIALS=N (trials per scenario and family; 1–4 s each), and
// VIPD_KERNEL_SCENARIOS=REGEXP picks scenarios by name. It asserts nothing:
// it prints min/median/p95/max per scenario.
func TestKernelLifetimeSlack(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("VIPD_KERNEL_TRIALS"))
	if n <= 0 {
		t.Skip("set VIPD_KERNEL_TRIALS=N to measure the kernel's lifetime slack")
	}
	lab.NeedRoot(t)
	pick, err := regexp.Compile(os.Getenv("VIPD_KERNEL_SCENARIOS"))
	if err != nil {
		t.Fatal(err)
	}
	type scenario struct {
		name string
		spec trialSpec
	}
	var scenarios []scenario
	add := func(name string, spec trialSpec) {
		if spec.limit == 0 {
			spec.limit = spec.lifetime + 3*time.Second
		}
		if pick.MatchString(name) {
			scenarios = append(scenarios, scenario{name, spec})
		}
	}
	msec := time.Millisecond
	add("quiet", trialSpec{kind: changeAdd})
	for _, at := range []time.Duration{500 * msec, 800 * msec, 950 * msec, 970 * msec, 990 * msec} {
		add(fmt.Sprintf("add@%d", at.Milliseconds()), trialSpec{kind: changeAdd, at: []time.Duration{at}})
	}
	for _, k := range []changeKind{changeAddPerm, changeReplace, changeDelete, changeSelf, changeOtherNS} {
		add(fmt.Sprintf("%v@950", k), trialSpec{kind: k, at: []time.Duration{950 * msec}})
	}
	add("replace-every-300ms", trialSpec{kind: changeReplace, every: 300 * msec})
	add("replace-every-900ms", trialSpec{kind: changeReplace, every: 900 * msec})
	add("lifetime3-quiet", trialSpec{lifetime: 3 * time.Second, kind: changeAdd})
	add("lifetime3-add@2950", trialSpec{lifetime: 3 * time.Second, kind: changeAdd, at: []time.Duration{2950 * msec}})

	for _, family := range []string{"4", "6"} {
		t.Run("IPv"+family, func(t *testing.T) {
			t.Parallel()
			l := newLifetimeLab(t, family)
			var report strings.Builder
			fmt.Fprintf(&report, "IPv%s, %d trials each; ms; \"set\" = setAddr return, N = lifetime\n", family, n)
			for _, sc := range scenarios {
				var sinceSet, fence, sinceChange, changeAt, setCall, changeCall []time.Duration
				for i := 0; i < n; i++ {
					spec := sc.spec
					if spec.every > 0 {
						// Random phase: the first change anywhere in the first period.
						spec.at = []time.Duration{time.Duration(rand.Int64N(int64(spec.every)))}
					}
					tr, err := l.run(spec)
					if err != nil {
						t.Errorf("%s trial %d: %v", sc.name, i, err)
						continue
					}
					lifetime := cmp.Or(spec.lifetime, time.Second)
					sinceSet = append(sinceSet, tr.since())
					fence = append(fence, tr.removed.Sub(tr.set1.Add(lifetime+time.Second)))
					setCall = append(setCall, tr.set1.Sub(tr.set0))
					for i := range tr.changes {
						changeCall = append(changeCall, tr.changeEnds[i].Sub(tr.changes[i]))
					}
					if c, ok := tr.lastChangeBefore(); ok {
						sinceChange = append(sinceChange, tr.removed.Sub(c))
						changeAt = append(changeAt, c.Sub(tr.set1))
					}
				}
				fmt.Fprintf(&report, "  %s\n", sc.name)
				fmt.Fprintf(&report, "    removal − set:              %s\n", distMS(sinceSet))
				fmt.Fprintf(&report, "    removal − (set + N + 1 s):  %s\n", distMS(fence))
				if len(sinceChange) > 0 {
					fmt.Fprintf(&report, "    removal − last change:      %s\n", distMS(sinceChange))
					fmt.Fprintf(&report, "    last change − set:          %s\n", distMS(changeAt))
					fmt.Fprintf(&report, "    change syscall:             %s\n", distMS(changeCall))
				}
				fmt.Fprintf(&report, "    setAddr syscall:            %s\n", distMS(setCall))
			}
			t.Log(report.String())
		})
	}
}

// distMS is "min/median/p95/max (n)" in milliseconds.
func distMS(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) float64 {
		return float64(s[int(p*float64(len(s)-1)+0.5)]) / float64(time.Millisecond)
	}
	return fmt.Sprintf("min %7.1f / median %7.1f / p95 %7.1f / max %7.1f  (n=%d)", q(0), q(0.5), q(0.95), q(1), len(s))
}

// The VIP must never become the holder's source address: the holder's own
// new connections (its etcd client, kubelet, the API server's etcd client)
// would leave from the VIP and break, their replies going to the next
// holder, when the VIP moves. setAddr adds the VIP deprecated
// (preferred_lft 0) for that. TestKernelDeprecatedVIP pins the kernel facts
// this rests on; TestHolderOwnSource (test/scenario) checks it in the lab. The lifetime
// fence itself is pinned by TestKernelLifetimeWorstCase, which sets the VIP
// through setAddr too, so it runs on the deprecated address.

// sourceFor is the source address the kernel picks in ns for a new
// connection to dst: a connected UDP socket's local address, chosen by the
// same route lookup a TCP connect makes, without sending anything.
func sourceFor(t *testing.T, ns *lab.NS, dst netip.Addr) netip.Addr {
	t.Helper()
	var src netip.Addr
	err := ns.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
		if err != nil {
			return err
		}
		defer c.Close()
		src = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		return nil
	})
	if err != nil {
		t.Fatalf("connect to %s in %s: %v", dst, ns.Name, err)
	}
	return src
}

// srcFamily is one address family's plan for TestKernelDeprecatedVIP.
type srcFamily struct {
	own, peer, vip netip.Prefix
	gateway        string
	dsts           []netip.Addr // on-link (the peer, another host), then off-link
}

// fullSrc is the source the kernel picks for dst when the VIP is added the
// old way (preferred_lft = valid_lft). IPv4 keeps the subnet's primary
// address, the node's own. IPv6 picks the VIP for on-link destinations (RFC
// 6724 rule 8, longest matching prefix, which Linux caps at each address's
// prefix length: /128 beats /64); for off-link ones the two tie, and the
// address added last wins, which is the VIP when vipd starts after the
// network is up.
func (f srcFamily) fullSrc(dst netip.Addr, vipFirst bool) netip.Addr {
	if f.vip.Addr().Is4() || (!f.own.Contains(dst) && vipFirst) {
		return f.own.Addr()
	}
	return f.vip.Addr()
}

var srcFamilies = map[string]srcFamily{
	"4": {
		own: netip.MustParsePrefix("192.0.2.11/24"), peer: netip.MustParsePrefix("192.0.2.1/24"),
		vip: netip.MustParsePrefix("192.0.2.100/32"), gateway: "192.0.2.1",
		dsts: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.150"),
			netip.MustParseAddr("198.51.100.5")},
	},
	"6": {
		own: netip.MustParsePrefix("2001:db8::11/64"), peer: netip.MustParsePrefix("2001:db8::1/64"),
		vip: netip.MustParsePrefix("2001:db8::100/128"), gateway: "2001:db8::1",
		dsts: []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::150"),
			netip.MustParseAddr("2001:db8:1::5")},
	},
}

// TestKernelDeprecatedVIP: on both families, whether the VIP was added
// before or after the node's own address, a VIP added by setAddr
// (deprecated) is never picked as the source for on-link or off-link
// destinations; a client still resolves it (the kernel answers vipd's own
// ARP probe and NS probe for it) and still connects to it. The same VIP
// added with preferred_lft = valid_lft is the source on IPv6: the reason
// for all this, and the proof that the check can fail.
func TestKernelDeprecatedVIP(t *testing.T) {
	for _, family := range []string{"4", "6"} {
		for _, vipFirst := range []bool{false, true} {
			order := "own-first"
			if vipFirst {
				order = "vip-first"
			}
			t.Run("IPv"+family+"/"+order, func(t *testing.T) {
				testDeprecatedVIP(t, family, srcFamilies[family], vipFirst)
			})
		}
	}
}

func testDeprecatedVIP(t *testing.T, family string, f srcFamily, vipFirst bool) {
	host, peer := lab.NewNS(t, "src"+family), lab.NewNS(t, "srcpeer"+family)
	lab.Veth(t, host, "eth0", peer, "eth0")
	r, err := dialRTNL(host.Fd(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	rp, err := dialRTNL(peer.Fd(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.Close() })
	index, pindex := linkIndex(t, r, "eth0"), linkIndex(t, rp, "eth0")

	setVIP := func() {
		t.Helper()
		if err := r.setAddr(index, f.vip, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if vipFirst {
		setVIP()
	}
	for _, a := range []struct {
		r     *rtnl
		index uint32
		p     netip.Prefix
	}{{r, index, f.own}, {rp, pindex, f.peer}} {
		if err := addPermanent(a.r, a.index, a.p); err != nil {
			t.Fatal(err)
		}
	}
	if !vipFirst {
		setVIP()
	}
	host.IP(t, "route", "add", "default", "via", f.gateway, "dev", "eth0")

	a, ok := findAddr(t, r, index, f.vip)
	if !ok || a.Preferred != 0 || !a.HasLifetimes || a.Valid == 0 {
		t.Fatalf("the VIP as setAddr left it: %+v (listed %v), want preferred_lft 0 and a valid_lft", a, ok)
	}
	for _, dst := range f.dsts {
		if src := sourceFor(t, host, dst); src != f.own.Addr() {
			t.Errorf("deprecated VIP: new connection to %s leaves from %s, want %s", dst, src, f.own.Addr())
		}
	}

	// The peer resolves the VIP: the host's kernel answers an ARP probe or
	// an NS from the unspecified address (vipd's own probe) for it.
	hostMAC := linkMAC(t, host, "eth0")
	an := openAnnouncerFor(t, peer, "eth0", family == "6")
	mac, err := an.probe(t.Context(), f.vip.Addr(), 2*time.Second)
	if err != nil || !bytes.Equal(mac, hostMAC) {
		t.Errorf("probe for the deprecated VIP from the peer: answered by %v (%v), want %v", mac, err, hostMAC)
	}

	// The peer connects to the VIP, and the host accepts on it.
	var ln net.Listener
	if err := host.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(f.vip.Addr(), 7780).String())
		return err
	}); err != nil {
		t.Fatalf("listen on the deprecated VIP: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%s\n", c.RemoteAddr())
		c.Close()
	}()
	var seen string
	err = peer.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(f.vip.Addr(), 7780).String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		seen, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		t.Errorf("connect to the deprecated VIP from the peer: %v", err)
	} else if got := netip.MustParseAddrPort(strings.TrimSpace(seen)).Addr().Unmap(); got != f.peer.Addr() {
		t.Errorf("the host saw the peer's connection from %s, want %s", got, f.peer.Addr())
	}

	// The old way, for contrast.
	full := vipMessage(index, f.vip)
	full.HasLifetimes, full.Preferred, full.Valid = true, 30, 30
	if err := replaceAddr(r, full); err != nil {
		t.Fatal(err)
	}
	for _, dst := range f.dsts {
		if src, want := sourceFor(t, host, dst), f.fullSrc(dst, vipFirst); src != want {
			t.Errorf("VIP with preferred_lft 30: new connection to %s leaves from %s; the kernel used to pick %s (a kernel fact changed: re-examine setAddr's comment)",
				dst, src, want)
		}
	}
}

// linkMAC is the hardware address of name in ns.
func linkMAC(t *testing.T, ns *lab.NS, name string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(name)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// Package lab is vipd's whole-cluster test lab: network namespaces, veths
// and a bridge on documentation addresses only (never the host's
// interfaces), real etcd members, the vipd binary built from this module,
// and a client. It judges vipd from outside: addresses, links, neighbours
// and announcements through its own rtnetlink and frame decoding
// (observe.go, frames.go), and the state file and -status -json through
// its own strict structs (contract.go); it imports nothing of vipd.
//
// Everything here needs root (NeedRoot skips a test in one line
// otherwise). The scenarios are in test/scenario, the soak in test/soak,
// the benchmarks in test/bench and the demo in test/demo.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// The lab: one "lan" namespace with a bridge and a real etcd, node
// namespaces n1..nN each joined to the bridge by a veth named eth0, and a
// client namespace. Addresses come from 192.0.2.0/24 only.

// The lab's addresses: the VIPs, the node addresses' IPv6 prefix, the
// etcd on the bridge, and the client.
const (
	VIP       = "192.0.2.100"
	VIP6      = "2001:db8::100"
	Prefix6   = "2001:db8::"
	EtcdIP    = "192.0.2.1"
	Client    = "192.0.2.50"
	labBridge = "02:00:5e:00:53:fe" // fixed: a bridge without one takes a port's MAC and changes it
)

var (
	buildOnce sync.Once
	vipdBin   string
	etcdBin   string
	buildErr  error
)

// ModuleRoot is the directory of the vipd module (the root go.mod), found
// from the test's working directory, which is its package's.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the vipd module")
	}
	return filepath.Dir(mod), nil
}

// Binaries builds vipd and the pinned etcd once per test run. A prebuilt
// vipd is taken from $VIPD, etcd from $VIPD_ETCD; otherwise vipd is built
// from the module root and etcd is cached in test/etcd/bin.
func Binaries(t testing.TB) (string, string) {
	t.Helper()
	buildOnce.Do(func() { vipdBin, etcdBin, buildErr = build() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return vipdBin, etcdBin
}

func build() (vipd, etcd string, err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", "", err
	}
	if vipd = os.Getenv("VIPD"); vipd != "" {
		if vipd, err = filepath.Abs(vipd); err != nil {
			return "", "", err
		}
		if _, err := os.Stat(vipd); err != nil {
			return "", "", fmt.Errorf("$VIPD: %w", err)
		}
	} else {
		dir, err := os.MkdirTemp("", "vipd-test-bin")
		if err != nil {
			return "", "", err
		}
		vipd = filepath.Join(dir, "vipd")
		// Built as `make build` builds it, so that the benchmarks measure
		// the shipped binary.
		cmd := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w", "-o", vipd, ".")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("build vipd: %v: %s", err, out)
		}
	}
	if etcd = os.Getenv("VIPD_ETCD"); etcd != "" {
		etcd, err = filepath.Abs(etcd)
		return vipd, etcd, err
	}
	etcd = filepath.Join(root, "test", "etcd", "bin", "etcd")
	if _, err := os.Stat(etcd); err != nil {
		cmd := exec.Command("go", "build", "-trimpath", "-o", etcd, ".")
		cmd.Dir = filepath.Join(root, "test", "etcd")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("build etcd (test/etcd): %v: %s", err, out)
		}
	}
	return vipd, etcd, nil
}

type Node struct {
	Name string
	NS   *NS
	IP   string
	MAC  string
	Cmd  *exec.Cmd
	Log  *SyncBuffer
	Exit chan error // receives the process's exit once
	// Restart starts the node's daemon again; nil means vipd (l.start).
	Restart func()
	Service *Service // set by startServices
	// RunDir is the node's own /run (bind-mounted over /run for its vipd
	// only), so that each node has its own /run/vipd state file, as on
	// separate machines, and the host's /run is never written.
	RunDir string
	// Bin, when set, is the vipd binary this node's daemon runs (a skew
	// test's older version); otherwise Binaries'.
	Bin string
}

type Lab struct {
	T      testing.TB
	Opt    Options
	Lan    *NS
	Client *NS
	Nodes  []*Node
	Etcd   []*EtcdMember
	Mon    *Monitor
	Mon6   *Monitor // dual-stack labs: the IPv6 VIP
}

// Options shape a lab.
type Options struct {
	Nodes int
	// Cluster puts one etcd member in each node namespace, as on a
	// control-plane node; otherwise one etcd runs on the bridge.
	Cluster   bool
	EtcdFlags []string // extra etcd flags, e.g. tuned timers
	Args      []string // extra vip.* words for every node
	NoEtcd    bool     // for labs that run keepalived instead
	DualStack bool     // IPv6 addresses too, and an IPv6 VIP beside the IPv4 one
	EtcdTLS   *PKI     // serve etcd over TLS and require client certificates
}

// EtcdMember is one etcd server of the lab.
type EtcdMember struct {
	Name string
	NS   *NS
	IP   string
	dir  string
	Cmd  *exec.Cmd
	Log  *SyncBuffer
	tls  bool // clients must present a certificate (labOptions.etcdTLS)
}

func (m *EtcdMember) ClientURL() string {
	if m.tls {
		return "https://" + m.IP + ":2379"
	}
	return "http://" + m.IP + ":2379"
}
func (m *EtcdMember) peerURL() string { return "http://" + m.IP + ":2380" }

// New is n nodes against one etcd, with vip.* words for every node.
func New(t testing.TB, n int, args ...string) *Lab {
	return NewWith(t, Options{Nodes: n, Args: args})
}

// NewWith builds the topology and starts etcd; vipd is started per node
// with start.
func NewWith(t testing.TB, opt Options) *Lab {
	NeedRoot(t)
	l := &Lab{T: t, Opt: opt}
	l.Lan = NewNS(t, "lan")
	l.Lan.IP(t, "link", "add", "br0", "address", labBridge, "type", "bridge")
	l.Lan.IP(t, "addr", "add", EtcdIP+"/24", "dev", "br0")
	l.Lan.IP(t, "link", "set", "br0", "up")
	l.Lan.Sysctl(t, "net.ipv4.conf.all.rp_filter", "1")
	l.Lan.Sysctl(t, "net.ipv4.conf.br0.rp_filter", "1")

	for i := 1; i <= opt.Nodes; i++ {
		nd := &Node{
			Name: fmt.Sprintf("n%d", i),
			NS:   NewNS(t, fmt.Sprintf("n%d", i)),
			IP:   fmt.Sprintf("192.0.2.%d", 10+i),
			MAC:  fmt.Sprintf("02:00:5e:00:53:%02x", i),
		}
		nd.RunDir = filepath.Join(t.TempDir(), "run")
		if err := os.Mkdir(nd.RunDir, 0o755); err != nil {
			t.Fatal(err)
		}
		l.Join(nd.NS, "eth0", "v"+nd.Name, nd.MAC, nd.IP)
		if opt.DualStack {
			nd.NS.IP(t, "addr", "add", fmt.Sprintf("%s%d/64", Prefix6, 10+i), "dev", "eth0", "nodad")
		}
		l.Nodes = append(l.Nodes, nd)
		if opt.Cluster {
			l.Etcd = append(l.Etcd, &EtcdMember{Name: nd.Name, NS: nd.NS, IP: nd.IP})
		}
	}
	if !opt.Cluster && !opt.NoEtcd {
		l.Etcd = []*EtcdMember{{Name: "lab", NS: l.Lan, IP: EtcdIP}}
	}
	for _, m := range l.Etcd {
		m.tls = opt.EtcdTLS != nil
	}
	l.Client = NewNS(t, "client")
	l.Join(l.Client, "eth0", "vclient", "02:00:5e:00:53:c0", Client)
	if opt.DualStack {
		l.Client.IP(t, "addr", "add", Prefix6+"50/64", "dev", "eth0", "nodad")
	}

	t.Cleanup(func() {
		for _, m := range l.Etcd {
			l.StopMember(m)
			if t.Failed() && m.Log != nil {
				t.Logf("--- etcd %s log:\n%s", m.Name, m.Log.String())
			}
		}
	})
	if len(l.Etcd) > 0 {
		l.StartEtcd(l.Etcd...)
	}
	l.Mon = startMonitor(t, l.Nodes, netip.MustParseAddr(VIP))
	if opt.DualStack {
		l.Mon6 = startMonitor(t, l.Nodes, netip.MustParseAddr(VIP6))
	}
	t.Cleanup(func() {
		for _, nd := range l.Nodes {
			l.Kill(nd)
		}
		if t.Failed() || os.Getenv("VIPD_TEST_LOGS") != "" {
			for _, nd := range l.Nodes {
				if nd.Log != nil {
					t.Logf("--- vipd %s log:\n%s", nd.Name, nd.Log.String())
				}
			}
			t.Logf("--- address events:\n%s", l.Mon.History())
			if l.Mon6 != nil {
				t.Logf("--- IPv6 address events:\n%s", l.Mon6.History())
			}
		}
	})
	return l
}

// Join connects ns to the bridge with a veth named ifname (bridge port
// port).
func (l *Lab) Join(ns *NS, ifname, port, mac, ip string) {
	t := l.T
	l.Lan.IP(t, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns.Name)
	l.Lan.IP(t, "link", "set", port, "master", "br0", "up")
	ns.IP(t, "link", "set", ifname, "address", mac, "up")
	ns.IP(t, "addr", "add", ip+"/24", "dev", ifname)
}

// StartEtcd starts (or restarts, on the same data) etcd members and waits
// until each is healthy. Members of a cluster are started together: none
// is healthy before a quorum runs.
func (l *Lab) StartEtcd(members ...*EtcdMember) {
	t := l.T
	_, bin := Binaries(t)
	var cluster []string
	for _, m := range l.Etcd {
		cluster = append(cluster, m.Name+"="+m.peerURL())
	}
	for _, m := range members {
		if m.dir == "" {
			m.dir, m.Log = t.TempDir(), &SyncBuffer{}
		}
		args := append([]string{
			"--name", m.Name, "--data-dir", m.dir,
			"--listen-client-urls", m.ClientURL(), "--advertise-client-urls", m.ClientURL(),
			"--listen-peer-urls", m.peerURL(), "--initial-advertise-peer-urls", m.peerURL(),
			"--initial-cluster", strings.Join(cluster, ","), "--initial-cluster-token", "vipd-lab",
			"--log-level", "error"}, l.Opt.EtcdFlags...)
		if pki := l.Opt.EtcdTLS; pki != nil {
			args = append(args, "--cert-file", pki.ServerCert, "--key-file", pki.ServerKey,
				"--trusted-ca-file", pki.CACert, "--client-cert-auth")
		}
		m.Cmd = m.NS.Command(bin, args...)
		m.Cmd.Stdout, m.Cmd.Stderr = m.Log, m.Log
		if err := m.Cmd.Start(); err != nil {
			t.Fatalf("start etcd %s: %v", m.Name, err)
		}
	}
	for _, m := range members {
		WaitFor(t, 30*time.Second, "etcd "+m.Name+" to be healthy", func() bool { return l.EtcdHealthy(m) })
	}
}

// StopMember kills one etcd member (a crash, not a clean shutdown).
func (l *Lab) StopMember(m *EtcdMember) {
	if m.Cmd != nil {
		m.Cmd.Process.Kill()
		m.Cmd.Wait()
		m.Cmd = nil
	}
}

// EtcdURLs is the vip.etcd value: every member.
func (l *Lab) EtcdURLs() string {
	var urls []string
	for _, m := range l.Etcd {
		urls = append(urls, m.ClientURL())
	}
	return strings.Join(urls, ",")
}

// ClientHTTP is an HTTP client whose connections start in the client
// namespace.
func (l *Lab) ClientHTTP() *http.Client {
	return &http.Client{
		Timeout: time.Second,
		Transport: &http.Transport{TLSClientConfig: l.Opt.EtcdTLS.clientConfig(), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := l.Client.Do(func() (err error) {
				c, err = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}},
	}
}

// EtcdHealthy asks a member's /health from inside the client namespace.
func (l *Lab) EtcdHealthy(m *EtcdMember) bool {
	resp, err := l.ClientHTTP().Get(m.ClientURL() + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"health":"true"`)
}

// EtcdStatus asks a member for its own ID and the ID of its raft leader.
func (l *Lab) EtcdStatus(m *EtcdMember) (id, leader string, err error) {
	resp, err := l.ClientHTTP().Post(m.ClientURL()+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var st struct {
		Header struct {
			MemberID string `json:"member_id"`
		} `json:"header"`
		Leader string `json:"leader"`
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st.Header.MemberID, st.Leader, err
}

// MoveEtcdLeader hands etcd's raft leadership to member to and waits until
// it has it.
func (l *Lab) MoveEtcdLeader(to *EtcdMember) {
	l.T.Helper()
	id, _, err := l.EtcdStatus(to)
	if err != nil {
		l.T.Fatalf("status of etcd member %s: %v", to.Name, err)
	}
	WaitFor(l.T, 10*time.Second, "etcd member "+to.Name+" to lead", func() bool {
		from := l.EtcdLeader()
		if from == to {
			return true
		}
		if from != nil {
			resp, err := l.ClientHTTP().Post(from.ClientURL()+"/v3/maintenance/transfer-leadership", "application/json",
				strings.NewReader(`{"targetID":"`+id+`"}`))
			if err == nil {
				resp.Body.Close()
			}
		}
		time.Sleep(200 * time.Millisecond)
		return false
	})
}

// HolderWithEtcdLeader moves etcd's raft leadership to the VIP holder's node
// and returns the holder. The move can hold up renewals long enough for the
// VIP to move too, so it checks and tries again.
func (l *Lab) HolderWithEtcdLeader() *Node {
	l.T.Helper()
	for try := 0; try < 5; try++ {
		h := l.Holder(3*ElectBound, time.Second)
		m := l.Etcd[IndexOf(l.Nodes, h)]
		l.MoveEtcdLeader(m)
		time.Sleep(time.Second) // a few heartbeats under the new etcd leader
		if l.Holder(3*ElectBound, 0) == h && l.EtcdLeader() == m {
			return h
		}
	}
	l.T.Fatalf("the VIP holder and etcd's leader did not stay on one node")
	return nil
}

// EtcdLeader is the member that etcd reports as its raft leader (nil if
// none answers).
func (l *Lab) EtcdLeader() *EtcdMember {
	for _, m := range l.Etcd {
		if id, leader, err := l.EtcdStatus(m); err == nil && leader != "" && leader == id {
			return m
		}
	}
	return nil
}

// Start runs vipd on the node with the lab's words plus extra ones.
func (l *Lab) Start(nd *Node, extra ...string) {
	l.StartWrapped(nd, nil, extra...)
}

// StartWrapped runs vipd under a wrapper command (such as setpriv).
func (l *Lab) StartWrapped(nd *Node, wrapper []string, extra ...string) {
	bin := nd.bin(l.T)
	args := append(wrapper[len(wrapper):], wrapper...)
	args = append(args, bin, "-cmdline", "none",
		"vip.address="+l.VIPWord(), "vip.interface=eth0", "vip.etcd="+l.EtcdURLs(),
		"vip.name="+nd.Name, "vip.log=stderr")
	l.Run(nd, append(append(args, l.Opt.Args...), extra...))
}

// StartRaw runs vipd on the node with exactly these arguments.
func (l *Lab) StartRaw(nd *Node, args ...string) {
	bin := nd.bin(l.T)
	l.Run(nd, append([]string{bin}, args...))
}

// bin is the vipd binary the node's daemon runs: its own Bin, or the
// lab's.
func (nd *Node) bin(t testing.TB) string {
	if nd.Bin != "" {
		return nd.Bin
	}
	bin, _ := Binaries(t)
	return bin
}

func (l *Lab) Run(nd *Node, argv []string) {
	t := l.T
	nd.Cmd = nd.Command(argv...)
	nd.Log = &SyncBuffer{}
	nd.Cmd.Stdout, nd.Cmd.Stderr = nd.Log, nd.Log
	if err := nd.Cmd.Start(); err != nil {
		t.Fatalf("start vipd on %s: %v", nd.Name, err)
	}
	nd.Exit = make(chan error, 1)
	go func(cmd *exec.Cmd, exit chan error) { exit <- cmd.Wait() }(nd.Cmd, nd.Exit)
}

// RunBounded runs argv (a vipd, say) in the node's namespace with its own
// /run, for at most within; ran says it was still running then and was
// killed. code is its exit status (-1 if it did not exit by itself).
func (nd *Node) RunBounded(argv []string, within time.Duration) (out string, code int, ran bool, err error) {
	cmd := nd.Command(argv...)
	buf := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		return "", -1, false, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(within):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return buf.String(), -1, true, nil
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &ee):
		code, err = ee.ExitCode(), nil
	default:
		code = -1
	}
	return buf.String(), code, false, err
}

// SecondRefused says what is wrong, if anything, with how a second vipd
// for a group that first (a pid) runs ended: it must exit 1 with a line
// naming first.
func SecondRefused(out string, code int, ran bool, first int) error {
	want := fmt.Sprintf("another vipd (pid %d) already runs this VIP group", first)
	switch {
	case ran:
		return fmt.Errorf("the second vipd still ran after its bound (killed); its log:\n%s", out)
	case code != 1 || !strings.Contains(out, want):
		return fmt.Errorf("the second vipd exited with status %d, want 1 and a line saying %q; its log:\n%s", code, want, out)
	}
	return nil
}

// Command prepares a vipd (or a wrapper that runs it) in the node's
// namespace, with the node's own /run.
func (nd *Node) Command(argv ...string) *exec.Cmd {
	return nd.NS.Command("sh", append([]string{"-c", `mount --bind "$0" /run && exec "$@"`, nd.RunDir}, argv...)...)
}

// StatePath is the node's state file for the lab's VIP group.
func (nd *Node) StatePath() string {
	return StatePathIn(nd.RunDir, "/vipd/"+VIP)
}

// VIPWord is the vip.address value: the IPv4 VIP, and the IPv6 one in a
// dual-stack lab.
func (l *Lab) VIPWord() string {
	if l.Opt.DualStack {
		return VIP + "," + VIP6
	}
	return VIP
}

func (l *Lab) StartAll(extra ...string) {
	for _, nd := range l.Nodes {
		l.Start(nd, extra...)
	}
}

// Signal signals the node's daemon and any children it has.
func (l *Lab) Signal(nd *Node, sig syscall.Signal) {
	if err := syscall.Kill(-nd.Cmd.Process.Pid, sig); err != nil {
		l.T.Fatalf("signal %v to the daemon on %s: %v", sig, nd.Name, err)
	}
}

// Wait waits (bounded) for the node's vipd to exit and returns its status.
func (l *Lab) Wait(nd *Node, timeout time.Duration) error {
	l.T.Helper()
	select {
	case err := <-nd.Exit:
		nd.Cmd = nil
		return err
	case <-time.After(timeout):
		l.T.Fatalf("vipd on %s still running %v after the signal", nd.Name, timeout)
		return nil
	}
}

func (l *Lab) Kill(nd *Node) {
	if nd.Cmd == nil {
		return
	}
	syscall.Kill(-nd.Cmd.Process.Pid, syscall.SIGCONT)
	syscall.Kill(-nd.Cmd.Process.Pid, syscall.SIGKILL)
	<-nd.Exit
	nd.Cmd = nil
}

// Holder waits (bounded) until exactly one node holds the VIP and it has
// held it for settle, and returns it.
func (l *Lab) Holder(timeout, settle time.Duration) *Node {
	l.T.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if h, since := l.Mon.Current(); len(h) == 1 && time.Since(since) >= settle {
			return l.Nodes[h[0]]
		}
		time.Sleep(20 * time.Millisecond)
	}
	h, _ := l.Mon.Current()
	l.T.Fatalf("no single holder of %s within %v (holders now: %v)", VIP, timeout, l.Names(h))
	return nil
}

// HolderAndOther waits for the holder of a two-node lab, settled for a
// second, and returns it with the other node.
func (l *Lab) HolderAndOther() (h, other *Node) {
	l.T.Helper()
	h = l.Holder(ElectBound, time.Second)
	if other = l.Nodes[0]; other == h {
		other = l.Nodes[1]
	}
	return h, other
}

// HolderOtherThan waits for a node other than old to hold the VIP.
func (l *Lab) HolderOtherThan(old *Node, timeout time.Duration) *Node {
	l.T.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if h, _ := l.Mon.Current(); len(h) == 1 && l.Nodes[h[0]] != old {
			return l.Nodes[h[0]]
		}
		time.Sleep(10 * time.Millisecond)
	}
	h, _ := l.Mon.Current()
	l.T.Fatalf("no node other than %s took %s within %v (holders now: %v)", old.Name, VIP, timeout, l.Names(h))
	return nil
}

func (l *Lab) Names(idx []int) []string {
	var s []string
	for _, i := range idx {
		s = append(s, l.Nodes[i].Name)
	}
	return s
}

// VIPAddr reads the node's copy of the IPv4 VIP right now (not from the
// monitor).
func (l *Lab) VIPAddr(nd *Node) (Addr, bool) {
	l.T.Helper()
	o, err := nd.NS.Dial()
	if err != nil {
		l.T.Fatal(err)
	}
	defer o.Close()
	addrs, err := o.Addrs()
	if err != nil {
		l.T.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP == netip.MustParseAddr(VIP) {
			return a, true
		}
	}
	return Addr{}, false
}

func (l *Lab) HasVIP(nd *Node) bool {
	_, ok := l.VIPAddr(nd)
	return ok
}

// WaitGone waits (bounded) until the node no longer has the VIP.
func (l *Lab) WaitGone(nd *Node, timeout time.Duration) {
	l.T.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !l.HasVIP(nd) {
			return
		}
	}
	l.T.Fatalf("%s still has %s after %v", nd.Name, VIP, timeout)
}

// Overlaps lists every moment two nodes held a VIP.
func (l *Lab) Overlaps() []string {
	o := l.Mon.Overlaps()
	if l.Mon6 != nil {
		o = append(o, l.Mon6.Overlaps()...)
	}
	return o
}

// AssertNoOverlap checks the invariant of every scenario.
func (l *Lab) AssertNoOverlap() {
	l.T.Helper()
	if o := l.Overlaps(); len(o) > 0 {
		l.T.Fatalf("two holders at once: %v", o)
	}
}

// TouchVIP sends one UDP datagram from the client to the VIP, which makes
// the client's kernel resolve (and keep) a neighbour entry for it.
func (l *Lab) TouchVIP() { l.Touch(VIP) }

// Touch sends one UDP datagram from the client to addr.
func (l *Lab) Touch(addr string) {
	l.T.Helper()
	err := l.Client.Do(func() error {
		c, err := net.Dial("udp", net.JoinHostPort(addr, "9"))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("vipd-test"))
		return err
	})
	if err != nil {
		l.T.Fatalf("send to %s from the client: %v", addr, err)
	}
}

// ClientNeighbour is the client's neighbour entry for the IPv4 VIP ("" if
// none).
func (l *Lab) ClientNeighbour() string { return l.ClientNeighbourOf(VIP) }

// ClientNeighbourOf is the client's neighbour entry for addr.
func (l *Lab) ClientNeighbourOf(addr string) string { return NeighbourIn(l.T, l.Client, "eth0", addr) }

// NeighbourIn is the MAC of ns's neighbour entry for addr on dev ("" if
// none, or if it has no link-layer address).
func NeighbourIn(t testing.TB, ns *NS, dev, addr string) string {
	t.Helper()
	o, err := ns.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	link, err := o.LinkByName(dev)
	if err != nil {
		t.Fatalf("in %s: %v", ns.Name, err)
	}
	neigh, err := o.Neighbours()
	if err != nil {
		t.Fatalf("in %s: %v", ns.Name, err)
	}
	want := netip.MustParseAddr(addr)
	for _, n := range neigh {
		if n.Index == link.Index && n.IP == want {
			return n.MAC
		}
	}
	return ""
}

// WaitClientNeighbour waits (bounded) for the client's entry to be mac.
func (l *Lab) WaitClientNeighbour(mac string, timeout time.Duration) {
	l.T.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if l.ClientNeighbour() == mac {
			return
		}
	}
	l.T.Fatalf("client's neighbour entry for %s is %q, want %s", VIP, l.ClientNeighbour(), mac)
}

// EtcdClient is an etcd client for the test itself, whose connections start
// in the client namespace (etcd is not reachable from the host's).
func (l *Lab) EtcdClient() *clientv3.Client {
	l.T.Helper()
	var eps []string
	for _, m := range l.Etcd {
		eps = append(eps, m.ClientURL())
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		TLS:         l.Opt.EtcdTLS.clientConfig(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var c net.Conn
			err := l.Client.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		})},
	})
	if err != nil {
		l.T.Fatalf("etcd client for the test: %v", err)
	}
	l.T.Cleanup(func() { cli.Close() })
	return cli
}

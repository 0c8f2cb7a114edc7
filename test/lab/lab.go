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
	"regexp"
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

const (
	labVIP     = "192.0.2.100"
	labVIP6    = "2001:db8::100"
	labPrefix6 = "2001:db8::"
	labEtcdIP  = "192.0.2.1"
	labClient  = "192.0.2.50"
	labBridge  = "02:00:5e:00:53:fe" // fixed: a bridge without one takes a port's MAC and changes it
)

var (
	buildOnce sync.Once
	vipdBin   string
	etcdBin   string
	buildErr  error
)

// binaries builds vipd and the pinned etcd once per test run. etcd is
// cached in test/etcd/bin (or taken from $VIPD_ETCD).
func binaries(t testing.TB) (string, string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vipd-test-bin")
		if err != nil {
			buildErr = err
			return
		}
		vipdBin = filepath.Join(dir, "vipd")
		// Built as `make build` builds it, so that the benchmarks measure
		// the shipped binary.
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", vipdBin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build vipd: %v: %s", err, out)
			return
		}
		etcdBin = os.Getenv("VIPD_ETCD")
		if etcdBin == "" {
			etcdBin, err = filepath.Abs("test/etcd/bin/etcd")
			if err != nil {
				buildErr = err
				return
			}
			if _, err := os.Stat(etcdBin); err != nil {
				cmd := exec.Command("go", "build", "-trimpath", "-o", etcdBin, ".")
				cmd.Dir = "test/etcd"
				cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
				if out, err := cmd.CombinedOutput(); err != nil {
					buildErr = fmt.Errorf("build etcd (test/etcd): %v: %s", err, out)
				}
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return vipdBin, etcdBin
}

type labNode struct {
	name string
	ns   *testNS
	ip   string
	mac  string
	cmd  *exec.Cmd
	log  *syncBuffer
	exit chan error // receives the process's exit once
	// restart starts the node's daemon again; nil means vipd (l.start).
	restart func()
	service *labService // set by startServices
	// runDir is the node's own /run (bind-mounted over /run for its vipd
	// only), so that each node has its own /run/vipd state file, as on
	// separate machines, and the host's /run is never written.
	runDir string
}

type lab struct {
	t      testing.TB
	opt    labOptions
	lan    *testNS
	client *testNS
	nodes  []*labNode
	etcd   []*etcdMember
	mon    *monitor
	mon6   *monitor // dual-stack labs: the IPv6 VIP
}

// labOptions shape a lab.
type labOptions struct {
	nodes int
	// cluster puts one etcd member in each node namespace, as on a
	// control-plane node; otherwise one etcd runs on the bridge.
	cluster   bool
	etcdFlags []string // extra etcd flags, e.g. tuned timers
	args      []string // extra vip.* words for every node
	noEtcd    bool     // for labs that run keepalived instead
	dualStack bool     // IPv6 addresses too, and an IPv6 VIP beside the IPv4 one
	etcdTLS   *testPKI // serve etcd over TLS and require client certificates
}

// etcdMember is one etcd server of the lab.
type etcdMember struct {
	name string
	ns   *testNS
	ip   string
	dir  string
	cmd  *exec.Cmd
	log  *syncBuffer
	tls  bool // clients must present a certificate (labOptions.etcdTLS)
}

func (m *etcdMember) clientURL() string {
	if m.tls {
		return "https://" + m.ip + ":2379"
	}
	return "http://" + m.ip + ":2379"
}
func (m *etcdMember) peerURL() string { return "http://" + m.ip + ":2380" }

// newLab is n nodes against one etcd, with vip.* words for every node.
func newLab(t testing.TB, n int, args ...string) *lab {
	return newLabWith(t, labOptions{nodes: n, args: args})
}

// newLabWith builds the topology and starts etcd; vipd is started per node
// with start.
func newLabWith(t testing.TB, opt labOptions) *lab {
	needRoot(t)
	l := &lab{t: t, opt: opt}
	l.lan = newNS(t, "lan")
	l.lan.ip(t, "link", "add", "br0", "address", labBridge, "type", "bridge")
	l.lan.ip(t, "addr", "add", labEtcdIP+"/24", "dev", "br0")
	l.lan.ip(t, "link", "set", "br0", "up")
	l.lan.sysctl(t, "net.ipv4.conf.all.rp_filter", "1")
	l.lan.sysctl(t, "net.ipv4.conf.br0.rp_filter", "1")

	for i := 1; i <= opt.nodes; i++ {
		nd := &labNode{
			name: fmt.Sprintf("n%d", i),
			ns:   newNS(t, fmt.Sprintf("n%d", i)),
			ip:   fmt.Sprintf("192.0.2.%d", 10+i),
			mac:  fmt.Sprintf("02:00:5e:00:53:%02x", i),
		}
		nd.runDir = filepath.Join(t.TempDir(), "run")
		if err := os.Mkdir(nd.runDir, 0o755); err != nil {
			t.Fatal(err)
		}
		l.join(nd.ns, "eth0", "v"+nd.name, nd.mac, nd.ip)
		if opt.dualStack {
			nd.ns.ip(t, "addr", "add", fmt.Sprintf("%s%d/64", labPrefix6, 10+i), "dev", "eth0", "nodad")
		}
		l.nodes = append(l.nodes, nd)
		if opt.cluster {
			l.etcd = append(l.etcd, &etcdMember{name: nd.name, ns: nd.ns, ip: nd.ip})
		}
	}
	if !opt.cluster && !opt.noEtcd {
		l.etcd = []*etcdMember{{name: "lab", ns: l.lan, ip: labEtcdIP}}
	}
	for _, m := range l.etcd {
		m.tls = opt.etcdTLS != nil
	}
	l.client = newNS(t, "client")
	l.join(l.client, "eth0", "vclient", "02:00:5e:00:53:c0", labClient)
	if opt.dualStack {
		l.client.ip(t, "addr", "add", labPrefix6+"50/64", "dev", "eth0", "nodad")
	}

	t.Cleanup(func() {
		for _, m := range l.etcd {
			l.stopMember(m)
			if t.Failed() && m.log != nil {
				t.Logf("--- etcd %s log:\n%s", m.name, m.log.String())
			}
		}
	})
	if len(l.etcd) > 0 {
		l.startEtcd(l.etcd...)
	}
	l.mon = startMonitor(t, l.nodes, netip.MustParseAddr(labVIP))
	if opt.dualStack {
		l.mon6 = startMonitor(t, l.nodes, netip.MustParseAddr(labVIP6))
	}
	t.Cleanup(func() {
		for _, nd := range l.nodes {
			l.kill(nd)
		}
		if t.Failed() || os.Getenv("VIPD_TEST_LOGS") != "" {
			for _, nd := range l.nodes {
				if nd.log != nil {
					t.Logf("--- vipd %s log:\n%s", nd.name, nd.log.String())
				}
			}
			t.Logf("--- address events:\n%s", l.mon.history())
			if l.mon6 != nil {
				t.Logf("--- IPv6 address events:\n%s", l.mon6.history())
			}
		}
	})
	return l
}

// join connects ns to the bridge with a veth named ifname (bridge port
// port).
func (l *lab) join(ns *testNS, ifname, port, mac, ip string) {
	t := l.t
	l.lan.ip(t, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns.name)
	l.lan.ip(t, "link", "set", port, "master", "br0", "up")
	ns.ip(t, "link", "set", ifname, "address", mac, "up")
	ns.ip(t, "addr", "add", ip+"/24", "dev", ifname)
}

// startEtcd starts (or restarts, on the same data) etcd members and waits
// until each is healthy. Members of a cluster are started together: none
// is healthy before a quorum runs.
func (l *lab) startEtcd(members ...*etcdMember) {
	t := l.t
	_, bin := binaries(t)
	var cluster []string
	for _, m := range l.etcd {
		cluster = append(cluster, m.name+"="+m.peerURL())
	}
	for _, m := range members {
		if m.dir == "" {
			m.dir, m.log = t.TempDir(), &syncBuffer{}
		}
		args := append([]string{
			"--name", m.name, "--data-dir", m.dir,
			"--listen-client-urls", m.clientURL(), "--advertise-client-urls", m.clientURL(),
			"--listen-peer-urls", m.peerURL(), "--initial-advertise-peer-urls", m.peerURL(),
			"--initial-cluster", strings.Join(cluster, ","), "--initial-cluster-token", "vipd-lab",
			"--log-level", "error"}, l.opt.etcdFlags...)
		if pki := l.opt.etcdTLS; pki != nil {
			args = append(args, "--cert-file", pki.serverCert, "--key-file", pki.serverKey,
				"--trusted-ca-file", pki.caCert, "--client-cert-auth")
		}
		m.cmd = m.ns.command(bin, args...)
		m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
		if err := m.cmd.Start(); err != nil {
			t.Fatalf("start etcd %s: %v", m.name, err)
		}
	}
	for _, m := range members {
		waitFor(t, 30*time.Second, "etcd "+m.name+" to be healthy", func() bool { return l.etcdHealthy(m) })
	}
}

// stopMember kills one etcd member (a crash, not a clean shutdown).
func (l *lab) stopMember(m *etcdMember) {
	if m.cmd != nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
		m.cmd = nil
	}
}

// etcdURLs is the vip.etcd value: every member.
func (l *lab) etcdURLs() string {
	var urls []string
	for _, m := range l.etcd {
		urls = append(urls, m.clientURL())
	}
	return strings.Join(urls, ",")
}

// clientHTTP is an HTTP client whose connections start in the client
// namespace.
func (l *lab) clientHTTP() *http.Client {
	return &http.Client{
		Timeout: time.Second,
		Transport: &http.Transport{TLSClientConfig: l.opt.etcdTLS.clientConfig(), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := l.client.do(func() (err error) {
				c, err = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}},
	}
}

// etcdHealthy asks a member's /health from inside the client namespace.
func (l *lab) etcdHealthy(m *etcdMember) bool {
	resp, err := l.clientHTTP().Get(m.clientURL() + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"health":"true"`)
}

// etcdStatus asks a member for its own ID and the ID of its raft leader.
func (l *lab) etcdStatus(m *etcdMember) (id, leader string, err error) {
	resp, err := l.clientHTTP().Post(m.clientURL()+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
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

// moveEtcdLeader hands etcd's raft leadership to member to and waits until
// it has it.
func (l *lab) moveEtcdLeader(to *etcdMember) {
	l.t.Helper()
	id, _, err := l.etcdStatus(to)
	if err != nil {
		l.t.Fatalf("status of etcd member %s: %v", to.name, err)
	}
	waitFor(l.t, 10*time.Second, "etcd member "+to.name+" to lead", func() bool {
		from := l.etcdLeader()
		if from == to {
			return true
		}
		if from != nil {
			resp, err := l.clientHTTP().Post(from.clientURL()+"/v3/maintenance/transfer-leadership", "application/json",
				strings.NewReader(`{"targetID":"`+id+`"}`))
			if err == nil {
				resp.Body.Close()
			}
		}
		time.Sleep(200 * time.Millisecond)
		return false
	})
}

// holderWithEtcdLeader moves etcd's raft leadership to the VIP holder's node
// and returns the holder. The move can hold up renewals long enough for the
// VIP to move too, so it checks and tries again.
func (l *lab) holderWithEtcdLeader() *labNode {
	l.t.Helper()
	for try := 0; try < 5; try++ {
		h := l.holder(3*electBound, time.Second)
		m := l.etcd[indexOf(l.nodes, h)]
		l.moveEtcdLeader(m)
		time.Sleep(time.Second) // a few heartbeats under the new etcd leader
		if l.holder(3*electBound, 0) == h && l.etcdLeader() == m {
			return h
		}
	}
	l.t.Fatalf("the VIP holder and etcd's leader did not stay on one node")
	return nil
}

// etcdLeader is the member that etcd reports as its raft leader (nil if
// none answers).
func (l *lab) etcdLeader() *etcdMember {
	for _, m := range l.etcd {
		if id, leader, err := l.etcdStatus(m); err == nil && leader != "" && leader == id {
			return m
		}
	}
	return nil
}

// start runs vipd on the node with the lab's words plus extra ones.
func (l *lab) start(nd *labNode, extra ...string) {
	l.startWrapped(nd, nil, extra...)
}

// startWrapped runs vipd under a wrapper command (such as setpriv).
func (l *lab) startWrapped(nd *labNode, wrapper []string, extra ...string) {
	bin, _ := binaries(l.t)
	args := append(wrapper[len(wrapper):], wrapper...)
	args = append(args, bin, "-cmdline", "none",
		"vip.address="+l.vipWord(), "vip.interface=eth0", "vip.etcd="+l.etcdURLs(),
		"vip.name="+nd.name, "vip.log=stderr")
	l.run(nd, append(append(args, l.opt.args...), extra...))
}

// startRaw runs vipd on the node with exactly these arguments.
func (l *lab) startRaw(nd *labNode, args ...string) {
	bin, _ := binaries(l.t)
	l.run(nd, append([]string{bin}, args...))
}

func (l *lab) run(nd *labNode, argv []string) {
	t := l.t
	nd.cmd = nd.command(argv...)
	nd.log = &syncBuffer{}
	nd.cmd.Stdout, nd.cmd.Stderr = nd.log, nd.log
	if err := nd.cmd.Start(); err != nil {
		t.Fatalf("start vipd on %s: %v", nd.name, err)
	}
	nd.exit = make(chan error, 1)
	go func(cmd *exec.Cmd, exit chan error) { exit <- cmd.Wait() }(nd.cmd, nd.exit)
}

// runBounded runs argv (a vipd, say) in the node's namespace with its own
// /run, for at most within; ran says it was still running then and was
// killed. code is its exit status (-1 if it did not exit by itself).
func (nd *labNode) runBounded(argv []string, within time.Duration) (out string, code int, ran bool, err error) {
	cmd := nd.command(argv...)
	buf := &syncBuffer{}
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

// secondRefused says what is wrong, if anything, with how a second vipd
// for a group that first (a pid) runs ended: it must exit 1 with a line
// naming first.
func secondRefused(out string, code int, ran bool, first int) error {
	want := fmt.Sprintf("another vipd (pid %d) already runs this VIP group", first)
	switch {
	case ran:
		return fmt.Errorf("the second vipd still ran after its bound (killed); its log:\n%s", out)
	case code != 1 || !strings.Contains(out, want):
		return fmt.Errorf("the second vipd exited with status %d, want 1 and a line saying %q; its log:\n%s", code, want, out)
	}
	return nil
}

// command prepares a vipd (or a wrapper that runs it) in the node's
// namespace, with the node's own /run.
func (nd *labNode) command(argv ...string) *exec.Cmd {
	return nd.ns.command("sh", append([]string{"-c", `mount --bind "$0" /run && exec "$@"`, nd.runDir}, argv...)...)
}

// statePath is the node's state file for the lab's VIP group.
func (nd *labNode) statePath() string {
	return filepath.Join(nd.runDir, strings.TrimPrefix(statePath("/vipd/"+labVIP), "/run/"))
}

// vipWord is the vip.address value: the IPv4 VIP, and the IPv6 one in a
// dual-stack lab.
func (l *lab) vipWord() string {
	if l.opt.dualStack {
		return labVIP + "," + labVIP6
	}
	return labVIP
}

func (l *lab) startAll(extra ...string) {
	for _, nd := range l.nodes {
		l.start(nd, extra...)
	}
}

// signal signals the node's daemon and any children it has.
func (l *lab) signal(nd *labNode, sig syscall.Signal) {
	if err := syscall.Kill(-nd.cmd.Process.Pid, sig); err != nil {
		l.t.Fatalf("signal %v to the daemon on %s: %v", sig, nd.name, err)
	}
}

// wait waits (bounded) for the node's vipd to exit and returns its status.
func (l *lab) wait(nd *labNode, timeout time.Duration) error {
	l.t.Helper()
	select {
	case err := <-nd.exit:
		nd.cmd = nil
		return err
	case <-time.After(timeout):
		l.t.Fatalf("vipd on %s still running %v after the signal", nd.name, timeout)
		return nil
	}
}

func (l *lab) kill(nd *labNode) {
	if nd.cmd == nil {
		return
	}
	syscall.Kill(-nd.cmd.Process.Pid, syscall.SIGCONT)
	syscall.Kill(-nd.cmd.Process.Pid, syscall.SIGKILL)
	<-nd.exit
	nd.cmd = nil
}

// holder waits (bounded) until exactly one node holds the VIP and it has
// held it for settle, and returns it.
func (l *lab) holder(timeout, settle time.Duration) *labNode {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if h, since := l.mon.current(); len(h) == 1 && time.Since(since) >= settle {
			return l.nodes[h[0]]
		}
		time.Sleep(20 * time.Millisecond)
	}
	h, _ := l.mon.current()
	l.t.Fatalf("no single holder of %s within %v (holders now: %v)", labVIP, timeout, l.names(h))
	return nil
}

// holderAndOther waits for the holder of a two-node lab, settled for a
// second, and returns it with the other node.
func (l *lab) holderAndOther() (h, other *labNode) {
	l.t.Helper()
	h = l.holder(electBound, time.Second)
	if other = l.nodes[0]; other == h {
		other = l.nodes[1]
	}
	return h, other
}

// holderOtherThan waits for a node other than old to hold the VIP.
func (l *lab) holderOtherThan(old *labNode, timeout time.Duration) *labNode {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if h, _ := l.mon.current(); len(h) == 1 && l.nodes[h[0]] != old {
			return l.nodes[h[0]]
		}
		time.Sleep(10 * time.Millisecond)
	}
	h, _ := l.mon.current()
	l.t.Fatalf("no node other than %s took %s within %v (holders now: %v)", old.name, labVIP, timeout, l.names(h))
	return nil
}

func (l *lab) names(idx []int) []string {
	var s []string
	for _, i := range idx {
		s = append(s, l.nodes[i].name)
	}
	return s
}

// vipAddr reads the node's copy of the IPv4 VIP right now (not from the
// monitor).
func (l *lab) vipAddr(nd *labNode) (addrMessage, bool) {
	l.t.Helper()
	r, err := dialRTNL(nd.ns.fd(l.t))
	if err != nil {
		l.t.Fatal(err)
	}
	defer r.Close()
	addrs, err := r.addrs(0)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, a := range addrs {
		if a.ip() == netip.MustParseAddr(labVIP) {
			return a, true
		}
	}
	return addrMessage{}, false
}

func (l *lab) hasVIP(nd *labNode) bool {
	_, ok := l.vipAddr(nd)
	return ok
}

// waitGone waits (bounded) until the node no longer has the VIP.
func (l *lab) waitGone(nd *labNode, timeout time.Duration) {
	l.t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !l.hasVIP(nd) {
			return
		}
	}
	l.t.Fatalf("%s still has %s after %v", nd.name, labVIP, timeout)
}

// overlaps lists every moment two nodes held a VIP.
func (l *lab) overlaps() []string {
	o := l.mon.overlaps()
	if l.mon6 != nil {
		o = append(o, l.mon6.overlaps()...)
	}
	return o
}

// assertNoOverlap checks the invariant of every scenario.
func (l *lab) assertNoOverlap() {
	l.t.Helper()
	if o := l.overlaps(); len(o) > 0 {
		l.t.Fatalf("two holders at once: %v", o)
	}
}

// touchVIP sends one UDP datagram from the client to the VIP, which makes
// the client's kernel resolve (and keep) a neighbour entry for it.
func (l *lab) touchVIP() { l.touch(labVIP) }

// touch sends one UDP datagram from the client to addr.
func (l *lab) touch(addr string) {
	l.t.Helper()
	err := l.client.do(func() error {
		c, err := net.Dial("udp", net.JoinHostPort(addr, "9"))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("vipd-test"))
		return err
	})
	if err != nil {
		l.t.Fatalf("send to %s from the client: %v", addr, err)
	}
}

var lladdrRE = regexp.MustCompile(`lladdr ([0-9a-f:]{17})`)

// clientNeighbour is the client's neighbour entry for the IPv4 VIP ("" if
// none).
func (l *lab) clientNeighbour() string { return l.clientNeighbourOf(labVIP) }

// clientNeighbourOf is the client's neighbour entry for addr.
func (l *lab) clientNeighbourOf(addr string) string { return neighbourIn(l.t, l.client, "eth0", addr) }

// neighbourIn is the MAC of ns's neighbour entry for addr on dev ("" if none).
func neighbourIn(t testing.TB, ns *testNS, dev, addr string) string {
	out := ns.ip(t, "neigh", "show", addr, "dev", dev)
	if m := lladdrRE.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return ""
}

// waitClientNeighbour waits (bounded) for the client's entry to be mac.
func (l *lab) waitClientNeighbour(mac string, timeout time.Duration) {
	l.t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if l.clientNeighbour() == mac {
			return
		}
	}
	l.t.Fatalf("client's neighbour entry for %s is %q, want %s", labVIP, l.clientNeighbour(), mac)
}

// etcdClient is an etcd client for the test itself, whose connections start
// in the client namespace (etcd is not reachable from the host's).
func (l *lab) etcdClient() *clientv3.Client {
	l.t.Helper()
	var eps []string
	for _, m := range l.etcd {
		eps = append(eps, m.clientURL())
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		TLS:         l.opt.etcdTLS.clientConfig(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var c net.Conn
			err := l.client.do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		})},
	})
	if err != nil {
		l.t.Fatalf("etcd client for the test: %v", err)
	}
	l.t.Cleanup(func() { cli.Close() })
	return cli
}

package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The status socket lets `vipd -status` on a node ask the running vipd
// instead of being given its whole configuration again. A richer state
// file was the other way, and it cannot work: the daemon may have read
// its etcd certificates from a config partition that is no longer mounted
// (nor readable by an operator's shell in a static pod), and the state
// file would have to name secrets' paths that do not exist. The daemon
// already has a connected, authenticated etcd client: it answers with
// the same report -status builds, through a Unix socket beside its state
// file, which only its own user may open.

// statusSockPath is the group's status socket, beside its state file.
func statusSockPath(key string) string {
	return strings.TrimSuffix(statePath(key), ".json") + ".sock"
}

// statusRequest asks for the report. Requests are lines: "status",
// "drain [NAME]", "undrain [NAME]".
const statusRequest = "status\n"

// statusSockTimeout bounds one connection: the etcd questions
// (statusTimeout) plus diagnosing an unreachable etcd (a second) and the
// writing.
const statusSockTimeout = statusTimeout + 2*time.Second

// statusSocket answers on the group's status socket with the view of the
// daemon's own etcd client.
type statusSocket struct {
	ln        *net.UnixListener
	cli       *clientv3.Client
	key, name string
	endpoints []string
	tls       *tls.Config
	log       *logger
}

// listenStatus opens the status socket. The group's lock is held, so a
// socket file left at the path is an earlier run's (a crash, or the image
// before a SIGHUP re-exec): it is removed. Without a socket vipd runs on;
// -status then needs the configuration, as before.
func listenStatus(cfg Config, cli *clientv3.Client, tlsCfg *tls.Config, log *logger) *statusSocket {
	path := statusSockPath(cfg.Key)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.warnf("no status socket: remove the old %s: %v (vipd runs on; -status needs the configuration)", path, err)
		return nil
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err == nil {
		err = os.Chmod(path, 0o600) // the node's status is for its operators
	}
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		log.warnf("no status socket at %s: %v (vipd runs on; -status needs the configuration)", path, err)
		return nil
	}
	return &statusSocket{ln: ln, cli: cli, key: cfg.Key, name: cfg.Name, endpoints: cfg.Etcd, tls: tlsCfg, log: log}
}

// serve answers one connection at a time until ctx ends, which closes the
// listener (and removes the socket file). One at a time: -status is for
// people and scripts on this node, and a client that stalls is cut off
// after statusSockTimeout, so nothing here grows with the connections.
func (s *statusSocket) serve(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				s.log.warnf("status socket: %v (no more -status answers from this process)", err)
			}
			return
		}
		s.answer(ctx, conn)
	}
}

func (s *statusSocket) answer(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(statusSockTimeout))
	line, err := bufio.NewReader(io.LimitReader(conn, 256)).ReadString('\n')
	words := strings.Fields(line)
	switch {
	case err == nil && len(words) == 1 && words[0] == "status":
		b, _ := json.Marshal(s.status(ctx))
		conn.Write(append(b, '\n'))
	case err == nil && len(words) > 0 && len(words) <= 2 && (words[0] == "drain" || words[0] == "undrain" || words[0] == "move"):
		conn.SetDeadline(time.Now().Add(statusSockTimeout + max(drainWait, moveWait)))
		name := ""
		if len(words) == 2 {
			name = words[1]
		}
		b, _ := json.Marshal(s.command(ctx, words[0], name))
		conn.Write(append(b, '\n'))
	default:
		fmt.Fprintf(conn, "{\"error\": %q}\n", "unknown request; send status, drain [NAME], undrain [NAME] or move [NAME]")
	}
}

// status is the report -status prints, as this daemon's client sees it.
func (s *statusSocket) status(ctx context.Context) statusReport {
	qctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), statusTimeout)
	defer cancel()
	rep := statusReport{Key: s.key, Endpoints: s.endpoints, Candidates: []statusCandidate{}}
	v, err := readElection(qctx, s.cli, s.key)
	now := time.Now()
	if err == nil {
		return buildStatus(s.key, s.endpoints, v, s.name, now)
	}
	rep.At, rep.Error = now, fmt.Sprintf("%v%s", err, diagnose(s.endpoints, s.tls))
	return rep
}

// cmdReply is the answer to drain, undrain and move: what was done, or
// why not.
type cmdReply struct {
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

// command runs drain, undrain (name: this node's if empty) or move (name:
// the next candidate if empty) with the daemon's etcd client.
func (s *statusSocket) command(ctx context.Context, verb, name string) cmdReply {
	qctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), statusTimeout+max(drainWait, moveWait))
	defer cancel()
	var msg string
	var err error
	if verb == "move" {
		msg, err = moveNow(qctx, s.cli, s.key, name, "vipd -move on "+s.name)
	} else {
		msg, err = drainNow(qctx, s.cli, s.key, cmp.Or(name, s.name), verb == "drain", "vipd -drain on "+s.name)
	}
	if err != nil {
		return cmdReply{Error: err.Error()}
	}
	return cmdReply{Message: msg}
}

// statusSockets lists the status sockets of the groups running on this
// node, in a stable order.
func statusSockets() []string {
	paths, _ := filepath.Glob(filepath.Join(runDir, "*.sock"))
	sort.Strings(paths)
	return paths
}

// askDaemon asks the vipd behind a status socket for its report.
func askDaemon(path string) (statusReport, error) {
	var rep statusReport
	if err := askSocket(path, statusRequest, statusSockTimeout+time.Second, &rep); err != nil {
		return rep, err
	}
	if rep.Key == "" && rep.Error != "" {
		return rep, fmt.Errorf("the vipd at %s: %s", path, rep.Error)
	}
	return rep, nil
}

// askSocket sends one request line to the vipd behind a status socket and
// decodes its answer into v, within the time given.
func askSocket(path, request string, within time.Duration, v any) error {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return fmt.Errorf("ask the vipd at %s: %w", path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(within))
	if _, err := io.WriteString(conn, request); err != nil {
		return fmt.Errorf("ask the vipd at %s: %w", path, err)
	}
	if err := json.NewDecoder(io.LimitReader(conn, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("read the answer of the vipd at %s: %w", path, err)
	}
	return nil
}

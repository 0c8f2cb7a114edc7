package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// runDir holds one state file per VIP group. /run is a tmpfs on every
// init worth the name, so the file is gone after a reboot, when nothing it
// says can still be true; it survives a crash of vipd, which is what crash
// resume needs (resume.go).
const runDir = "/run/vipd"

// statePath is the state file of the VIP group keyed by vip.key.
func statePath(key string) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, strings.Trim(key, "/"))
	return filepath.Join(runDir, name+".json")
}

// stateRecord is the state file: what this node is doing for one VIP group,
// for operators (`vipd -status`, `cat`) and for the next vipd on this node
// (the election part: crash resume).
type stateRecord struct {
	recordGroup
	recordHolding
	recordTerm
	Written time.Time `json:"written"`
}

// recordGroup says who writes the record and for which VIP group. The
// three parts are embedded, so the JSON stays one flat object.
type recordGroup struct {
	Version   string   `json:"version"`
	PID       int      `json:"pid"`
	Name      string   `json:"name"`           // this node's name in the election
	Key       string   `json:"key"`            // vip.key: the group
	Addresses []string `json:"addresses"`      // vip.address as prefixes
	Interface string   `json:"interface"`      // vip.interface as configured
	Link      string   `json:"link,omitempty"` // the interface in use
	LinkIndex uint32   `json:"link_index,omitempty"`
}

// recordHolding is what this node is doing with the VIP.
type recordHolding struct {
	State      string    `json:"state"`
	StateSince time.Time `json:"state_since"`
	Holder     string    `json:"holder,omitempty"`    // who holds the VIP, as far as this node knows
	HeldSince  time.Time `json:"held_since,omitzero"` // this node's tenure, while leader
	// The same on CLOCK_BOOTTIME (ms), which does not step, within boot_id.
	HeldBoottimeMS int64     `json:"held_boottime_ms,omitempty"`
	BootID         string    `json:"boot_id,omitempty"`
	Deadline       time.Time `json:"deadline,omitzero"` // when this node must step down at the latest (wall clock, as of Written)
	LastAnnounced  time.Time `json:"last_announcement,omitzero"`
	Healthy        bool      `json:"healthy"`                 // the health check's verdict (true without a check)
	LastStepDown   string    `json:"last_stepdown,omitempty"` // the reason
	SteppedDownAt  time.Time `json:"last_stepdown_at,omitzero"`
}

// recordTerm is the election part: the lease and key of the current term.
type recordTerm struct {
	Lease          string `json:"lease,omitempty"` // hex, as etcd tools print it
	ElectionKey    string `json:"election_key,omitempty"`
	CreateRevision int64  `json:"create_revision,omitempty"`
	TTLMillis      int64  `json:"ttl_ms,omitempty"` // the term's effective TTL
	Leading        bool   `json:"leading,omitempty"`
}

// leaseID parses Lease.
func (r stateRecord) leaseID() (clientv3.LeaseID, bool) {
	id, err := strconv.ParseInt(r.Lease, 16, 64)
	return clientv3.LeaseID(id), err == nil && id != 0
}

// enter records a change of state at now; a leader records its tenure:
// the claim's time, as the election entry says it (-status), or took, the
// handover clock's start, which also goes down on a clock that does not
// step, for a resume (resume.go tenureStart).
func (r *stateRecord) enter(now time.Time, leader bool, claimed, took time.Time) {
	r.StateSince = now
	r.Holder, r.HeldSince, r.HeldBoottimeMS, r.BootID = "", time.Time{}, 0, ""
	if leader {
		r.Holder, r.HeldSince = r.Name, cmp.Or(claimed, took)
		r.HeldBoottimeMS = (boottime() - now.Sub(took)).Milliseconds()
		r.BootID = bootID()
	}
}

// stateFile writes the record atomically (a new file renamed over the old
// one, so a reader never sees half of it). Writing is best effort: a
// missing or read-only /run costs one warning and no file, never vipd's
// work.
type stateFile struct {
	path   string
	log    *logger
	broken bool // a write failed: warned once, not tried again
}

func (f *stateFile) write(r stateRecord) {
	if f == nil || f.broken {
		return
	}
	r.Version, r.PID, r.Written = release(), os.Getpid(), time.Now()
	if err := writeAtomic(f.path, r); err != nil {
		f.broken = true
		f.log.warnf("no state file: %v (vipd runs on; -status shows no local view, and a restart cannot resume the lease)", err)
	}
}

// remove deletes the file after a graceful stop: the lease it names is
// revoked, and nothing is left behind.
func (f *stateFile) remove() {
	if f == nil || f.broken {
		return
	}
	if err := os.Remove(f.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.log.warnf("remove state file: %v", err)
	}
}

// writeAtomic writes the record next to path and renames it over path.
// Only the node's loop writes, so one temporary name serves. The directory
// is made when it is missing, not checked before every write: the file is
// rewritten on every renewal.
func writeAtomic(path string, r stateRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	err = os.WriteFile(tmp, append(b, '\n'), 0o644)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
		}
		err = os.WriteFile(tmp, append(b, '\n'), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readState reads a state file. A missing file is os.ErrNotExist.
func readState(path string) (stateRecord, error) {
	var r stateRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

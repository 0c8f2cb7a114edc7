package main

import (
	"testing"

	"golang.org/x/sys/unix"
)

const capSysAdmin capSet = 1 << unix.CAP_SYS_ADMIN

func TestWantedCaps(t *testing.T) {
	const all capSet = 1<<(unix.CAP_LAST_CAP+1) - 1
	for _, c := range []struct {
		name   string
		cur    capState
		mounts bool
		want   capState
		bnd    capSet
	}{
		{"root", capState{eff: all, prm: all}, false,
			capState{eff: daemonCaps, prm: daemonCaps}, daemonCaps},
		{"root, config partition", capState{eff: all, prm: all}, true,
			capState{eff: daemonCaps, prm: daemonCaps | capSysAdmin}, daemonCaps | capSysAdmin},
		{"ambient user keeps its inheritable pair", capState{eff: daemonCaps, prm: daemonCaps, inh: daemonCaps | 1<<unix.CAP_CHOWN}, false,
			capState{eff: daemonCaps, prm: daemonCaps, inh: daemonCaps}, daemonCaps},
		{"ambient user with sys_admin for the partition", capState{eff: daemonCaps | capSysAdmin, prm: daemonCaps | capSysAdmin, inh: daemonCaps | capSysAdmin}, true,
			capState{eff: daemonCaps, prm: daemonCaps | capSysAdmin, inh: daemonCaps | capSysAdmin}, daemonCaps | capSysAdmin},
		{"never raises", capState{eff: 1 << unix.CAP_NET_RAW, prm: 1 << unix.CAP_NET_RAW}, true,
			capState{eff: 1 << unix.CAP_NET_RAW, prm: 1 << unix.CAP_NET_RAW}, daemonCaps | capSysAdmin},
		{"nothing", capState{}, true, capState{}, daemonCaps | capSysAdmin},
	} {
		got, bnd := wantedCaps(c.cur, c.mounts)
		if got != c.want || bnd != c.bnd {
			t.Errorf("%s: wantedCaps(%+v, %v) = %+v, bounding %s; want %+v, bounding %s", c.name, c.cur, c.mounts, got, bnd, c.want, c.bnd)
		}
	}
}

func TestMountsConfig(t *testing.T) {
	for src, want := range map[string]bool{
		"": false, "/etc/vipd.conf": false, "LABEL=vipd": true, "PARTLABEL=vipd:/x.conf": true, "/dev/vdb1": true, "nonsense": false,
	} {
		if got := mountsConfig(src); got != want {
			t.Errorf("mountsConfig(%q) = %v, want %v", src, got, want)
		}
	}
}

#!/bin/bash
# dracut module "vipd": starts vipd in the initramfs once the network is up.
# Install:  cp -r docs/dracut/90vipd /usr/lib/dracut/modules.d/
#           dracut --force --add vipd
# The binary is taken from $VIPD_BINARY, else /usr/local/sbin/vipd, else
# dracut's PATH, and installed as /sbin/vipd. Settings come from the kernel
# command line:
#   rd.neednet=1 ip=192.0.2.11::192.0.2.1:255.255.255.0:cp1:eth0:none
#   vip.address=192.0.2.100 vip.interface=eth0 vip.etcd=http://192.0.2.1:2379 vip.log=kmsg
#
# In an initramfs that switches to a real root, vipd is stopped (SIGTERM: a
# graceful handover) just before the switch; run the real root's own vipd
# (docs/systemd/vipd.service) there.
#
# Tested: only checked (shell syntax, vipd.service with systemd-analyze
# verify, the vip.* keys); no dracut build or boot was run here.

vipd_binary() {
    if [ -n "${VIPD_BINARY:-}" ]; then
        echo "$VIPD_BINARY"
    elif [ -x /usr/local/sbin/vipd ]; then
        echo /usr/local/sbin/vipd
    else
        find_binary vipd
    fi
}

# Only when asked for (--add vipd or add_dracutmodules+=" vipd ").
check() {
    [ -x "$(vipd_binary)" ] || return 1
    return 255
}

depends() {
    echo network
    return 0
}

install() {
    inst_binary "$(vipd_binary)" /sbin/vipd
    if dracut_module_included "systemd"; then
        inst_simple "$moddir/vipd.service" "$systemdsystemunitdir/vipd.service"
        $SYSTEMCTL -q --root "$initdir" enable vipd.service
    else
        inst_multiple sleep
        inst_hook pre-mount 90 "$moddir/vipd-start.sh"
        inst_hook cleanup 10 "$moddir/vipd-stop.sh"
    fi
}

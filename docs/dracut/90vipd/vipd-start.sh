#!/bin/sh
# dracut pre-mount hook (initramfs without systemd): start vipd in the
# background and restart it if it crashes (a prompt restart resumes the
# lease). dracut's init sources this file, so it must not exit. vipd waits
# for its interface and for etcd by itself. Its output goes to the console
# (vip.log=auto then logs to /dev/kmsg), so that a bad configuration's one
# line is seen.
#
# Exit 0 (SIGTERM) ends the loop. So does exit 2, bad configuration, with
# one more line after vipd's own (which names the key): in an initramfs only
# a reboot changes the kernel command line. Any other exit (runtime trouble,
# a crash) starts vipd again after 1 s.

if [ -x /sbin/vipd ] && [ ! -e /run/vipd/loop.pid ]; then
    mkdir -p /run/vipd
    (
        while :; do
            /sbin/vipd &
            echo $! >/run/vipd/vipd.pid
            wait $!
            rc=$?
            [ "$rc" -eq 0 ] && break
            if [ "$rc" -eq 2 ]; then
                echo "vipd-start: vipd exited 2 (bad configuration); not started again" >&2
                break
            fi
            sleep 1
        done
        rm -f /run/vipd/vipd.pid
    ) </dev/null >/dev/console 2>&1 &
    echo $! >/run/vipd/loop.pid
fi

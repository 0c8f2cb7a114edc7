#!/bin/sh
# dracut pre-mount hook (initramfs without systemd): start vipd in the
# background and restart it if it crashes (a prompt restart resumes the
# lease). dracut's init sources this file, so it must not exit. vipd waits
# for its interface and for etcd by itself.

if [ -x /sbin/vipd ] && [ ! -e /run/vipd/loop.pid ]; then
    mkdir -p /run/vipd
    (
        while :; do
            /sbin/vipd &
            echo $! >/run/vipd/vipd.pid
            wait $!
            rc=$?
            # 0: stopped by SIGTERM; 2: bad input, which a restart cannot fix.
            [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ] && break
            sleep 1
        done
        rm -f /run/vipd/vipd.pid
    ) </dev/null >/dev/null 2>&1 &
    echo $! >/run/vipd/loop.pid
fi

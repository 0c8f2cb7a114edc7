#!/bin/sh
# dracut cleanup hook (initramfs without systemd), run just before
# switch_root: stop the restart loop, then vipd with SIGTERM, which removes
# the address and hands the VIP over at once. Sourced by dracut's init.

if [ -e /run/vipd/loop.pid ]; then
    kill "$(cat /run/vipd/loop.pid)" 2>/dev/null
    if [ -e /run/vipd/vipd.pid ]; then
        vipd_pid=$(cat /run/vipd/vipd.pid)
        kill -TERM "$vipd_pid" 2>/dev/null
        vipd_wait=0
        while kill -0 "$vipd_pid" 2>/dev/null && [ "$vipd_wait" -lt 50 ]; do
            sleep 0.1
            vipd_wait=$((vipd_wait + 1))
        done
        unset vipd_pid vipd_wait
    fi
    rm -f /run/vipd/loop.pid /run/vipd/vipd.pid
fi

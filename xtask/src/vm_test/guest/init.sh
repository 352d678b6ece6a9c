#!/bin/busybox sh
# PID 1 of the `cargo xtask vm-test` guest: mounts what perf-user needs,
# loads the block driver, runs smoke tests of every perf-user command this
# build has, prints one marker line per result on the console, powers off.
#
# Markers (parsed by xtask/src/vm_test/qemu.rs):
#   VMTEST: BOOT <details>         init is running
#   VMTEST: RUN <test>             a test starts
#   VMTEST: PASS|FAIL|SKIP <test> <details>
# Each test's output precedes its result, every line prefixed with "| ".
#   VMTEST: END pass=N fail=N skip=N
#
# The tests run with /sys/kernel/btf hidden (a tmpfs mounted over it), as on
# a kernel built without CONFIG_DEBUG_INFO_BTF (Raspberry Pi OS kernels):
# every collector must work without BTF. profile also runs once with BTF
# visible and once with the BTF given as a file (--btf).

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/tmp

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# perf-user reads tracepoint formats from tracefs (and falls back to
# debugfs/tracing on kernels that do not mount tracefs there).
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up

marker() { echo "VMTEST: $*"; }
uptime_s() { read -r up _ </proc/uptime; echo "$up"; }

for m in $(cat /modules/order 2>/dev/null); do
    insmod "/modules/$m.ko" || marker INFO "insmod $m failed"
done
# devtmpfs creates the node once the driver has probed the disk.
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done

if [ -e /sys/kernel/btf/vmlinux ]; then btf=present; else btf=absent; fi
marker BOOT "kernel $(uname -r) $(uname -m), $(grep -c ^processor /proc/cpuinfo) CPUs, BTF $btf, boot $(uptime_s) s"

pass=0 fail=0 skip=0
# run_test NAME FUNCTION: the function prints its output, says why it
# skipped in /tmp/skip, and returns non-zero on failure.
run_test() {
    name=$1
    marker RUN "$name"
    rm -f /tmp/skip
    t0=$(uptime_s)
    "$2" >/tmp/test.log 2>&1
    rc=$?
    secs=$(awk "BEGIN { printf \"%.1f\", $(uptime_s) - $t0 }")
    # Every test's output goes to the console log; xtask shows a failed one's.
    sed 's/^/| /' /tmp/test.log
    if [ -e /tmp/skip ]; then
        skip=$((skip + 1))
        marker SKIP "$name $(cat /tmp/skip)"
    elif [ $rc -eq 0 ]; then
        pass=$((pass + 1))
        marker PASS "$name ${secs} s"
    else
        fail=$((fail + 1))
        marker FAIL "$name after ${secs} s"
    fi
}

has_command() { /perf-user --help | grep -q "^  $1 "; }
skip_because() { echo "$*" >/tmp/skip; }
# wait_for FILE TEXT SECONDS: until TEXT shows in FILE (a tracer is ready).
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt $(($3 * 10)) ] && { echo "no \"$2\" after $3 s"; return 1; }
        sleep 0.1
    done
}
expect() {
    grep -q "$1" "$2" || { echo "expected \"$1\" in $2:"; cat "$2"; return 1; }
}

BTF_ARGS=

t_profile() {
    /workload burn 120 &
    w=$!
    # shellcheck disable=SC2086
    /perf-user $BTF_ARGS profile --pid $w --duration 3s --quiet >/tmp/profile.out
    rc=$?
    kill $w
    wait $w 2>/dev/null
    cat /tmp/profile.out
    [ $rc -eq 0 ] || { echo "perf-user profile exited with $rc"; return 1; }
    expect burn_cpu_hot /tmp/profile.out
}

# Off-CPU time of a process napping 10 ms at a time: sleeping time under
# nap_off_cpu. With BTF the user stack is walked with unwind tables; the
# classic tracepoint (BTF hidden) walks frame pointers, which lose the
# caller of the C library's nanosleep, so only the state is checked there.
t_offcpu() {
    /perf-user --help | grep -q -- 'profile' &&
        /perf-user profile --help | grep -q -- --off-cpu ||
        { skip_because "no profile --off-cpu in this build"; return 0; }
    /workload nap 120 &
    w=$!
    # shellcheck disable=SC2086
    /perf-user $BTF_ARGS profile --off-cpu --pid $w --duration 3s --format folded \
        --quiet >/tmp/offcpu.out
    rc=$?
    kill $w
    wait $w 2>/dev/null
    cut -c1-400 /tmp/offcpu.out | head -10
    [ $rc -eq 0 ] || { echo "perf-user profile --off-cpu exited with $rc"; return 1; }
    expect '\[sleeping\]' /tmp/offcpu.out || return 1
    if [ -e /sys/kernel/btf/vmlinux ]; then
        expect 'nap_off_cpu;' /tmp/offcpu.out
    fi
}

t_latency_block() {
    has_command latency || { skip_because "no latency command in this build"; return 0; }
    # shellcheck disable=SC2086
    /perf-user $BTF_ARGS latency --block --device vda --duration 10m --format json \
        -o /tmp/block.json 2>/tmp/block.err &
    p=$!
    wait_for /tmp/block.err Tracing 120 || { cat /tmp/block.err; kill $p; return 1; }
    /workload io /dev/vda 200 || { kill $p; return 1; }
    kill -INT $p
    wait $p
    rc=$?
    cat /tmp/block.err /tmp/block.json
    [ $rc -eq 0 ] || { echo "perf-user latency exited with $rc"; return 1; }
    expect '"device": "vda"' /tmp/block.json &&
        expect '"op": "write"' /tmp/block.json &&
        expect '"op": "read"' /tmp/block.json || return 1
    expect_tracepoints /tmp/block.json
}

t_latency_tcp() {
    has_command latency || { skip_because "no latency command in this build"; return 0; }
    /perf-user latency --help | grep -q -- --tcp ||
        { skip_because "latency has no --tcp in this build"; return 0; }
    # shellcheck disable=SC2086
    /perf-user $BTF_ARGS latency --tcp --duration 10m --format json \
        -o /tmp/tcp.json 2>/tmp/tcp.err &
    p=$!
    wait_for /tmp/tcp.err Tracing 120 || { cat /tmp/tcp.err; kill $p; return 1; }
    /workload tcp 7777 100 || { kill $p; return 1; }
    kill -INT $p
    wait $p
    rc=$?
    cat /tmp/tcp.err /tmp/tcp.json
    [ $rc -eq 0 ] || { echo "perf-user latency exited with $rc"; return 1; }
    grep -q '"tcp"' /tmp/tcp.json ||
        { skip_because "this build's latency report has no TCP section yet"; return 0; }
    expect 7777 /tmp/tcp.json || return 1
    expect_tracepoints /tmp/tcp.json
}

# Which programs made the report $1: $TRACEPOINTS, when set (builds before
# the choice name neither).
expect_tracepoints() {
    if [ -n "${TRACEPOINTS:-}" ] && grep -q '"tracepoints"' "$1"; then
        expect "\"tracepoints\": \"$TRACEPOINTS\"" "$1"
    fi
}

# with_tracepoints KIND TEST: runs TEST, whose report must name KIND (btf:
# skipped on a kernel without BTF).
with_tracepoints() {
    if [ "$1" = btf ] && [ ! -e /sys/kernel/btf/vmlinux ]; then
        skip_because "this kernel has no BTF"
        return 0
    fi
    TRACEPOINTS=$1
    "$2"
    rc=$?
    TRACEPOINTS=
    return $rc
}
t_latency_block_btf() { with_tracepoints btf t_latency_block; }
t_latency_tcp_btf() { with_tracepoints btf t_latency_tcp; }
t_latency_block_classic() { with_tracepoints classic t_latency_block; }
t_latency_tcp_classic() { with_tracepoints classic t_latency_tcp; }

t_leaks() {
    has_command leaks || { skip_because "no leaks command in this build"; return 0; }
    # shellcheck disable=SC2086
    /perf-user $BTF_ARGS leaks --quiet -- /workload leak 3 >/tmp/leaks.out
    rc=$?
    cat /tmp/leaks.out
    [ $rc -eq 0 ] || { echo "perf-user leaks exited with $rc"; return 1; }
    expect leak_memory /tmp/leaks.out
}

# The exact stack of /chain (built without frame pointers): _start ... main,
# f0 .. f59, 201 frames of recurse, burn, walked with unwind tables.
t_unwind_chain() {
    /chain &
    w=$!
    # shellcheck disable=SC2086
    /perf-user $BTF_ARGS profile --pid $w --duration 3s --format folded --quiet >/tmp/chain.out
    rc=$?
    kill $w
    wait $w 2>/dev/null
    [ $rc -eq 0 ] || { echo "perf-user profile exited with $rc"; return 1; }
    want="main"
    i=0
    while [ $i -lt 60 ]; do want="$want;f$i"; i=$((i + 1)); done
    i=0
    while [ $i -lt 201 ]; do want="$want;recurse"; i=$((i + 1)); done
    want="$want;burn "
    grep -qF "$want" /tmp/chain.out && return 0
    echo "no folded stack holds main;f0;..;f59;recurse x201;burn exactly; the stacks (cut):"
    cut -c1-300 /tmp/chain.out | head -20
    return 1
}

# 1. As the kernel comes: BTF visible (only block and TCP latency read it,
# for their BTF tracepoints).
run_test profile t_profile
run_test unwind-chain t_unwind_chain
run_test offcpu t_offcpu
run_test latency-block t_latency_block_btf
run_test latency-tcp t_latency_tcp_btf

# 2. BTF hidden, as on a Raspberry Pi OS kernel.
if [ -e /sys/kernel/btf/vmlinux ]; then
    cp /sys/kernel/btf/vmlinux /tmp/vmlinux.btf
    mount -t tmpfs nobtf /sys/kernel/btf
fi
if [ -e /sys/kernel/btf/vmlinux ]; then
    marker FAIL "hide-btf /sys/kernel/btf/vmlinux still exists"
    fail=$((fail + 1))
fi
run_test profile-no-btf t_profile
run_test unwind-chain-no-btf t_unwind_chain
run_test offcpu-no-btf t_offcpu
run_test latency-block-no-btf t_latency_block_classic
run_test latency-tcp-no-btf t_latency_tcp_classic
run_test leaks-no-btf t_leaks

# 3. BTF hidden, given as a file instead.
t_profile_btf_file() {
    [ -e /tmp/vmlinux.btf ] || { skip_because "the kernel has no BTF to copy"; return 0; }
    /perf-user --help | grep -q -- --btf || { skip_because "no --btf in this build"; return 0; }
    BTF_ARGS="--btf /tmp/vmlinux.btf"
    t_profile
    rc=$?
    BTF_ARGS=
    return $rc
}
run_test profile-btf-file t_profile_btf_file

marker END "pass=$pass fail=$fail skip=$skip"
sync
poweroff -f
# Not reached; if it were, init exiting panics the kernel, and qemu
# (-no-reboot, panic=-1) exits.

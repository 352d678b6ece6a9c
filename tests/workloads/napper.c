/*
 * Off-CPU workload for the daemon's tests (tests/daemon.rs, tests/fleet.rs).
 *
 * main -> nap_loop, which for argv[1] seconds (default 60) burns argv[2]
 * milliseconds of CPU (default 0) in burn_between_naps, then sleeps 100 ms
 * in nap_here. nap_here makes the nanosleep system call itself, so that a
 * frame-pointer walk of the sleeping thread starts in it: through libc's
 * wrapper (built without frame pointers on most distributions) the walk
 * would start in libc and skip nap_here, the wrapper's caller.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) void nap_here(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"((long)SYS_nanosleep), "D"(&ts), "S"(0L)
                     : "rcx", "r11", "memory");
    (void)ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = SYS_nanosleep;
    register long x0 __asm__("x0") = (long)&ts;
    register long x1 __asm__("x1") = 0;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1) : "memory");
#else
    nanosleep(&ts, NULL);
#endif
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Spins for `ms` milliseconds of wall-clock time. */
__attribute__((noinline)) unsigned long burn_between_naps(long ms)
{
    volatile unsigned long acc = 1;
    double end = now() + ms / 1e3;
    while (now() < end) {
        for (int i = 0; i < 1000; i++)
            acc = acc * 6364136223846793005UL + 1442695040888963407UL;
    }
    return acc;
}

__attribute__((noinline)) void nap_loop(double seconds, long burn_ms)
{
    double end = now() + seconds;
    while (now() < end) {
        if (burn_ms > 0)
            burn_between_naps(burn_ms);
        nap_here(100);
    }
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 60;
    long burn_ms = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
    nap_loop(seconds, burn_ms);
    return 0;
}

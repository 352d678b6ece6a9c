/*
 * Off-CPU workloads for the `offcpu` integration tests. Built without frame
 * pointers (-fomit-frame-pointer), so that only the unwind tables find the
 * callers of a blocked thread.
 *
 *   offcpu nap N MS          N sleeps of MS ms in nap_in_known_function
 *   offcpu read DEV N BS     N O_DIRECT preads of BS bytes of DEV in
 *                            read_direct_blocks
 *   offcpu mutex SECS HOLD   a thread "holder" holds a mutex HOLD ms at a
 *                            time for SECS s; a thread "waiter" takes it
 *                            in wait_for_lock meanwhile
 *   offcpu switch            two threads ping-pong a byte through pipes
 *                            forever (a busy context switcher)
 *   offcpu halfburn T BURN SLEEP
 *                            T threads "burnerN", each burning BURN ms of
 *                            its own CPU time in burn_cpu then sleeping
 *                            SLEEP ms in sleep_a_while, forever
 *
 * Every mode but switch and halfburn first waits for a byte on standard
 * input, so that a profiler attaches before anything happens, and prints
 * what it measured itself on standard output before it exits:
 * `measured_ns=T` (time inside nanosleep, pread or pthread_mutex_lock of
 * the waiter) and `ops=N`; read adds `run_delay_ns=T`, how long the reader
 * waited for a CPU meanwhile (from /proc/thread-self/schedstat).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* Blocks in read(2) until the test writes a byte. */
__attribute__((noinline)) static void wait_for_go(void)
{
    char c;
    if (read(0, &c, 1) != 1) {
        fprintf(stderr, "no go byte on stdin\n");
        exit(2);
    }
}

static void report(uint64_t ns, long ops)
{
    printf("measured_ns=%llu\nops=%ld\n", (unsigned long long)ns, ops);
    fflush(stdout);
}

/* ------------------------------------------------------------------ nap */

/* One nanosleep of `ms`; returns the time it took. The clock read after
 * the call keeps it from being a tail call. */
__attribute__((noinline)) uint64_t nap_in_known_function(long ms)
{
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    sleep_ms(ms);
    return now_ns(CLOCK_MONOTONIC) - t0;
}

__attribute__((noinline)) uint64_t run_naps(int n, long ms)
{
    uint64_t total = 0;
    for (int i = 0; i < n; i++)
        total += nap_in_known_function(ms);
    return total;
}

/* ----------------------------------------------------------------- read */

/* How long this thread has waited for a CPU, from when it was woken or
 * preempted to when it ran (the second field of its schedstat). */
static uint64_t run_delay_ns(void)
{
    unsigned long long run, delay = 0;
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    if (!f || fscanf(f, "%llu %llu", &run, &delay) != 2) {
        fprintf(stderr, "cannot read /proc/thread-self/schedstat\n");
        exit(2);
    }
    fclose(f);
    return delay;
}

__attribute__((noinline)) uint64_t read_direct_blocks(int fd, int n, size_t bs, void *buf)
{
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        uint64_t t0 = now_ns(CLOCK_MONOTONIC);
        ssize_t got = pread(fd, buf, bs, (off_t)i * (off_t)bs);
        total += now_ns(CLOCK_MONOTONIC) - t0;
        if (got != (ssize_t)bs) {
            fprintf(stderr, "pread %d: %zd (%s)\n", i, got, strerror(errno));
            exit(2);
        }
    }
    return total;
}

static int run_reads(const char *dev, int n, size_t bs)
{
    int fd = open(dev, O_RDONLY | O_DIRECT);
    if (fd < 0) {
        perror(dev);
        return 2;
    }
    void *buf;
    if (posix_memalign(&buf, 4096, bs) != 0)
        return 2;
    wait_for_go();
    uint64_t delay0 = run_delay_ns();
    report(read_direct_blocks(fd, n, bs, buf), n);
    printf("run_delay_ns=%llu\n", (unsigned long long)(run_delay_ns() - delay0));
    return 0;
}

/* ---------------------------------------------------------------- mutex */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int stop;
static long hold_ms;
static uint64_t waited_ns;
static long acquired;

__attribute__((noinline)) static void hold_lock(void)
{
    pthread_mutex_lock(&lock);
    sleep_ms(hold_ms);
    pthread_mutex_unlock(&lock);
}

static void *holder(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "holder");
    while (!stop) {
        hold_lock();
        sleep_ms(5);
    }
    return NULL;
}

__attribute__((noinline)) void wait_for_lock(void)
{
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    pthread_mutex_lock(&lock);
    waited_ns += now_ns(CLOCK_MONOTONIC) - t0;
    acquired++;
    pthread_mutex_unlock(&lock);
}

static void *waiter(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "waiter");
    /* Let the holder take the lock first. */
    sleep_ms(10);
    while (!stop) {
        wait_for_lock();
        sleep_ms(1);
    }
    return NULL;
}

static int run_mutex(int secs, long hold)
{
    hold_ms = hold;
    wait_for_go();
    pthread_t h, w;
    pthread_create(&h, NULL, holder, NULL);
    pthread_create(&w, NULL, waiter, NULL);
    sleep_ms(secs * 1000L);
    stop = 1;
    pthread_join(h, NULL);
    pthread_join(w, NULL);
    report(waited_ns, acquired);
    return 0;
}

/* --------------------------------------------------------------- switch */

static int ping[2], pong[2];

static void *ponger(void *arg)
{
    (void)arg;
    char c;
    while (read(ping[0], &c, 1) == 1)
        if (write(pong[1], &c, 1) != 1)
            break;
    return NULL;
}

static int run_switch(void)
{
    if (pipe(ping) || pipe(pong))
        return 2;
    pthread_t t;
    pthread_create(&t, NULL, ponger, NULL);
    char c = 'x';
    for (;;)
        if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1)
            return 2;
}

/* ------------------------------------------------------------- halfburn */

static long burn_ms, rest_ms;

/* Burns `ms` of this thread's CPU time (not wall time: preempted time
 * does not count). */
__attribute__((noinline)) void burn_cpu(long ms)
{
    uint64_t end = now_ns(CLOCK_THREAD_CPUTIME_ID) + (uint64_t)ms * 1000000u;
    volatile uint64_t x = 0;
    while (now_ns(CLOCK_THREAD_CPUTIME_ID) < end)
        for (int i = 0; i < 1000; i++)
            x += (uint64_t)i * 2654435761u;
}

__attribute__((noinline)) void sleep_a_while(long ms)
{
    sleep_ms(ms);
    __asm__ volatile("" ::: "memory");
}

static void *burner(void *arg)
{
    char name[16];
    snprintf(name, sizeof name, "burner%ld", (long)(intptr_t)arg);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        burn_cpu(burn_ms);
        sleep_a_while(rest_ms);
    }
    return NULL;
}

static int run_halfburn(int threads, long burn, long rest)
{
    burn_ms = burn;
    rest_ms = rest;
    for (long i = 0; i < threads; i++) {
        pthread_t t;
        pthread_create(&t, NULL, burner, (void *)(intptr_t)i);
    }
    for (;;)
        pause();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "nap") == 0) {
        int n = atoi(argv[2]);
        long ms = atol(argv[3]);
        wait_for_go();
        report(run_naps(n, ms), n);
        return 0;
    }
    if (argc >= 5 && strcmp(argv[1], "read") == 0)
        return run_reads(argv[2], atoi(argv[3]), (size_t)atol(argv[4]));
    if (argc >= 4 && strcmp(argv[1], "mutex") == 0)
        return run_mutex(atoi(argv[2]), atol(argv[3]));
    if (argc >= 2 && strcmp(argv[1], "switch") == 0)
        return run_switch();
    if (argc >= 5 && strcmp(argv[1], "halfburn") == 0)
        return run_halfburn(atoi(argv[2]), atol(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: offcpu nap N MS | read DEV N BS | mutex SECS HOLD_MS | switch | "
                    "halfburn THREADS BURN_MS SLEEP_MS\n");
    return 2;
}

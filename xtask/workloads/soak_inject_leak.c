/*
 * `cargo xtask soak --inject-leak KIB_PER_HOUR`: preloaded into the daemon
 * (LD_PRELOAD) to make it leak on purpose, so that the soak's `rss_flat`
 * check is seen to fail on a real leak. A thread allocates 1 KiB blocks at
 * SOAK_LEAK_KIB_PER_HOUR, writes every byte (so the pages are resident) and
 * never frees them: the daemon's anonymous RSS grows at that rate.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double rate_kib_per_second;

static void *leak(void *arg)
{
    (void)arg;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    unsigned long leaked = 0;
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (double)(now.tv_sec - start.tv_sec) +
                         (double)(now.tv_nsec - start.tv_nsec) / 1e9;
        while ((double)leaked < elapsed * rate_kib_per_second) {
            char *block = malloc(1024);
            if (block != NULL) {
                memset(block, 0xa5, 1024);
            }
            leaked++;
        }
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

__attribute__((constructor)) static void start(void)
{
    const char *rate = getenv("SOAK_LEAK_KIB_PER_HOUR");
    if (rate == NULL) {
        return;
    }
    rate_kib_per_second = strtod(rate, NULL) / 3600.0;
    if (!(rate_kib_per_second > 0)) {
        return;
    }
    pthread_t thread;
    if (pthread_create(&thread, NULL, leak, NULL) == 0) {
        pthread_detach(thread);
    }
}

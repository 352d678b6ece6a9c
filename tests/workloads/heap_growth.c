/*
 * Heap workload for the alerts tests.
 *
 *   heap_growth grow|steady [BLOCK_KIB] [PERIOD_MS]
 *
 * grow:   every PERIOD_MS allocates one BLOCK_KIB block from grow_one() and
 *         keeps it: the heap grows steadily (a leak), up to 1 GiB, then the
 *         program frees everything and starts again.
 * steady: keeps a pool of 64 blocks and every PERIOD_MS frees one and
 *         allocates a replacement from churn_one(): as many allocations, a
 *         heap of constant size.
 *
 * Defaults: 64 KiB every 10 ms. Built with frame pointers, so stacks are
 * main -> grow_one|churn_one -> malloc. Runs until killed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL 64
#define MAX_KEPT 16384

static void *kept[MAX_KEPT];

__attribute__((noinline)) static void *grow_one(size_t n)
{
    void *p = malloc(n);
    if (p)
        memset(p, 0xab, n);
    return p;
}

__attribute__((noinline)) static void *churn_one(size_t n)
{
    void *p = malloc(n);
    if (p)
        memset(p, 0xcd, n);
    return p;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "grow") && strcmp(argv[1], "steady"))) {
        fprintf(stderr, "usage: heap_growth grow|steady [BLOCK_KIB] [PERIOD_MS]\n");
        return 2;
    }
    size_t block = (argc > 2 ? strtoul(argv[2], NULL, 10) : 64) * 1024;
    long period = argc > 3 ? strtol(argv[3], NULL, 10) : 10;
    size_t limit = (size_t)1 << 30;
    if (!strcmp(argv[1], "grow")) {
        size_t n = 0;
        for (;;) {
            if (n == MAX_KEPT || (n + 1) * block > limit) {
                for (size_t i = 0; i < n; i++)
                    free(kept[i]);
                n = 0;
            }
            kept[n] = grow_one(block);
            if (!kept[n])
                return 1;
            n++;
            pause_ms(period);
        }
    }
    for (int i = 0; i < POOL; i++)
        kept[i] = churn_one(block);
    for (unsigned long i = 0;; i++) {
        free(kept[i % POOL]);
        kept[i % POOL] = churn_one(block);
        if (!kept[i % POOL])
            return 1;
        pause_ms(period);
    }
}

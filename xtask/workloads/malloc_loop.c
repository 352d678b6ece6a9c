/*
 * Allocation-heavy benchmark workload: `malloc_loop ITERATIONS`.
 *
 * Waits for a line on stdin (so that a tracer can attach to its PID first),
 * then runs ITERATIONS rounds of malloc, a write to the block, and free,
 * with sizes cycling from 16 to 4096 bytes, and prints the wall time of the
 * loop on stdout: `elapsed_ns=N`. Every 16th block is kept until the end, so
 * that a leak tracer also sees outstanding memory.
 *
 * Built with -O2 -fno-omit-frame-pointer by `cargo xtask bench`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

__attribute__((noinline)) void *allocate(size_t size)
{
    void *p = malloc(size);
    if (p)
        memset(p, 0xa5, size < 64 ? size : 64);
    return p;
}

__attribute__((noinline)) uint64_t churn(uint64_t iterations, void **kept, uint64_t nkept)
{
    uint64_t sum = 0, k = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        size_t size = 16u << (i % 9); /* 16 .. 4096 */
        unsigned char *p = allocate(size);
        if (!p)
            return 0;
        sum += p[size / 2];
        if (i % 16 == 0 && k < nkept)
            kept[k++] = p;
        else
            free(p);
    }
    return sum;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s ITERATIONS (then a line on stdin to start)\n", argv[0]);
        return 2;
    }
    uint64_t iterations = strtoull(argv[1], NULL, 10);
    uint64_t nkept = iterations / 16 + 1;
    void **kept = calloc(nkept, sizeof(*kept));
    if (!kept || iterations == 0) {
        fprintf(stderr, "bad ITERATIONS or out of memory\n");
        return 2;
    }
    char line[16];
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof(line), stdin))
        return 2;
    uint64_t start = now_ns();
    volatile uint64_t sink = churn(iterations, kept, nkept);
    uint64_t elapsed = now_ns() - start;
    (void)sink;
    for (uint64_t k = 0; k < nkept; k++)
        free(kept[k]);
    free(kept);
    printf("elapsed_ns=%llu\n", (unsigned long long)elapsed);
    return 0;
}

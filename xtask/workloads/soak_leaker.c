/*
 * The leak collector's target in `cargo xtask soak`: `soak_leaker KEEP`.
 *
 * Prints `ready`, then obeys lines on stdin:
 *   go     start allocating: every 2 ms one block that is kept (in a ring of
 *          KEEP slots, so it "leaks" until the ring is full and is steady
 *          after: each new kept block frees the one it replaces) and one
 *          block freed at once;
 *   pause  stop, and print `allocs=N frees=M`: the calls made since `go`,
 *          which the daemon must have seen or counted as lost.
 * Waiting for `go` lets the soak start the count only once the daemon traces
 * this process, so that every call made is one the daemon could see.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) static void *keep_block(size_t size)
{
    void *p = malloc(size);
    if (p)
        memset(p, 0x5a, size < 32 ? size : 32);
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 2 || atoi(argv[1]) <= 0) {
        fprintf(stderr, "usage: %s KEEP\n", argv[0]);
        return 2;
    }
    size_t keep = (size_t)atoi(argv[1]);
    void **ring = calloc(keep, sizeof(*ring));
    if (!ring)
        return 2;
    unsigned long long allocs = 0, frees = 0, i = 0;
    int running = 0;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        if (poll(&pfd, 1, 2) > 0) {
            char line[32];
            ssize_t n = read(0, line, sizeof(line) - 1);
            if (n <= 0)
                return 0; /* stdin closed: the soak is gone */
            line[n] = 0;
            if (strncmp(line, "go", 2) == 0) {
                running = 1;
            } else if (strncmp(line, "pause", 5) == 0) {
                running = 0;
                printf("allocs=%llu frees=%llu\n", allocs, frees);
                fflush(stdout);
            }
        }
        if (!running)
            continue;
        size_t slot = i++ % keep;
        if (ring[slot]) {
            free(ring[slot]);
            frees++;
        }
        ring[slot] = keep_block(64 + 64 * (i % 16));
        allocs++;
        void *t = malloc(256);
        allocs++;
        if (t) {
            free(t);
            frees++;
        }
    }
}

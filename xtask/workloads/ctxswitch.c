/*
 * Workload of the benchmark's off-CPU case: two processes pass a byte back
 * and forth over a pair of pipes ROUNDS times, so that each round trip is
 * two context switches on each side (a thread blocks in read() and is woken
 * by the other's write()). The host's sched_switch rate is what a tracer of
 * context switches pays for.
 *
 *   ctxswitch ROUNDS
 *
 * Prints `elapsed_ns=N` on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? strtol(argv[1], NULL, 10) : 100000;
    int ping[2], pong[2];
    char b = 'x';
    pid_t child;
    unsigned long long start;
    int status = 0;

    if (rounds <= 0 || pipe(ping) != 0 || pipe(pong) != 0) {
        fprintf(stderr, "usage: ctxswitch ROUNDS\n");
        return 2;
    }
    child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        for (long i = 0; i < rounds; i++) {
            if (read(ping[0], &b, 1) != 1 || write(pong[1], &b, 1) != 1)
                _exit(1);
        }
        _exit(0);
    }
    start = now_ns();
    for (long i = 0; i < rounds; i++) {
        if (write(ping[1], &b, 1) != 1 || read(pong[0], &b, 1) != 1) {
            perror("round trip");
            return 1;
        }
    }
    printf("elapsed_ns=%llu\n", now_ns() - start);
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

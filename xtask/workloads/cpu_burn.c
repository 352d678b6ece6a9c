/*
 * CPU-bound benchmark workload: `cpu_burn ITERATIONS PROCESSES`.
 *
 * Forks PROCESSES workers; each runs ITERATIONS rounds of a small
 * integer-mixing loop, spread over a three-deep call chain so that profilers
 * have a real stack to walk. The parent waits for all of them and prints the
 * wall time of the work on stdout: `elapsed_ns=N`.
 *
 * Built with -O2 -fno-omit-frame-pointer by `cargo xtask bench`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

__attribute__((noinline)) uint64_t mix(uint64_t acc, uint64_t rounds)
{
    for (uint64_t i = 0; i < rounds; i++) {
        acc = acc * 6364136223846793005ULL + 1442695040888963407ULL;
        acc ^= acc >> 29;
    }
    return acc;
}

__attribute__((noinline)) uint64_t inner(uint64_t acc, uint64_t iterations)
{
    /* Chunks of 1000 rounds: a call every ~microsecond keeps stacks varied. */
    for (uint64_t done = 0; done < iterations; done += 1000)
        acc = mix(acc, iterations - done < 1000 ? iterations - done : 1000);
    return acc;
}

__attribute__((noinline)) uint64_t outer(uint64_t seed, uint64_t iterations)
{
    return inner(seed, iterations);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ITERATIONS PROCESSES\n", argv[0]);
        return 2;
    }
    uint64_t iterations = strtoull(argv[1], NULL, 10);
    long processes = strtol(argv[2], NULL, 10);
    if (iterations == 0 || processes < 1) {
        fprintf(stderr, "ITERATIONS and PROCESSES must be positive\n");
        return 2;
    }
    uint64_t start = now_ns();
    for (long p = 0; p < processes; p++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            volatile uint64_t sink = outer((uint64_t)p + 1, iterations);
            (void)sink;
            _exit(0);
        }
    }
    int failed = 0;
    for (long p = 0; p < processes; p++) {
        int status;
        if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    printf("elapsed_ns=%llu\n", (unsigned long long)(now_ns() - start));
    return failed;
}

/*
 * Burns argv[1] milliseconds of CPU time (default 35) in short_burn_hot,
 * then exits: one of the many short processes of tests/symbols.rs.
 */
#include <stdlib.h>
#include <time.h>

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

__attribute__((noinline)) unsigned long short_burn_hot(double ms)
{
    volatile unsigned long acc = 3;
    double end = cpu_ms() + ms;
    while (cpu_ms() < end) {
        for (int i = 0; i < 20000; i++) {
            acc = acc * 6364136223846793005UL + 1442695040888963407UL;
            acc ^= acc >> 29;
        }
    }
    return acc;
}

int main(int argc, char **argv)
{
    double ms = argc > 1 ? atof(argv[1]) : 35.0;
    return short_burn_hot(ms) == 42 ? 1 : 0;
}

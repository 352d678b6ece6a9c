/*
 * Burns the CPU in one internal function, stripped_inner_burn, for the
 * seconds given (default 4), through a second internal function. Built
 * -O2 -g, then stripped (tests/symbols.rs): its names are then only in the
 * separate debug file, and its samples fall on many addresses of one
 * unnamed function.
 */
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Several instructions per round, so samples land on many addresses. */
__attribute__((noinline)) static unsigned long stripped_inner_burn(unsigned long n)
{
    volatile unsigned long acc = n | 1;
    for (unsigned long i = 0; i < 2000000; i++) {
        acc = acc * 2862933555777941757UL + 3037000493UL;
        acc ^= acc >> 29;
        acc += i * 7;
        acc ^= acc << 11;
    }
    return acc;
}

__attribute__((noinline)) static unsigned long stripped_outer_loop(double secs)
{
    unsigned long acc = 0;
    double end = now() + secs;
    while (now() < end)
        acc += stripped_inner_burn(acc);
    return acc;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 4.0;
    return stripped_outer_loop(secs) == 42 ? 1 : 0;
}

/*
 * CPU-bound workload for the profiler's integration tests.
 *
 * main -> outer_caller -> middle_caller -> burn_cpu_hot, which spins for
 * argv[1] seconds (default 10). The loop makes no calls: the only way out of
 * it is the SIGALRM handler setting `stop`, so practically every sample of
 * this process has burn_cpu_hot as its leaf.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_alarm(int sig)
{
    (void)sig;
    stop = 1;
}

__attribute__((noinline)) unsigned long burn_cpu_hot(void)
{
    volatile unsigned long acc = 1;
    while (!stop) {
        acc = acc * 6364136223846793005UL + 1442695040888963407UL;
        acc ^= acc >> 29;
    }
    return acc;
}

__attribute__((noinline)) unsigned long middle_caller(void)
{
    return burn_cpu_hot() + 1;
}

__attribute__((noinline)) unsigned long outer_caller(void)
{
    return middle_caller() + 1;
}

int main(int argc, char **argv)
{
    unsigned int seconds = argc > 1 ? (unsigned int)strtoul(argv[1], NULL, 10) : 10;
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds > 0 ? seconds : 1);

    return outer_caller() == 0 ? 1 : 0;
}

/*
 * Burns the CPU in short_lived_burn for 1 s of CPU time, then exits, so that the
 * process is gone by the time the profiler symbolizes its samples.
 */
#include <signal.h>
#include <string.h>
#include <sys/time.h>

static volatile sig_atomic_t stop;

static void on_alarm(int sig)
{
    (void)sig;
    stop = 1;
}

__attribute__((noinline)) unsigned long short_lived_burn(void)
{
    volatile unsigned long acc = 7;
    while (!stop) {
        acc = acc * 2862933555777941757UL + 3037000493UL;
        acc ^= acc >> 31;
    }
    return acc;
}

int main(void)
{
    struct sigaction sa;
    struct itimerval timer;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGPROF, &sa, NULL);

    memset(&timer, 0, sizeof(timer));
    /* CPU time, not wall time: on a loaded machine it still burns enough
     * to be sampled ~100 times at 99 Hz. */
    timer.it_value.tv_sec = 1;
    timer.it_value.tv_usec = 0;
    setitimer(ITIMER_PROF, &timer, NULL);

    return short_lived_burn() == 0 ? 1 : 0;
}

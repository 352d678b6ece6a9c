/*
 * Spends its time in the kernel for argv[1] seconds (default 10): reads
 * 64 KiB from /dev/zero (the kernel clears the buffer), writes it to
 * /dev/null and calls getppid, in a loop.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

static volatile sig_atomic_t stop;
static char buffer[CHUNK];

static void on_alarm(int sig)
{
    (void)sig;
    stop = 1;
}

__attribute__((noinline)) unsigned long syscall_loop(int zero, int null)
{
    unsigned long calls = 0;
    while (!stop) {
        if (read(zero, buffer, CHUNK) < 0)
            return 0;
        if (write(null, buffer, CHUNK) < 0)
            return 0;
        calls += (unsigned long)getppid() & 1;
        calls++;
    }
    return calls;
}

int main(int argc, char **argv)
{
    unsigned int seconds = argc > 1 ? (unsigned int)strtoul(argv[1], NULL, 10) : 10;
    struct sigaction sa;
    int zero = open("/dev/zero", O_RDONLY);
    int null = open("/dev/null", O_WRONLY);

    if (zero < 0 || null < 0)
        return 2;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds > 0 ? seconds : 1);

    return syscall_loop(zero, null) == 0 ? 1 : 0;
}

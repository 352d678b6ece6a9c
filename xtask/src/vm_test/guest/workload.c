/*
 * Workloads for the smoke tests that `cargo xtask vm-test` runs inside the
 * guest. Built statically (the initramfs has no C library) with frame
 * pointers and symbols, so that the profiler can walk and name its stacks
 * and the leak tracer finds malloc in the executable itself.
 *
 *   workload burn SECONDS         spin in burn_cpu_hot()
 *   workload leak SECONDS         every 10 ms leak 1000 bytes from leak_memory()
 *                                 and malloc+free a block in churn_memory()
 *   workload io DEVICE COUNT      COUNT 4 KiB O_DIRECT writes, then COUNT reads
 *   workload tcp PORT COUNT       COUNT connect/send/receive/close round trips
 *                                 to a server of its own on 127.0.0.1:PORT
 *
 * Each prints one line "workload: ... done" on success and exits with 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_alarm(int sig)
{
    (void)sig;
    stop = 1;
}

static void stop_after(unsigned int seconds)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds > 0 ? seconds : 1);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* No calls inside the loop: nearly every sample has this function as its leaf. */
__attribute__((noinline)) unsigned long burn_cpu_hot(void)
{
    volatile unsigned long acc = 1;

    while (!stop) {
        acc = acc * 6364136223846793005UL + 1442695040888963407UL;
        acc ^= acc >> 29;
    }
    return acc;
}

/* Sleeps 10 ms at a time: off-CPU time in the sleeping state under this
 * function (not a tail call, so that it stays on the stack). */
__attribute__((noinline)) unsigned long nap_off_cpu(unsigned int seconds)
{
    unsigned long naps = 0;

    stop_after(seconds);
    while (!stop) {
        sleep_ms(10);
        naps++;
    }
    return naps;
}

static int burn(unsigned int seconds)
{
    stop_after(seconds);
    printf("workload: burn %lu done\n", burn_cpu_hot() & 1);
    return 0;
}

/* Never freed: the leak tracer must report this stack. */
__attribute__((noinline)) void *leak_memory(void)
{
    char *p = malloc(1000);

    if (p)
        memset(p, 0x5a, 1000);
    return p;
}

/* Freed at once: must not show up as outstanding. */
__attribute__((noinline)) void churn_memory(void)
{
    char *p = malloc(5000);

    if (p)
        memset(p, 0xa5, 64);
    free(p);
}

static int leak(unsigned int seconds)
{
    unsigned long leaked = 0;

    stop_after(seconds);
    while (!stop) {
        if (leak_memory())
            leaked++;
        churn_memory();
        sleep_ms(10);
    }
    printf("workload: leak %lu blocks done\n", leaked);
    return 0;
}

static int io(const char *device, long count)
{
    void *buf;
    int fd = open(device, O_RDWR | O_DIRECT);

    if (fd < 0) {
        perror(device);
        return 1;
    }
    if (posix_memalign(&buf, 4096, 4096) != 0) {
        perror("posix_memalign");
        return 1;
    }
    memset(buf, 0x42, 4096);
    for (long i = 0; i < count; i++) {
        if (pwrite(fd, buf, 4096, (off_t)(i % 1024) * 4096) != 4096) {
            perror("pwrite");
            return 1;
        }
    }
    for (long i = 0; i < count; i++) {
        if (pread(fd, buf, 4096, (off_t)(i % 1024) * 4096) != 4096) {
            perror("pread");
            return 1;
        }
    }
    fsync(fd);
    close(fd);
    free(buf);
    printf("workload: io %ld writes %ld reads done\n", count, count);
    return 0;
}

static int serve(int listener, long count)
{
    char buf[256];

    for (long i = 0; i < count; i++) {
        int c = accept(listener, NULL, NULL);
        ssize_t n;

        if (c < 0) {
            perror("accept");
            return 1;
        }
        n = read(c, buf, sizeof(buf));
        if (n > 0 && write(c, buf, (size_t)n) != n)
            perror("write");
        close(c);
    }
    return 0;
}

static int tcp(int port, long count)
{
    struct sockaddr_in addr;
    int one = 1, status = 0;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    pid_t server;

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(listener, 64) != 0) {
        perror("listen");
        return 1;
    }
    server = fork();
    if (server == 0)
        _exit(serve(listener, count));
    close(listener);
    for (long i = 0; i < count; i++) {
        char msg[100], reply[100];
        int s = socket(AF_INET, SOCK_STREAM, 0);

        memset(msg, 'x', sizeof(msg));
        if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
            perror("connect");
            return 1;
        }
        if (write(s, msg, sizeof(msg)) != (ssize_t)sizeof(msg) ||
            read(s, reply, sizeof(reply)) <= 0) {
            perror("round trip");
            return 1;
        }
        close(s);
    }
    waitpid(server, &status, 0);
    printf("workload: tcp %ld round trips done\n", count);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "burn") == 0)
        return burn((unsigned int)strtoul(argv[2], NULL, 10));
    if (argc == 3 && strcmp(argv[1], "nap") == 0)
        return printf("workload: %lu naps done\n", nap_off_cpu((unsigned int)strtoul(argv[2], NULL, 10))) < 0;
    if (argc == 3 && strcmp(argv[1], "leak") == 0)
        return leak((unsigned int)strtoul(argv[2], NULL, 10));
    if (argc == 4 && strcmp(argv[1], "io") == 0)
        return io(argv[2], strtol(argv[3], NULL, 10));
    if (argc == 4 && strcmp(argv[1], "tcp") == 0)
        return tcp(atoi(argv[2]), strtol(argv[3], NULL, 10));
    fprintf(stderr, "usage: workload burn SECONDS | nap SECONDS | leak SECONDS | io DEVICE COUNT | tcp PORT COUNT\n");
    return 2;
}

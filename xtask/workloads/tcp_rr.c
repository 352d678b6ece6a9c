/*
 * Loopback TCP request/response benchmark workload:
 * `tcp_rr CONNECTIONS ROUNDTRIPS`.
 *
 * Listens on 127.0.0.1 (a free port), forks a server that answers each
 * 64-byte request with a 64-byte response, then opens CONNECTIONS
 * connections one after the other and makes ROUNDTRIPS request/response
 * exchanges on each (TCP_NODELAY). Prints the wall time of the whole exchange
 * on stdout: `elapsed_ns=N`. Connection set-up is part of the work, so
 * connect-latency tracing is exercised as well as RTT tracing.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int full(ssize_t (*op)(int, void *, size_t, int), int fd, char *buf)
{
    size_t done = 0;
    while (done < MSG) {
        ssize_t n = op(fd, buf + done, MSG - done, 0);
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

static ssize_t send_op(int fd, void *buf, size_t len, int flags)
{
    return send(fd, buf, len, flags);
}

static void serve(int listener)
{
    char buf[MSG];
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0)
            _exit(1);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        while (full(recv, fd, buf) == 0 && full(send_op, fd, buf) == 0)
            ;
        close(fd);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s CONNECTIONS ROUNDTRIPS\n", argv[0]);
        return 2;
    }
    long connections = strtol(argv[1], NULL, 10);
    long roundtrips = strtol(argv[2], NULL, 10);
    if (connections < 1 || roundtrips < 1) {
        fprintf(stderr, "CONNECTIONS and ROUNDTRIPS must be positive\n");
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(listener, 64) < 0 || getsockname(listener, (struct sockaddr *)&addr, &len) < 0) {
        perror("listen on 127.0.0.1");
        return 1;
    }
    pid_t server = fork();
    if (server < 0) {
        perror("fork");
        return 1;
    }
    if (server == 0)
        serve(listener);
    close(listener);

    char buf[MSG];
    memset(buf, 'x', sizeof(buf));
    int failed = 0;
    uint64_t start = now_ns();
    for (long c = 0; c < connections && !failed; c++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
            perror("connect");
            failed = 1;
            break;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        for (long r = 0; r < roundtrips; r++) {
            if (full(send_op, fd, buf) < 0 || full(recv, fd, buf) < 0) {
                perror("exchange");
                failed = 1;
                break;
            }
        }
        close(fd);
    }
    uint64_t elapsed = now_ns() - start;
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    printf("elapsed_ns=%llu\n", (unsigned long long)elapsed);
    return failed;
}

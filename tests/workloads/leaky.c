/*
 * Allocation workload for the `leaks` integration tests.
 *
 *   leaky MODE K S [THREADS]
 *
 * Leaks exactly K blocks of S bytes from each leak_* function of MODE (they
 * stay in a static array, never freed), and meanwhile allocates and frees far
 * more from balanced_* functions, through every allocation function. Then it
 * exits, unless LEAKY_GO is set: it then waits for that file to exist before
 * starting (so a tracer can attach with --pid first), creates LEAKY_DONE when
 * done, and sleeps until killed.
 *
 * MODE: malloc, calloc, realloc (grow, shrink, realloc(NULL, n), reallocarray;
 * realloc(p, 0) is balanced), memalign (posix_memalign, aligned_alloc,
 * memalign, valloc), threads (THREADS threads each leak K blocks from
 * leak_in_thread).
 *
 * Every function is noinline and the file is built with frame pointers, so
 * the stacks are main -> leak_* -> (allocation function).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_KEPT 400000

static void *kept[MAX_KEPT];
static int n_kept;
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;

/* Writes the block, so that the compiler cannot drop an allocation. */
__attribute__((noinline)) static void touch(void *p, size_t n)
{
    memset(p, 0xab, n);
    __asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) static void keep(void *p)
{
    if (!p) {
        fprintf(stderr, "allocation failed\n");
        exit(2);
    }
    pthread_mutex_lock(&kept_lock);
    if (n_kept >= MAX_KEPT) {
        fprintf(stderr, "too many blocks\n");
        exit(2);
    }
    kept[n_kept++] = p;
    pthread_mutex_unlock(&kept_lock);
}

__attribute__((noinline)) void leak_malloc_blocks(int k, size_t s)
{
    for (int i = 0; i < k; i++) {
        void *p = malloc(s);
        touch(p, s);
        keep(p);
    }
}

__attribute__((noinline)) void leak_calloc_blocks(int k, size_t s)
{
    for (int i = 0; i < k; i++)
        keep(calloc(4, s / 4));
}

__attribute__((noinline)) void leak_realloc_grow(int k, size_t s)
{
    for (int i = 0; i < k; i++) {
        void *p = malloc(8);
        touch(p, 8);
        p = realloc(p, s);
        keep(p);
    }
}

__attribute__((noinline)) void leak_realloc_shrink(int k, size_t s)
{
    for (int i = 0; i < k; i++) {
        void *p = malloc(4 * s);
        touch(p, 4 * s);
        p = realloc(p, s);
        keep(p);
    }
}

/* Through a volatile: the compiler would turn realloc(NULL, n) into malloc(n). */
static void *volatile null_block;

__attribute__((noinline)) void leak_realloc_null(int k, size_t s)
{
    for (int i = 0; i < k; i++)
        keep(realloc(null_block, s));
}

__attribute__((noinline)) void leak_reallocarray(int k, size_t s)
{
    for (int i = 0; i < k; i++) {
        void *p = malloc(8);
        touch(p, 8);
        keep(reallocarray(p, 4, s / 4));
    }
}

__attribute__((noinline)) void leak_posix_memalign(int k, size_t s)
{
    for (int i = 0; i < k; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, s) != 0)
            p = NULL;
        keep(p);
    }
}

__attribute__((noinline)) void leak_aligned_alloc(int k, size_t s)
{
    for (int i = 0; i < k; i++)
        keep(aligned_alloc(256, s));
}

__attribute__((noinline)) void leak_memalign(int k, size_t s)
{
    for (int i = 0; i < k; i++)
        keep(memalign(128, s));
}

__attribute__((noinline)) void leak_valloc(int k, size_t s)
{
    for (int i = 0; i < k; i++)
        keep(valloc(s));
}

/* Allocates and frees through every function; nothing stays outstanding. */
__attribute__((noinline)) void balanced_churn(int rounds)
{
    void *ps[64];
    for (int r = 0; r < rounds; r++) {
        for (int j = 0; j < 64; j++) {
            size_t n = 16 + (size_t)((j * 37 + r) % 4000);
            ps[j] = malloc(n);
            touch(ps[j], n);
        }
        for (int j = 0; j < 64; j++)
            free(ps[j]);
        for (int j = 0; j < 16; j++) {
            ps[j] = calloc(3, 100 + j);
            ps[j] = realloc(ps[j], 5000 + j);
            touch(ps[j], 5000 + j);
        }
        for (int j = 0; j < 16; j++)
            free(ps[j]);
        for (int j = 0; j < 8; j++) {
            void *p = NULL;
            if (posix_memalign(&p, 32, 200) == 0)
                free(p);
            free(aligned_alloc(64, 640));
        }
        free(NULL);
    }
}

/* realloc(p, 0) frees p (and returns NULL): balanced. */
__attribute__((noinline)) void balanced_realloc_zero(int k, size_t s)
{
    for (int i = 0; i < k; i++) {
        void *p = malloc(s);
        touch(p, s);
        void *q = realloc(p, 0);
        free(q);
    }
}

struct thread_arg {
    int k;
    size_t s;
    int rounds;
};

__attribute__((noinline)) void leak_in_thread(int k, size_t s)
{
    for (int i = 0; i < k; i++) {
        void *p = malloc(s);
        touch(p, s);
        keep(p);
        if (i % 16 == 0)
            balanced_churn(1);
    }
}

static void *thread_main(void *argp)
{
    struct thread_arg *a = argp;
    leak_in_thread(a->k, a->s);
    balanced_churn(a->rounds);
    return NULL;
}

__attribute__((noinline)) static int run(const char *mode, int k, size_t s, int threads)
{
    int rounds = 300;
    balanced_churn(rounds / 2);
    if (strcmp(mode, "malloc") == 0) {
        leak_malloc_blocks(k, s);
    } else if (strcmp(mode, "calloc") == 0) {
        leak_calloc_blocks(k, s);
    } else if (strcmp(mode, "realloc") == 0) {
        leak_realloc_grow(k, s);
        leak_realloc_shrink(k, s);
        leak_realloc_null(k, s);
        leak_reallocarray(k, s);
        balanced_realloc_zero(k, s);
    } else if (strcmp(mode, "memalign") == 0) {
        leak_posix_memalign(k, s);
        leak_aligned_alloc(k, s);
        leak_memalign(k, s);
        leak_valloc(k, s);
    } else if (strcmp(mode, "threads") == 0) {
        pthread_t tids[64];
        struct thread_arg arg = {k, s, rounds / 4};
        if (threads < 1 || threads > 64)
            return 2;
        for (int t = 0; t < threads; t++)
            pthread_create(&tids[t], NULL, thread_main, &arg);
        for (int t = 0; t < threads; t++)
            pthread_join(tids[t], NULL);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    balanced_churn(rounds / 2);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: leaky MODE K S [THREADS]\n");
        return 2;
    }
    const char *go = getenv("LEAKY_GO");
    const char *done = getenv("LEAKY_DONE");
    struct stat st;
    if (go) {
        while (stat(go, &st) != 0)
            usleep(10000);
    }
    int rc = run(argv[1], atoi(argv[2]), (size_t)strtoul(argv[3], NULL, 10),
                 argc > 4 ? atoi(argv[4]) : 4);
    if (done) {
        FILE *f = fopen(done, "w");
        if (f)
            fclose(f);
        for (;;)
            pause();
    }
    return rc;
}

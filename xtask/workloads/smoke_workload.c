/*
 * Workload of `cargo xtask smoke-nonroot`.
 *
 *   smoke_workload spin SECONDS   burn CPU in smoke_spin_hot, then exit
 *   smoke_workload nap SECONDS    sleep 10 ms at a time in smoke_nap, then exit
 *   smoke_workload leak           leak LEAKS strdup copies of a LEAK_SIZE-byte
 *                                 string from smoke_leak_strings, then wait
 *                                 until killed
 *
 * Built with frame pointers and noinline functions, so that the stacks are
 * main -> smoke_* and the functions can be named.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LEAKS 100
#define LEAK_SIZE 100 /* strlen + 1 */

/* Global, so that the compiler cannot drop the never-read allocations. */
char *kept[LEAKS];
volatile unsigned long sink;

__attribute__((noinline)) void smoke_spin_hot(double seconds)
{
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		for (int i = 0; i < 1000000; i++)
			sink += i * 7;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
}

__attribute__((noinline)) void smoke_nap(double seconds)
{
	struct timespec ten_ms = {0, 10000000};
	for (int i = 0; i < seconds * 100; i++) {
		nanosleep(&ten_ms, NULL);
		sink++; /* not a tail call: smoke_nap stays on the stack */
	}
}

__attribute__((noinline)) void smoke_leak_strings(void)
{
	char text[LEAK_SIZE];
	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	for (int i = 0; i < LEAKS; i++)
		kept[i] = strdup(text);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "spin") == 0) {
		smoke_spin_hot(atof(argv[2]));
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "nap") == 0) {
		smoke_nap(atof(argv[2]));
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "leak") == 0) {
		smoke_leak_strings();
		/* Never freed: the tracer sees LEAKS blocks outstanding until it ends us. */
		for (;;)
			pause();
	}
	return 2;
}

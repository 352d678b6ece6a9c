/* A hot loop inlined into a function that is not: built -O2 -g, the
 * profiler shows mix_inlined as a frame of its own inside outer_work, with
 * the source line of each, as perf does (tests/profile_stacks.rs). */
#include <stdint.h>
static volatile uint64_t sink;
static inline __attribute__((always_inline)) uint64_t mix_inlined(uint64_t x) {
    for (int i = 0; i < 1000; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL; /* LINE:loop */
    return x;
}
__attribute__((noinline)) uint64_t outer_work(uint64_t x) {
    return mix_inlined(x) ^ 7; /* LINE:call */
}
int main(void) {
    uint64_t x = 1;
    for (;;) { x = outer_work(x); sink = x; } /* LINE:main */
}

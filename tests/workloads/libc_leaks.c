/* Leaks made inside libc, for `leaks --unwind dwarf`: strdup, getline and
 * asprintf allocate in libc, which has no frame pointers, so a frame-pointer
 * walk stops in libc; the tables must reach the function of this program
 * that leaks. Built -O2 -fomit-frame-pointer, as distributions build.
 *
 *   libc_leaks K   -- K strdup'd strings of 23 bytes, K getline buffers and
 *                     K asprintf'd strings; then exits 0 after a pause. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char **kept;
static int nkept;

__attribute__((noinline)) void leak_via_strdup(int k) {
    for (int i = 0; i < k; i++)
        kept[nkept++] = strdup("twenty-two characters!");
}

__attribute__((noinline)) void leak_via_getline(int k) {
    static const char text[] = "a line\n";
    for (int i = 0; i < k; i++) {
        FILE *f = fmemopen((void *)text, sizeof text - 1, "r");
        char *line = NULL;
        size_t cap = 0;
        if (f && getline(&line, &cap, f) > 0)
            kept[nkept++] = line;
        if (f)
            fclose(f);
    }
}

__attribute__((noinline)) void leak_via_asprintf(int k) {
    for (int i = 0; i < k; i++) {
        char *s = NULL;
        if (asprintf(&s, "number %d", i) > 0)
            kept[nkept++] = s;
    }
}

int main(int argc, char **argv) {
    int k = argc > 1 ? atoi(argv[1]) : 100;
    kept = calloc(3 * (size_t)k + 1, sizeof *kept);
    leak_via_strdup(k);
    leak_via_getline(k);
    leak_via_asprintf(k);
    usleep(300000);
    /* Read, so that the compiler keeps every pointer. */
    return kept[0] == NULL;
}

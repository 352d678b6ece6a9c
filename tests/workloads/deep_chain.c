/* The chain: 60 distinct functions, then a recursion 200 deep, built
 * without frame pointers (-O2 -fomit-frame-pointer -fno-inline), burning CPU
 * in the innermost: the table-driven unwinder must give the exact chain,
 * main and _start (266 frames). */
#include <stdlib.h>

volatile unsigned long sink;

__attribute__((noinline)) unsigned long burn(unsigned long n) {
    unsigned long x = n;
    /* sink is never 1: the loop runs until killed, but the compiler cannot
     * know it, so the callers stay ordinary calls that return. */
    do {
        for (int i = 0; i < 1000; i++)
            x = x * 6364136223846793005UL + 1442695040888963407UL;
        sink = x;
    } while (sink != 1);
    return x;
}

__attribute__((noinline)) unsigned long recurse(unsigned long depth, unsigned long n) {
    volatile unsigned long pad[2];
    pad[0] = n;
    if (depth == 0)
        return burn(pad[0]);
    return recurse(depth - 1, n + pad[0]) + 1;
}

__attribute__((noinline)) unsigned long f59(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return recurse(200, n + pad[0]) + 59;
}

__attribute__((noinline)) unsigned long f58(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f59(n + pad[0]) + 58;
}

__attribute__((noinline)) unsigned long f57(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f58(n + pad[0]) + 57;
}

__attribute__((noinline)) unsigned long f56(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f57(n + pad[0]) + 56;
}

__attribute__((noinline)) unsigned long f55(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f56(n + pad[0]) + 55;
}

__attribute__((noinline)) unsigned long f54(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f55(n + pad[0]) + 54;
}

__attribute__((noinline)) unsigned long f53(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f54(n + pad[0]) + 53;
}

__attribute__((noinline)) unsigned long f52(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f53(n + pad[0]) + 52;
}

__attribute__((noinline)) unsigned long f51(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f52(n + pad[0]) + 51;
}

__attribute__((noinline)) unsigned long f50(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f51(n + pad[0]) + 50;
}

__attribute__((noinline)) unsigned long f49(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f50(n + pad[0]) + 49;
}

__attribute__((noinline)) unsigned long f48(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f49(n + pad[0]) + 48;
}

__attribute__((noinline)) unsigned long f47(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f48(n + pad[0]) + 47;
}

__attribute__((noinline)) unsigned long f46(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f47(n + pad[0]) + 46;
}

__attribute__((noinline)) unsigned long f45(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f46(n + pad[0]) + 45;
}

__attribute__((noinline)) unsigned long f44(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f45(n + pad[0]) + 44;
}

__attribute__((noinline)) unsigned long f43(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f44(n + pad[0]) + 43;
}

__attribute__((noinline)) unsigned long f42(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f43(n + pad[0]) + 42;
}

__attribute__((noinline)) unsigned long f41(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f42(n + pad[0]) + 41;
}

__attribute__((noinline)) unsigned long f40(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f41(n + pad[0]) + 40;
}

__attribute__((noinline)) unsigned long f39(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f40(n + pad[0]) + 39;
}

__attribute__((noinline)) unsigned long f38(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f39(n + pad[0]) + 38;
}

__attribute__((noinline)) unsigned long f37(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f38(n + pad[0]) + 37;
}

__attribute__((noinline)) unsigned long f36(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f37(n + pad[0]) + 36;
}

__attribute__((noinline)) unsigned long f35(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f36(n + pad[0]) + 35;
}

__attribute__((noinline)) unsigned long f34(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f35(n + pad[0]) + 34;
}

__attribute__((noinline)) unsigned long f33(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f34(n + pad[0]) + 33;
}

__attribute__((noinline)) unsigned long f32(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f33(n + pad[0]) + 32;
}

__attribute__((noinline)) unsigned long f31(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f32(n + pad[0]) + 31;
}

__attribute__((noinline)) unsigned long f30(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f31(n + pad[0]) + 30;
}

__attribute__((noinline)) unsigned long f29(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f30(n + pad[0]) + 29;
}

__attribute__((noinline)) unsigned long f28(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f29(n + pad[0]) + 28;
}

__attribute__((noinline)) unsigned long f27(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f28(n + pad[0]) + 27;
}

__attribute__((noinline)) unsigned long f26(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f27(n + pad[0]) + 26;
}

__attribute__((noinline)) unsigned long f25(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f26(n + pad[0]) + 25;
}

__attribute__((noinline)) unsigned long f24(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f25(n + pad[0]) + 24;
}

__attribute__((noinline)) unsigned long f23(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f24(n + pad[0]) + 23;
}

__attribute__((noinline)) unsigned long f22(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f23(n + pad[0]) + 22;
}

__attribute__((noinline)) unsigned long f21(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f22(n + pad[0]) + 21;
}

__attribute__((noinline)) unsigned long f20(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f21(n + pad[0]) + 20;
}

__attribute__((noinline)) unsigned long f19(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f20(n + pad[0]) + 19;
}

__attribute__((noinline)) unsigned long f18(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f19(n + pad[0]) + 18;
}

__attribute__((noinline)) unsigned long f17(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f18(n + pad[0]) + 17;
}

__attribute__((noinline)) unsigned long f16(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f17(n + pad[0]) + 16;
}

__attribute__((noinline)) unsigned long f15(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f16(n + pad[0]) + 15;
}

__attribute__((noinline)) unsigned long f14(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f15(n + pad[0]) + 14;
}

__attribute__((noinline)) unsigned long f13(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f14(n + pad[0]) + 13;
}

__attribute__((noinline)) unsigned long f12(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f13(n + pad[0]) + 12;
}

__attribute__((noinline)) unsigned long f11(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f12(n + pad[0]) + 11;
}

__attribute__((noinline)) unsigned long f10(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f11(n + pad[0]) + 10;
}

__attribute__((noinline)) unsigned long f9(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f10(n + pad[0]) + 9;
}

__attribute__((noinline)) unsigned long f8(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f9(n + pad[0]) + 8;
}

__attribute__((noinline)) unsigned long f7(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f8(n + pad[0]) + 7;
}

__attribute__((noinline)) unsigned long f6(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f7(n + pad[0]) + 6;
}

__attribute__((noinline)) unsigned long f5(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f6(n + pad[0]) + 5;
}

__attribute__((noinline)) unsigned long f4(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f5(n + pad[0]) + 4;
}

__attribute__((noinline)) unsigned long f3(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[4];
    pad[0] = n;
    return f4(n + pad[0]) + 3;
}

__attribute__((noinline)) unsigned long f2(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[3];
    pad[0] = n;
    return f3(n + pad[0]) + 2;
}

__attribute__((noinline)) unsigned long f1(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[2];
    pad[0] = n;
    return f2(n + pad[0]) + 1;
}

__attribute__((noinline)) unsigned long f0(unsigned long n) {
    /* Work after the call keeps it a call, not a jump; the array a frame. */
    volatile unsigned long pad[1];
    pad[0] = n;
    return f1(n + pad[0]) + 0;
}

int main(int argc, char **argv) {
    (void)argv;
    return (int)f0((unsigned long)argc);
}

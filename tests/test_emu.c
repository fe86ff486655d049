/* The CUDA emulator (kernels/emu): barriers, shared memory, warp intrinsics, atomics, launch
 * shapes and schedules against host references; deadlock and mask errors diagnosed with
 * file:line; runtime API bookkeeping; cuBLAS against naive loops; bf16/tf32 rounding. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/emu_kernels/emu_test_kernels.h"

/* ---- helpers ---------------------------------------------------------------------------- */
static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    cr_assert_eq(cudaMalloc(&p, bytes), cudaSuccess);
    return p;
}

static void to_dev(void *d, const void *h, size_t bytes)
{
    cr_assert_eq(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), cudaSuccess);
}

static void to_host(void *h, const void *d, size_t bytes)
{
    cr_assert_eq(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

static uint32_t rng_state = 12345u;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}
static float rndf(void) { return (float)rnd() / (float)(1u << 24) * 2.0f - 1.0f; }

/* Runs fn in a child with stderr captured into buf; returns the wait status. */
static int run_child(void (*fn)(void), char *buf, size_t cap)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        alarm(30); /* an undetected deadlock must not hang the suite */
        fn();
        fflush(NULL);
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], buf + len, cap - 1 - len)) > 0 && len < cap - 1)
        len += (size_t)r;
    buf[len] = 0;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

static void expect_abort_with(void (*fn)(void), const char *needle1, const char *needle2)
{
    static char buf[1 << 16];
    const int st = run_child(fn, buf, sizeof buf);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "child should abort; status %d, log:\n%s",
              st, buf);
    cr_assert(strstr(buf, needle1), "missing '%s' in:\n%s", needle1, buf);
    if (needle2)
        cr_assert(strstr(buf, needle2), "missing '%s' in:\n%s", needle2, buf);
}

/* ---- barriers and shared memory ---------------------------------------------------------- */
static void block_sums(int gx, int gy, float *out)
{
    const int nb = gx * gy;
    float *x = malloc(sizeof(float) * (size_t)nb * 256);
    for (int i = 0; i < nb * 256; i++)
        x[i] = (float)((i * 37) % 101) - 50.0f;
    float *dx = dev_alloc(sizeof(float) * (size_t)nb * 256), *dout = dev_alloc(sizeof(float) * nb);
    to_dev(dx, x, sizeof(float) * (size_t)nb * 256);
    tk_block_sum(dx, dout, gx, gy, 0);
    to_host(out, dout, sizeof(float) * nb);
    for (int b = 0; b < nb; b++) {
        double ref = 0;
        for (int t = 0; t < 256; t++)
            ref += x[b * 256 + t];
        cr_assert_float_eq(out[b], (float)ref, 1e-3, "block %d: %g vs %g", b, out[b], ref);
    }
    cudaFree(dx);
    cudaFree(dout);
    free(x);
}

Test(emu, block_reduction_2d_grid)
{
    float out[3 * 5];
    block_sums(3, 5, out);
}

Test(emu, sync_predicates)
{
    enum { NB = 3, NT = 96 };
    int pred[NB * NT], out[NB * 3];
    for (int b = 0; b < NB; b++)
        for (int t = 0; t < NT; t++)
            pred[b * NT + t] = b == 0 ? (t % 3 == 0) * 5 : (b == 1 ? 1 : 0);
    int *dp = dev_alloc(sizeof pred), *dout = dev_alloc(sizeof out);
    to_dev(dp, pred, sizeof pred);
    tk_sync_preds(dp, dout, NB, 0);
    to_host(out, dout, sizeof out);
    cr_assert_eq(out[0], 32);
    cr_assert_eq(out[1], 0);
    cr_assert_eq(out[2], 1);
    cr_assert_eq(out[3], 96);
    cr_assert_eq(out[4], 1);
    cr_assert_eq(out[5], 1);
    cr_assert_eq(out[6], 0);
    cr_assert_eq(out[7], 0);
    cr_assert_eq(out[8], 0);
    cudaFree(dp);
    cudaFree(dout);
}

Test(emu, dynamic_shared_memory)
{
    enum { NB = 4, NT = 160 };
    float x[NB * NT], y[NB * NT], nb[NB * NT];
    for (int i = 0; i < NB * NT; i++)
        x[i] = (float)i * 0.5f;
    float *dx = dev_alloc(sizeof x), *dy = dev_alloc(sizeof y), *dnb = dev_alloc(sizeof nb);
    to_dev(dx, x, sizeof x);
    tk_dyn_shared(dx, dy, dnb, NB, NT, 0);
    to_host(y, dy, sizeof y);
    to_host(nb, dnb, sizeof nb);
    for (int b = 0; b < NB; b++)
        for (int t = 0; t < NT; t++) {
            cr_assert_eq(y[b * NT + t], x[b * NT + NT - 1 - t]);
            cr_assert_eq(nb[b * NT + t], 2.0f * x[b * NT + (t + 1) % NT]);
        }
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dnb);
}

Test(emu, thread_and_block_indices_3d)
{
    enum { N = 4 * 24 * 3 };
    int out[N];
    int *d = dev_alloc(sizeof out);
    tk_dims(d, 0);
    to_host(out, d, sizeof out);
    for (int bz = 0; bz < 2; bz++)
        for (int bx = 0; bx < 2; bx++)
            for (int t = 0; t < 24; t++) {
                const int bl = bx + 2 * bz;
                const int *o = out + (bl * 24 + t) * 3;
                cr_assert_eq(o[0], t);
                cr_assert_eq(o[1], 432);
                cr_assert_eq(o[2], bx + 10 * bz + 200 + 2000 + 10000);
            }
    cudaFree(d);
}

/* ---- warp intrinsics --------------------------------------------------------------------- */
static void warp_reference(const int *v, int n, int *ref)
{
    for (int w = 0; w < n; w += 32) {
        const int *a = v + w;
        int cur[32], nxt[32];
        for (int l = 0; l < 32; l++) {
            int *o = ref + (w + l) * TK_WARP_SLOTS;
            int s = 0, s16 = 0, scan = 0;
            unsigned ball = 0, ball2 = 0, match = 0;
            for (int j = 0; j < 32; j++) {
                s += a[j];
                if (a[j] & 1)
                    ball |= 1u << j;
                if ((j < 16) == (l < 16)) {
                    s16 += a[j];
                    if (a[j] & 2)
                        ball2 |= 1u << j;
                }
                if (j <= l)
                    scan += a[j];
                if ((a[j] & 3) == (a[l] & 3))
                    match |= 1u << j;
            }
            o[0] = s;
            o[2] = scan;
            o[3] = a[5];
            o[4] = a[(l & ~7) + 3];
            o[5] = a[l ^ 8];
            o[6] = (l & 7) + 2 <= 7 ? a[l + 2] : a[l];
            o[7] = (l & 7) >= 3 ? a[l - 3] : a[l];
            o[8] = (int)ball;
            o[9] = 0;
            for (int j = 0; j < 32; j++)
                o[9] |= a[j] > 1000;
            o[10] = 1;
            for (int j = 0; j < 32; j++)
                o[10] &= a[j] >= 0;
            o[11] = (int)ball2;
            o[12] = s16;
            o[13] = (l & 1) ? -9 : a[(l + 2) & 31];
            o[14] = a[l ^ 1] * 3;
            o[15] = (int)match;
            o[16] = s;
            o[17] = -1;
        }
        /* shfl_down tree: out-of-range lanes keep their own value */
        for (int l = 0; l < 32; l++)
            cur[l] = a[l];
        for (int off = 16; off > 0; off >>= 1) {
            for (int l = 0; l < 32; l++)
                nxt[l] = cur[l] + (l + off < 32 ? cur[l + off] : cur[l]);
            memcpy(cur, nxt, sizeof cur);
        }
        for (int l = 0; l < 32; l++)
            ref[(w + l) * TK_WARP_SLOTS + 1] = cur[l];
    }
}

static void run_warp(int n, int *out)
{
    int *in = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++)
        in[i] = (int)(rnd() % 1000);
    in[7] = 1234; /* __any_sync(v > 1000) true in warp 0 only */
    int *din = dev_alloc(sizeof(int) * n), *dout = dev_alloc(sizeof(int) * n * TK_WARP_SLOTS);
    to_dev(din, in, sizeof(int) * n);
    tk_warp(din, dout, n, 0);
    to_host(out, dout, sizeof(int) * n * TK_WARP_SLOTS);
    int *ref = malloc(sizeof(int) * n * TK_WARP_SLOTS);
    warp_reference(in, n, ref);
    for (int t = 0; t < n; t++)
        for (int k = 0; k < TK_WARP_SLOTS; k++)
            cr_assert_eq(out[t * TK_WARP_SLOTS + k], ref[t * TK_WARP_SLOTS + k],
                         "thread %d slot %d: %d vs %d", t, k, out[t * TK_WARP_SLOTS + k],
                         ref[t * TK_WARP_SLOTS + k]);
    cudaFree(din);
    cudaFree(dout);
    free(in);
    free(ref);
}

Test(emu, warp_intrinsics_full_and_partial_masks)
{
    int out[96 * TK_WARP_SLOTS];
    rng_state = 7;
    run_warp(96, out);
}

/* ---- atomics ----------------------------------------------------------------------------- */
Test(emu, atomics)
{
    enum { NB = 6, N = NB * 128 };
    int c[16] = {0};
    c[1] = 10000;
    c[2] = -5;
    c[3] = 5;
    c[6] = -1;
    c[7] = -1;
    float f = 1.0f;
    double d = 0.0;
    unsigned long long u = 3;
    int *dc = dev_alloc(sizeof c);
    float *df = dev_alloc(sizeof f);
    double *dd = dev_alloc(sizeof d);
    unsigned long long *du = dev_alloc(sizeof u);
    to_dev(dc, c, sizeof c);
    to_dev(df, &f, sizeof f);
    to_dev(dd, &d, sizeof d);
    to_dev(du, &u, sizeof u);
    tk_atomics(dc, df, dd, du, NB, 0);
    to_host(c, dc, sizeof c);
    to_host(&f, df, sizeof f);
    to_host(&d, dd, sizeof d);
    to_host(&u, du, sizeof u);
    cr_assert_eq(c[0], N);
    cr_assert_eq(c[1], 10000 - 2 * N);
    cr_assert_eq(c[2], N - 1);
    cr_assert_eq(c[3], -(N - 1));
    cr_assert_eq(c[4], 3 * N);
    cr_assert_eq((unsigned)c[5], 0x7fffffffu);
    cr_assert_eq((unsigned)c[6], ~0xfffffu);
    cr_assert(c[7] >= 0 && c[7] < N);
    cr_assert_eq(c[8], N % 10);
    cr_assert_eq(c[9], N);
    cr_assert_eq(f, 1.0f + 0.5f * N);
    cr_assert_eq(d, (double)N * (N - 1) / 2);
    cr_assert_eq(u, 3ull + (unsigned long long)N * (1ull << 33));
    cudaFree(dc);
    cudaFree(df);
    cudaFree(dd);
    cudaFree(du);
}

/* ---- schedules ---------------------------------------------------------------------------- */
Test(emu, results_identical_under_all_schedules)
{
    const char *specs[] = {"forward", "reverse", "random", "random:1", "random:987654321"};
    float sums0[6 * 2], sums[6 * 2];
    int warp0[64 * TK_WARP_SLOTS], warp[64 * TK_WARP_SLOTS];
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(emu_set_schedule(specs[i]), 0);
        rng_state = 99;
        block_sums(6, 2, i ? sums : sums0);
        run_warp(64, i ? warp : warp0);
        if (i) {
            cr_assert_eq(memcmp(sums, sums0, sizeof sums), 0, "schedule %s", specs[i]);
            cr_assert_eq(memcmp(warp, warp0, sizeof warp), 0, "schedule %s", specs[i]);
        }
    }
    cr_assert_eq(emu_set_schedule("sideways"), -1);
    cr_assert_eq(emu_set_schedule("random:x"), -1);
    emu_set_schedule("forward");
}

/* Reverse order makes thread 63 run first, so a barrier that did not wait would show. */
Test(emu, barrier_orders_shared_memory_under_reverse_schedule)
{
    int out[64];
    int *d = dev_alloc(sizeof out);
    cr_assert_eq(emu_set_schedule("reverse"), 0);
    tk_not_racy(d);
    to_host(out, d, sizeof out);
    for (int t = 0; t < 64; t++)
        cr_assert_eq(out[t], 42);
    emu_set_schedule("forward");
    cudaFree(d);
}

/* ---- diagnostics of faulty kernels -------------------------------------------------------- */
static char line_buf[64];
static const char *at_line(int line)
{
    snprintf(line_buf, sizeof line_buf, "emu_test_kernels.cu:%d", line);
    return line_buf;
}

Test(emu, deadlock_in_divergent_barrier_is_reported, .timeout = 60)
{
    char where[64];
    snprintf(where, sizeof where, "%s", at_line(tk_deadlock_line));
    expect_abort_with(tk_deadlock, where, "deadlock");
}

Test(emu, split_barriers_are_reported, .timeout = 60)
{
    char where[64];
    snprintf(where, sizeof where, "%s", at_line(tk_split_line1));
    expect_abort_with(tk_split_barriers, where, "different barriers");
}

Test(emu, mask_without_own_lane_is_reported, .timeout = 60)
{
    char where[64];
    snprintf(where, sizeof where, "%s", at_line(tk_bad_mask_line));
    expect_abort_with(tk_bad_mask, where, "does not include its own lane");
}

Test(emu, mask_disagreement_is_reported, .timeout = 60)
{
    char where[64];
    snprintf(where, sizeof where, "%s", at_line(tk_mask_mismatch_line));
    expect_abort_with(tk_mask_mismatch, where, "same mask");
}

Test(emu, exited_lane_in_mask_is_reported, .timeout = 60)
{
    expect_abort_with(tk_exited_lane, "exited without reaching it", "k_exited_lane");
}

static void run_racy(void)
{
    int *d = NULL;
    CUDA_CHECK(cudaMalloc((void **)&d, 64 * sizeof(int)));
    tk_racy(d);
}

/* Under ThreadSanitizer (make test-tsan) the unsynchronised read must be reported; elsewhere
 * the race cannot be seen, unless SF_EMU_EXPECT_RACE asks to see the kernel run anyway. */
Test(emu, shared_memory_race_reported_under_tsan, .timeout = 120)
{
#if defined(__SANITIZE_THREAD__)
    static char buf[1 << 16];
    const int st = run_child(run_racy, buf, sizeof buf);
    cr_assert(strstr(buf, "ThreadSanitizer: data race"), "no race reported (status %d):\n%s",
              st, buf);
    cr_assert(strstr(buf, "emu_test_kernels.cu"), "race not located in the kernel:\n%s", buf);
#else
    if (!getenv("SF_EMU_EXPECT_RACE"))
        cr_skip_test("needs -fsanitize=thread (make test-tsan)");
    run_racy();
    cr_assert_fail("SF_EMU_EXPECT_RACE is set but this build has no ThreadSanitizer");
#endif
}

/* Under AddressSanitizer an overrun of dynamic shared memory is caught in the kernel. */
Test(emu, shared_memory_overrun_reported_under_asan, .timeout = 60)
{
#if defined(__SANITIZE_ADDRESS__)
    static char buf[1 << 16];
    run_child(tk_dyn_overflow, buf, sizeof buf);
    cr_assert(strstr(buf, "AddressSanitizer: heap-buffer-overflow"), "no overrun reported:\n%s",
              buf);
    cr_assert(strstr(buf, "k_dyn_overflow"), "overrun not located in the kernel:\n%s", buf);
#else
    cr_skip_test("needs -fsanitize=address (make test-asan)");
#endif
}

/* ---- launch configuration and runtime API -------------------------------------------------- */
Test(emu, bad_launch_configurations_set_last_error)
{
    cr_assert_eq(tk_bad_launch(0), cudaErrorInvalidConfiguration);
    cr_assert_eq(tk_bad_launch(1), cudaErrorInvalidConfiguration);
    cr_assert_eq(tk_bad_launch(2), cudaErrorInvalidValue);
    cr_assert_eq(tk_bad_launch(3), cudaErrorInvalidResourceHandle);
    cr_assert_eq(cudaGetLastError(), cudaSuccess);
}

Test(emu, runtime_memory)
{
    size_t free0, total, free1;
    cr_assert_eq(cudaMemGetInfo(&free0, &total), cudaSuccess);
    unsigned char *d = dev_alloc(1000);
    cr_assert_eq(cudaMemGetInfo(&free1, &total), cudaSuccess);
    cr_assert_eq(free0 - free1, 1000);
    unsigned char h[1000];
    to_host(h, d, sizeof h);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(h[i], 0xff, "fresh device memory is garbage (0xff), byte %d", i);
    cr_assert_eq(cudaMemset(d + 10, 0, 20), cudaSuccess);
    to_host(h, d, sizeof h);
    cr_assert(h[9] == 0xff && h[10] == 0 && h[29] == 0 && h[30] == 0xff);
    /* a copy that leaves the allocation, or a host pointer passed as device memory */
    cr_assert_eq(cudaMemcpy(h, d + 500, 600, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    cr_assert_eq(cudaMemcpy(h, h + 10, 10, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    cr_assert_eq(cudaPeekAtLastError(), cudaErrorInvalidValue);
    cr_assert_eq(cudaGetLastError(), cudaErrorInvalidValue);
    cr_assert_eq(cudaGetLastError(), cudaSuccess);
    cr_assert_eq(cudaFree(h), cudaErrorInvalidValue);
    cudaGetLastError();
    float *pinned = NULL;
    cr_assert_eq(cudaMallocHost((void **)&pinned, 64), cudaSuccess);
    cr_assert_eq(cudaFreeHost(pinned), cudaSuccess);
    cr_assert_eq(cudaFree(d), cudaSuccess);
    cr_assert_eq(cudaMemGetInfo(&free1, &total), cudaSuccess);
    cr_assert_eq(free1, free0);
}

Test(emu, runtime_streams_events_device)
{
    cudaStream_t s;
    cudaEvent_t a, b, nt;
    cr_assert_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    cr_assert_eq(cudaEventCreate(&a), cudaSuccess);
    cr_assert_eq(cudaEventCreate(&b), cudaSuccess);
    cr_assert_eq(cudaEventCreateWithFlags(&nt, cudaEventDisableTiming), cudaSuccess);
    cr_assert_eq(cudaEventRecord(a, s), cudaSuccess);
    float out[4];
    float *dx = dev_alloc(4 * 256 * sizeof(float)), *dout = dev_alloc(sizeof out);
    cr_assert_eq(cudaMemsetAsync(dx, 0, 4 * 256 * sizeof(float), s), cudaSuccess);
    tk_block_sum(dx, dout, 4, 1, s);
    cr_assert_eq(cudaEventRecord(b, s), cudaSuccess);
    cr_assert_eq(cudaEventRecord(nt, s), cudaSuccess);
    cr_assert_eq(cudaStreamWaitEvent(0, b, 0), cudaSuccess);
    cr_assert_eq(cudaMemcpyAsync(out, dout, sizeof out, cudaMemcpyDeviceToHost, s), cudaSuccess);
    cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess);
    cr_assert_eq(out[0], 0.0f);
    float ms = -1;
    cr_assert_eq(cudaEventElapsedTime(&ms, a, b), cudaSuccess);
    cr_assert(ms >= 0.0f);
    cr_assert_eq(cudaEventElapsedTime(&ms, a, nt), cudaErrorInvalidResourceHandle);
    cr_assert_eq(cudaEventDestroy(a), cudaSuccess);
    cr_assert_eq(cudaEventDestroy(b), cudaSuccess);
    cr_assert_eq(cudaEventDestroy(nt), cudaSuccess);
    cr_assert_eq(cudaStreamDestroy(s), cudaSuccess);
    cr_assert_eq(cudaStreamSynchronize(s), cudaErrorInvalidResourceHandle);
    cudaGetLastError();
    int n = 0, dev = -1;
    cr_assert_eq(cudaGetDeviceCount(&n), cudaSuccess);
    cr_assert_eq(n, 1);
    cr_assert_eq(cudaSetDevice(0), cudaSuccess);
    cr_assert_eq(cudaSetDevice(1), cudaErrorInvalidDevice);
    cr_assert_eq(cudaGetDevice(&dev), cudaSuccess);
    cr_assert_eq(dev, 0);
    cudaDeviceProp p;
    cr_assert_eq(cudaGetDeviceProperties(&p, 0), cudaSuccess);
    cr_assert_str_eq(p.name, "saeforge-emu");
    cr_assert_eq(p.multiProcessorCount, 4);
    cr_assert_eq(p.warpSize, 32);
    cr_assert_eq(p.maxThreadsPerBlock, 1024);
    cr_assert_eq(p.sharedMemPerBlock, 48 * 1024);
    cr_assert_geq(p.sharedMemPerBlockOptin, 96 * 1024);
    cr_assert_str_eq(cudaGetErrorString(cudaErrorInvalidValue), "invalid argument");
    cudaFree(dx);
    cudaFree(dout);
}

/* ---- cuBLAS ------------------------------------------------------------------------------- */
static float bf16_ref(float f);
static float tf32_ref(float f);

/* C = alpha op(A) op(B) + beta C, column-major, in double */
static void naive_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc,
                       float (*round_in)(float))
{
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int p = 0; p < k; p++) {
                float a = ta ? A[i * lda + p] : A[p * lda + i];
                float b = tb ? B[p * ldb + j] : B[j * ldb + p];
                if (round_in) {
                    a = round_in(a);
                    b = round_in(b);
                }
                s += (double)a * b;
            }
            C[j * ldc + i] = (float)(alpha * s + (beta == 0 ? 0.0 : beta * (double)C[j * ldc + i]));
        }
}

static void check_gemm(int ta, int tb, int mode)
{
    const int m = 7, n = 5, k = 9;
    const int lda = (ta ? k : m) + 3, ldb = (tb ? n : k) + 2, ldc = m + 4;
    const int acols = ta ? m : k, bcols = tb ? k : n;
    float *A = malloc(sizeof(float) * lda * acols), *B = malloc(sizeof(float) * ldb * bcols);
    float *C = malloc(sizeof(float) * ldc * n), *R = malloc(sizeof(float) * ldc * n);
    uint16_t *Ab = malloc(2 * lda * acols), *Bb = malloc(2 * ldb * bcols);
    for (int i = 0; i < lda * acols; i++) {
        A[i] = rndf();
        Ab[i] = emu_bf16_from_float(A[i]);
    }
    for (int i = 0; i < ldb * bcols; i++) {
        B[i] = rndf();
        Bb[i] = emu_bf16_from_float(B[i]);
    }
    for (int i = 0; i < ldc * n; i++)
        C[i] = R[i] = rndf();
    const float alpha = 0.75f, beta = mode == 3 ? 0.0f : -0.5f;
    if (mode == 3) /* beta = 0 must ignore NaN garbage in C */
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
                C[j * ldc + i] = NAN;
    float (*rin)(float) = mode == 1 ? tf32_ref : (mode == 2 ? bf16_ref : NULL);
    naive_gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, R, ldc, rin);

    cublasHandle_t h;
    cr_assert_eq(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    const size_t asz = sizeof(float) * lda * acols, bsz = sizeof(float) * ldb * bcols;
    const size_t csz = sizeof(float) * ldc * n;
    float *dA = dev_alloc(asz), *dB = dev_alloc(bsz), *dC = dev_alloc(csz);
    uint16_t *dAb = dev_alloc(asz / 2), *dBb = dev_alloc(bsz / 2);
    to_dev(dA, A, asz);
    to_dev(dB, B, bsz);
    to_dev(dAb, Ab, asz / 2);
    to_dev(dBb, Bb, bsz / 2);
    to_dev(dC, C, csz);
    const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t st;
    if (mode == 0 || mode == 3)
        st = cublasSgemm(h, oa, ob, m, n, k, &alpha, dA, lda, dB, ldb, &beta, dC, ldc);
    else if (mode == 1)
        st = cublasGemmEx(h, oa, ob, m, n, k, &alpha, dA, CUDA_R_32F, lda, dB, CUDA_R_32F, ldb,
                          &beta, dC, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F_FAST_TF32,
                          CUBLAS_GEMM_DEFAULT);
    else
        st = cublasGemmEx(h, oa, ob, m, n, k, &alpha, dAb, CUDA_R_16BF, lda, dBb, CUDA_R_16BF, ldb,
                          &beta, dC, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT_TENSOR_OP);
    cr_assert_eq(st, CUBLAS_STATUS_SUCCESS);
    to_host(C, dC, csz);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < ldc; i++) {
            const float got = C[j * ldc + i], ref = R[j * ldc + i];
            if (i >= m) /* rows between m and ldc are untouched */
                cr_assert_eq(got, ref, "padding changed at (%d,%d)", i, j);
            else
                cr_assert(fabsf(got - ref) <= 1e-5f + 1e-5f * fabsf(ref),
                          "ta %d tb %d mode %d (%d,%d): %g vs %g", ta, tb, mode, i, j, got, ref);
        }
    cr_assert_eq(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    cudaFree(dAb);
    cudaFree(dBb);
    free(A);
    free(B);
    free(C);
    free(R);
    free(Ab);
    free(Bb);
}

Test(emu, cublas_sgemm_transposes_and_leading_dims)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(ta, tb, 0);
            check_gemm(ta, tb, 3);
        }
}

Test(emu, cublas_gemmex_tf32_and_bf16)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(ta, tb, 1);
            check_gemm(ta, tb, 2);
        }
}

Test(emu, cublas_tf32_math_mode_rounds_sgemm_inputs)
{
    /* 1 + 2^-12 is 1.0 in tf32: the product shows whether inputs were rounded */
    const float a = 1.0f + 1.0f / 4096, b = 1.0f, alpha = 1.0f, beta = 0.0f;
    float *d = dev_alloc(3 * sizeof(float)), c = 0;
    float h3[3] = {a, b, 0};
    to_dev(d, h3, sizeof h3);
    cublasHandle_t h;
    cr_assert_eq(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    cr_assert_eq(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &alpha, d, 1, d + 1, 1, &beta,
                             d + 2, 1),
                 CUBLAS_STATUS_SUCCESS);
    to_host(&c, d + 2, sizeof c);
    cr_assert_eq(c, a);
    cr_assert_eq(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
    cr_assert_eq(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &alpha, d, 1, d + 1, 1, &beta,
                             d + 2, 1),
                 CUBLAS_STATUS_SUCCESS);
    to_host(&c, d + 2, sizeof c);
    cr_assert_eq(c, 1.0f);
    /* invalid leading dimension and unsupported types */
    cr_assert_eq(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 1, 1, &alpha, d, 2, d, 1, &beta, d, 4),
                 CUBLAS_STATUS_INVALID_VALUE);
    cr_assert_eq(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &alpha, d, CUDA_R_16F, 1, d,
                              CUDA_R_16F, 1, &beta, d, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT),
                 CUBLAS_STATUS_NOT_SUPPORTED);
    cublasDestroy(h);
    cudaFree(d);
}

Test(emu, cublas_sgemv)
{
    const int m = 6, n = 4, lda = 8;
    float A[8 * 4], x[6], y[6], ref[6];
    for (int i = 0; i < lda * n; i++)
        A[i] = rndf();
    for (int i = 0; i < 6; i++)
        x[i] = rndf();
    cublasHandle_t h;
    cublasCreate(&h);
    float *dA = dev_alloc(sizeof A), *dx = dev_alloc(sizeof x), *dy = dev_alloc(sizeof y);
    to_dev(dA, A, sizeof A);
    to_dev(dx, x, sizeof x);
    const float alpha = 2.0f, beta = 0.0f;
    for (int t = 0; t < 2; t++) {
        const int ylen = t ? n : m, xlen = t ? m : n;
        for (int i = 0; i < ylen; i++) {
            double s = 0;
            for (int p = 0; p < xlen; p++)
                s += (double)(t ? A[i * lda + p] : A[p * lda + i]) * x[p];
            ref[i] = (float)(alpha * s);
        }
        cr_assert_eq(cublasSgemv(h, t ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, &alpha, dA, lda, dx, 1,
                                 &beta, dy, 1),
                     CUBLAS_STATUS_SUCCESS);
        to_host(y, dy, sizeof(float) * ylen);
        for (int i = 0; i < ylen; i++)
            cr_assert(fabsf(y[i] - ref[i]) <= 1e-5f + 1e-5f * fabsf(ref[i]), "t %d i %d", t, i);
    }
    cublasDestroy(h);
    cudaFree(dA);
    cudaFree(dx);
    cudaFree(dy);
}

/* ---- bf16 / tf32 rounding ----------------------------------------------------------------- */
/* Independent references: nearest multiple of the format's ulp at f's binade, ties to even. */
static float round_mantissa(float f, int bits)
{
    if (!isfinite(f) || f == 0.0f)
        return f;
    int e;
    frexp(fabs((double)f), &e); /* |f| in [2^(e-1), 2^e) */
    if (e - 1 < -126)
        e = -125;
    const double ulp = ldexp(1.0, e - 1 - bits);
    const double r = nearbyint((double)f / ulp) * ulp;
    return fabs(r) > FLT_MAX ? copysignf(INFINITY, f) : (float)r;
}
static float bf16_ref(float f) { return round_mantissa(f, 7); }
static float tf32_ref(float f) { return round_mantissa(f, 10); }

Test(emu, bf16_and_tf32_rounding)
{
    const float one = 1.0f;
    cr_assert_eq(emu_bf16_to_float(emu_bf16_from_float(one + 1.0f / 256)), 1.0f); /* tie: even */
    cr_assert_eq(emu_bf16_to_float(emu_bf16_from_float(one + 3.0f / 256)), one + 4.0f / 256);
    cr_assert_eq(emu_bf16_to_float(emu_bf16_from_float(-(one + 3.0f / 256))), -(one + 4.0f / 256));
    cr_assert_eq(emu_bf16_from_float(FLT_MAX), 0x7f80); /* rounds up to inf */
    cr_assert(isnan(emu_bf16_to_float(emu_bf16_from_float(NAN))));
    cr_assert_eq(emu_tf32_round(one + 1.0f / 2048), 1.0f);
    cr_assert_eq(emu_tf32_round(one + 3.0f / 2048), one + 4.0f / 2048);
    cr_assert(isinf(emu_tf32_round(INFINITY)));
    rng_state = 3;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = rnd() << 8 ^ rnd();
        float f;
        memcpy(&f, &u, 4);
        if (!isfinite(f))
            continue;
        const float b = emu_bf16_to_float(emu_bf16_from_float(f)), rb = bf16_ref(f);
        cr_assert(b == rb || (isinf(b) && isinf(rb) && signbit(b) == signbit(rb)),
                  "bf16(%a) = %a, expected %a", f, b, rb);
        cr_assert_eq(emu_tf32_round(f), tf32_ref(f), "tf32(%a) = %a, expected %a", f,
                     emu_tf32_round(f), tf32_ref(f));
    }
}

/* ---- speed ---------------------------------------------------------------------------------- */
/* 512 blocks x 256 threads x 9 barriers: the fiber switch must be cheap enough for whole
 * training steps under emulation. The bound is loose (shared, slow CI machines). */
Test(emu, launch_throughput, .timeout = 120)
{
    float *out = malloc(sizeof(float) * 512);
    emu_stats s0 = emu_get_stats();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    block_sums(512, 1, out);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    emu_stats s1 = emu_get_stats();
    const double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    const double sw = (double)(s1.switches - s0.switches);
    cr_assert_eq(s1.blocks - s0.blocks, 512);
    cr_assert_geq(sw, 512.0 * 256 * 10);
    fprintf(stderr, "emu: %.0f fiber switches in %.3f s (%.1f ns per switch incl. kernel work)\n",
            sw, sec, 1e9 * sec / sw);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    cr_assert_lt(sec, 10.0);
#endif
    free(out);
}

/* Stream order under the CUDA emulator (kernels/emu/emu_stream.cpp): with deferred execution
 * queued work runs only when the host waits for it, so these cases fail under eager execution
 * (or an emulator that runs work early) and show the host-side races that deferral exposes. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/emu_kernels/emu_test_kernels.h"

enum { N = 100 };
static const int GARBAGE = -1; /* fresh device memory and pinned memory: 0xff bytes */

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    cr_assert_eq(cudaMalloc(&p, bytes), cudaSuccess);
    return p;
}

static int *pinned_ints(int value)
{
    int *p = NULL;
    cr_assert_eq(cudaMallocHost((void **)&p, N * sizeof(int)), cudaSuccess);
    for (int i = 0; i < N; i++)
        p[i] = value;
    return p;
}

static cudaStream_t nb_stream(void)
{
    cudaStream_t s;
    cr_assert_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    return s;
}

static void assert_all(const int *h, int want, const char *what)
{
    for (int i = 0; i < N; i++)
        cr_assert_eq(h[i], want, "%s: [%d] = %d, want %d", what, i, h[i], want);
}

/* Every case runs deferred whatever SF_EMU_STREAMS says. */
static void defer(void) { cr_assert_eq(emu_set_streams("defer"), 0); }

TestSuite(emu_stream, .init = defer);

Test(emu_stream, d2h_into_pinned_memory_lands_at_sync)
{
    cudaStream_t s = nb_stream();
    int *d = dev_alloc(N * sizeof(int)), *h = pinned_ints(7);
    tk_fill(d, N, 3, s);
    cr_assert_eq(cudaMemcpyAsync(h, d, N * sizeof(int), cudaMemcpyDeviceToHost, s), cudaSuccess);
    assert_all(h, 7, "before cudaStreamSynchronize the copy has not run");
    cr_assert_geq(emu_get_stats().max_queued, 2, "the launch and the copy wait in the queue");
    cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess);
    assert_all(h, 3, "after cudaStreamSynchronize");
    /* into pageable memory CUDA returns only once the copy is done */
    int pageable[N];
    tk_fill(d, N, 4, s);
    cr_assert_eq(cudaMemcpyAsync(pageable, d, sizeof pageable, cudaMemcpyDeviceToHost, s),
                 cudaSuccess);
    assert_all(pageable, 4, "D2H into pageable memory");
    cudaFreeHost(h);
    cudaFree(d);
    cudaStreamDestroy(s);
}

Test(emu_stream, kernel_arguments_are_taken_at_launch)
{
    cudaStream_t s = nb_stream();
    int *d = dev_alloc(N * sizeof(int)), *h = pinned_ints(0);
    int *other = dev_alloc(N * sizeof(int));
    tk_fill_spec spec = {d, N, 5};
    tk_fill_args(&spec, s);
    spec.value = 6; /* the host reuses its state for the next step before the kernel ran */
    spec.out = other;
    cr_assert_eq(cudaMemcpyAsync(h, d, N * sizeof(int), cudaMemcpyDeviceToHost, s), cudaSuccess);
    cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess);
    assert_all(h, 5, "the kernel's arguments as launched");
    cr_assert_eq(cudaMemcpy(h, other, N * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    assert_all(h, GARBAGE, "the later pointer was never written");
    cudaFreeHost(h);
    cudaFree(d);
    cudaFree(other);
    cudaStreamDestroy(s);
}

Test(emu_stream, stream_wait_event_orders_across_streams)
{
    cudaStream_t a = nb_stream(), b = nb_stream(), c = nb_stream();
    cudaEvent_t ev;
    cr_assert_eq(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), cudaSuccess);
    int *d = dev_alloc(N * sizeof(int));
    int *hb = pinned_ints(0), *hc = pinned_ints(0), *ha = pinned_ints(0);
    tk_fill(d, N, 8, a);
    cr_assert_eq(cudaEventRecord(ev, a), cudaSuccess);
    tk_fill(d, N, 9, a); /* after the record: b must not wait for it */
    cr_assert_eq(cudaMemcpyAsync(ha, d, N * sizeof(int), cudaMemcpyDeviceToHost, a), cudaSuccess);
    /* b waits for a's work up to the record; c forgets to */
    cr_assert_eq(cudaStreamWaitEvent(b, ev, 0), cudaSuccess);
    cr_assert_eq(cudaMemcpyAsync(hb, d, N * sizeof(int), cudaMemcpyDeviceToHost, b), cudaSuccess);
    cr_assert_eq(cudaMemcpyAsync(hc, d, N * sizeof(int), cudaMemcpyDeviceToHost, c), cudaSuccess);
    cr_assert_eq(cudaStreamSynchronize(c), cudaSuccess);
    assert_all(hc, GARBAGE, "without a wait, c reads d before a wrote it (the race shows)");
    cr_assert_eq(cudaStreamSynchronize(b), cudaSuccess);
    assert_all(hb, 8, "b after a's work up to the record");
    assert_all(ha, 0, "a's work after the record is still queued");
    cr_assert_eq(cudaStreamSynchronize(a), cudaSuccess);
    assert_all(ha, 9, "a after its own sync");
    cudaEventDestroy(ev);
    cudaFreeHost(ha);
    cudaFreeHost(hb);
    cudaFreeHost(hc);
    cudaFree(d);
    cudaStreamDestroy(a);
    cudaStreamDestroy(b);
    cudaStreamDestroy(c);
}

Test(emu_stream, event_synchronize_runs_up_to_the_event_only)
{
    cudaStream_t s = nb_stream();
    cudaEvent_t e0, e1, mid;
    cr_assert_eq(cudaEventCreate(&e0), cudaSuccess);
    cr_assert_eq(cudaEventCreate(&e1), cudaSuccess);
    cr_assert_eq(cudaEventCreate(&mid), cudaSuccess);
    int *d = dev_alloc(N * sizeof(int)), *h1 = pinned_ints(0), *h2 = pinned_ints(0);
    cr_assert_eq(cudaEventRecord(e0, s), cudaSuccess);
    tk_fill(d, N, 2, s);
    cr_assert_eq(cudaMemcpyAsync(h1, d, N * sizeof(int), cudaMemcpyDeviceToHost, s), cudaSuccess);
    cr_assert_eq(cudaEventRecord(mid, s), cudaSuccess);
    tk_fill(d, N, 3, s);
    cr_assert_eq(cudaMemcpyAsync(h2, d, N * sizeof(int), cudaMemcpyDeviceToHost, s), cudaSuccess);
    cr_assert_eq(cudaEventRecord(e1, s), cudaSuccess);
    float ms = -1.0f;
    cr_assert_eq(cudaEventElapsedTime(&ms, e0, e1), cudaErrorNotReady, "events still pending");
    cr_assert_eq(cudaGetLastError(), cudaSuccess, "not ready is a status, not an error");
    cr_assert_eq(cudaEventSynchronize(mid), cudaSuccess);
    assert_all(h1, 2, "work before the event");
    assert_all(h2, 0, "work after the event is still queued");
    cr_assert_eq(cudaEventElapsedTime(&ms, e0, e1), cudaErrorNotReady);
    cr_assert_eq(cudaEventElapsedTime(&ms, e0, mid), cudaSuccess);
    cr_assert_geq(ms, 0.0f);
    cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess);
    assert_all(h2, 3, "after the stream's sync");
    cr_assert_eq(cudaEventElapsedTime(&ms, e0, e1), cudaSuccess);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaEventDestroy(mid);
    cudaFreeHost(h1);
    cudaFreeHost(h2);
    cudaFree(d);
    cudaStreamDestroy(s);
}

Test(emu_stream, host_overwrite_of_a_pinned_source_before_sync_is_seen_by_the_copy)
{
    cudaStream_t s = nb_stream();
    int *d = dev_alloc(N * sizeof(int)), *h = pinned_ints(1), back[N];
    cr_assert_eq(cudaMemcpyAsync(d, h, N * sizeof(int), cudaMemcpyHostToDevice, s), cudaSuccess);
    for (int i = 0; i < N; i++) /* the race: the next batch staged before the copy ran */
        h[i] = 2;
    cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess);
    cr_assert_eq(cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_all(back, 2, "the copy read the pinned buffer when it ran");
    /* synchronised before the overwrite: the copy has its data */
    cr_assert_eq(cudaMemcpyAsync(d, h, N * sizeof(int), cudaMemcpyHostToDevice, s), cudaSuccess);
    cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess);
    for (int i = 0; i < N; i++)
        h[i] = 3;
    cr_assert_eq(cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_all(back, 2, "synchronised copy");
    /* a pageable source is staged by the call, as CUDA does: no race */
    int pageable[N];
    for (int i = 0; i < N; i++)
        pageable[i] = 4;
    cr_assert_eq(cudaMemcpyAsync(d, pageable, sizeof pageable, cudaMemcpyHostToDevice, s),
                 cudaSuccess);
    for (int i = 0; i < N; i++)
        pageable[i] = 5;
    cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess);
    cr_assert_eq(cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_all(back, 4, "a pageable source is read at the call");
    cudaFreeHost(h);
    cudaFree(d);
    cudaStreamDestroy(s);
}

Test(emu_stream, synchronous_copies_wait_for_blocking_streams_only)
{
    cudaStream_t nb = nb_stream(), blocking;
    cr_assert_eq(cudaStreamCreate(&blocking), cudaSuccess);
    int *d1 = dev_alloc(N * sizeof(int)), *d2 = dev_alloc(N * sizeof(int)), h[N];
    tk_fill(d1, N, 1, nb);
    tk_fill(d2, N, 2, blocking);
    cr_assert_eq(cudaMemcpy(h, d1, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_all(h, GARBAGE, "the legacy stream does not wait for a non-blocking stream");
    cr_assert_eq(cudaMemcpy(h, d2, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_all(h, 2, "the legacy stream waits for a blocking stream");
    /* and a blocking stream waits for earlier legacy work */
    int *hp = pinned_ints(0);
    tk_fill(d2, N, 6, 0);
    cr_assert_eq(cudaMemcpyAsync(hp, d2, N * sizeof(int), cudaMemcpyDeviceToHost, blocking),
                 cudaSuccess);
    cr_assert_eq(cudaStreamSynchronize(blocking), cudaSuccess);
    assert_all(hp, 6, "blocking stream after the legacy launch");
    cr_assert_eq(cudaDeviceSynchronize(), cudaSuccess);
    cr_assert_eq(cudaMemcpy(h, d1, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_all(h, 1, "after cudaDeviceSynchronize");
    cudaFreeHost(hp);
    cudaFree(d1);
    cudaFree(d2);
    cudaStreamDestroy(nb);
    cudaStreamDestroy(blocking);
}

static void set_flag(void *p) { *(int *)p = 1; }

Test(emu_stream, host_functions_and_cublas_run_in_stream_order)
{
    cudaStream_t s = nb_stream();
    int flag = 0;
    cr_assert_eq(cudaLaunchHostFunc(s, set_flag, &flag), cudaSuccess);
    cr_assert_eq(flag, 0, "a host function is queued");
    /* y = alpha x + y, alpha read at the call (host pointer mode) */
    cublasHandle_t blas;
    cr_assert_eq(cublasCreate(&blas), CUBLAS_STATUS_SUCCESS);
    cr_assert_eq(cublasSetStream(blas, s), CUBLAS_STATUS_SUCCESS);
    float *x = dev_alloc(4 * sizeof(float)), *y = dev_alloc(4 * sizeof(float)), hy[4];
    const float one[4] = {1, 1, 1, 1};
    cr_assert_eq(cudaMemcpy(x, one, sizeof one, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(cudaMemcpy(y, one, sizeof one, cudaMemcpyHostToDevice), cudaSuccess);
    float alpha = 2.0f;
    cr_assert_eq(cublasSaxpy(blas, 4, &alpha, x, 1, y, 1), CUBLAS_STATUS_SUCCESS);
    alpha = 100.0f;
    cr_assert_eq(cudaMemcpy(hy, y, sizeof hy, cudaMemcpyDeviceToHost), cudaSuccess);
    cr_assert_eq(hy[0], 1.0f, "the saxpy is queued on a non-blocking stream");
    cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess);
    cr_assert_eq(flag, 1);
    cr_assert_eq(cudaMemcpy(hy, y, sizeof hy, cudaMemcpyDeviceToHost), cudaSuccess);
    cr_assert_eq(hy[3], 3.0f, "alpha as it was at the call");
    cublasDestroy(blas);
    cudaFree(x);
    cudaFree(y);
    cudaStreamDestroy(s);
}

Test(emu_stream, eager_mode_runs_at_the_call)
{
    cr_assert_eq(emu_set_streams("bogus"), -1);
    cudaStream_t s = nb_stream();
    int *d = dev_alloc(N * sizeof(int)), *h = pinned_ints(0);
    tk_fill(d, N, 4, s);
    cr_assert_eq(cudaMemcpyAsync(h, d, N * sizeof(int), cudaMemcpyDeviceToHost, s), cudaSuccess);
    cr_assert_eq(emu_set_streams("eager"), 0); /* runs what is queued */
    assert_all(h, 4, "switching modes drains the queues");
    tk_fill(d, N, 5, s);
    cr_assert_eq(cudaMemcpyAsync(h, d, N * sizeof(int), cudaMemcpyDeviceToHost, s), cudaSuccess);
    assert_all(h, 5, "eager: done at the call");
    cudaFreeHost(h);
    cudaFree(d);
    cudaStreamDestroy(s);
}

static cudaStream_t self_stream;
static void sync_own_stream(void *p) { cudaStreamSynchronize(self_stream); }
static void host_fn_syncs_its_stream(void)
{
    self_stream = nb_stream();
    cudaLaunchHostFunc(self_stream, sync_own_stream, NULL);
    cudaStreamSynchronize(self_stream);
}

Test(emu_stream, host_function_waiting_for_its_stream_is_reported, .timeout = 60)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        alarm(30);
        host_fn_syncs_its_stream();
        _exit(0);
    }
    close(fds[1]);
    char buf[4096];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = 0;
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "status %d, log:\n%s", st, buf);
    cr_assert(strstr(buf, "host function"), "log:\n%s", buf);
}

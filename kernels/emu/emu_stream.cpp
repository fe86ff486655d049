/* Streams and events under emulation. In the default "defer" mode every stream holds a FIFO of
 * pending work (launches, async copies and memsets, event records, waits, host functions,
 * cuBLAS calls) that runs only when the host waits for it (stream/event/device synchronisation,
 * a synchronous copy, cudaFree), as late as CUDA allows: a host-side ordering bug (a pinned
 * buffer reused before its copy ran, a result read before its copy ran, a missing
 * cudaStreamWaitEvent) then shows under `make test` instead of only on a GPU. "eager" (env
 * SF_EMU_STREAMS=eager) runs every operation when it is issued.
 *
 * Streams made with cudaStreamNonBlocking are independent; the NULL (legacy) stream waits for
 * the earlier work of every blocking stream and they for its earlier work, as CUDA's legacy
 * default stream does. Work runs on whichever host thread forces it, under one lock. */
#include "emu_internal.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

/* One queued operation: work to run, or a wait for another stream to reach one of its ops. */
struct emu_op {
    std::function<void()> fn; /* empty for a wait */
    emu_stream *wait = nullptr;
    unsigned long long wait_id = 0, wait_seq = 0;
};

struct emu_stream {
    emu_stream(unsigned f, unsigned long long i) : flags(f), id(i) {}
    unsigned flags;
    unsigned long long id; /* never reused, so a wait can tell a destroyed stream */
    std::deque<emu_op> q;
    unsigned long long enq = 0, done = 0; /* ops 1..enq issued, 1..done run */
    bool busy = false;
};

struct emu_event {
    unsigned flags;
    unsigned long long id;
    /* the latest cudaEventRecord: op `seq` of stream `st` (which had id st_id) */
    emu_stream *st = nullptr;
    unsigned long long st_id = 0, seq = 0, gen = 0;
    bool pending = false;  /* recorded, and that record has not run */
    bool recorded = false; /* some record has run: ms is its time */
    double ms = 0.0;
};

namespace {

enum { M_UNSET, M_EAGER, M_DEFER };

/* Heap state that is never freed: atexit handlers and static destructors of the program may
 * still call cudaFree and friends after this file's statics would have been destroyed. */
struct State {
    std::recursive_mutex mu; /* recursive: a host function may issue work */
    std::set<emu_stream *> streams;
    std::set<emu_event *> events;
    emu_stream legacy{cudaStreamDefault, 0};
    unsigned long long next_id = 1;
};

State &st()
{
    static State *s = new State();
    return *s;
}

std::atomic<int> mode{M_UNSET};
std::atomic<unsigned long long> max_queued{0};
std::once_flag mode_once;

int parse_mode(const char *spec)
{
    if (!spec || !*spec || !strcmp(spec, "defer"))
        return M_DEFER;
    if (!strcmp(spec, "eager"))
        return M_EAGER;
    return M_UNSET;
}

bool deferred()
{
    std::call_once(mode_once, [] {
        const char *e = getenv("SF_EMU_STREAMS");
        const int m = parse_mode(e);
        if (m == M_UNSET)
            emu_fatal("SF_EMU_STREAMS='%s' is neither eager nor defer; set it to one of those", e);
        mode = m;
    });
    return mode.load() == M_DEFER;
}

typedef std::lock_guard<std::recursive_mutex> Guard;

/* The rest assume st().mu is held. */
emu_stream *resolve(cudaStream_t s)
{
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread)
        return &st().legacy;
    return s;
}

emu_stream *live_stream(emu_stream *s, unsigned long long id)
{
    if (s == &st().legacy)
        return s;
    return st().streams.count(s) && s->id == id ? s : nullptr;
}

void run_until(emu_stream *s, unsigned long long seq)
{
    while (s->done < seq) {
        if (s->busy)
            emu_fatal("a stream's queued host function (cudaLaunchHostFunc) waits for its own "
                      "stream; CUDA forbids CUDA calls inside host functions");
        emu_op op = std::move(s->q.front());
        s->q.pop_front();
        s->busy = true;
        if (op.wait) {
            /* a destroyed stream was drained when it was destroyed */
            if (emu_stream *t = live_stream(op.wait, op.wait_id))
                run_until(t, op.wait_seq);
        } else {
            op.fn();
        }
        s->busy = false;
        s->done++;
    }
}

void drain(emu_stream *s) { run_until(s, s->enq); }

void drain_all()
{
    drain(&st().legacy);
    /* a copy: a host function run here may create or destroy streams */
    const std::vector<emu_stream *> all(st().streams.begin(), st().streams.end());
    for (emu_stream *s : all)
        if (emu_stream *t = live_stream(s, s->id))
            drain(t);
}

void push(emu_stream *s, emu_op op)
{
    s->q.push_back(std::move(op));
    s->enq++;
    if (s->q.size() > max_queued.load(std::memory_order_relaxed))
        max_queued.store(s->q.size(), std::memory_order_relaxed);
}

/* s waits until t has run its op `seq` (nothing to wait for if it already has). */
void push_wait(emu_stream *s, emu_stream *t, unsigned long long seq)
{
    if (t == s || t->done >= seq)
        return;
    emu_op w;
    w.wait = t;
    w.wait_id = t->id;
    w.wait_seq = seq;
    push(s, std::move(w));
}

/* Legacy default-stream semantics, applied before each op issued on s. */
void implicit_waits(emu_stream *s)
{
    State &S = st();
    if (s == &S.legacy) {
        for (emu_stream *b : S.streams)
            if (!(b->flags & cudaStreamNonBlocking))
                push_wait(s, b, b->enq);
    } else if (!(s->flags & cudaStreamNonBlocking)) {
        push_wait(s, &S.legacy, S.legacy.enq);
    }
}

/* Runs the stream of e's latest record up to that record. */
void force_event(emu_event *e)
{
    if (!e->pending)
        return;
    if (emu_stream *t = live_stream(e->st, e->st_id))
        run_until(t, e->seq);
}

bool event_ok(cudaEvent_t e) { return e && st().events.count(e); }

double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

} // namespace

/* ---- emulator internals ------------------------------------------------------------------ */
int emu_stream_ok(cudaStream_t s)
{
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread)
        return 1;
    Guard g(st().mu);
    return st().streams.count(s) != 0;
}

int emu_streams_deferred(void) { return deferred() ? 1 : 0; }

void emu_enqueue(cudaStream_t s, std::function<void()> fn)
{
    const bool defer = deferred();
    Guard g(st().mu);
    emu_stream *t = resolve(s);
    implicit_waits(t);
    emu_op op;
    op.fn = std::move(fn);
    push(t, std::move(op));
    if (!defer)
        drain(t);
}

void emu_stream_drain(cudaStream_t s)
{
    Guard g(st().mu);
    emu_stream *t = resolve(s);
    /* a synchronisation of the legacy stream also orders after the blocking streams */
    if (t == &st().legacy)
        implicit_waits(t);
    drain(t);
}

void emu_legacy_drain() { emu_stream_drain(nullptr); }

unsigned long long emu_max_queued() { return max_queued.load(); }

void emu_drain_all()
{
    Guard g(st().mu);
    drain_all();
}

extern "C" int emu_set_streams(const char *spec)
{
    const int m = parse_mode(spec);
    if (m == M_UNSET || !spec)
        return -1;
    deferred(); /* settle the environment's choice first, so it cannot override this one */
    Guard g(st().mu);
    drain_all(); /* work queued under the old mode runs before the switch */
    mode = m;
    return 0;
}

/* ---- runtime API: streams, events, device ----------------------------------------------- */
extern "C" {

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    if (!s || flags > cudaStreamNonBlocking)
        return emu_set_error(cudaErrorInvalidValue);
    Guard g(st().mu);
    emu_stream *t = new emu_stream{flags, st().next_id++};
    st().streams.insert(t);
    *s = t;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }

/* CUDA lets the queued work finish after the call returns; here it runs first, which is
 * indistinguishable to a correct program and keeps the stream's ops from outliving it. */
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    Guard g(st().mu);
    if (!s || !st().streams.count(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    drain(s);
    st().streams.erase(s);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (!emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    emu_stream_drain(s);
    return cudaSuccess;
}

/* Forces the stream and reports it idle: a poll that never saw progress would spin forever,
 * as nothing runs queued work in the background. */
cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags)
{
    if (!emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    Guard g(st().mu);
    if (!event_ok(e))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    emu_stream *t = resolve(s);
    implicit_waits(t);
    /* the wait binds to the record issued so far; a never-recorded or completed event is no
     * wait at all, as in CUDA */
    if (e->pending)
        if (emu_stream *r = live_stream(e->st, e->st_id))
            push_wait(t, r, e->seq);
    if (!deferred())
        drain(t);
    return cudaSuccess;
}

cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void *user_data)
{
    if (!emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    if (!fn)
        return emu_set_error(cudaErrorInvalidValue);
    emu_enqueue(s, [fn, user_data]() { fn(user_data); });
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    emu_drain_all();
    return cudaSuccess;
}

cudaError_t cudaDeviceReset(void)
{
    emu_drain_all();
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    if (!e || flags > (cudaEventBlockingSync | cudaEventDisableTiming))
        return emu_set_error(cudaErrorInvalidValue);
    Guard g(st().mu);
    emu_event *ev = new emu_event();
    ev->flags = flags;
    ev->id = st().next_id++;
    st().events.insert(ev);
    *e = ev;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    if (!emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    const bool defer = deferred();
    Guard g(st().mu);
    if (!event_ok(e))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    emu_stream *t = resolve(s);
    implicit_waits(t);
    const unsigned long long id = e->id, gen = ++e->gen;
    emu_op op;
    /* the time is taken when the record runs; a later re-record supersedes this one */
    op.fn = [e, id, gen]() {
        if (!st().events.count(e) || e->id != id || e->gen != gen)
            return;
        e->ms = now_ms();
        e->recorded = true;
        e->pending = false;
    };
    push(t, std::move(op));
    e->st = t;
    e->st_id = t->id;
    e->seq = t->enq;
    e->pending = true;
    if (!defer)
        drain(t);
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    Guard g(st().mu);
    if (!event_ok(e))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    force_event(e);
    return cudaSuccess;
}

/* Forces the event and reports it complete, for the reason cudaStreamQuery does. */
cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (!ms)
        return emu_set_error(cudaErrorInvalidValue);
    Guard g(st().mu);
    if (!event_ok(start) || !event_ok(end) || (start->flags & cudaEventDisableTiming) ||
        (end->flags & cudaEventDisableTiming))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    if ((!start->recorded && !start->pending) || (!end->recorded && !end->pending))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    if (start->pending || end->pending) /* not run yet: the caller must synchronise first; a
                                           status, not an error, so not the last error */
        return cudaErrorNotReady;
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}

/* CUDA releases a pending event once its record completes; here the record is run first. */
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    Guard g(st().mu);
    if (!event_ok(e))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    force_event(e);
    st().events.erase(e);
    delete e;
    return cudaSuccess;
}

} /* extern "C" */

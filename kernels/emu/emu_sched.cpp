/* Kernel launches under emulation: one fiber per CUDA thread, blocks one after another on the
 * OS thread that runs the launch (the one that forces its stream, emu_stream.cpp). Barriers and warp intrinsics park the fiber; when no fiber can run, the
 * scheduler completes whole warp groups (every lane named in the mask waiting in the same
 * intrinsic with the same mask) or the block barrier (every live thread waiting at the same
 * __syncthreads), and otherwise reports the deadlock or mask error and aborts.
 *
 * Sanitizers: fiber switches are announced to ASan (stack switching) and to TSan (as switches
 * without synchronisation); barriers, __syncwarp and block boundaries are made explicit
 * happens-before edges, so TSan reports shared-memory accesses not separated by a barrier.
 * The scheduler's own code is not TSan-instrumented (its bookkeeping is not the kernel's). */
#include "emu_internal.h"

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#if !defined(__x86_64__) && !defined(SF_EMU_UCONTEXT)
#define SF_EMU_UCONTEXT 1
#endif
#ifdef SF_EMU_UCONTEXT
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define EMU_TSAN 1
#define EMU_NO_TSAN __attribute__((no_sanitize_thread))
#else
#define EMU_TSAN 0
#define EMU_NO_TSAN
#endif

__thread uint3 threadIdx;
__thread uint3 blockIdx;
__thread dim3 blockDim;
__thread dim3 gridDim;

#ifndef SF_EMU_UCONTEXT
extern "C" void emu_fiber_switch(void **save_sp, void *new_sp);
extern "C" void emu_fiber_trampoline(void);
#endif

namespace {

enum { F_READY, F_BARRIER, F_WARP, F_DONE };
enum { S_FORWARD, S_REVERSE, S_RANDOM };

struct Sched;

struct Fiber {
    void *sp = nullptr;
#ifdef SF_EMU_UCONTEXT
    ucontext_t uc;
#endif
    char *map = nullptr;
    size_t map_size = 0;
    char *stack_lo = nullptr;
    size_t stack_size = 0;
    void *tsan_fiber = nullptr;
    void *asan_fake = nullptr;
    Sched *s = nullptr;
    /* this block */
    unsigned tid = 0;
    uint3 idx{0, 0, 0};
    int state = F_DONE;
    /* what it waits in */
    int kind = 0, pred = 0, size = 0, param = 0, width = 32;
    unsigned mask = 0;
    const char *file = "";
    int line = 0;
    uint64_t val = 0, res = 0;
};

struct Sched {
    std::vector<Fiber *> pool;
    std::vector<unsigned> order;
    void *main_sp = nullptr;
#ifdef SF_EMU_UCONTEXT
    ucontext_t main_uc;
#endif
    const void *main_stack_lo = nullptr;
    size_t main_stack_size = 0;
    void *main_tsan = nullptr;
    bool quit = false;
    bool in_launch = false;
    /* current launch */
    void (*body)(void *) = nullptr;
    void *ctx = nullptr;
    const char *kname = "", *kfile = "";
    int kline = 0;
    dim3 grid, block;
    unsigned nthreads = 0;
    unsigned ndone = 0;
    char *dyn = nullptr;
    size_t dyn_size = 0;
    uint64_t rng = 0;
    unsigned rng_gen = ~0u;
    unsigned long long switches = 0;
    ~Sched();
};

__thread Sched *tls_sched;
__thread Fiber *tls_cur;

/* Frees this OS thread's fibers when it exits. */
struct SchedOwner {
    Sched *s = nullptr;
    ~SchedOwner() { delete s; }
};
thread_local SchedOwner tls_owner;

std::atomic<unsigned long long> st_launches{0}, st_blocks{0}, st_switches{0};

/* schedule selection, process-wide */
std::once_flag sched_once;
std::atomic<int> sched_mode{S_FORWARD};
std::atomic<uint64_t> sched_seed{0x5eed};
std::atomic<unsigned> sched_gen{0};

int parse_schedule(const char *spec)
{
    if (!spec || !*spec || !strcmp(spec, "forward")) {
        sched_mode = S_FORWARD;
    } else if (!strcmp(spec, "reverse")) {
        sched_mode = S_REVERSE;
    } else if (!strncmp(spec, "random", 6) && (spec[6] == 0 || spec[6] == ':')) {
        uint64_t seed = 0x5eed;
        if (spec[6] == ':') {
            char *end = nullptr;
            errno = 0;
            seed = strtoull(spec + 7, &end, 0);
            if (errno || end == spec + 7 || *end)
                return -1;
        }
        sched_seed = seed;
        sched_mode = S_RANDOM;
    } else {
        return -1;
    }
    sched_gen++;
    return 0;
}

void init_schedule_from_env()
{
    std::call_once(sched_once, [] {
        const char *e = getenv("SF_EMU_SCHEDULE");
        if (e && parse_schedule(e) != 0)
            emu_fatal("SF_EMU_SCHEDULE='%s' is not forward, reverse, random or random:SEED; "
                      "set it to one of those",
                      e);
    });
}

size_t stack_bytes()
{
    static size_t bytes = [] {
        size_t kb = EMU_ASAN ? 512 : (EMU_TSAN ? 256 : 64);
        const char *e = getenv("SF_EMU_STACK_KB");
        if (e && atoi(e) >= 16)
            kb = (size_t)atoi(e);
        return kb * 1024;
    }();
    return bytes;
}

/* ---- context switching ------------------------------------------------------------------ */
[[noreturn]] void fiber_main(Fiber *f);

#ifdef SF_EMU_UCONTEXT
void uc_entry(unsigned lo, unsigned hi)
{
    fiber_main((Fiber *)(((uintptr_t)hi << 32) | lo));
}
#endif

EMU_NO_TSAN void raw_switch_to_fiber(Sched *s, Fiber *f)
{
#ifdef SF_EMU_UCONTEXT
    swapcontext(&s->main_uc, &f->uc);
#else
    emu_fiber_switch(&s->main_sp, f->sp);
#endif
}

EMU_NO_TSAN void raw_switch_to_main(Sched *s, Fiber *f)
{
#ifdef SF_EMU_UCONTEXT
    swapcontext(&f->uc, &s->main_uc);
#else
    emu_fiber_switch(&f->sp, s->main_sp);
#endif
}

/* main -> f; returns when f parks or finishes */
EMU_NO_TSAN void resume(Sched *s, Fiber *f)
{
    threadIdx = f->idx;
    tls_cur = f;
    s->switches++;
#if EMU_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f->stack_lo, f->stack_size);
#endif
#if EMU_TSAN
    __tsan_switch_to_fiber(f->tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
    raw_switch_to_fiber(s, f);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    tls_cur = nullptr;
}

/* f -> main; returns when the scheduler resumes f */
EMU_NO_TSAN void park(Fiber *f)
{
    Sched *s = f->s;
#if EMU_ASAN
    __sanitizer_start_switch_fiber(&f->asan_fake, s->main_stack_lo, s->main_stack_size);
#endif
#if EMU_TSAN
    __tsan_switch_to_fiber(s->main_tsan, __tsan_switch_to_fiber_no_sync);
#endif
    raw_switch_to_main(s, f);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(f->asan_fake, &s->main_stack_lo, &s->main_stack_size);
#endif
}

EMU_NO_TSAN void fiber_main(Fiber *f)
{
    Sched *s = f->s;
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &s->main_stack_lo, &s->main_stack_size);
#endif
    while (!s->quit) {
        s->body(s->ctx);
        f->state = F_DONE;
        s->ndone++;
        park(f);
    }
    /* leave for good: ASan drops this fiber's fake stack */
#if EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, s->main_stack_lo, s->main_stack_size);
#endif
#if EMU_TSAN
    __tsan_switch_to_fiber(s->main_tsan, __tsan_switch_to_fiber_no_sync);
#endif
    raw_switch_to_main(s, f);
    abort(); /* never resumed */
}

Fiber *fiber_new(Sched *s)
{
    Fiber *f = new Fiber();
    f->s = s;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    f->stack_size = stack_bytes();
    f->map_size = f->stack_size + page;
    void *m = mmap(nullptr, f->map_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED)
        emu_fatal("cannot map a %zu-byte fiber stack: %s", f->map_size, strerror(errno));
    f->map = (char *)m;
    if (mprotect(f->map, page, PROT_NONE) != 0) /* guard page below the stack */
        emu_fatal("mprotect of a fiber guard page failed: %s", strerror(errno));
    f->stack_lo = f->map + page;
#ifdef SF_EMU_UCONTEXT
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack_lo;
    f->uc.uc_stack.ss_size = f->stack_size;
    f->uc.uc_link = nullptr;
    const uintptr_t p = (uintptr_t)f;
    makecontext(&f->uc, (void (*)())uc_entry, 2, (unsigned)(p & 0xffffffffu), (unsigned)(p >> 32));
#else
    /* frame popped by emu_fiber_switch: r15 r14 r13 r12 rbx rbp, then `ret` to the trampoline,
     * which calls r13(r12) with a 16-byte aligned stack */
    uintptr_t top = ((uintptr_t)(f->stack_lo + f->stack_size)) & ~(uintptr_t)15;
    void **sp = (void **)(top - 72);
    sp[0] = nullptr;                       /* r15 */
    sp[1] = nullptr;                       /* r14 */
    sp[2] = (void *)&fiber_main;           /* r13 */
    sp[3] = (void *)f;                     /* r12 */
    sp[4] = nullptr;                       /* rbx */
    sp[5] = nullptr;                       /* rbp: ends frame-pointer unwinds */
    sp[6] = (void *)&emu_fiber_trampoline; /* return address */
    f->sp = sp;
#endif
#if EMU_TSAN
    f->tsan_fiber = __tsan_create_fiber(0);
#endif
    return f;
}

Sched::~Sched()
{
    quit = true;
    for (Fiber *f : pool) {
        if (f->state == F_DONE) /* parked in fiber_main's loop (or never started) */
            resume(this, f);
#if EMU_TSAN
        __tsan_destroy_fiber(f->tsan_fiber);
#endif
        munmap(f->map, f->map_size);
        delete f;
    }
}

Sched *sched_get()
{
    if (!tls_sched) {
        tls_sched = new Sched();
        tls_owner.s = tls_sched;
#if EMU_TSAN
        tls_sched->main_tsan = __tsan_get_current_fiber();
#endif
    }
    return tls_sched;
}

/* ---- diagnostics ------------------------------------------------------------------------ */
const char *warp_name(int kind)
{
    static const char *const names[] = {
        "__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
        "__ballot_sync", "__any_sync", "__all_sync", "__match_any_sync", "__reduce_add_sync",
        "__reduce_min_sync", "__reduce_max_sync", "__reduce_min_sync", "__reduce_max_sync",
        "__reduce_and_sync", "__reduce_or_sync", "__reduce_xor_sync", "__activemask"};
    return kind >= 0 && kind < (int)(sizeof names / sizeof names[0]) ? names[kind] : "?";
}
const char *bar_name(int kind)
{
    static const char *const names[] = {"__syncthreads", "__syncthreads_count",
                                        "__syncthreads_and", "__syncthreads_or"};
    return kind >= 0 && kind < 4 ? names[kind] : "?";
}

[[noreturn]] void block_fatal(Sched *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void block_fatal(Sched *s, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emu_fatal("%s [kernel %s launched at %s:%d, grid (%u,%u,%u), block (%u,%u,%u), in block "
              "(%u,%u,%u)]",
              msg, s->kname, s->kfile, s->kline, s->grid.x, s->grid.y, s->grid.z, s->block.x,
              s->block.y, s->block.z, blockIdx.x, blockIdx.y, blockIdx.z);
}

/* ---- TSan happens-before edges ---------------------------------------------------------- */
#if EMU_TSAN
/* Every fiber in `from` happens before every fiber in `to` (nullptr = the host thread). A fresh
 * sync object per edge, so one edge never carries another's history. */
EMU_NO_TSAN void tsan_edge(Sched *s, Fiber **from, unsigned nfrom, Fiber **to, unsigned nto)
{
    char *obj = (char *)malloc(1);
    for (unsigned i = 0; i < nfrom; i++) {
        __tsan_switch_to_fiber(from[i] ? from[i]->tsan_fiber : s->main_tsan,
                               __tsan_switch_to_fiber_no_sync);
        __tsan_release(obj);
    }
    for (unsigned i = 0; i < nto; i++) {
        __tsan_switch_to_fiber(to[i] ? to[i]->tsan_fiber : s->main_tsan,
                               __tsan_switch_to_fiber_no_sync);
        __tsan_acquire(obj);
    }
    __tsan_switch_to_fiber(s->main_tsan, __tsan_switch_to_fiber_no_sync);
    free(obj);
}
#endif

/* ---- warp groups ------------------------------------------------------------------------ */
const uint64_t POISON = ~(uint64_t)0; /* a lane read outside the mask: NaN / -1 */

EMU_NO_TSAN void complete_group(Sched *s, Fiber **lanes, unsigned mask)
{
    Fiber *lead = lanes[__builtin_ctz(mask)];
    const int kind = lead->kind;
    uint64_t acc = 0;
    unsigned bits = 0;
    bool all = true, any = false;
    int64_t smin = INT64_MAX, smax = INT64_MIN;
    uint32_t umin = UINT32_MAX, umax = 0, band = UINT32_MAX, bor = 0, bxor = 0;
    uint32_t sum = 0;
    for (unsigned m = mask; m; m &= m - 1) {
        const int j = __builtin_ctz(m);
        const Fiber *g = lanes[j];
        const uint32_t v = (uint32_t)g->val;
        if (g->val)
            bits |= 1u << j;
        any = any || g->val;
        all = all && g->val;
        sum += v;
        if ((int32_t)v < smin)
            smin = (int32_t)v;
        if ((int32_t)v > smax)
            smax = (int32_t)v;
        umin = v < umin ? v : umin;
        umax = v > umax ? v : umax;
        band &= v;
        bor |= v;
        bxor ^= v;
    }
    for (unsigned m = mask; m; m &= m - 1) {
        const int i = __builtin_ctz(m);
        Fiber *g = lanes[i];
        switch (kind) {
        case EMU_W_SYNCWARP: acc = 0; break;
        case EMU_W_SHFL_IDX:
        case EMU_W_SHFL_UP:
        case EMU_W_SHFL_DOWN:
        case EMU_W_SHFL_XOR: {
            /* PTX shfl.sync: segments of `width` lanes; out-of-segment sources give the own value */
            const int w = g->width, b = g->param & 31;
            const int seg = 32 - w, min_lane = i & seg;
            const int max_lane = min_lane | (kind == EMU_W_SHFL_UP ? 0 : (31 & ~seg));
            int j = i;
            bool ok = true;
            if (kind == EMU_W_SHFL_IDX) {
                j = min_lane | (b & ~seg);
                ok = j <= max_lane;
            } else if (kind == EMU_W_SHFL_UP) {
                j = i - b;
                ok = j >= max_lane;
            } else if (kind == EMU_W_SHFL_DOWN) {
                j = i + b;
                ok = j <= max_lane;
            } else {
                j = i ^ b;
                ok = j <= max_lane;
            }
            if (!ok)
                j = i;
            acc = (mask >> j) & 1u ? lanes[j]->val : POISON;
            break;
        }
        case EMU_W_BALLOT: acc = bits; break;
        case EMU_W_ANY: acc = any; break;
        case EMU_W_ALL: acc = all; break;
        case EMU_W_MATCH_ANY: {
            unsigned same = 0;
            for (unsigned m2 = mask; m2; m2 &= m2 - 1) {
                const int j = __builtin_ctz(m2);
                if (lanes[j]->val == g->val)
                    same |= 1u << j;
            }
            acc = same;
            break;
        }
        case EMU_W_RED_ADD: acc = sum; break;
        case EMU_W_RED_MIN: acc = (uint32_t)(int32_t)smin; break;
        case EMU_W_RED_MAX: acc = (uint32_t)(int32_t)smax; break;
        case EMU_W_RED_UMIN: acc = umin; break;
        case EMU_W_RED_UMAX: acc = umax; break;
        case EMU_W_RED_AND: acc = band; break;
        case EMU_W_RED_OR: acc = bor; break;
        case EMU_W_RED_XOR: acc = bxor; break;
        default: block_fatal(s, "internal: unknown warp intrinsic %d", kind);
        }
        g->res = acc;
        g->state = F_READY;
    }
#if EMU_TSAN
    if (kind == EMU_W_SYNCWARP) {
        Fiber *grp[32];
        unsigned n = 0;
        for (unsigned m = mask; m; m &= m - 1)
            grp[n++] = lanes[__builtin_ctz(m)];
        tsan_edge(s, grp, n, grp, n);
    }
#else
    (void)s;
#endif
}

/* Completes every warp group whose lanes all wait with the same mask; reports a lane named in
 * a mask that has exited or does not exist. Returns whether any group completed. */
EMU_NO_TSAN bool resolve_warps(Sched *s)
{
    bool progress = false;
    const unsigned n = s->nthreads;
    for (unsigned base = 0; base < n; base += 32) {
        Fiber **lanes = s->pool.data() + base;
        const unsigned nl = n - base < 32 ? n - base : 32;
        unsigned seen = 0;
        for (unsigned l = 0; l < nl; l++) {
            Fiber *f = lanes[l];
            if (f->state != F_WARP || f->kind == EMU_W_ACTIVEMASK || ((seen >> l) & 1u))
                continue;
            const unsigned mask = f->mask;
            bool whole = true;
            for (unsigned m = mask; m; m &= m - 1) {
                const unsigned j = (unsigned)__builtin_ctz(m);
                if (j >= nl)
                    block_fatal(s,
                                "%s at %s:%d: thread %u (lane %u) passes mask 0x%08x, which names "
                                "lane %u, but that lane does not exist (the block has %u threads); "
                                "pass the exact mask of the participating lanes",
                                warp_name(f->kind), f->file, f->line, base + l, l, mask, j, n);
                const Fiber *g = lanes[j];
                if (g->state == F_DONE)
                    block_fatal(s,
                                "%s at %s:%d: thread %u (lane %u) passes mask 0x%08x, which names "
                                "lane %u, but thread %u exited without reaching it",
                                warp_name(f->kind), f->file, f->line, base + l, l, mask, j,
                                base + j);
                if (g->state != F_WARP || g->mask != mask)
                    whole = false;
            }
            if (!whole)
                continue;
            seen |= mask;
            for (unsigned m = mask; m; m &= m - 1) {
                const unsigned j = (unsigned)__builtin_ctz(m);
                const Fiber *g = lanes[j];
                if (g->kind != f->kind || g->width != f->width || g->size != f->size)
                    block_fatal(s,
                                "lanes of mask 0x%08x disagree: thread %u (lane %u) is in %s "
                                "(width %d) at %s:%d, thread %u (lane %u) in %s (width %d) at %s:%d",
                                mask, base + l, l, warp_name(f->kind), f->width, f->file, f->line,
                                base + j, j, warp_name(g->kind), g->width, g->file, g->line);
            }
            complete_group(s, lanes, mask);
            progress = true;
        }
    }
    if (progress)
        return true;
    /* only now __activemask: the lanes that gathered there are the converged ones */
    for (unsigned base = 0; base < n; base += 32) {
        Fiber **lanes = s->pool.data() + base;
        const unsigned nl = n - base < 32 ? n - base : 32;
        unsigned active = 0;
        for (unsigned l = 0; l < nl; l++)
            if (lanes[l]->state == F_WARP && lanes[l]->kind == EMU_W_ACTIVEMASK)
                active |= 1u << l;
        for (unsigned m = active; m; m &= m - 1) {
            Fiber *g = lanes[__builtin_ctz(m)];
            g->res = active;
            g->state = F_READY;
        }
        progress = progress || active;
    }
    return progress;
}

/* Releases the block barrier if every live thread waits at the same one. */
EMU_NO_TSAN bool release_barrier(Sched *s)
{
    const unsigned n = s->nthreads;
    Fiber **fs = s->pool.data();
    Fiber *first = nullptr;
    int count = 0;
    for (unsigned t = 0; t < n; t++) {
        Fiber *f = fs[t];
        if (f->state != F_BARRIER)
            return false;
        if (!first)
            first = f;
        else if (f->line != first->line || f->kind != first->kind ||
                 (f->file != first->file && strcmp(f->file, first->file)))
            return false;
        count += f->pred;
    }
    const int r = first->kind == EMU_BAR_COUNT ? count
                  : first->kind == EMU_BAR_AND ? (count == (int)n)
                  : first->kind == EMU_BAR_OR  ? (count > 0)
                                               : 0;
    for (unsigned t = 0; t < n; t++) {
        fs[t]->res = (uint64_t)(int64_t)r;
        fs[t]->state = F_READY;
    }
#if EMU_TSAN
    tsan_edge(s, fs, n, fs, n);
#endif
    return true;
}

/* Nothing can run and nothing can complete: say why and abort. */
[[noreturn]] EMU_NO_TSAN void diagnose(Sched *s)
{
    const unsigned n = s->nthreads;
    Fiber **fs = s->pool.data();
    /* a warp lane whose mask partner waits somewhere else */
    for (unsigned t = 0; t < n; t++) {
        const Fiber *f = fs[t];
        if (f->state != F_WARP || f->kind == EMU_W_ACTIVEMASK)
            continue;
        const unsigned base = t & ~31u;
        for (unsigned m = f->mask; m; m &= m - 1) {
            const unsigned j = base + (unsigned)__builtin_ctz(m);
            const Fiber *g = fs[j];
            if (g->state == F_WARP && g->mask != f->mask)
                block_fatal(s,
                            "warp deadlock: thread %u waits in %s at %s:%d with mask 0x%08x, "
                            "thread %u waits in %s at %s:%d with mask 0x%08x; every lane named "
                            "in a mask must call the same intrinsic with the same mask",
                            t, warp_name(f->kind), f->file, f->line, f->mask, j,
                            warp_name(g->kind), g->file, g->line, g->mask);
            if (g->state == F_BARRIER)
                block_fatal(s,
                            "deadlock: thread %u waits in %s at %s:%d with mask 0x%08x, but "
                            "thread %u (named in the mask) waits at %s at %s:%d",
                            t, warp_name(f->kind), f->file, f->line, f->mask, j,
                            bar_name(g->kind), g->file, g->line);
        }
    }
    /* the block barrier */
    const Fiber *b0 = nullptr;
    unsigned nbar = 0, ndone = 0, nwarp = 0, nother = 0;
    const Fiber *done0 = nullptr, *other = nullptr, *warp0 = nullptr;
    for (unsigned t = 0; t < n; t++) {
        const Fiber *f = fs[t];
        if (f->state == F_DONE) {
            ndone++;
            if (!done0)
                done0 = f;
        } else if (f->state == F_WARP) {
            nwarp++;
            if (!warp0)
                warp0 = f;
        } else if (f->state == F_BARRIER) {
            if (!b0)
                b0 = f;
            if (f->line == b0->line && f->kind == b0->kind && !strcmp(f->file, b0->file))
                nbar++;
            else if (!nother++)
                other = f;
        }
    }
    if (b0 && nother)
        block_fatal(s,
                    "deadlock: threads wait at different barriers: %u at %s at %s:%d (e.g. thread "
                    "%u), others at %s at %s:%d (e.g. thread %u); no barrier inside divergent code",
                    nbar, bar_name(b0->kind), b0->file, b0->line, b0->tid,
                    bar_name(other->kind), other->file, other->line, other->tid);
    if (b0 && ndone)
        block_fatal(s,
                    "deadlock: %s at %s:%d: %u of %u threads wait there, %u exited without "
                    "reaching it (e.g. thread %u); no barrier inside divergent code",
                    bar_name(b0->kind), b0->file, b0->line, nbar, n, ndone, done0->tid);
    if (b0 && nwarp)
        block_fatal(s,
                    "deadlock: %u threads wait at %s at %s:%d while thread %u waits in %s at "
                    "%s:%d (mask 0x%08x)",
                    nbar, bar_name(b0->kind), b0->file, b0->line, warp0->tid,
                    warp_name(warp0->kind), warp0->file, warp0->line, warp0->mask);
    if (warp0)
        block_fatal(s, "warp deadlock: thread %u waits in %s at %s:%d with mask 0x%08x",
                    warp0->tid, warp_name(warp0->kind), warp0->file, warp0->line, warp0->mask);
    block_fatal(s, "internal: scheduler stuck");
}

uint64_t rng_next(uint64_t *x)
{
    /* splitmix64 */
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

EMU_NO_TSAN void run_block(Sched *s, int mode)
{
    const unsigned n = s->nthreads;
    Fiber **fs = s->pool.data();
    const unsigned bx = s->block.x, bxy = s->block.x * s->block.y;
    for (unsigned t = 0; t < n; t++) {
        Fiber *f = fs[t];
        f->tid = t;
        f->idx = uint3{t % bx, (t / bx) % s->block.y, t / bxy};
        f->state = F_READY;
    }
    s->ndone = 0;
    if (s->dyn_size)
        memset(s->dyn, 0xff, s->dyn_size); /* shared memory starts as garbage: NaN / -1 */
#if EMU_TSAN
    Fiber *host = nullptr;
    tsan_edge(s, &host, 1, fs, n); /* the host's work (and earlier blocks) before this block */
#endif
    std::vector<unsigned> &order = s->order;
    order.resize(n);
    for (;;) {
        for (unsigned i = 0; i < n; i++)
            order[i] = mode == S_REVERSE ? n - 1 - i : i;
        if (mode == S_RANDOM)
            for (unsigned i = n; i > 1; i--) {
                const unsigned j = (unsigned)(rng_next(&s->rng) % i);
                const unsigned x = order[i - 1];
                order[i - 1] = order[j];
                order[j] = x;
            }
        for (unsigned i = 0; i < n; i++) {
            Fiber *f = fs[order[i]];
            if (f->state == F_READY)
                resume(s, f);
        }
        if (s->ndone == n)
            break;
        if (resolve_warps(s) || release_barrier(s))
            continue;
        diagnose(s);
    }
#if EMU_TSAN
    tsan_edge(s, fs, n, &host, 1); /* this block before the host's next step */
#endif
}

/* One launch as issued: the configuration and the kernel call with its arguments (ctx, freed
 * with the last copy), run later in stream order. */
struct Launch {
    const char *name, *file;
    int line;
    dim3 grid, block;
    size_t shmem;
    int mode;
    void (*body)(void *);
    std::shared_ptr<void> ctx;
};

EMU_NO_TSAN void run_launch(const Launch &L)
{
    Sched *s = sched_get();
    if (s->in_launch || tls_cur) /* only a host function could get here from a kernel */
        emu_fatal("%s:%d: launch of %s runs inside another kernel; CUDA calls are not allowed in "
                  "kernels or host functions",
                  L.file, L.line, L.name);
    if (s->rng_gen != sched_gen.load()) { /* a new schedule restarts the random sequence */
        s->rng_gen = sched_gen.load();
        s->rng = sched_seed.load();
    }
    const unsigned long long nt = (unsigned long long)L.block.x * L.block.y * L.block.z;
    s->switches = 0;
    while (s->pool.size() < nt)
        s->pool.push_back(fiber_new(s));
    s->in_launch = true;
    s->body = L.body;
    s->ctx = L.ctx.get();
    s->kname = L.name;
    s->kfile = L.file;
    s->kline = L.line;
    s->grid = L.grid;
    s->block = L.block;
    s->nthreads = (unsigned)nt;
    s->dyn_size = L.shmem;
    s->dyn = nullptr;
    if (L.shmem && posix_memalign((void **)&s->dyn, 16, L.shmem) != 0)
        emu_fatal("cannot allocate %zu bytes of dynamic shared memory", L.shmem);
    gridDim = L.grid;
    blockDim = L.block;
    for (unsigned z = 0; z < L.grid.z; z++)
        for (unsigned y = 0; y < L.grid.y; y++)
            for (unsigned x = 0; x < L.grid.x; x++) {
                blockIdx = uint3{x, y, z};
                run_block(s, L.mode);
                st_blocks.fetch_add(1, std::memory_order_relaxed);
            }
    free(s->dyn);
    s->dyn = nullptr;
    s->dyn_size = 0;
    s->in_launch = false;
    st_switches.fetch_add(s->switches, std::memory_order_relaxed);
    st_launches.fetch_add(1, std::memory_order_relaxed);
}

} // namespace

/* ---- entry points ----------------------------------------------------------------------- */
/* The configuration is checked here, at the launch, as CUDA reports it to cudaGetLastError
 * right away; the kernel runs when its stream reaches it. */
EMU_NO_TSAN void emu_launch_impl(const char *name, const char *file, int line, dim3 grid,
                                 dim3 block, size_t shmem, cudaStream_t stream,
                                 void (*body)(void *), void *ctx, void (*drop)(void *))
{
    init_schedule_from_env();
    if (tls_cur || (tls_sched && tls_sched->in_launch)) {
        drop(ctx);
        emu_fatal("%s:%d: launch of %s from inside a kernel (dynamic parallelism) is not "
                  "emulated",
                  file, line, name);
    }
    const unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
    const char *bad = nullptr;
    cudaError_t err = cudaErrorInvalidConfiguration;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0)
        bad = "the grid has a zero dimension";
    else if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u)
        bad = "the grid exceeds (2^31-1, 65535, 65535)";
    else if (block.x == 0 || block.y == 0 || block.z == 0)
        bad = "the block has a zero dimension";
    else if (block.x > 1024 || block.y > 1024 || block.z > 64 || nt > 1024)
        bad = "the block has more than 1024 threads (or exceeds (1024, 1024, 64))";
    else if (shmem > 101376) {
        bad = "the dynamic shared memory exceeds sharedMemPerBlockOptin (99 KiB)";
        err = cudaErrorInvalidValue;
    } else if (!emu_stream_ok(stream)) {
        bad = "the stream is not a live stream";
        err = cudaErrorInvalidResourceHandle;
    }
    if (bad) {
        fprintf(stderr,
                "saeforge-emu: launch of %s at %s:%d with grid (%u,%u,%u), block (%u,%u,%u), "
                "%zu bytes of shared memory fails: %s\n",
                name, file, line, grid.x, grid.y, grid.z, block.x, block.y, block.z, shmem, bad);
        drop(ctx);
        emu_set_error(err);
        return;
    }
    /* the schedule in force at the launch, as the caller chose it for this kernel */
    const Launch L{name, file, line, grid, block, shmem, sched_mode.load(), body,
                   std::shared_ptr<void>(ctx, drop)};
    emu_enqueue(stream, [L]() { run_launch(L); });
}

void *emu_dynamic_shared()
{
    Sched *s = tls_sched;
    if (!tls_cur || !s)
        emu_fatal("dynamic shared memory used outside a kernel");
    return s->dyn;
}

EMU_NO_TSAN int emu_block_barrier(int kind, int pred, const char *file, int line)
{
    Fiber *f = tls_cur;
    if (!f)
        emu_fatal("%s:%d: %s called outside a kernel", file, line, bar_name(kind));
    f->state = F_BARRIER;
    f->kind = kind;
    f->pred = pred;
    f->file = file;
    f->line = line;
    park(f);
    return (int)(int64_t)f->res;
}

EMU_NO_TSAN uint64_t emu_warp_op(int kind, unsigned mask, uint64_t value, int size, int param,
                                 int width, const char *file, int line)
{
    Fiber *f = tls_cur;
    if (!f)
        emu_fatal("%s:%d: %s called outside a kernel", file, line, warp_name(kind));
    const unsigned lane = f->tid & 31u;
    if (!((mask >> lane) & 1u))
        block_fatal(f->s,
                    "%s at %s:%d: thread %u (lane %u) passes mask 0x%08x, which does not "
                    "include its own lane",
                    warp_name(kind), file, line, f->tid, lane, mask);
    if (width < 1 || width > 32 || (width & (width - 1)))
        block_fatal(f->s, "%s at %s:%d: width %d is not a power of two in [1, 32]",
                    warp_name(kind), file, line, width);
    f->state = F_WARP;
    f->kind = kind;
    f->mask = mask;
    f->val = value;
    f->size = size;
    f->param = param;
    f->width = width;
    f->file = file;
    f->line = line;
    park(f);
    return f->res;
}

EMU_NO_TSAN unsigned emu_activemask(const char *file, int line)
{
    Fiber *f = tls_cur;
    if (!f)
        emu_fatal("%s:%d: __activemask called outside a kernel", file, line);
    f->state = F_WARP;
    f->kind = EMU_W_ACTIVEMASK;
    f->mask = 0;
    f->width = 32;
    f->size = 4;
    f->file = file;
    f->line = line;
    park(f);
    return (unsigned)f->res;
}

extern "C" int emu_set_schedule(const char *spec)
{
    init_schedule_from_env();
    return parse_schedule(spec);
}

extern "C" emu_stats emu_get_stats(void)
{
    emu_stats r;
    r.launches = st_launches.load();
    r.blocks = st_blocks.load();
    r.switches = st_switches.load();
    r.max_queued = emu_max_queued();
    return r;
}

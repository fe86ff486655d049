/* Internals of bselect.cu and bselect_1pass.cu (C++ only): selection state, workspace layout. */
#ifndef BSELECT_IMPL_CUH
#define BSELECT_IMPL_CUH

#include <stddef.h>

#include "bselect.cuh"
#include "select_common.cuh"

#define BSEL_THREADS 256    /* histogram / count / compaction blocks */
#define BSEL_SCAN_THREADS 1024

/* One-pass path (the CPU twin's constants, kernels/bselect.c). */
#define BSEL_SAMPLE_ROWS 256 /* the bound is estimated from every (B/256)-th row */
#define BSEL_MARGIN 2        /* the bound aims at BSEL_MARGIN * K candidates */
#define BSEL_CAP 8           /* more than BSEL_CAP * K candidates: the bound was too low */
/* The sample's coarse histogram buckets keys by bits 18..30 (buckets at most 1/32 of their value
 * wide); where the bucket of the sample's share is too full, a fine one splits it by bits 9..17. */
#define BSEL_SSHIFT 18
#define BSEL_SBINS (1 << (31 - BSEL_SSHIFT))
#define BSEL_SSHIFT2 9
#define BSEL_SBINS2 (1 << (BSEL_SSHIFT - BSEL_SSHIFT2))
#define BSEL_HIST_BINS (BSEL_SBINS + BSEL_SBINS2) /* > SEL_BINS: the radix passes fit too */
/* Tiles of the pass over pre: 256 threads x 4 float4. Each tile's candidates land contiguously
 * and in flat order, so a scan over the tiles puts them all in flat order. */
#define BSEL_TILE (BSEL_THREADS * 16)
/* Candidate capacity of the workspace: the callers size it from (B, n) alone, so it cannot follow
 * K; 512 per row holds 8K for k <= 64 per row, and the 2K aimed at for k <= 256. */
#define BSEL_CAND_PER_ROW 512
#define BSEL_CAND_MIN 16384

/* path: BSEL_PATH_* of bselect.cuh, or BSEL_PATH_TRY while the one-pass path is undecided. */
#define BSEL_PATH_TRY 100u

/* Selection state, in the workspace. Keep rule: key != 0 && key >= lo, or key == teq among the
 * first `need` such keys in flat-index order. On the fast path the rule is found, counted and
 * applied over the candidates instead of pre. */
typedef struct bsel_state {
    unsigned kk;     /* keys still to take inside the current prefix */
    unsigned prefix; /* digits chosen so far */
    unsigned lo, teq, need;
    unsigned done;   /* the rule is final */
    unsigned minkey; /* smallest key >= lo (count kernel) */
    unsigned path;   /* which route this call takes (read by every kernel of the call) */
    unsigned bound;  /* fast path: the candidates are the keys >= bound */
    unsigned ncand;  /* fast path: candidates the pass over pre found */
} bsel_state;

/* Workspace regions for a (B, n) call; every size grows with B and n, so a workspace sized for
 * the largest batch serves smaller ones. */
typedef struct bsel_ws {
    bsel_state *st;
    unsigned *hist;            /* BSEL_HIST_BINS */
    unsigned *row_gt, *row_eq; /* B */
    int *crow;                 /* B + 1: row b's candidates are [crow[b], crow[b+1]) */
    unsigned *tile_base;       /* nt: where the pass put tile t's candidates (cand_a) */
    unsigned *tile_off;        /* nt + 1: candidates of tiles < t (after the scan) */
    int *cand_a;               /* cap_ws: flat indices, tile order arbitrary */
    int *cflat;                /* cap_ws: flat indices in flat order */
    float *cval;               /* cap_ws: their values */
    long long cap_ws;
    int nt;
    size_t bytes;
} bsel_ws;

static inline size_t bsel_round(size_t x) { return (x + 255) & ~(size_t)255; }

/* Next region of `bytes` at *off (w may be NULL: sizes only). */
static inline void *bsel_take(char *w, size_t *off, size_t bytes)
{
    void *r = w ? w + *off : NULL;
    *off += bsel_round(bytes);
    return r;
}

static inline bsel_ws bsel_ws_layout(void *w, int B, int n)
{
    bsel_ws L;
    const size_t b = B > 0 ? (size_t)B : 0;
    const long long N = (long long)b * (n > 0 ? n : 0);
    const long long per_row = (long long)b * BSEL_CAND_PER_ROW;
    const long long cap = per_row > BSEL_CAND_MIN ? per_row : BSEL_CAND_MIN;
    L.cap_ws = cap < N ? cap : N;
    L.nt = (int)((N + BSEL_TILE - 1) / BSEL_TILE);
    char *p = (char *)w;
    size_t off = 0;
    L.st = (bsel_state *)bsel_take(p, &off, sizeof(bsel_state));
    L.hist = (unsigned *)bsel_take(p, &off, BSEL_HIST_BINS * 4);
    L.row_gt = (unsigned *)bsel_take(p, &off, b * 4);
    L.row_eq = (unsigned *)bsel_take(p, &off, b * 4);
    L.crow = (int *)bsel_take(p, &off, (b + 1) * 4);
    L.tile_base = (unsigned *)bsel_take(p, &off, (size_t)L.nt * 4);
    L.tile_off = (unsigned *)bsel_take(p, &off, ((size_t)L.nt + 1) * 4);
    L.cand_a = (int *)bsel_take(p, &off, (size_t)L.cap_ws * 4);
    L.cflat = (int *)bsel_take(p, &off, (size_t)L.cap_ws * 4);
    L.cval = (float *)bsel_take(p, &off, (size_t)L.cap_ws * 4);
    L.bytes = off;
    return L;
}

/* The one-pass front (bselect_1pass.cu): sample bound, the pass over pre, the decision, and the
 * candidates in flat order with their row ranges. Leaves st->path at FAST or a fallback reason;
 * the radix passes and the count / scan / compaction of bselect.cu then take the path it chose. */
void bsel_1pass_front(const float *pre, int B, int n, long long Kc, const bsel_ws *ws,
                      cudaStream_t stream);

#endif

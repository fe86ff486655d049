/* Memory the machine can give a run (host: MemAvailable, cgroup limit, ulimit -v), checked before
 * anything is allocated so an oversized config is refused with numbers instead of aborting. */
#ifndef MEMCHECK_H
#define MEMCHECK_H

#include <stdint.h>

#include "../kernels/sae_types.h"

/* Bytes of host memory this process may still allocate: the smallest of MemAvailable, the
 * cgroup's memory.max - memory.current and the address-space rlimit less what is mapped. -1
 * when none can be read. src (size len) names the limit that decided. */
int64_t memcheck_host_available(char *src, int len);

/* Device bytes a CUDA backend for (hp, max_B) allocates; 0 in builds without CUDA. */
int64_t memcheck_cuda_bytes(const sae_hparams *hp, int max_B);

/* Free memory of GPU 0, or -1 when there is none to ask (CPU and emulated builds). Both
 * memcheck_cuda_* live in host/backend_open.c, the file built once per variant. */
int64_t memcheck_cuda_available(void);

#endif

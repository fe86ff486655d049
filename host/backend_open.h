/* Picks the training backend for a run: cpu, cuda, or auto (cuda when usable, else cpu). */
#ifndef BACKEND_OPEN_H
#define BACKEND_OPEN_H

#include "../kernels/backend.h"

/* kind: 0 auto, 1 cpu, 2 cuda (sf_backend_kind). threads: CPU threads (0 = all cores).
 * Returns NULL with a one-line reason in why (size len) when the requested backend cannot be
 * opened. Builds without CUDA: cuda -> NULL, auto -> cpu with a notice on stderr. CUDA builds:
 * auto tries device 0, falls back to cpu with a notice. Emulated-CUDA builds (tests): auto ->
 * cpu (the emulator is for tests only), cuda -> the emulated device. */
/* The CUDA device a data-parallel rank uses (its node-local rank modulo the visible devices in
 * CUDA builds; 0 for one rank). */
int backend_open_dist_device(const sae_dist *dd);
/* backend_open on CUDA device `device` (the node-local rank of a data-parallel run). */
sae_backend *backend_open_on(const sae_hparams *hp, int max_B, int kind, int threads, int device,
                             char *why, int len);
sae_backend *backend_open(const sae_hparams *hp, int max_B, int kind, int threads, char *why,
                          int len);

#endif

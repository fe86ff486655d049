/* Sweeps (SPEC §7): the config's `sweep:` map of dotted keys to lists, its cartesian product
 * as member overrides and names, sweep.json, and the end-of-sweep table. */
#ifndef SWEEP_H
#define SWEEP_H

#include "sf_err.h"

#define SWEEP_MAX_KEYS 16
#define SWEEP_MAX_VALUES 64
#define SWEEP_MAX_MEMBERS 256

typedef struct sweep_key {
    char key[128];                      /* dotted, as in the file */
    int line;                           /* where it was given */
    int n_values;
    char values[SWEEP_MAX_VALUES][128]; /* scalar text as written */
} sweep_key;

typedef struct sweep_spec {
    int n_keys; /* 0: the config has no sweep (a solo run) */
    sweep_key keys[SWEEP_MAX_KEYS];
    int n_members;
} sweep_spec;

/* Reads the `sweep:` block of the config at path. Refuses keys that would change the data
 * stream (data.*, train.batch_tokens, train.total_tokens, backend, seed, out_dir,
 * checkpoint.every_steps) and malformed blocks with file:line:key and SF_EINPUT. */
int sweep_read(const char *path, sweep_spec *sp, sf_err *err);

/* Member i (0 <= i < n_members) of the product: its name (e.g. "k16-arch_topk") and its
 * overrides as "key=value" strings into ov (n_keys entries of ov_len bytes). */
void sweep_member(const sweep_spec *sp, int i, char *name, int name_len,
                  char ov[][256]);

/* Writes <dir>/sweep.json: {"members": {name: {key: value}}}, durably. */
int sweep_write_json(const char *dir, const sweep_spec *sp, sf_err *err);

/* A directory holding sweep.json. */
int sweep_is_dir(const char *dir);

/* Member names from <dir>/sweep.json (free with sweep_members_free). */
int sweep_members_read(const char *dir, char ***names, int *n, sf_err *err);
void sweep_members_free(char **names, int n);

/* The table `inspect` prints for a sweep dir: member, arch, k, n, FVU, L0, dead %, status. */
int sweep_print_table(const char *dir, sf_err *err);

#endif

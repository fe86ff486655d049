/* The `sweep:` block: read with libyaml beside the main config parse (config.c skips the key),
 * checked against the keys that must stay fixed, expanded into members. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "config.h"
#include "fsutil.h"
#include "json.h"
#include "sweep.h"

/* Keys shared by every member because they decide the one data stream (or the shared
 * checkpoint steps); `seed` seeds the shuffle as well as the init. */
static const char *const FIXED[] = {"backend", "seed", "out_dir", "train.batch_tokens",
                                    "train.total_tokens", "checkpoint.every_steps", NULL};

static const char *fixed_reason(const char *key)
{
    if (!strncmp(key, "data.", 5) || !strcmp(key, "data"))
        return "data.* keys decide the shard stream every member reads";
    for (int i = 0; FIXED[i]; i++)
        if (!strcmp(key, FIXED[i]))
            return !strcmp(key, "seed") ? "seed also seeds the data shuffle every member shares"
                   : !strcmp(key, "checkpoint.every_steps") ? "members checkpoint together"
                   : !strcmp(key, "out_dir") ? "each member's out_dir is <out_dir>/<member>"
                                             : "it changes the batches every member shares";
    return NULL;
}

typedef struct rd {
    yaml_parser_t p;
    const char *path;
    sf_err *err;
} rd;

static int next(rd *r, yaml_event_t *ev)
{
    if (yaml_parser_parse(&r->p, ev))
        return 0;
    return sf_fail(r->err, SF_EINPUT, "%s:%d: YAML syntax error (%s); fix the file", r->path,
                   (int)r->p.problem_mark.line + 1, r->p.problem ? r->p.problem : "?");
}

static int skip(rd *r)
{
    int depth = 0;
    do {
        yaml_event_t ev;
        if (next(r, &ev))
            return SF_EINPUT;
        if (ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT)
            depth++;
        else if (ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT)
            depth--;
        yaml_event_delete(&ev);
    } while (depth > 0);
    return 0;
}

static int read_values(rd *r, sweep_key *k)
{
    yaml_event_t ev;
    if (next(r, &ev))
        return SF_EINPUT;
    int is_seq = ev.type == YAML_SEQUENCE_START_EVENT;
    yaml_event_delete(&ev);
    if (!is_seq)
        return sf_fail(r->err, SF_EINPUT, "%s:%d: sweep.%s: expected a list of values, e.g. `%s: [16, 32]`",
                       r->path, k->line, k->key, k->key);
    for (;;) {
        if (next(r, &ev))
            return SF_EINPUT;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        int ok = ev.type == YAML_SCALAR_EVENT && ev.data.scalar.length > 0 &&
                 ev.data.scalar.length < sizeof k->values[0];
        if (ok && k->n_values < SWEEP_MAX_VALUES)
            snprintf(k->values[k->n_values++], sizeof k->values[0], "%s",
                     (const char *)ev.data.scalar.value);
        yaml_event_delete(&ev);
        if (!ok)
            return sf_fail(r->err, SF_EINPUT, "%s:%d: sweep.%s: each value must be a plain value "
                           "(number or name, under 128 characters); write `%s: [a, b]`",
                           r->path, k->line, k->key, k->key);
        if (k->n_values == SWEEP_MAX_VALUES)
            return sf_fail(r->err, SF_EINPUT, "%s:%d: sweep.%s: more than %d values; split the sweep",
                           r->path, k->line, k->key, SWEEP_MAX_VALUES - 1);
    }
    if (k->n_values == 0)
        return sf_fail(r->err, SF_EINPUT, "%s:%d: sweep.%s: the list is empty; give at least one value",
                       r->path, k->line, k->key);
    for (int i = 0; i < k->n_values; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(k->values[i], k->values[j]))
                return sf_fail(r->err, SF_EINPUT, "%s:%d: sweep.%s: value %s is listed twice; keep one",
                               r->path, k->line, k->key, k->values[i]);
    return 0;
}

static int read_block(rd *r, sweep_spec *sp, int line)
{
    yaml_event_t ev;
    if (next(r, &ev))
        return SF_EINPUT;
    int is_map = ev.type == YAML_MAPPING_START_EVENT;
    yaml_event_delete(&ev);
    if (!is_map)
        return sf_fail(r->err, SF_EINPUT, "%s:%d: sweep: expected a map of keys to lists, e.g. "
                       "`sweep: {sae.k: [16, 32]}`", r->path, line);
    for (;;) {
        if (next(r, &ev))
            return SF_EINPUT;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        int kl = (int)ev.start_mark.line + 1;
        if (ev.type != YAML_SCALAR_EVENT || ev.data.scalar.length >= sizeof sp->keys[0].key) {
            yaml_event_delete(&ev);
            return sf_fail(r->err, SF_EINPUT, "%s:%d: sweep: keys must be dotted names such as sae.k",
                           r->path, kl);
        }
        char key[128];
        snprintf(key, sizeof key, "%s", (const char *)ev.data.scalar.value);
        yaml_event_delete(&ev);
        const char *why = fixed_reason(key);
        if (why)
            return sf_fail(r->err, SF_EINPUT, "%s:%d: sweep.%s: this key cannot vary in a sweep (%s); "
                           "set it once outside sweep:, or run separate sweeps", r->path, kl, key, why);
        for (int i = 0; i < sp->n_keys; i++)
            if (!strcmp(sp->keys[i].key, key))
                return sf_fail(r->err, SF_EINPUT, "%s:%d: sweep.%s: duplicate key (first at line %d)",
                               r->path, kl, key, sp->keys[i].line);
        if (sp->n_keys == SWEEP_MAX_KEYS)
            return sf_fail(r->err, SF_EINPUT, "%s:%d: sweep: more than %d keys", r->path, kl, SWEEP_MAX_KEYS);
        sweep_key *k = &sp->keys[sp->n_keys++];
        memset(k, 0, sizeof *k);
        snprintf(k->key, sizeof k->key, "%s", key);
        k->line = kl;
        int rc = read_values(r, k);
        if (rc)
            return rc;
    }
}

int sweep_read(const char *path, sweep_spec *sp, sf_err *err)
{
    memset(sp, 0, sizeof *sp);
    char *text = NULL;
    size_t len = 0;
    int rc = fs_read_all(path, &text, &len, err);
    if (rc)
        return sf_fail(err, SF_EINPUT, "%s: cannot read config; check the path", path);
    rd r = {.path = path, .err = err};
    yaml_parser_initialize(&r.p);
    yaml_parser_set_input_string(&r.p, (const unsigned char *)text, len);
    yaml_event_t ev;
    int depth = 0, done = 0;
    /* Syntax errors are config.c's to report (with its wording); here they just end the scan. */
    while (!done && !rc && yaml_parser_parse(&r.p, &ev)) {
        int t = ev.type, line = (int)ev.start_mark.line + 1;
        int is_sweep = depth == 1 && t == YAML_SCALAR_EVENT && !strcmp((char *)ev.data.scalar.value, "sweep");
        done = t == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT)
            depth++;
        else if (t == YAML_MAPPING_END_EVENT || t == YAML_SEQUENCE_END_EVENT)
            depth--;
        else if (depth == 1 && t == YAML_SCALAR_EVENT)
            rc = is_sweep ? (sp->n_keys ? sf_fail(err, SF_EINPUT, "%s:%d: sweep: duplicate key", path, line)
                                        : read_block(&r, sp, line))
                          : skip(&r);
    }
    yaml_parser_delete(&r.p);
    free(text);
    if (rc)
        return rc;
    sp->n_members = sp->n_keys ? 1 : 0;
    for (int i = 0; i < sp->n_keys; i++) {
        sp->n_members *= sp->keys[i].n_values;
        if (sp->n_members > SWEEP_MAX_MEMBERS)
            return sf_fail(err, SF_EINPUT, "%s:%d: sweep: more than %d members; split the sweep", path,
                           sp->keys[i].line, SWEEP_MAX_MEMBERS);
    }
    return SF_OK;
}

/* Name characters kept as they are; others become '_' so a name is always a plain dir name. */
static void put_clean(char *out, int len, const char *s)
{
    int o = (int)strlen(out);
    for (; *s && o < len - 1; s++)
        out[o++] = (char)((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                                  *s == '.' || *s == '+' || *s == '-'
                              ? *s
                              : '_');
    out[o] = 0;
}

void sweep_member(const sweep_spec *sp, int i, char *name, int name_len, char ov[][256])
{
    name[0] = 0;
    int rest = i;
    int pick[SWEEP_MAX_KEYS];
    for (int j = sp->n_keys - 1; j >= 0; j--) { /* the last key varies fastest */
        pick[j] = rest % sp->keys[j].n_values;
        rest /= sp->keys[j].n_values;
    }
    for (int j = 0; j < sp->n_keys; j++) {
        const sweep_key *k = &sp->keys[j];
        const char *v = k->values[pick[j]];
        const char *leaf = strrchr(k->key, '.');
        leaf = leaf ? leaf + 1 : k->key;
        int clash = 0; /* two keys with the same last part (log.every_steps, ...) keep the full name */
        for (int q = 0; q < sp->n_keys; q++) {
            const char *l2 = strrchr(sp->keys[q].key, '.');
            clash |= q != j && !strcmp(l2 ? l2 + 1 : sp->keys[q].key, leaf);
        }
        if (j)
            put_clean(name, name_len, "-");
        put_clean(name, name_len, clash ? k->key : leaf);
        int numeric = (*v >= '0' && *v <= '9') || *v == '-' || *v == '.';
        if (!numeric)
            put_clean(name, name_len, "_");
        put_clean(name, name_len, v);
        snprintf(ov[j], 256, "%s=%s", k->key, v);
    }
}

int sweep_write_json(const char *dir, const sweep_spec *sp, sf_err *err)
{
    json_writer w;
    jw_init(&w, 1);
    jw_obj_begin(&w);
    jw_key(&w, "members");
    jw_obj_begin(&w);
    for (int i = 0; i < sp->n_members; i++) {
        char name[128], ov[SWEEP_MAX_KEYS][256];
        sweep_member(sp, i, name, sizeof name, ov);
        jw_key(&w, name);
        jw_obj_begin(&w);
        for (int j = 0; j < sp->n_keys; j++) {
            jw_key(&w, sp->keys[j].key);
            jw_str(&w, strchr(ov[j], '=') + 1);
        }
        jw_obj_end(&w);
    }
    jw_obj_end(&w);
    jw_obj_end(&w);
    char path[4096];
    snprintf(path, sizeof path, "%s/sweep.json", dir);
    int rc = fs_mkdirs(dir, err);
    if (!rc)
        rc = fs_write_atomic(path, w.buf, w.len, err);
    jw_free(&w);
    return rc;
}

int sweep_is_dir(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/sweep.json", dir);
    return fs_is_dir(dir) && fs_exists(path);
}

/* The last training line and last eval line of a run's metrics.jsonl (NULL type when none). */
static void last_metrics(const char *run, json_value *train, json_value *eval)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    memset(train, 0, sizeof *train);
    memset(eval, 0, sizeof *eval);
    char *text = NULL, why[64];
    size_t len = 0;
    sf_err e = {0};
    if (fs_read_all(path, &text, &len, &e))
        return;
    for (char *line = text, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        json_value v;
        if (json_parse(line, nl ? (size_t)(nl - line) : strlen(line), &v, why, sizeof why))
            continue;
        json_value *dst = json_get(&v, "eval") ? eval : train;
        json_value_free(dst);
        *dst = v;
    }
    free(text);
}

int sweep_members_read(const char *dir, char ***names, int *n, sf_err *err)
{
    char path[4096], why[128];
    snprintf(path, sizeof path, "%s/sweep.json", dir);
    char *text = NULL;
    size_t len = 0;
    int rc = fs_read_all(path, &text, &len, err);
    if (rc)
        return rc;
    json_value v;
    rc = json_parse(text, len, &v, why, sizeof why);
    free(text);
    if (rc)
        return sf_fail(err, SF_EINPUT, "%s: not a sweep.json (%s); was it written by saeforge train?", path, why);
    const json_value *m = json_get(&v, "members");
    *n = m && m->type == JSON_OBJ ? m->n : 0;
    *names = calloc((size_t)*n + 1, sizeof **names);
    for (int i = 0; i < *n; i++)
        (*names)[i] = strdup(m->keys[i]);
    json_value_free(&v);
    return SF_OK;
}

void sweep_members_free(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int sweep_print_table(const char *dir, sf_err *err)
{
    char **names;
    int n;
    int rc = sweep_members_read(dir, &names, &n, err);
    if (rc)
        return rc;
    json_value st = {0};
    char mpath[4096], *mtext = NULL, why[64];
    size_t mlen = 0;
    sf_err me = {0};
    snprintf(mpath, sizeof mpath, "%s/sweep_state.json", dir);
    if (fs_exists(mpath) && !fs_read_all(mpath, &mtext, &mlen, &me) && json_parse(mtext, mlen, &st, why, sizeof why))
        memset(&st, 0, sizeof st);
    free(mtext);
    const json_value *stopped = json_get(&st, "stopped");
    printf("sweep %s: %d members (FVU/L0 from the final eval when there is one, else the last "
           "training batch)\n", dir, n);
    printf("%-28s %-10s %5s %8s %8s %8s %7s  %s\n", "member", "arch", "k", "n", "FVU", "L0", "dead%", "status");
    for (int i = 0; i < n; i++) {
        char run[4096], path[4300];
        snprintf(run, sizeof run, "%s/%s", dir, names[i]);
        snprintf(path, sizeof path, "%s/config.yaml", run);
        sf_config c;
        sf_err e = {0};
        if (config_load(path, NULL, 0, &c, &e)) {
            printf("%-28s (not started)\n", names[i]);
            continue;
        }
        json_value tr, ev;
        last_metrics(run, &tr, &ev);
        const json_value *src = ev.type == JSON_OBJ ? &ev : &tr;
        snprintf(path, sizeof path, "%s/final", run);
        const char *status = fs_is_dir(path)                            ? "done"
                             : json_get_str(stopped, names[i], NULL) ? "diverged"
                                                                       : "incomplete";
        printf("%-28s %-10s %5d %8lld %8.4f %8.2f %7.2f  %s\n", names[i], config_arch_name(c.sae.arch), c.sae.k,
               (long long)c.sae.n_latents, json_get_num(src, "fvu", NAN), json_get_num(src, "l0", NAN),
               100.0 * json_get_num(&tr, "dead_frac", NAN), status);
        json_value_free(&tr);
        json_value_free(&ev);
    }
    json_value_free(&st);
    sweep_members_free(names, n);
    return SF_OK;
}

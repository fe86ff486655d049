/* Replays every kept fuzz input (tests/fuzz/corpus/<harness>/: seeds and the inputs that once
 * crashed or broke a round trip) through the harness code, compiled by gcc; a defect aborts
 * the test naming the input. Also checks that the round-trip check itself catches a difference. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/fsutil.h"
#include "tests/fuzz/fuzz.h"

/* Runs fn on every file of tests/fuzz/corpus/<name>/; returns how many. */
static int replay(const char *name, int (*fn)(const uint8_t *, size_t))
{
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", name);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "cannot list %s (run the tests from the repository root)", dir);
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        char *buf;
        size_t len;
        sf_err err = {0};
        cr_assert_eq(fs_read_all(path, &buf, &len, &err), SF_OK, "%s", err.msg);
        fuzz_set_input_name(path);
        fn((const uint8_t *)buf, len);
        free(buf);
        count++;
    }
    closedir(d);
    return count;
}

Test(fuzz_corpus, config) { cr_assert_gt(replay("config", fuzz_config_one), 5); }
Test(fuzz_corpus, safetensors) { cr_assert_gt(replay("safetensors", fuzz_safetensors_one), 5); }
Test(fuzz_corpus, ckpt) { cr_assert_gt(replay("ckpt", fuzz_ckpt_one), 1); }
Test(fuzz_corpus, shard) { cr_assert_gt(replay("shard", fuzz_shard_one), 2); }

/* The harness must be able to fail: an input that is not even a config reaches no round trip,
 * and a defect report ends the process (here: a deliberate one). */
Test(fuzz_corpus, harness_reports_defects, .signal = SIGABRT)
{
    fuzz_set_input_name("deliberate");
    sf_err err = {0};
    err.code = SF_EINPUT;
    snprintf(err.msg, sizeof err.msg, "two\nlines");
    fuzz_check_err(SF_EINPUT, &err, "a message with a raw newline");
}

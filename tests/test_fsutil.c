/* Tests for host/fsutil.c: atomic writes leave no temp files, mkdir -p, rm -rf, whole-file reads. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "host/fsutil.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/sf_fsutil_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}
static void teardown(void) { fs_remove_tree(dir); }

TestSuite(fsutil, .init = setup, .fini = teardown);

static int count_entries(const char *d)
{
    DIR *h = opendir(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(h)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(h);
    return n;
}

Test(fsutil, atomic_write_round_trip_and_replace)
{
    char p[512];
    sf_err err = {0};
    snprintf(p, sizeof p, "%s/a.bin", dir);
    const char data[] = "hello\0world";
    cr_assert_eq(fs_write_atomic(p, data, sizeof data, &err), SF_OK, "%s", err.msg);
    char *back;
    size_t len;
    cr_assert_eq(fs_read_all(p, &back, &len, &err), SF_OK);
    cr_assert_eq(len, sizeof data);
    cr_assert_eq(memcmp(back, data, len), 0);
    cr_assert_eq(back[len], 0, "buffer is NUL-terminated");
    free(back);
    cr_assert_eq(fs_write_atomic(p, "xy", 2, &err), SF_OK);
    cr_assert_eq(fs_read_all(p, &back, &len, &err), SF_OK);
    cr_assert_eq(len, 2);
    cr_assert_str_eq(back, "xy");
    free(back);
    cr_assert_eq(count_entries(dir), 1, "no temporary file left behind");
}

Test(fsutil, empty_file)
{
    char p[512];
    sf_err err = {0};
    snprintf(p, sizeof p, "%s/empty", dir);
    cr_assert_eq(fs_write_atomic(p, "", 0, &err), SF_OK);
    char *back;
    size_t len = 99;
    cr_assert_eq(fs_read_all(p, &back, &len, &err), SF_OK);
    cr_assert_eq(len, 0);
    free(back);
}

Test(fsutil, write_into_missing_directory_fails)
{
    char p[512];
    sf_err err = {0};
    snprintf(p, sizeof p, "%s/nope/a.bin", dir);
    cr_assert_eq(fs_write_atomic(p, "x", 1, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, p) != NULL, "message names the path: %s", err.msg);
    cr_assert_eq(fs_exists(p), 0);
}

Test(fsutil, mkdirs_nested_and_remove_tree)
{
    char p[512], f[600];
    sf_err err = {0};
    snprintf(p, sizeof p, "%s/x/y/z", dir);
    cr_assert_eq(fs_mkdirs(p, &err), SF_OK, "%s", err.msg);
    cr_assert(fs_is_dir(p));
    cr_assert_eq(fs_mkdirs(p, &err), SF_OK, "existing directory is fine");
    snprintf(f, sizeof f, "%s/file", p);
    cr_assert_eq(fs_write_atomic(f, "abc", 3, &err), SF_OK);
    cr_assert(fs_exists(f));
    cr_assert_not(fs_is_dir(f));
    cr_assert_eq(fs_mkdirs(f, &err), SF_EINPUT, "a file in the way is an input error");
    snprintf(p, sizeof p, "%s/x", dir);
    cr_assert_eq(fs_remove_tree(p), 0);
    cr_assert_not(fs_exists(p));
    cr_assert_eq(fs_remove_tree(p), 0, "removing a missing path is not an error");
}

Test(fsutil, read_missing_file)
{
    char p[512];
    sf_err err = {0};
    char *data = (char *)1;
    size_t len;
    snprintf(p, sizeof p, "%s/missing", dir);
    cr_assert_eq(fs_read_all(p, &data, &len, &err), SF_EINPUT);
    cr_assert_null(data);
    cr_assert(strstr(err.msg, "missing") != NULL);
    cr_assert_eq(fs_read_all(dir, &data, &len, &err), SF_EINPUT, "a directory is not a file");
}

Test(fsutil, fsync_dir)
{
    sf_err err = {0};
    cr_assert_eq(fs_fsync_dir(dir, &err), SF_OK);
    char p[512];
    snprintf(p, sizeof p, "%s/none", dir);
    cr_assert_eq(fs_fsync_dir(p, &err), SF_EINPUT);
}

/* Durable file-system helpers (see fsutil.h): atomic writes, mkdir -p, rm -rf, whole-file reads. */
#include "fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Directory part of path ("." when there is none), into buf. */
static void dir_of(const char *path, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(buf, cap, ".");
    } else if (slash == path) {
        snprintf(buf, cap, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= cap)
            n = cap - 1;
        memcpy(buf, path, n);
        buf[n] = 0;
    }
}

int fs_fsync_dir(const char *dir, sf_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return sf_fail(err, SF_EINPUT, "%s: cannot open directory (%s); check the path and permissions",
                       dir, strerror(errno));
    /* Some file systems refuse fsync on directories (EINVAL); the rename is still done. */
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
        int e = errno;
        close(fd);
        return sf_fail(err, SF_EFAIL, "%s: cannot sync directory (%s); check the disk", dir, strerror(e));
    }
    close(fd);
    return SF_OK;
}

int fs_write_atomic(const char *path, const void *data, size_t len, sf_err *err)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp)
        return sf_fail(err, SF_EFAIL, "%s: out of memory", path);
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return sf_fail(err, SF_EINPUT, "%s: cannot create file (%s); check the directory exists and is writable",
                       path, strerror(e));
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            free(tmp);
            return sf_fail(err, SF_EFAIL, "%s: write failed (%s); check free disk space", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        return sf_fail(err, SF_EFAIL, "%s: sync failed (%s); check the disk", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        return sf_fail(err, SF_EINPUT, "%s: cannot rename temporary file into place (%s); check permissions",
                       path, strerror(e));
    }
    free(tmp);
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    return fs_fsync_dir(dir, err);
}

int fs_mkdirs(const char *path, sf_err *err)
{
    size_t n = strlen(path);
    char *buf = malloc(n + 1);
    if (!buf)
        return sf_fail(err, SF_EFAIL, "%s: out of memory", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                int e = errno;
                free(buf);
                return sf_fail(err, SF_EINPUT, "%s: cannot create directory (%s); check the path and permissions",
                               path, strerror(e));
            }
            buf[i] = c;
        }
    }
    free(buf);
    if (!fs_is_dir(path))
        return sf_fail(err, SF_EINPUT, "%s: exists and is not a directory; choose another path", path);
    return SF_OK;
}

int fs_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlink(path);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int rc = 0;
    struct dirent *e;
    size_t plen = strlen(path);
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        size_t cap = plen + strlen(e->d_name) + 2;
        char *child = malloc(cap);
        if (!child) {
            rc = -1;
            break;
        }
        snprintf(child, cap, "%s/%s", path, e->d_name);
        if (fs_remove_tree(child) != 0)
            rc = -1;
        free(child);
    }
    closedir(d);
    if (rmdir(path) != 0)
        rc = -1;
    return rc;
}

int fs_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int fs_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int fs_read_all(const char *path, char **data, size_t *len, sf_err *err)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return sf_fail(err, SF_EINPUT, "%s: cannot open (%s); check the path", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || S_ISDIR(st.st_mode)) {
        fclose(f);
        return sf_fail(err, SF_EINPUT, "%s: not a regular file; point to a file", path);
    }
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
    char *buf = malloc(cap);
    size_t n = 0;
    if (!buf) {
        fclose(f);
        return sf_fail(err, SF_EFAIL, "%s: out of memory reading file", path);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return sf_fail(err, SF_EFAIL, "%s: out of memory reading file", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return sf_fail(err, SF_EINPUT, "%s: read error; check the file", path);
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return SF_OK;
}

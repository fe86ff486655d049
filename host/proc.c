/* Runs helper programs with fork/exec, reading their stdout and stderr through pipes. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

/* The child: wire up the pipes, exec, and report an exec failure through the close-on-exec pipe. */
static void run_child(const char *const *argv, int out_w, int err_w, int fail_w)
{
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0)
        dup2(nul, 0);
    dup2(out_w, 1);
    dup2(err_w, 2);
    signal(SIGPIPE, SIG_DFL);
    execvp(argv[0], (char *const *)argv);
    int e = errno;
    if (write(fail_w, &e, sizeof e) < 0)
        _exit(127);
    _exit(127);
}

static void drain(int fd, char *buf, size_t cap, size_t *len, int *open_)
{
    char tmp[4096];
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r <= 0) {
        if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
            close(fd);
            *open_ = 0;
        }
        return;
    }
    if (buf && cap > 0) {
        size_t room = cap - 1 - *len, n = (size_t)r < room ? (size_t)r : room;
        memcpy(buf + *len, tmp, n);
        *len += n;
        buf[*len] = 0;
    }
}

int proc_run(const char *const *argv, char *out, size_t out_cap, char *errout, size_t err_cap,
             int *errno_out)
{
    int po[2], pe[2], pf[2];
    if (out && out_cap)
        out[0] = 0;
    if (errout && err_cap)
        errout[0] = 0;
    if (pipe(po))
        goto fail0;
    if (pipe(pe))
        goto fail1;
    if (pipe2(pf, O_CLOEXEC))
        goto fail2;
    pid_t pid = fork();
    if (pid < 0)
        goto fail3;
    if (pid == 0)
        run_child(argv, po[1], pe[1], pf[1]);
    close(po[1]);
    close(pe[1]);
    close(pf[1]);
    size_t lo = 0, le = 0;
    int oo = 1, oe = 1;
    while (oo || oe) {
        struct pollfd fds[2] = {{oo ? po[0] : -1, POLLIN, 0}, {oe ? pe[0] : -1, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (oo && fds[0].revents)
            drain(po[0], out, out_cap, &lo, &oo);
        if (oe && fds[1].revents)
            drain(pe[0], errout, err_cap, &le, &oe);
    }
    if (oo)
        close(po[0]);
    if (oe)
        close(pe[0]);
    int exec_errno = 0;
    ssize_t got = read(pf[0], &exec_errno, sizeof exec_errno);
    close(pf[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (got == (ssize_t)sizeof exec_errno) {
        if (errno_out)
            *errno_out = exec_errno;
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);

fail3:
    close(pf[0]);
    close(pf[1]);
fail2:
    close(pe[0]);
    close(pe[1]);
fail1:
    close(po[0]);
    close(po[1]);
fail0:
    if (errno_out)
        *errno_out = errno;
    return -1;
}

void proc_one_line(char *s, size_t cap)
{
    size_t n = strlen(s), o = 0, lim = cap - 1;
    char *src = malloc(n + 1);
    if (!src)
        abort();
    memcpy(src, s, n + 1);
    /* "; " is longer than the newline it replaces: build into s from a copy, within cap. */
    for (const char *p = src; *p && o < lim; p++) {
        if (*p == '\n' || *p == '\r') {
            while (o > 0 && (s[o - 1] == ' ' || s[o - 1] == ';'))
                o--;
            if (o > 0 && o + 2 <= lim) {
                s[o++] = ';';
                s[o++] = ' ';
            }
        } else {
            s[o++] = *p == '\t' ? ' ' : *p;
        }
    }
    while (o > 0 && (s[o - 1] == ' ' || s[o - 1] == ';'))
        o--;
    s[o] = 0;
    free(src);
}

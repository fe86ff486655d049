/* The CLI verbs. Each takes the arguments after the verb and returns the process exit code
 * (0 ok, 1 training failure, 2 bad input), printing its own one-line errors. */
#ifndef CMD_H
#define CMD_H

#include "config.h"
#include "sf_err.h"

int cmd_train(int argc, char **argv);   /* host/train.c    */
int cmd_synth(int argc, char **argv);   /* data/synth.c    */
int cmd_inspect(int argc, char **argv); /* host/inspect.c  */
int cmd_compare(int argc, char **argv); /* host/compare.c  */
int cmd_stats(int argc, char **argv);   /* host/stats.c    */
int cmd_export(int argc, char **argv);  /* host/export.c   */
int cmd_submit(int argc, char **argv);  /* host/submit.c   */
int cmd_status(int argc, char **argv);  /* host/status.c   */

/* Every check `saeforge train CONFIG --resume` makes before it writes anything (config, shards,
 * sizes), without training; the resolved config goes to cfg (host/train.c). */
int train_check_input(const char *cfg_path, const char *const *sets, int n_sets, sf_config *cfg,
                      sf_err *err);
int cmd_extract(int argc, char **argv); /* host/pytool.c: Python tool */
int cmd_eval(int argc, char **argv);    /* host/pytool.c: Python tool */

/* Prints "saeforge: <msg>" on stderr and returns code (for `return cli_error(2, ...)`). */
int cli_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

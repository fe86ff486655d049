/* SVG plots read straight from run outputs: a run's training curves and a sweep's frontier. */
#ifndef PLOT_H
#define PLOT_H

#include "sf_err.h"

/* <run_dir>/curves.svg: loss, FVU, L0 and dead fraction against tokens, from metrics.jsonl
 * (training lines; eval points marked). Written atomically. */
int plot_curves(const char *run_dir, sf_err *err);

/* <sweep_dir>/frontier.svg: FVU against L0 for every member of sweep.json, one series per
 * arch (eval values when the member has them, else its last training line). */
int plot_frontier(const char *sweep_dir, sf_err *err);

#endif

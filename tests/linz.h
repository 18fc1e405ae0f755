/*
 * linz.h - a linearizability checker for per-block registers with unique written values.
 */
#ifndef COHORT_TESTS_LINZ_H
#define COHORT_TESTS_LINZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One operation on one block. @value: what a write wrote or a read returned; 0 is the initial
 * content. Times are CLOCK_MONOTONIC nanoseconds (comparable across processes). */
struct linz_op {
	uint64_t inv, resp;
	uint64_t block;
	uint64_t value;
	uint32_t node;
	uint8_t is_write;
};

/*
 * linz_check - check @n operations (any order, any blocks). Returns 0 when every block's history
 * is linearizable; otherwise 1, with the reason and the operations involved written to @why (may
 * be NULL). -ENOMEM or -EINVAL on bad input (a value written twice, a write of 0).
 */
int linz_check(struct linz_op *ops, size_t n, FILE *why);

#ifdef __cplusplus
}
#endif

#endif

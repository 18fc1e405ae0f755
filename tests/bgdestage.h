/*
 * bgdestage.h - the background destage scenario (bgdestage.c) as the gtest side sees it: a
 * cluster of node processes on shm writes more than its logs hold, with the background destage
 * on or off, and reports each node's counters and whether every node read every block back.
 */
#ifndef COHORT_TESTS_BGDESTAGE_H
#define COHORT_TESTS_BGDESTAGE_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BG_MAXN 3u

/* struct bg_result - what one run left: per node, its counters at the end of its writes. */
struct bg_result {
	uint64_t bg_destages[BG_MAXN], bg_blocks[BG_MAXN], backpressure[BG_MAXN];
	uint64_t appends[BG_MAXN], log_size[BG_MAXN];
	uint32_t blocks_written; /* per node */
	uint32_t bad_reads;	 /* blocks that read back wrong, summed over every node */
	bool bad_attr_refused;	 /* destage_high > 100 and destage_low >= destage_high: -EINVAL */
};

/*
 * bg_run - @nodes node processes (2 or 3; k = 1, RAID-5 over 3 elements) with the background
 * destage on (the default watermarks) or off (COH_NODE_DESTAGE_OFF). Each writes four times what
 * its log holds, to its own blocks, in bursts of 40% of the log; with it on, after each burst it
 * waits (bounded) for the background destage to bring the log to the low watermark, which the
 * writer itself never asks for. Then every node reads every node's blocks. 0 when every node
 * ran to its end (*@res then holds the counters), else nonzero (stderr says why).
 */
int bg_run(uint32_t nodes, bool on, struct bg_result *res);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_TESTS_BGDESTAGE_H */

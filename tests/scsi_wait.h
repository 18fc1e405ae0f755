/*
 * scsi_wait.h - run one command on a SCSI unit (engine/scsi/lu.c) and wait, bounded, for its
 * done callback: the tests' one synchronous way to execute a command, over the mock block path
 * (scsi_shim.c) or a real node (scsi_engine.c). What a late or second callback means is the
 * caller's to judge; the count of callbacks is here.
 */
#ifndef COHORT_TESTS_SCSI_WAIT_H
#define COHORT_TESTS_SCSI_WAIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#include "cohort/scsi.h"

/* struct sw_wait - one command's done callbacks. @lock guards the wake-up on @cond; @calls is
 * read without it. @until is the absolute (CLOCK_REALTIME) deadline of the wait, for a caller
 * that waits for more under the same bound. */
struct sw_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	atomic_uint calls;
	struct timespec until;
};

/* sw_exec - fill @cmd (zeroed first) with @cdb and the @iov_cnt pieces of @iov, execute it on @lu
 * and wait up to @wait_ms for its first done callback, counted in @w. 0 when it came, or
 * -ETIMEDOUT: the command may still complete, into @cmd and @w, so both must outlive it. */
int sw_exec(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd, const uint8_t *cdb, uint32_t cdb_len,
	    const struct iovec *iov, uint32_t iov_cnt, uint32_t wait_ms, struct sw_wait *w);

#endif /* COHORT_TESTS_SCSI_WAIT_H */

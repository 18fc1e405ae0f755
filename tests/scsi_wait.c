/*
 * scsi_wait.c - the tests' synchronous execute of one SCSI command (scsi_wait.h): a done
 * callback that counts and wakes, and a bounded wait for the first call. It leaves out what the
 * answer means, and any wait for a second callback (the mock's own queue: sm_run).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "scsi_wait.h"

static void sw_done(struct coh_scsi_cmd *cmd, void *arg)
{
	struct sw_wait *w = arg;

	(void)cmd;
	pthread_mutex_lock(&w->lock);
	atomic_fetch_add(&w->calls, 1);
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

int sw_exec(struct coh_scsi_lu *lu, struct coh_scsi_cmd *cmd, const uint8_t *cdb, uint32_t cdb_len,
	    const struct iovec *iov, uint32_t iov_cnt, uint32_t wait_ms, struct sw_wait *w)
{
	int ret = 0;

	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	atomic_init(&w->calls, 0);
	memset(cmd, 0, sizeof(*cmd));
	cmd->cmd_size = sizeof(*cmd);
	cmd->cdb = cdb;
	cmd->cdb_len = cdb_len;
	cmd->iov = iov;
	cmd->iov_cnt = iov_cnt;
	cmd->done = sw_done;
	cmd->done_arg = w;
	coh_scsi_cmd_exec(lu, cmd);
	clock_gettime(CLOCK_REALTIME, &w->until);
	w->until.tv_sec += wait_ms / 1000;
	w->until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
	if (w->until.tv_nsec >= 1000000000) {
		w->until.tv_sec++;
		w->until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&w->lock);
	while (!atomic_load(&w->calls) && !ret)
		ret = pthread_cond_timedwait(&w->cond, &w->lock, &w->until);
	pthread_mutex_unlock(&w->lock);
	return atomic_load(&w->calls) ? 0 : -ETIMEDOUT;
}

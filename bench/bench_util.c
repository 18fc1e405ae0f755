/*
 * bench_util.c - what cohort-bench's suites and cohort-demo share: the clock, the statistics
 * (nearest-rank percentiles over all samples), removing a run's directory, a barrier for forked
 * node processes in shared memory, reaping a child with a bound, and block contents that say
 * which write they came from.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void bench_remove_tree(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t rank(const uint64_t *s, uint32_t n, double q)
{
	uint64_t r = (uint64_t)(q * n + 0.999999);

	if (r < 1)
		r = 1;
	if (r > n)
		r = n;
	return s[r - 1];
}

void bench_stats(uint64_t *ns, uint32_t n, struct bench_row *row)
{
	row->samples = n;
	if (!n)
		return;
	qsort(ns, n, sizeof(*ns), cmp_u64);
	row->min = ns[0];
	row->p50 = rank(ns, n, 0.50);
	row->p99 = rank(ns, n, 0.99);
	row->p999 = rank(ns, n, 0.999);
	row->max = ns[n - 1];
}

void bench_sbar_init(struct bench_sbar *b, uint32_t parties)
{
	atomic_store(&b->count, 0);
	atomic_store(&b->gen, 0);
	b->parties = parties;
}

int bench_sbar_wait(struct bench_sbar *b, int timeout_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	uint32_t gen = atomic_load(&b->gen);

	if (atomic_fetch_add(&b->count, 1) + 1 == b->parties) {
		atomic_store(&b->count, 0);
		atomic_fetch_add(&b->gen, 1);
		syscall(SYS_futex, (uint32_t *)&b->gen, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
		return 0;
	}
	while (atomic_load(&b->gen) == gen) {
		uint64_t now = bench_now_ns();
		struct timespec ts;

		if (now >= deadline)
			return -ETIMEDOUT;
		ts.tv_sec = (time_t)((deadline - now) / 1000000000ull);
		ts.tv_nsec = (long)((deadline - now) % 1000000000ull);
		syscall(SYS_futex, (uint32_t *)&b->gen, FUTEX_WAIT, gen, &ts, NULL, 0);
	}
	return 0;
}

int bench_wait_child(pid_t pid, int *status, int timeout_s)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (fd >= 0) {
		if (poll(&p, 1, timeout_s * 1000) == 0)
			kill(pid, SIGKILL);
		close(fd);
	}
	return waitpid(pid, status, 0) < 0 ? -errno : 0;
}

void bench_fill_block(uint8_t *b, size_t len, uint64_t value)
{
	uint64_t s = value | 1;
	size_t i;

	if (!value) {
		memset(b, 0, len);
		return;
	}
	memcpy(b, &value, 8);
	for (i = 8; i + 8 <= len; i += 8) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		memcpy(b + i, &s, 8);
	}
}

int bench_block_value(const uint8_t *b, size_t len, uint64_t *value)
{
	uint8_t *want = malloc(len);
	int ret;

	if (!want)
		return -ENOMEM;
	memcpy(value, b, 8);
	bench_fill_block(want, len, *value);
	ret = memcmp(want, b, len) ? -EILSEQ : 0;
	free(want);
	return ret;
}

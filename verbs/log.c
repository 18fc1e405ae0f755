/*
 * log.c - the log sink, the level, and message formatting behind COH_LOG_*.
 *
 * Lives in verbs/ because it is the lowest layer and every other layer logs through it. The
 * default sink writes one line per message to stderr with a single write(2), so that lines from
 * several threads or node processes sharing a terminal do not interleave mid-line. No rate
 * limiting here.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cohort/log.h"

static const char *const level_names[] = { "ERR", "WARN", "INFO", "DBG" };

/* -1 until the first call reads COHORT_LOG_LEVEL. */
static atomic_int log_level = -1;
static coh_log_sink_fn log_sink;
static void *log_ctx;

static void stderr_sink(void *ctx, enum coh_log_level level, const char *func, int line,
			const char *msg)
{
	char buf[1200];
	int n;

	(void)ctx;
	n = snprintf(buf, sizeof(buf), "cohort[%d] %s %s:%d: %s\n", (int)getpid(),
		     level_names[level], func, line, msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	/* Best effort: a log line that cannot be written has nowhere else to go. */
	if (write(STDERR_FILENO, buf, (size_t)n) < 0)
		return;
}

void coh_log_set_sink(coh_log_sink_fn fn, void *ctx)
{
	log_sink = fn;
	log_ctx = ctx;
}

void coh_log_set_level(enum coh_log_level level)
{
	if ((int)level < COH_LOG_LEVEL_ERR)
		level = COH_LOG_LEVEL_ERR;
	if (level > COH_LOG_LEVEL_DBG)
		level = COH_LOG_LEVEL_DBG;
	atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

enum coh_log_level coh_log_level_get(void)
{
	int lvl = atomic_load_explicit(&log_level, memory_order_relaxed);
	const char *env;

	if (lvl >= 0)
		return (enum coh_log_level)lvl;
	env = getenv("COHORT_LOG_LEVEL");
	lvl = COH_LOG_LEVEL_WARN;
	if (env && env[0] >= '0' && env[0] <= '3' && !env[1])
		lvl = env[0] - '0';
	atomic_store_explicit(&log_level, lvl, memory_order_relaxed);
	return (enum coh_log_level)lvl;
}

void coh_log_msg(enum coh_log_level level, const char *func, int line, const char *fmt, ...)
{
	int saved = errno;
	char msg[1024];
	va_list ap;

	if ((int)level < COH_LOG_LEVEL_ERR || level > COH_LOG_LEVEL_DBG)
		level = COH_LOG_LEVEL_ERR;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_sink)
		log_sink(log_ctx, level, func, line, msg);
	else
		stderr_sink(NULL, level, func, line, msg);
	errno = saved;
}

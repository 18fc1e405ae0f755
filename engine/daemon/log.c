/*
 * log.c - cohortd's event log: one line per event on stderr, "cohortd[node N]: OBJECT: message",
 * so that journald (or a test) reads which node said what about which object. Each line is
 * written with one call, so lines of different threads do not interleave.
 *
 * Leaves out: levels and syslog (journald takes stderr), the engine's own COH_LOG lines, which
 * keep their sink.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "daemon.h"

static _Atomic int daemon_log_node = -1;

void daemon_log_set_node(int node)
{
	atomic_store(&daemon_log_node, node);
}

void daemon_log(const char *object, const char *fmt, ...)
{
	char line[1024];
	int node = atomic_load(&daemon_log_node), n;
	va_list ap;

	if (node >= 0)
		n = snprintf(line, sizeof(line), "cohortd[node %d]: %s: ", node, object);
	else
		n = snprintf(line, sizeof(line), "cohortd: %s: ", object);
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		n = 0;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	n = 0;
	while (line[n])
		n++;
	line[n++] = '\n';
	/* One write: a line is never split by another thread's. Nothing to do if stderr fails. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

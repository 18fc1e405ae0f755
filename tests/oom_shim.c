/*
 * oom_shim.c - allocation failure injection for the unit tests: the test binary is linked with
 * -Wl,--wrap=calloc, so every calloc in the library comes here, and the n-th one after arming
 * fails. Test code only; the product has no hook for this.
 */
#include <errno.h>
#include <stddef.h>

#include "oom_shim.h"

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

static long fail_at = -1;
static long seen;

void oom_arm(long nth)
{
	fail_at = nth;
	seen = 0;
}

long oom_disarm(void)
{
	fail_at = -1;
	return seen;
}

void *__wrap_calloc(size_t n, size_t size)
{
	if (fail_at >= 0 && seen++ == fail_at) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_calloc(n, size);
}

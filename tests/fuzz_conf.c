/*
 * fuzz_conf.c - fuzz target for cohortd's config parser (engine/daemon/conf.c): arbitrary bytes,
 * and bytes spliced into a valid config, plain or routed (so that the checks after the parse,
 * the mapping table's among them, are reached too).
 * Built with libFuzzer under COHORT_FUZZ (fuzz_conf), and always with fuzz_driver.c, the bounded
 * random driver ctest runs (fuzz_conf_driver). Properties: nothing crashes or hangs; a refused
 * config's error names the input and a line ("fuzz:<line>: ..."), within the error buffer.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_conf_base[] = "[cluster]\nname = f\nnodes = 3\nnode = 1\nprovider = shm\n"
				     "address = /dev/shm/f\nsecret = %s\n[group]\nraid = raid5\n"
				     "element0 = /a\nelement1 = /b\nelement2 = /c\n"
				     "element_size = 1M\nchunk = 8K\n[log]\nbytes = 1M\n"
				     "[volume v]\nsize = 1M\n[export e]\nvolume = v\n";

/* A routed config: two named groups, volumes on each, a virtual volume over them. */
static const char fuzz_conf_routed[] =
    "[cluster]\nname = f\nnodes = 3\nnode = 1\nprovider = shm\naddress = /dev/shm/f\n"
    "secret = %s\n[group ga]\nraid = raid5\nelement0 = /a\nelement1 = /b\nelement2 = /c\n"
    "element_size = 1M\namfs = 0,1\n[group gb]\nraid = raid1\nelement0 = /d\nelement1 = /e\n"
    "element_size = 1M\namfs = 1 2\npreferred = 2\n[log]\nbytes = 1M\n[volume a]\nsize = "
    "64K\ngroup = ga\n[volume b]\nsize = 64K\ngroup = gb\n[virtual v]\nlayout = stripe\n"
    "volumes = a, b\nchunk = 8K\n[export e]\nvolume = v\ndevice = e-%%n\n";

static char fuzz_conf_secret_path[64];

/* fuzz_conf_unlink - the secret file goes with the process. */
static void fuzz_conf_unlink(void)
{
	unlink(fuzz_conf_secret_path);
}

/* fuzz_conf_secret - a secret file for the spliced configs, made once per process. */
static const char *fuzz_conf_secret(void)
{
	char *path = fuzz_conf_secret_path;
	int fd;

	if (path[0])
		return path;
	snprintf(path, sizeof(fuzz_conf_secret_path), "/tmp/cohort-fuzz-secret-%d", (int)getpid());
	atexit(fuzz_conf_unlink);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0) {
		if (write(fd, "fuzz", 4) != 4)
			path[0] = '\0';
		close(fd);
	}
	return path;
}

/* fuzz_conf_check - parse @len bytes at @text; abort if an error does not name a line. */
static void fuzz_conf_check(const char *text, size_t len, int node)
{
	struct daemon_conf *c = NULL;
	char err[DAEMON_ERR_MAX];
	size_t digits;
	int ret;

	memset(err, 0x7f, sizeof(err));
	ret = daemon_conf_parse("fuzz", text, len, node, &c, err, sizeof(err));
	if (!ret) {
		if (!c)
			abort();
		daemon_conf_delete(&c);
		return;
	}
	if (c || !memchr(err, '\0', sizeof(err)) || strncmp(err, "fuzz:", 5))
		abort();
	digits = strspn(err + 5, "0123456789");
	if (!digits || err[5 + digits] != ':' || err[5] == '0')
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char base[1024], *text;
	size_t blen, at, cut;
	int node;

	if (!size)
		return 0;
	node = data[0] & 1 ? (int)(data[0] >> 3) : -1;
	if (!(data[0] & 2)) {
		fuzz_conf_check((const char *)data + 1, size - 1, node);
		return 0;
	}
	/* Splice: the input replaces a piece of a valid config. */
	blen = (size_t)snprintf(base, sizeof(base), data[0] & 4 ? fuzz_conf_routed : fuzz_conf_base,
				fuzz_conf_secret());
	if (size < 3)
		return 0;
	at = (size_t)data[1] * blen / 256;
	cut = data[2] % 16;
	if (cut > blen - at)
		cut = blen - at;
	text = malloc(blen + size);
	if (!text)
		return 0;
	memcpy(text, base, at);
	memcpy(text + at, data + 3, size - 3);
	memcpy(text + at + size - 3, base + at + cut, blen - at - cut);
	fuzz_conf_check(text, blen - cut + size - 3, node);
	free(text);
	return 0;
}

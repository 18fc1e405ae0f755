/*
 * fuzz_ctl.c - fuzz target for the control socket's "map-change" requests (engine/daemon/
 * mapedit.c, daemon_map_edit): arbitrary bytes read as JSON, and requests built field by field
 * from the input (every operation, names that exist and that do not, numbers at the edges and
 * of the wrong type, component lists of every length), applied to a routed table of two groups,
 * two logical volumes and a virtual one.
 * Built with libFuzzer under COHORT_FUZZ (fuzz_ctl), and always with fuzz_driver.c, the bounded
 * random driver ctest runs (fuzz_ctl_driver). Properties: nothing crashes or hangs; a refused
 * request leaves an error message, within the buffer; an accepted one leaves a table of the
 * next version that coh_map_check accepts and that the table in effect can change to
 * (coh_map_compatible).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_ctl_base - ga (controllers 0-1) and gb (1-2), 1024 blocks each; a on ga, b on gb, v
 * striped over both. */
static void fuzz_ctl_base(struct coh_map *m)
{
	static const char *const names[3] = { "a", "b", "v" };
	uint32_t i;

	memset(m, 0, sizeof(*m));
	m->version = 3;
	m->nodes = 3;
	m->block_size = 512;
	m->ngroups = 2;
	strcpy(m->groups[0].name, "ga");
	m->groups[0].amfs = 0x3;
	m->groups[0].preferred = 0;
	strcpy(m->groups[1].name, "gb");
	m->groups[1].amfs = 0x6;
	m->groups[1].preferred = 2;
	m->groups[0].blocks = m->groups[1].blocks = 1024;
	m->nvolumes = 3;
	for (i = 0; i < 3; i++) {
		struct coh_map_volume *v = &m->volumes[i];

		strcpy(v->name, names[i]);
		v->id[0] = (uint8_t)(0x10 + i);
		v->kind = i < 2 ? COH_MAP_LOGICAL : COH_MAP_VIRTUAL;
		v->group = i;
		v->blocks = 128;
	}
	m->volumes[2].group = 0;
	m->volumes[2].blocks = 256;
	m->volumes[2].layout = COH_MAP_STRIPE;
	m->volumes[2].stripe_blocks = 8;
	m->volumes[2].ncomp = 2;
	m->volumes[2].comp[0] = 0;
	m->volumes[2].comp[1] = 1;
}

/* fuzz_ctl_take - the next input byte, or 0 once they run out. */
static uint8_t fuzz_ctl_take(const uint8_t **p, const uint8_t *end)
{
	return *p < end ? *(*p)++ : 0;
}

/* fuzz_ctl_name - a volume or group name: one that exists, an empty or too long one, or input
 * bytes (any byte but NUL); NULL for none, and now and then a number (a wrong type). */
static json_t *fuzz_ctl_name(const uint8_t **p, const uint8_t *end, bool group)
{
	static const char *const vols[] = { "a", "b", "v",
					    "n", "",  "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnX" };
	static const char *const groups[] = { "ga", "gb", "gx", "" };
	uint8_t k = fuzz_ctl_take(p, end);
	char buf[48];
	size_t n, i;

	switch (k % 5) {
	case 0:
		return NULL;
	case 1:
		return json_integer(k);
	case 2:
		n = fuzz_ctl_take(p, end) % sizeof(buf);
		for (i = 0; i < n; i++)
			buf[i] = (char)(fuzz_ctl_take(p, end) | 1);
		buf[n] = '\0';
		return json_stringn_nocheck(buf, n);
	default:
		return json_string(group ? groups[k % 4] : vols[k % 6]);
	}
}

/* fuzz_ctl_number - a count or block number: none, the edges, or the input's bytes. */
static json_t *fuzz_ctl_number(const uint8_t **p, const uint8_t *end)
{
	static const json_int_t edges[] = {
		0,	  1,	-1,   8,    64,		  127,		128,
		896,	  1023, 1024, 1025, 4294967295LL, 4294967296LL, INT64_MAX,
		INT64_MIN
	};
	uint8_t k = fuzz_ctl_take(p, end);
	json_int_t v = 0;
	int i;

	switch (k % 4) {
	case 0:
		return NULL;
	case 1:
		return json_string("8");
	case 2:
		for (i = 0; i < 8; i++)
			v = (json_int_t)((uint64_t)v << 8 | fuzz_ctl_take(p, end));
		return json_integer(v);
	default:
		return json_integer(edges[k % (sizeof(edges) / sizeof(edges[0]))]);
	}
}

/* fuzz_ctl_request - a "map-change" request made from the input, field by field. */
static json_t *fuzz_ctl_request(const uint8_t *p, const uint8_t *end)
{
	static const char *const ops[] = { "add", "add-virtual", "grow", "remove", "shrink" };
	static const char *const layouts[] = { "stripe", "concat", "mirror" };
	json_t *req = json_object(), *vols;
	uint8_t k, n, i;

	if (!req)
		return NULL;
	k = fuzz_ctl_take(&p, end);
	if (k % 8)
		json_object_set_new(req, "op", json_string(ops[k % 5]));
	json_object_set_new(req, "name", fuzz_ctl_name(&p, end, false));
	json_object_set_new(req, "group", fuzz_ctl_name(&p, end, true));
	json_object_set_new(req, "first_block", fuzz_ctl_number(&p, end));
	json_object_set_new(req, "blocks", fuzz_ctl_number(&p, end));
	json_object_set_new(req, "chunk_blocks", fuzz_ctl_number(&p, end));
	k = fuzz_ctl_take(&p, end);
	if (k % 4)
		json_object_set_new(req, "layout", json_string(layouts[k % 3]));
	k = fuzz_ctl_take(&p, end);
	if (k % 5 == 0)
		return req;
	vols = k % 5 == 1 ? json_string("a") : json_array();
	n = fuzz_ctl_take(&p, end) % (COH_MAP_MAX_COMPONENTS + 3);
	for (i = 0; json_is_array(vols) && i < n; i++)
		json_array_append_new(vols, fuzz_ctl_name(&p, end, false));
	json_object_set_new(req, "volumes", vols);
	return req;
}

/* fuzz_ctl_check - apply @req to the base table; abort when a property fails. */
static void fuzz_ctl_check(json_t *req)
{
	static struct coh_map base, m;
	char err[160], why[160];
	int ret;

	fuzz_ctl_base(&base);
	if (coh_map_check(&base, why, sizeof(why)))
		abort(); /* the target's own table */
	m = base;
	memset(err, 0x7f, sizeof(err));
	err[0] = '\0';
	ret = daemon_map_edit("fuzz", req, &m, err, sizeof(err));
	if (ret) {
		if (ret > 0 || !memchr(err, '\0', sizeof(err)) || !err[0])
			abort();
		return;
	}
	if (m.version != base.version + 1) /* the change's version, as the router asks */
		abort();
	if (coh_map_check(&m, why, sizeof(why)) || coh_map_compatible(&base, &m, why, sizeof(why)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *req;

	if (!size)
		return 0;
	if (data[0] & 1) {
		req = fuzz_ctl_request(data + 1, data + size);
	} else {
		req = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
		if (req && !json_is_object(req)) {
			json_decref(req);
			req = NULL;
		}
	}
	if (req) {
		fuzz_ctl_check(req);
		json_decref(req);
	}
	return 0;
}

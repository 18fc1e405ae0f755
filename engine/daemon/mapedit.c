/*
 * mapedit.c - the edits of the mapping table that cohortctl asks for over the control socket
 * ("map-change": add, add-virtual, grow, remove a volume): a JSON request read into the next
 * table, which coh_route_map_change then makes cluster-wide. Everything in the request is
 * checked here or by coh_map_add/grow/remove before the table is offered; a bad field gets an
 * error that names it. The fuzz target fuzz_ctl feeds it arbitrary requests.
 *
 * Leaves out: the socket and its JSON framing (control.c), the change protocol (router.c).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"

/* mapedit_virtual - the next table with virtual volume @name added (the request @req: "layout",
 * stripe or concat, "chunk_blocks" for a stripe, "volumes", the logical volumes' names). */
static int mapedit_virtual(const char *cluster, json_t *req, const char *name, struct coh_map *m,
			   char *err, size_t errlen)
{
	const char *layout = json_string_value(json_object_get(req, "layout"));
	json_t *vols = json_object_get(req, "volumes"),
	       *chunk = json_object_get(req, "chunk_blocks"), *x;
	struct coh_map_volume v;
	size_t i;
	int c, ret;

	memset(&v, 0, sizeof(v));
	if (!layout || (strcmp(layout, "stripe") && strcmp(layout, "concat"))) {
		snprintf(err, errlen, "map add-virtual %s: a layout (stripe or concat)", name);
		return -EINVAL;
	}
	v.layout = layout[0] == 's' ? COH_MAP_STRIPE : COH_MAP_CONCAT;
	if (v.layout == COH_MAP_STRIPE) {
		if (!json_is_integer(chunk) || json_integer_value(chunk) <= 0 ||
		    json_integer_value(chunk) > UINT32_MAX) {
			snprintf(err, errlen, "map add-virtual %s: a stripe's chunk in blocks",
				 name);
			return -EINVAL;
		}
		v.stripe_blocks = (uint32_t)json_integer_value(chunk);
	}
	if (!json_is_array(vols) || !json_array_size(vols) ||
	    json_array_size(vols) > COH_MAP_MAX_COMPONENTS) {
		snprintf(err, errlen, "map add-virtual %s: 1 to %u logical volumes", name,
			 COH_MAP_MAX_COMPONENTS);
		return -EINVAL;
	}
	json_array_foreach(vols, i, x)
	{
		c = coh_map_find(m, json_string_value(x));
		if (c < 0 || m->volumes[c].kind != COH_MAP_LOGICAL) {
			snprintf(err, errlen, "map add-virtual %s: no logical volume \"%.32s\"",
				 name, json_string_value(x) ? json_string_value(x) : "");
			return -EINVAL;
		}
		v.comp[v.ncomp++] = (uint32_t)c;
		v.blocks += m->volumes[c].blocks;
	}
	snprintf(v.name, sizeof(v.name), "%s", name);
	ret = daemon_volume_id_online(cluster, name, m->version + 1, v.id);
	if (ret)
		return ret;
	v.kind = COH_MAP_VIRTUAL;
	return coh_map_add(m, &v, err, errlen); /* components distinct, sizes, in no other */
}

int daemon_map_edit(const char *cluster, json_t *req, struct coh_map *m, char *err, size_t errlen)
{
	const char *op = json_string_value(json_object_get(req, "op"));
	const char *name = json_string_value(json_object_get(req, "name"));
	const char *group = json_string_value(json_object_get(req, "group"));
	json_t *first = json_object_get(req, "first_block"),
	       *blocks = json_object_get(req, "blocks");
	struct coh_map_volume v;
	uint32_t g;
	int ret;

	if (!op)
		op = "";
	if (!name || !name[0] || strlen(name) > COH_MAP_NAME_MAX) {
		snprintf(err, errlen, "map %s: a volume name (1 to %u characters)", op,
			 COH_MAP_NAME_MAX);
		return -EINVAL;
	}
	if (!strcmp(op, "add-virtual"))
		return mapedit_virtual(cluster, req, name, m, err, errlen);
	if (strcmp(op, "remove") && (!json_is_integer(blocks) || json_integer_value(blocks) <= 0)) {
		snprintf(err, errlen, "map %s %s: a size in blocks (a positive integer)", op, name);
		return -EINVAL;
	}
	if (!strcmp(op, "grow"))
		return coh_map_grow(m, name, (uint64_t)json_integer_value(blocks), err, errlen);
	if (!strcmp(op, "remove"))
		return coh_map_remove(m, name, err, errlen);
	if (strcmp(op, "add")) {
		snprintf(err, errlen,
			 "map: unknown change \"%.32s\" (add, add-virtual, grow, remove)", op);
		return -EINVAL;
	}
	for (g = 0; group && g < m->ngroups && strcmp(m->groups[g].name, group); g++)
		;
	if (!group || g == m->ngroups) {
		snprintf(err, errlen, "map add %s: no group \"%.32s\"", name, group ? group : "");
		return -EINVAL;
	}
	if (!json_is_integer(first) || json_integer_value(first) < 0) {
		snprintf(err, errlen, "map add %s: a first block (an integer, 0 or more)", name);
		return -EINVAL;
	}
	memset(&v, 0, sizeof(v));
	snprintf(v.name, sizeof(v.name), "%s", name);
	ret = daemon_volume_id_online(cluster, name, m->version + 1, v.id);
	if (ret)
		return ret;
	v.kind = COH_MAP_LOGICAL;
	v.group = g;
	v.first_block = (uint64_t)json_integer_value(first);
	v.blocks = (uint64_t)json_integer_value(blocks);
	return coh_map_add(m, &v, err, errlen);
}

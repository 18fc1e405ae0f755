/*
 * frontend.c - the TCMU front end plugged into the daemon's export table (struct
 * daemon_exports_ops): an export becomes a SCSI logical unit over its volume's range of the
 * node's blocks (coh_scsi_lu_new, first_lba = the volume's first block, submit = coh_node_submit)
 * served as TCMU backstore core/user_<hba>/<device> (coh_tcmu_dev_new, which creates it or, after
 * a restart, reattaches to it). Every node derives the same identity from the volume's id and
 * reports its own target port group (node id + 1), all active/optimized.
 *
 * Removing an export stops its ring and leaves the backstore in configfs (remove = false): a LUN
 * may link it, and a daemon started again reattaches to it; scripts/lio.sh removes backstores.
 * Before the daemon leaves, daemon_tcmu_quiesce turns every unit to ALUA unavailable for a moment,
 * so that hosts move to other paths at once rather than waiting out the kernel's cmd_time_out.
 *
 * With a router (a routed config, docs/routing.md), a unit's block path is the router: the unit's
 * LBAs are the volume's, and each command becomes a coh_route_io on the volume's index in the
 * mapping table (dtcmu_route_submit), run here, forwarded, or split into component commands; a
 * COMPARE AND WRITE runs on one group's engine (router.h: within one component, else ILLEGAL
 * REQUEST).
 *
 * Leaves out: LIO fabrics and LUNs (scripts/lio.sh), units that follow quorum (the unit answers
 * the engine's -EROFS itself), persistent reservations (docs/frontend.md).
 *
 * Locking: the export table's lock serialises add and remove (exports.c); daemon_tcmu_quiesce is
 * called from the main thread under no lock, and only reads the table it owns with @lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cohort/router.h"
#include "cohort/scsi.h"
#include "cohort/tcmu.h"
#include "daemon.h"

#define DTCMU_DRAIN_MS 1000 /* how long units answer "unavailable" before their rings stop */

/* A routed unit's block path: the router and the volume's index in its table. Allocated apart
 * from the unit (the units array moves). */
struct dtcmu_route {
	struct coh_route *router;
	uint32_t volume;		     /* its index when the unit was made: a hint */
	uint8_t volume_id[COH_MAP_ID_BYTES]; /* the volume, across table changes */
};

struct dtcmu_unit {
	char name[DAEMON_NAME_MAX + 1]; /* the export's */
	struct coh_scsi_lu *lu;
	struct coh_tcmu_dev *dev;
	struct dtcmu_route *route; /* NULL: the node's engine */
};

/* One routed command: the unit's operation and the router's. */
struct dtcmu_rio {
	struct coh_route_io rio;
	struct coh_io *io;
};

struct daemon_tcmu {
	struct coh_node *node;
	struct coh_route *router; /* a routed config: every unit's block path */
	struct coh_map map;	  /* the router's table, as last read (under @lock) */
	uint32_t node_id, nodes;
	char configfs[DAEMON_PATH_MAX + 1]; /* "" for the kernel's */
	pthread_mutex_t lock;		    /* guards @n and @units */
	uint32_t n;
	struct dtcmu_unit units[DAEMON_MAX_EXPORTS];
};

/* dtcmu_submit - the unit's block path: the node's asynchronous engine. */
static int dtcmu_submit(void *ctx, struct coh_io *io)
{
	return coh_node_submit(ctx, io);
}

/* dtcmu_route_done - the router's completion: the unit's, once. */
static void dtcmu_route_done(struct coh_route_io *rio, const struct coh_map_status *st)
{
	struct dtcmu_rio *r = rio->arg;
	struct coh_io *io = r->io;

	free(r);
	io->miscompare = st->status == -EILSEQ ? st->miscompare : 0;
	io->cb(io, st->status, io->cb_arg);
}

/* dtcmu_route_submit - a routed unit's block path: @io's LBA is the volume's. */
static int dtcmu_route_submit(void *ctx, struct coh_io *io)
{
	struct dtcmu_route *rt = ctx;
	struct dtcmu_rio *r;
	int ret;

	r = malloc(sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->io = io;
	r->rio = (struct coh_route_io){ .type = io->type,
					.volume = rt->volume,
					.lba = io->lba,
					.nblocks = io->nblocks,
					.buf = io->buf,
					.done = dtcmu_route_done,
					.arg = r };
	memcpy(r->rio.volume_id, rt->volume_id, sizeof(r->rio.volume_id));
	ret = coh_route_submit(rt->router, &r->rio);
	if (ret)
		free(r);
	return ret;
}

/* dtcmu_add - daemon_exports_ops.add: a unit over @v, exported as user_<hba>/<device>. */
static int dtcmu_add(void *ctx, const struct daemon_export *e, const struct daemon_volume *v,
		     char *state, size_t len)
{
	struct daemon_tcmu *t = ctx;
	struct coh_scsi_lu_attr la = { .attr_size = sizeof(la) };
	struct coh_tcmu_dev_attr ta = { .attr_size = sizeof(ta) };
	struct coh_tcmu_stats st;
	struct dtcmu_unit *u;
	int ret;

	pthread_mutex_lock(&t->lock);
	if (t->n == DAEMON_MAX_EXPORTS) {
		ret = -ENOSPC;
		goto out_unlock;
	}
	u = &t->units[t->n];
	memset(u, 0, sizeof(*u));
	snprintf(u->name, sizeof(u->name), "%s", e->name);
	la.block_size = coh_node_block_size(t->node);
	la.nblocks = v->blocks;
	la.first_lba = v->first_block;
	memcpy(la.volume_id, v->id, sizeof(la.volume_id));
	la.volume_name = v->name;
	la.tpg_id = (uint16_t)(t->node_id + 1);
	la.rel_port_id = (uint16_t)(t->node_id + 1);
	la.tpg_count = (uint16_t)t->nodes;
	la.max_xfer_blocks = COH_TCMU_MAX_SECTORS_DEFAULT; /* what the TCMU device takes */
	la.submit = dtcmu_submit;
	la.submit_ctx = t->node;
	if (t->router) {
		int vi;

		/* The table as it is now: it changes online (a volume made, grown, deleted). */
		coh_route_map(t->router, &t->map);
		vi = coh_map_find(&t->map, v->name);
		if (vi < 0) {
			ret = -ENOENT;
			goto out_unlock;
		}
		u->route = malloc(sizeof(*u->route));
		if (!u->route) {
			ret = -ENOMEM;
			goto out_unlock;
		}
		u->route->router = t->router;
		u->route->volume = (uint32_t)vi;
		memcpy(u->route->volume_id, t->map.volumes[vi].id, COH_MAP_ID_BYTES);
		memcpy(la.volume_id, t->map.volumes[vi].id, sizeof(la.volume_id));
		la.nblocks = t->map.volumes[vi].blocks;
		la.block_size = t->map.block_size;
		la.first_lba = 0; /* the router takes the volume's LBAs */
		la.submit = dtcmu_route_submit;
		la.submit_ctx = u->route;
	}
	if (v->pr_blocks) { /* the table follows the blocks the host sees (conf.c) */
		la.pr_lba = v->first_block + v->blocks;
		la.pr_blocks = v->pr_blocks;
		la.initiator = e->initiator;
	}
	ret = coh_scsi_lu_new(&la, &u->lu);
	if (ret)
		goto err_free_route;
	ta.hba = e->hba;
	ta.cmd_time_out_s = e->cmd_time_out;
	ta.name = e->device;
	ta.nblocks = la.nblocks;
	ta.block_size = la.block_size;
	memcpy(ta.volume_id, v->id, sizeof(ta.volume_id));
	ta.lu = u->lu;
	ta.exec = coh_scsi_cmd_exec;
	ta.configfs = t->configfs[0] ? t->configfs : NULL;
	ta.reservations = v->pr_blocks != 0;
	ret = coh_tcmu_dev_new(&ta, &u->dev);
	if (ret)
		goto err_delete_lu;
	coh_tcmu_dev_stats(u->dev, &st);
	snprintf(state, len, "attached %s (%s)", coh_tcmu_dev_path(u->dev),
		 st.reattached ? "reattached" : "created");
	t->n++;
	pthread_mutex_unlock(&t->lock);
	return 0;

err_delete_lu:
	coh_scsi_lu_delete(u->lu);
err_free_route:
	free(u->route);
	u->route = NULL;
out_unlock:
	pthread_mutex_unlock(&t->lock);
	return ret;
}

int daemon_tcmu_follow(struct daemon_tcmu *t)
{
	uint64_t was, now;
	uint32_t i;
	int vi, grew = 0;

	if (!t || !t->router)
		return 0;
	pthread_mutex_lock(&t->lock);
	if (coh_route_map(t->router, &t->map)) {
		pthread_mutex_unlock(&t->lock);
		return 0;
	}
	for (i = 0; i < t->n; i++) {
		struct dtcmu_unit *u = &t->units[i];

		if (!u->route)
			continue;
		/* By its id: a removal before it moves its index. A volume gone is answered by
		 * the router (-ENXIO: LOGICAL UNIT NOT SUPPORTED); it never shrinks. */
		vi = coh_map_find_id(&t->map, u->route->volume_id, u->route->volume);
		if (vi < 0)
			continue;
		was = coh_scsi_lu_nblocks(u->lu);
		now = t->map.volumes[vi].blocks;
		if (now <= was)
			continue;
		if (coh_scsi_lu_grow(u->lu, now)) {
			daemon_log("export",
				   "%s: its volume grew to %" PRIu64 " blocks, the unit "
				   "cannot follow (SIGHUP makes it again)",
				   u->name, now);
			continue;
		}
		daemon_log("export",
			   "%s: grown from %" PRIu64 " to %" PRIu64 " blocks (table version "
			   "%" PRIu64 "); hosts see it at their next READ CAPACITY (a rescan)",
			   u->name, was, now, t->map.version);
		grew++;
	}
	pthread_mutex_unlock(&t->lock);
	return grew;
}

/* dtcmu_remove - daemon_exports_ops.remove: stop the ring (the backstore stays), free the unit. */
static int dtcmu_remove(void *ctx, const struct daemon_export *e)
{
	struct daemon_tcmu *t = ctx;
	struct dtcmu_unit *u;
	uint32_t i;
	int ret;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < t->n && strcmp(t->units[i].name, e->name); i++)
		;
	if (i == t->n) {
		pthread_mutex_unlock(&t->lock);
		return -ENOENT;
	}
	u = &t->units[i];
	coh_scsi_lu_set_state(u->lu, COH_SCSI_LU_UNAVAILABLE);
	ret = coh_tcmu_dev_delete(u->dev, false);
	/* -ETIMEDOUT: commands still in flight may complete into the device and the unit; both
	 * are left allocated rather than freed under the engine. */
	if (ret != -ETIMEDOUT) {
		coh_scsi_lu_delete(u->lu);
		free(u->route);
	}
	memmove(u, u + 1, (t->n - i - 1) * sizeof(*u));
	t->n--;
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/* dtcmu_resolve - daemon_exports_ops.resolve: a routed config's volume as the mapping table has
 * it now. */
static int dtcmu_resolve(void *ctx, const char *name, struct daemon_volume *out)
{
	struct daemon_tcmu *t = ctx;
	const struct coh_map_volume *mv;
	int vi, ret = -ENOENT;

	pthread_mutex_lock(&t->lock);
	if (t->router && !coh_route_map(t->router, &t->map) &&
	    (vi = coh_map_find(&t->map, name)) >= 0) {
		mv = &t->map.volumes[vi];
		memcpy(out->id, mv->id, sizeof(out->id));
		out->kind = mv->kind;
		out->blocks = mv->blocks;
		if (!out->line) { /* made online: its place is the table's */
			out->group = mv->group;
			out->first_block = mv->kind == COH_MAP_LOGICAL ? mv->first_block : 0;
		}
		ret = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

const struct daemon_exports_ops daemon_tcmu_ops = {
	.name = "tcmu",
	.add = dtcmu_add,
	.remove = dtcmu_remove,
	.resolve = dtcmu_resolve,
};

int daemon_tcmu_new(struct coh_node *node, uint32_t node_id, uint32_t nodes, const char *configfs,
		    struct daemon_tcmu **tp)
{
	struct daemon_tcmu *t;
	int ret;

	if (!node || !tp || (configfs && strlen(configfs) > DAEMON_PATH_MAX))
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	ret = -pthread_mutex_init(&t->lock, NULL);
	if (ret) {
		free(t);
		return ret;
	}
	t->node = node;
	t->node_id = node_id;
	t->nodes = nodes;
	snprintf(t->configfs, sizeof(t->configfs), "%s", configfs ? configfs : "");
	*tp = t;
	return 0;
}

int daemon_tcmu_set_router(struct daemon_tcmu *t, struct coh_route *router, const struct coh_map *m)
{
	if (!t || !router || !m || t->n)
		return -EINVAL;
	t->router = router;
	t->map = *m;
	return 0;
}

void daemon_tcmu_quiesce(struct daemon_tcmu *t)
{
	struct timespec drain = { .tv_sec = DTCMU_DRAIN_MS / 1000,
				  .tv_nsec = (DTCMU_DRAIN_MS % 1000) * 1000000L };
	uint32_t i, n;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < t->n; i++)
		coh_scsi_lu_set_state(t->units[i].lu, COH_SCSI_LU_UNAVAILABLE);
	n = t->n;
	pthread_mutex_unlock(&t->lock);
	/* Hosts see NOT READY (ALUA unavailable) and dm-multipath moves to another path; the wait
	 * lets the commands already queued get that answer before the rings stop. */
	if (n)
		nanosleep(&drain, NULL);
}

void daemon_tcmu_delete(struct daemon_tcmu **tp)
{
	if (!tp || !*tp)
		return;
	/* The export table removed every unit first (daemon_exports_delete). */
	pthread_mutex_destroy(&(*tp)->lock);
	free(*tp);
	*tp = NULL;
}

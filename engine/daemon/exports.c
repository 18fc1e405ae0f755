/*
 * exports.c - the daemon's export table: which volumes this node hands to a front end, and in
 * what state. The front end plugs in through struct daemon_exports_ops (add, remove): TCMU,
 * frontend.c. Without one ([daemon] frontend = none) the table records the exports and reports
 * them not attached, never a state that did not happen. A front end's failure shows as
 * "attach failed: ..." and the export stays in the table; the next reload tries it again.
 * SIGHUP applies a new config's [export] sections here.
 *
 * Leaves out: the front end itself (frontend.c, include/cohort/tcmu.h), LIO fabrics and LUNs
 * (scripts/lio.sh).
 *
 * Locking: @lock guards the table; the main thread changes it (start, SIGHUP, exit), the control
 * thread reads it. Front-end calls are made with the lock held: they are short (configfs writes),
 * and the control thread waits for them at most that long.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

#define DX_NOT_ATTACHED "not attached (no front end: [daemon] frontend = none)"

struct dx_entry {
	struct daemon_export e;
	struct daemon_volume v;
	bool attached;
	char state[96];
};

struct daemon_exports {
	pthread_mutex_t lock;
	const struct daemon_exports_ops *ops;
	void *ctx;
	uint32_t n;
	struct dx_entry x[DAEMON_MAX_EXPORTS];
};

int daemon_exports_new(const struct daemon_exports_ops *ops, void *ctx, struct daemon_exports **xp)
{
	struct daemon_exports *x;
	int ret;

	if (!xp || (ops && (!ops->add || !ops->remove)))
		return -EINVAL;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	ret = -pthread_mutex_init(&x->lock, NULL);
	if (ret) {
		free(x);
		return ret;
	}
	x->ops = ops;
	x->ctx = ctx;
	*xp = x;
	return 0;
}

/* dx_remove - take entry @i out of the table, detaching it first. Lock held. */
static int dx_remove(struct daemon_exports *x, uint32_t i)
{
	struct dx_entry *d = &x->x[i];
	int ret = 0;

	if (d->attached) {
		ret = x->ops->remove(x->ctx, &d->e);
		if (ret)
			daemon_log("export", "%s: %s did not detach it: %s", d->e.name,
				   x->ops->name, coh_strerror(ret));
	}
	daemon_log("export", "%s: removed", d->e.name);
	memmove(d, d + 1, (x->n - i - 1) * sizeof(*d));
	x->n--;
	return ret ? 1 : 0;
}

/* dx_same - whether the running export @d is @e of volume @v unchanged. */
static bool dx_same(const struct dx_entry *d, const struct daemon_export *e,
		    const struct daemon_volume *v)
{
	return !strcmp(d->e.volume, e->volume) && !strcmp(d->e.device, e->device) &&
	       d->e.hba == e->hba && d->e.cmd_time_out == e->cmd_time_out &&
	       !strcmp(d->e.initiator, e->initiator) && d->v.first_block == v->first_block &&
	       d->v.blocks == v->blocks && d->v.pr_blocks == v->pr_blocks;
}

/* dx_volume - the volume export @e serves: the front end's view (dx resolve) over the
 * config's; NULL when neither has it. */
static const struct daemon_volume *dx_volume(struct daemon_exports *x, const struct daemon_conf *c,
					     const struct daemon_export *e,
					     struct daemon_volume *tmp)
{
	const struct daemon_volume *v = daemon_conf_volume(c, e->volume);

	if (!x->ops || !x->ops->resolve)
		return v;
	if (v)
		*tmp = *v;
	else {
		memset(tmp, 0, sizeof(*tmp));
		snprintf(tmp->name, sizeof(tmp->name), "%s", e->volume);
	}
	return x->ops->resolve(x->ctx, e->volume, tmp) ? v : tmp;
}

int daemon_exports_apply(struct daemon_exports *x, const struct daemon_conf *c)
{
	struct daemon_volume tmp;
	uint32_t i, j;
	int failed = 0, ret;

	pthread_mutex_lock(&x->lock);
	/* Removals first: a changed export is removed, then added again below; so is one whose
	 * attach failed, so that a reload retries it. */
	for (i = 0; i < x->n;) {
		const struct daemon_volume *v;

		for (j = 0; j < c->nexports; j++) {
			if (!strcmp(c->exports[j].name, x->x[i].e.name))
				break;
		}
		v = j < c->nexports ? dx_volume(x, c, &c->exports[j], &tmp) : NULL;
		if (!v || (x->ops && !x->x[i].attached) || !dx_same(&x->x[i], &c->exports[j], v))
			failed += dx_remove(x, i);
		else
			i++;
	}
	for (j = 0; j < c->nexports; j++) {
		const struct daemon_export *e = &c->exports[j];
		const struct daemon_volume *v = dx_volume(x, c, e, &tmp);
		struct dx_entry *d;

		for (i = 0; i < x->n; i++) {
			if (!strcmp(x->x[i].e.name, e->name))
				break;
		}
		if (i < x->n)
			continue; /* kept as it was */
		if (!v) {
			/* A routed config's volume that the mapping table does not have (deleted
			 * online, or not made yet): logged, tried again at the next reload. */
			daemon_log("export", "%s: volume %s: not in the mapping table", e->name,
				   e->volume);
			failed++;
			continue;
		}
		d = &x->x[x->n++];
		memset(d, 0, sizeof(*d));
		d->e = *e;
		d->v = *v;
		if (!x->ops) {
			snprintf(d->state, sizeof(d->state), "%s", DX_NOT_ATTACHED);
		} else {
			ret = x->ops->add(x->ctx, e, v, d->state, sizeof(d->state));
			if (ret) {
				snprintf(d->state, sizeof(d->state),
					 "attach failed: %s (see the log)", coh_strerror(ret));
				failed++;
			} else {
				d->attached = true;
			}
		}
		daemon_log("export", "%s: volume %s as user_%u/%s: %s", e->name, e->volume, e->hba,
			   e->device, d->state);
	}
	pthread_mutex_unlock(&x->lock);
	return failed;
}

json_t *daemon_exports_json(struct daemon_exports *x)
{
	json_t *a = json_array();
	uint32_t i;

	if (!a)
		return NULL;
	pthread_mutex_lock(&x->lock);
	for (i = 0; i < x->n; i++) {
		const struct dx_entry *d = &x->x[i];

		json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:I, s:b, s:s, s:s}", "name",
						   d->e.name, "volume", d->e.volume, "device",
						   d->e.device, "hba", (json_int_t)d->e.hba,
						   "attached", d->attached, "state", d->state,
						   "initiator", d->e.initiator));
	}
	pthread_mutex_unlock(&x->lock);
	return a;
}

void daemon_exports_delete(struct daemon_exports **xp)
{
	struct daemon_exports *x;

	if (!xp || !*xp)
		return;
	x = *xp;
	pthread_mutex_lock(&x->lock);
	while (x->n)
		dx_remove(x, x->n - 1);
	pthread_mutex_unlock(&x->lock);
	pthread_mutex_destroy(&x->lock);
	free(x);
	*xp = NULL;
}

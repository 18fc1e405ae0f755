/*
 * tcmu_serve.c - one node of a shm cluster exporting the cluster's volume through TCMU, for the
 * VM rig (scripts/rig-frontend.sh) until cohortd does the same: opens node --id of a --nodes
 * cluster on the files in --dir (RAID-5 over three element files there, created on first use),
 * makes a SCSI unit on it (submit = coh_node_submit) and exports it as core/user_<hba>/<name>
 * (coh_tcmu_dev_new). Serves until SIGTERM or SIGINT, then stops the ring, waits for the commands
 * in flight, and closes the node cleanly: exit 0. For a second before that, the unit answers
 * media commands with NOT READY (ALUA unavailable), so that hosts move to other paths at once.
 * Started again with the same arguments, it rejoins the cluster and reattaches to its TCMU
 * device.
 *
 *   tcmu_serve --dir D --nodes N --id I --hba H --name NAME [--volume-id 32HEX]
 *              [--elem-blocks B] [--cmd-time-out S] [--remove]
 *
 * Every node uses the same --volume-id (the identity hosts see on every path). Prints
 * "tcmu_serve: ready ..." on stdout once it serves. Leaves out: configuration files, rdma,
 * several volumes (cohortd).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cohort/fabric.h"
#include "cohort/node.h"
#include "cohort/scsi.h"
#include "cohort/tcmu.h"

struct ts_opts {
	const char *dir, *name;
	uint32_t nodes, id, hba, elem_blocks, cmd_time_out;
	uint8_t volume_id[16];
	bool remove;
};

/* ts_stats - what the node did, on stderr: for benchmarks' logs (scripts/bench-frontend.sh). */
static void ts_stats(uint32_t id, struct coh_node *n)
{
	static struct coh_node_stats st;

	if (coh_node_stats(n, &st))
		return;
	fprintf(stderr,
		"tcmu_serve %u: stats: reads %llu writes %llu; write latency p50 %llu p99 %llu "
		"p99.9 %llu ns; log appends %llu backpressure %llu; destages %llu; view changes "
		"%llu; cache hits %llu misses %llu\n",
		id, (unsigned long long)st.reads, (unsigned long long)st.writes,
		(unsigned long long)coh_lat_percentile(st.lat_write, 0.5),
		(unsigned long long)coh_lat_percentile(st.lat_write, 0.99),
		(unsigned long long)coh_lat_percentile(st.lat_write, 0.999),
		(unsigned long long)st.log_appends, (unsigned long long)st.log_backpressure,
		(unsigned long long)st.destages, (unsigned long long)st.view_changes,
		(unsigned long long)st.cache_hits, (unsigned long long)st.cache_misses);
}

static int ts_submit(void *ctx, struct coh_io *io)
{
	return coh_node_submit(ctx, io);
}

static int ts_hex(const char *s, uint8_t out[16])
{
	int i;

	if (strlen(s) != 32)
		return -1;
	for (i = 0; i < 16; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static int ts_u32(const char *s, uint32_t *v)
{
	char *end;
	unsigned long x;

	errno = 0;
	x = strtoul(s, &end, 0);
	if (errno || end == s || *end || x > UINT32_MAX)
		return -1;
	*v = (uint32_t)x;
	return 0;
}

static int ts_parse(int argc, char **argv, struct ts_opts *o)
{
	int i;

	ts_hex("c0407700000000000000000000000001", o->volume_id);
	o->elem_blocks = 4096;
	o->cmd_time_out = 30;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int bad = 0;

		if (!strcmp(a, "--remove")) {
			o->remove = true;
			continue;
		}
		if (!v)
			goto usage;
		if (!strcmp(a, "--dir"))
			o->dir = v;
		else if (!strcmp(a, "--name"))
			o->name = v;
		else if (!strcmp(a, "--nodes"))
			bad = ts_u32(v, &o->nodes);
		else if (!strcmp(a, "--id"))
			bad = ts_u32(v, &o->id);
		else if (!strcmp(a, "--hba"))
			bad = ts_u32(v, &o->hba);
		else if (!strcmp(a, "--elem-blocks"))
			bad = ts_u32(v, &o->elem_blocks);
		else if (!strcmp(a, "--cmd-time-out"))
			bad = ts_u32(v, &o->cmd_time_out);
		else if (!strcmp(a, "--volume-id"))
			bad = ts_hex(v, o->volume_id);
		else
			goto usage;
		if (bad) {
			fprintf(stderr, "tcmu_serve: bad value '%s' for %s\n", v, a);
			return -1;
		}
		i++;
	}
	if (o->dir && o->name && o->nodes >= 2 && o->id < o->nodes && o->elem_blocks)
		return 0;
usage:
	fprintf(stderr, "usage: tcmu_serve --dir D --nodes N --id I --hba H --name NAME "
			"[--volume-id 32HEX] [--elem-blocks B] [--cmd-time-out S] [--remove]\n");
	return -1;
}

int main(int argc, char **argv)
{
	struct ts_opts o = { 0 };
	struct coh_fabric_attr fa = { .provider = "shm" };
	struct coh_node_attr na = { .raid = { .level = COH_RAID5, .nelems = 3, .chunk_blocks = 16 },
				    .block_size = 4096,
				    .cache_blocks = 1024,
				    .timeout_ms = 10000 };
	struct coh_scsi_lu_attr la = { .attr_size = sizeof(la) };
	struct coh_tcmu_dev_attr ta = { .attr_size = sizeof(ta) };
	struct coh_fabric *fab = NULL;
	struct coh_node *n = NULL;
	struct coh_scsi_lu *lu = NULL;
	struct coh_tcmu_dev *dev = NULL;
	char paths[3][600];
	struct timespec drain = { 1, 0 };
	sigset_t set;
	int ret, sig = 0, rc = 1;
	uint32_t i;

	if (ts_parse(argc, argv, &o))
		return 2;
	/* Signals go to sigwait below, never to an engine or ring thread. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	fa.cluster = o.dir;
	fa.node_id = o.id;
	ret = coh_fabric_open(&fa, &fab);
	if (ret) {
		fprintf(stderr, "tcmu_serve %u: fabric: %s\n", o.id, strerror(-ret));
		return 1;
	}
	na.fab = fab;
	na.nodes = o.nodes;
	na.elem_blocks = o.elem_blocks;
	for (i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", o.dir, i);
		na.elem_paths[i] = paths[i];
	}
	ret = coh_node_open(&na, &n);
	if (ret) {
		fprintf(stderr, "tcmu_serve %u: node open: %s\n", o.id, strerror(-ret));
		goto close_fabric;
	}
	la.block_size = coh_node_block_size(n);
	la.nblocks = coh_node_nblocks(n);
	memcpy(la.volume_id, o.volume_id, sizeof(la.volume_id));
	la.volume_name = o.name;
	la.tpg_id = (uint16_t)(o.id + 1);
	la.rel_port_id = (uint16_t)(o.id + 1);
	la.tpg_count = (uint16_t)o.nodes;
	la.max_xfer_blocks = COH_TCMU_MAX_SECTORS_DEFAULT; /* what the TCMU device takes */
	la.submit = ts_submit;
	la.submit_ctx = n;
	ret = coh_scsi_lu_new(&la, &lu);
	if (ret) {
		fprintf(stderr, "tcmu_serve %u: logical unit: %s\n", o.id, strerror(-ret));
		goto close_node;
	}
	ta.hba = o.hba;
	ta.name = o.name;
	ta.nblocks = la.nblocks;
	ta.block_size = la.block_size;
	memcpy(ta.volume_id, o.volume_id, sizeof(ta.volume_id));
	ta.cmd_time_out_s = o.cmd_time_out;
	ta.lu = lu;
	ta.exec = coh_scsi_cmd_exec;
	ret = coh_tcmu_dev_new(&ta, &dev);
	if (ret) {
		fprintf(stderr, "tcmu_serve %u: tcmu device: %s\n", o.id, strerror(-ret));
		goto delete_lu;
	}
	printf("tcmu_serve: ready node %u of %u, %s, %llu blocks of %u\n", o.id, o.nodes,
	       coh_tcmu_dev_path(dev), (unsigned long long)la.nblocks, la.block_size);
	fflush(stdout);
	if (sigwait(&set, &sig))
		sig = SIGTERM;
	fprintf(stderr, "tcmu_serve %u: signal %d: closing\n", o.id, sig);
	ts_stats(o.id, n);
	/* Tell hosts first: for a moment media commands get NOT READY (ALUA unavailable), so
	 * dm-multipath fails this path and retries elsewhere at once, rather than waiting for the
	 * kernel's cmd_time_out on a device nobody serves. */
	coh_scsi_lu_set_state(lu, COH_SCSI_LU_UNAVAILABLE);
	nanosleep(&drain, NULL);
	rc = 0;
	ret = coh_tcmu_dev_delete(dev, o.remove);
	if (ret == -ETIMEDOUT) {
		rc = 1;
		goto out; /* the engine may still complete into it: do not free under it */
	}
	if (ret && !(ret == -EBUSY && o.remove))
		rc = 1;
delete_lu:
	if (lu)
		coh_scsi_lu_delete(lu);
close_node:
	if (coh_node_close(&n))
		rc = 1;
close_fabric:
	coh_fabric_close(&fab);
out:
	return rc;
}

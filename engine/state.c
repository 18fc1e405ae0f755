/*
 * state.c - what a node keeps across its own restarts, beside the log regions it hosts: the last
 * view it prepared (zeroed the dead logs for, or recovered into), the last view it committed, its
 * own log's generation and peers, and whether it left cleanly. A restarting cluster reads these to
 * decide which log copies are current (docs/recovery.md, "Lifecycle").
 *
 * One small file per node in log_dir ("state-<node>"), 64 bytes, little-endian, with a CRC32C.
 * It is replaced whole: written to a temporary file, fsynced, renamed over the old one, and the
 * directory fsynced, so a crash at any point leaves the old state or the new, never a mix. A
 * missing file is a node that never ran; a corrupt one is reported and refused (the node will not
 * guess what it last saw). Without a log_dir nothing persists, and nothing needs to: the log
 * regions are then in a place that does not outlive the node.
 *
 * What it leaves out: the decisions made from the state (membership.c, viewchange.c).
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cohort/log.h"
#include "node_internal.h"

#define STATE_MAGIC 0x54415453u /* "STAT" */
#define STATE_VERSION 1u
#define STATE_LEN 64u

/* Layout: magic 0, version 4, node 8, nodes 12, prepared epoch 16, members 20, committed epoch
 * 24, members 28, log generation 32, log peers 36, clean 40, reserved to 59, crc 60 (of 0..59). */

static void st_put32(uint8_t *b, uint32_t v)
{
	v = htole32(v);
	memcpy(b, &v, 4);
}

static uint32_t st_get32(const uint8_t *b)
{
	uint32_t v;

	memcpy(&v, b, 4);
	return le32toh(v);
}

void node_state_encode(const struct node_state *s, uint32_t node, uint32_t nodes, uint8_t *b)
{
	memset(b, 0, STATE_LEN);
	st_put32(b, STATE_MAGIC);
	st_put32(b + 4, STATE_VERSION);
	st_put32(b + 8, node);
	st_put32(b + 12, nodes);
	st_put32(b + 16, s->prepared_epoch);
	st_put32(b + 20, s->prepared_members);
	st_put32(b + 24, s->committed_epoch);
	st_put32(b + 28, s->committed_members);
	st_put32(b + 32, s->log_gen);
	st_put32(b + 36, s->log_peers);
	st_put32(b + 40, s->clean ? 1 : 0);
	st_put32(b + 44, s->elem_missing);
	st_put32(b + 60, crc32_iscsi(b, 60, 0));
}

int node_state_decode(const uint8_t *b, size_t len, uint32_t node, uint32_t nodes,
		      struct node_state *s)
{
	uint32_t i;

	if (len != STATE_LEN || st_get32(b) != STATE_MAGIC || st_get32(b + 4) != STATE_VERSION ||
	    st_get32(b + 60) != crc32_iscsi((unsigned char *)b, 60, 0))
		return -EBADMSG;
	if (st_get32(b + 8) != node || st_get32(b + 12) != nodes)
		return -EPROTO;
	for (i = 48; i < 60; i++) {
		if (b[i])
			return -EPROTO;
	}
	s->prepared_epoch = st_get32(b + 16);
	s->prepared_members = st_get32(b + 20);
	s->committed_epoch = st_get32(b + 24);
	s->committed_members = st_get32(b + 28);
	s->log_gen = st_get32(b + 32);
	s->log_peers = st_get32(b + 36);
	s->clean = st_get32(b + 40) != 0;
	s->elem_missing = st_get32(b + 44);
	if (st_get32(b + 40) > 1 ||
	    (nodes < 32 && (s->prepared_members >> nodes || s->committed_members >> nodes ||
			    s->log_peers >> nodes)))
		return -EPROTO;
	return 0;
}

static void state_path(const struct coh_node *n, char *buf, size_t len, const char *suffix)
{
	snprintf(buf, len, "%s/state-%u%s", n->log_dir, n->me, suffix);
}

int node_state_load(struct coh_node *n, struct node_state *s, bool *found)
{
	char path[sizeof(n->log_dir) + 32];
	uint8_t b[STATE_LEN + 1];
	ssize_t got;
	int fd, ret;

	memset(s, 0, sizeof(*s));
	*found = false;
	if (!n->log_dir[0])
		return 0;
	state_path(n, path, sizeof(path), "");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	got = read(fd, b, sizeof(b));
	ret = got < 0 ? -errno : 0;
	close(fd);
	if (!ret)
		ret = node_state_decode(b, (size_t)got, n->me, n->nodes, s);
	if (ret) {
		COH_LOG_ERR(
		    "node %u: state file %s unreadable (%s): refusing to guess what this node "
		    "last saw; remove it only if its log regions are also to be discarded",
		    n->me, path, coh_strerror(ret));
		return ret;
	}
	*found = true;
	return 0;
}

int node_state_store(struct coh_node *n, const struct node_state *s)
{
	char path[sizeof(n->log_dir) + 32], tmp[sizeof(n->log_dir) + 32];
	uint8_t b[STATE_LEN];
	int fd, dfd, ret = 0;

	if (!n->log_dir[0])
		return 0;
	state_path(n, path, sizeof(path), "");
	state_path(n, tmp, sizeof(tmp), ".new");
	node_state_encode(s, n->me, n->nodes, b);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, b, sizeof(b)) != (ssize_t)sizeof(b) || fsync(fd) < 0)
		ret = errno ? -errno : -EIO;
	close(fd);
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (!ret) {
		/* The rename is durable once the directory is. */
		dfd = open(n->log_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			if (fsync(dfd) < 0)
				ret = -errno;
			close(dfd);
		}
	}
	if (ret)
		COH_LOG_ERR("node %u: writing %s: %s", n->me, path, coh_strerror(ret));
	return ret;
}

int node_persist(struct coh_node *n, uint32_t E, uint32_t P, bool commit)
{
	struct node_state s = n->st;

	s.prepared_epoch = E;
	s.prepared_members = P;
	if (commit) {
		s.committed_epoch = E;
		s.committed_members = P;
	}
	pthread_mutex_lock(&n->w.lock);
	s.log_gen = n->w.gen;
	s.log_peers = n->w.peers;
	pthread_mutex_unlock(&n->w.lock);
	s.elem_missing = coh_raid_missing(n->raid);
	s.clean = false;
	if (!memcmp(&s, &n->st, sizeof(s)))
		return 0;
	n->st = s;
	return node_state_store(n, &s);
}

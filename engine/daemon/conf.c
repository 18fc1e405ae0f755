/*
 * conf.c - cohortd's configuration: an INI file read with libinih, every key checked as it is
 * read and the whole checked once read (required keys, the secret file, the volumes' fit), before
 * anything starts. Every error names the file, the line and the key. Unknown sections and keys,
 * a key given twice and a section given twice are errors: a typo must not silently fall back to a
 * default on a storage controller.
 *
 * Line numbers: Debian's libinih calls the handler without one, so the reader given to
 * ini_parse_stream counts the lines it hands out; the handler runs for a line before the next is
 * read, so the count is the handler's line. The reader also sees section headers, which gives the
 * line of a section (for a key missing from it) and finds empty sections. The file is read whole
 * (at most 1 MiB) and parsed from memory, the same path the tests and the fuzz target take.
 *
 * Leaves out: includes, environment expansion, multi-line values (off: an indented line is an
 * ordinary line), lines longer than inih's 200-byte buffer and section names longer than its 49
 * bytes (both refused, naming the line).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/evp.h>

#include "cohort/cache.h"
#include "cohort/tcmu.h"
#include "daemon.h"

#define DCONF_MAX_SECTIONS (8 + DAEMON_MAX_GROUPS + DAEMON_MAX_VOLUMES + DAEMON_MAX_EXPORTS)
#define DCONF_SECTION_MAX 80
#define DCONF_LINE_MAX 200 /* inih's line buffer */

/* What the parse has seen, beyond the config itself. */
struct dconf_parse {
	struct daemon_conf *c;
	const char *name; /* the file's name, in errors */
	const char *text; /* the input (daemon_conf_parse), or NULL: @file */
	size_t len, pos;
	uint32_t line;	   /* the line the reader handed out last */
	bool partial;	   /* the last chunk did not end a line */
	uint32_t err_line; /* 0: no error yet */
	char err[DAEMON_ERR_MAX];
	/* Sections: every header seen by the reader, and which got a key. */
	uint32_t nsections;
	char sections[DCONF_MAX_SECTIONS][DCONF_SECTION_MAX];
	uint32_t section_line[DCONF_MAX_SECTIONS];
	uint32_t section_keys[DCONF_MAX_SECTIONS];
	int cur; /* index of the section the handler is in, -1 before the first */
	/* Keys set, per fixed section (a bit per key of its table), and their lines. */
	uint64_t set[5];
	uint32_t key_line[5][32];
	/* The volume and export sections, with the keys each has. */
	uint32_t vol_set[DAEMON_MAX_VOLUMES], exp_set[DAEMON_MAX_EXPORTS];
	uint32_t vol_size_line[DAEMON_MAX_VOLUMES];
	/* The group sections: keys set (a bit per key of dconf_group_keys, elementN from
	 * DCONF_ELEMENT_BIT) and their lines. */
	uint64_t grp_set[DAEMON_MAX_GROUPS];
	uint32_t grp_key_line[DAEMON_MAX_GROUPS][8 + COH_RAID_MAX_ELEMS];
	/* [volume NAME] group = and [virtual NAME] volumes = (names, resolved once all are read) */
	char vol_group[DAEMON_MAX_VOLUMES][DAEMON_NAME_MAX + 1];
	char vol_comps[DAEMON_MAX_VOLUMES][DCONF_LINE_MAX];
	uint32_t vol_key_line[DAEMON_MAX_VOLUMES][8];
	int node_override;
};

enum dconf_section {
	DCONF_CLUSTER = 0,
	DCONF_GROUP,
	DCONF_LOG,
	DCONF_CACHE,
	DCONF_DAEMON,
	DCONF_VOLUME,
	DCONF_EXPORT,
};

static const char *const dconf_section_names[] = { "cluster", "group", "log", "cache", "daemon" };

/* The keys of each fixed section; [group] and [group NAME] have dconf_group_keys, elementN
 * matched apart. */
static const char *const dconf_cluster_keys[] = {
	"name",	      "nodes",	"node",	       "provider", "address",
	"secret",     "quorum", "timeout_ms",  "lease_ms", "open_timeout_ms",
	"force_open", "fence",	"fence_agent", NULL
};
static const char *const dconf_group_keys[] = { "raid", "element_size", "chunk",   "block_size",
						"amfs", "preferred",	"address", NULL };
static const char *const dconf_log_keys[] = { "dir", "bytes", "replicas", NULL };
static const char *const dconf_cache_keys[] = { "blocks", "lanes", "queue_depth", NULL };
static const char *const dconf_daemon_keys[] = { "control", "frontend", "configfs", NULL };
static const char *const *const dconf_keys[] = { dconf_cluster_keys, dconf_group_keys,
						 dconf_log_keys, dconf_cache_keys,
						 dconf_daemon_keys };
#define DCONF_ELEMENT_BIT 8 /* [group] elementN: bit 8 + N of grp_set[] */

/* dconf_fail - record an error at @line (the first one wins: it is the one to fix first). */
static int dconf_fail(struct dconf_parse *p, uint32_t line, const char *section, const char *key,
		      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int dconf_fail(struct dconf_parse *p, uint32_t line, const char *section, const char *key,
		      const char *fmt, ...)
{
	char what[DAEMON_ERR_MAX / 2];
	va_list ap;

	if (p->err_line && p->err_line <= line)
		return 0;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (key)
		snprintf(p->err, sizeof(p->err), "%s:%u: [%s] %s: %s", p->name, line, section, key,
			 what);
	else if (section)
		snprintf(p->err, sizeof(p->err), "%s:%u: [%s]: %s", p->name, line, section, what);
	else
		snprintf(p->err, sizeof(p->err), "%s:%u: %s", p->name, line, what);
	p->err_line = line;
	return 0;
}

/* dconf_name_ok - a name of letters, digits, '_', '-', '.', 1 to DAEMON_NAME_MAX long. */
static bool dconf_name_ok(const char *s)
{
	size_t n = strlen(s), i;

	if (!n || n > DAEMON_NAME_MAX)
		return false;
	for (i = 0; i < n; i++) {
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
			return false;
	}
	return true;
}

/*
 * dconf_device_ok - a backstore name: a name in which "%n" stands for the node id, so that the
 * nodes of one host, reading one file, make different backstores. Checked with the longest id.
 */
static bool dconf_device_ok(const char *s)
{
	char buf[DAEMON_NAME_MAX * 2 + 1];
	size_t o = 0;

	for (; *s && o + 2 < sizeof(buf); s++) {
		if (s[0] == '%' && s[1] == 'n') {
			buf[o++] = '3';
			buf[o++] = '1';
			s++;
		} else {
			buf[o++] = *s;
		}
	}
	buf[o] = 0;
	return !*s && dconf_name_ok(buf);
}

/* dconf_expand_node - @raw with each "%n" replaced by @node (at most 2 digits: it fits). */
static void dconf_expand_node(const char *raw, uint32_t node, char *out, size_t len)
{
	size_t o = 0;

	for (; *raw && o + 3 < len; raw++) {
		if (raw[0] == '%' && raw[1] == 'n') {
			o += (size_t)snprintf(out + o, len - o, "%u", node);
			raw++;
		} else {
			out[o++] = *raw;
		}
	}
	out[o] = 0;
}

/* dconf_u64 - a decimal number, nothing else (no sign, no spaces inside). */
static int dconf_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

/* dconf_size - a byte count with an optional binary suffix K, M, G or T (KiB etc. too). */
static int dconf_size(const char *s, uint64_t *out)
{
	char digits[32];
	size_t n = strspn(s, "0123456789");
	const char *suf = s + n;
	unsigned shift = 0;
	uint64_t v;
	int ret;

	if (!n || n >= sizeof(digits))
		return -EINVAL;
	memcpy(digits, s, n);
	digits[n] = '\0';
	ret = dconf_u64(digits, UINT64_MAX, &v);
	if (ret)
		return ret;
	switch (toupper((unsigned char)*suf)) {
	case '\0':
		break;
	case 'K':
		shift = 10;
		break;
	case 'M':
		shift = 20;
		break;
	case 'G':
		shift = 30;
		break;
	case 'T':
		shift = 40;
		break;
	default:
		return -EINVAL;
	}
	if (*suf && suf[1] && strcmp(suf + 1, "iB") && strcmp(suf + 1, "B"))
		return -EINVAL;
	if (v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = v << shift;
	return 0;
}

/* dconf_bool - yes/no, true/false, on/off, 1/0. */
static int dconf_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	size_t i;

	for (i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
			*out = !strcasecmp(s, yes[i]);
			return 0;
		}
	}
	return -EINVAL;
}

/* dconf_path - copy a path value, refusing an empty or too long one. */
static int dconf_path(struct dconf_parse *p, const char *sec, const char *key, const char *v,
		      char *out)
{
	if (!*v)
		return dconf_fail(p, p->line, sec, key, "empty path");
	if (strlen(v) > DAEMON_PATH_MAX)
		return dconf_fail(p, p->line, sec, key, "path longer than %d bytes",
				  DAEMON_PATH_MAX);
	strcpy(out, v);
	return 1;
}

/* dconf_num - a number in [lo, hi] into *out, or an error naming the range. */
static int dconf_num(struct dconf_parse *p, const char *sec, const char *key, const char *v,
		     uint64_t lo, uint64_t hi, uint64_t *out)
{
	uint64_t x;

	if (dconf_u64(v, UINT64_MAX, &x) || x < lo || x > hi)
		return dconf_fail(p, p->line, sec, key,
				  "\"%s\" is not a number from %" PRIu64 " to %" PRIu64, v, lo, hi);
	*out = x;
	return 1;
}

/* dconf_u32 - dconf_num into a uint32_t. */
static int dconf_u32(struct dconf_parse *p, const char *sec, const char *key, const char *v,
		     uint64_t lo, uint64_t hi, uint32_t *out)
{
	uint64_t x = 0;
	int ret = dconf_num(p, sec, key, v, lo, hi, &x);

	if (ret == 1)
		*out = (uint32_t)x;
	return ret;
}

/* dconf_bytes - a size (suffixes allowed) in [lo, hi]. */
static int dconf_bytes(struct dconf_parse *p, const char *sec, const char *key, const char *v,
		       uint64_t lo, uint64_t hi, uint64_t *out)
{
	uint64_t x;

	if (dconf_size(v, &x))
		return dconf_fail(p, p->line, sec, key,
				  "\"%s\" is not a size (a number of bytes, with K, M, G or T)", v);
	if (x < lo || x > hi)
		return dconf_fail(p, p->line, sec, key,
				  "%s is out of range (%" PRIu64 " to %" PRIu64 " bytes)", v, lo,
				  hi);
	*out = x;
	return 1;
}

/* dconf_fence_name - the config's word for enum coh_fence @f. */
static const char *dconf_fence_name(uint32_t f)
{
	return f == COH_FENCE_AGENT ? "agent" : f == COH_FENCE_LEASE ? "lease" : "auto";
}

/* dconf_cluster_key - one key of [cluster]; 1 when taken, 0 after an error. */
static int dconf_cluster_key(struct dconf_parse *p, int k, const char *v)
{
	struct daemon_conf *c = p->c;
	const char *key = dconf_cluster_keys[k];
	bool b;
	int ret;

	switch (k) {
	case 0: /* name */
		if (!dconf_name_ok(v))
			return dconf_fail(p, p->line, "cluster", key,
					  "\"%s\" is not a name (1 to %d letters, digits, '_', "
					  "'-', '.')",
					  v, DAEMON_NAME_MAX);
		strcpy(c->cluster, v);
		return 1;
	case 1: /* nodes */
		return dconf_u32(p, "cluster", key, v, 2, 32, &c->nodes);
	case 2: /* node */
		return dconf_u32(p, "cluster", key, v, 0, 31, &c->node);
	case 3: /* provider */
		if (strcmp(v, "shm") && strcmp(v, "rdma"))
			return dconf_fail(p, p->line, "cluster", key,
					  "unknown provider \"%s\" (shm, rdma)", v);
		strcpy(c->provider, v);
		return 1;
	case 4: /* address */
		return dconf_path(p, "cluster", key, v, c->address);
	case 5: /* secret */
		return dconf_path(p, "cluster", key, v, c->secret_path);
	case 6: /* quorum: the engine serves in a majority view only; say so rather than pretend */
		if (strcmp(v, "majority"))
			return dconf_fail(p, p->line, "cluster", key,
					  "\"%s\" is not supported (majority)", v);
		return 1;
	case 7:
		return dconf_u32(p, "cluster", key, v, 100, 600000, &c->timeout_ms);
	case 8:
		return dconf_u32(p, "cluster", key, v, 100, 2000, &c->lease_ms);
	case 9:
		return dconf_u32(p, "cluster", key, v, 100, 3600000, &c->open_timeout_ms);
	case 10:
		ret = dconf_bool(v, &b);
		if (ret)
			return dconf_fail(p, p->line, "cluster", key, "\"%s\" is not yes or no", v);
		c->force_open = b;
		return 1;
	case 11: /* fence */
		if (!strcmp(v, "auto"))
			c->fence = COH_FENCE_AUTO;
		else if (!strcmp(v, "lease"))
			c->fence = COH_FENCE_LEASE;
		else if (!strcmp(v, "agent"))
			c->fence = COH_FENCE_AGENT;
		else
			return dconf_fail(p, p->line, "cluster", key,
					  "unknown fencing \"%s\" (auto, lease, agent)", v);
		return 1;
	default: /* fence_agent: a command for sh -c */
		return dconf_path(p, "cluster", key, v, c->fence_agent);
	}
}

/* dconf_nodes - a list of node ids ("0,1" or "0 1") into a mask; 1, or 0 with the error. */
static int dconf_nodes(struct dconf_parse *p, const char *sec, const char *key, const char *v,
		       uint32_t *mask)
{
	char buf[DCONF_LINE_MAX], *save = NULL, *tok;
	uint64_t id;

	*mask = 0;
	snprintf(buf, sizeof(buf), "%s", v);
	for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		if (dconf_u64(tok, 31, &id))
			return dconf_fail(p, p->line, sec, key, "\"%s\" is not a node id (0 to 31)",
					  tok);
		if (*mask & (1u << id))
			return dconf_fail(p, p->line, sec, key, "node %s given twice", tok);
		*mask |= 1u << id;
	}
	if (!*mask)
		return dconf_fail(p, p->line, sec, key, "no node (a list such as 0,1)");
	return 1;
}

/* dconf_group_key - one key of group @g's section @sec (elementN apart). */
static int dconf_group_key(struct dconf_parse *p, uint32_t g, const char *sec, int k, const char *v)
{
	struct daemon_group *gr = &p->c->groups[g];
	const char *key = dconf_group_keys[k];
	uint64_t x = 0;
	int ret;

	if (k >= 4 && !gr->name[0])
		return dconf_fail(p, p->line, sec, key,
				  "only in a [group NAME] (the unnamed [group] is every node's)");
	switch (k) {
	case 0: /* raid */
		if (!strcmp(v, "raid1"))
			gr->raid = COH_RAID1;
		else if (!strcmp(v, "raid5"))
			gr->raid = COH_RAID5;
		else
			return dconf_fail(p, p->line, sec, key,
					  "unknown level \"%s\" (raid1, raid5)", v);
		return 1;
	case 1: /* element_size */
		return dconf_bytes(p, sec, key, v, 512, UINT64_MAX / COH_RAID_MAX_ELEMS,
				   &gr->element_bytes);
	case 2: /* chunk (bytes; blocks once the block size is known) */
		ret = dconf_bytes(p, sec, key, v, 512, COH_RAID_MAX_CHUNK_BYTES, &x);
		if (ret == 1)
			gr->chunk_blocks = (uint32_t)x; /* bytes for now: dconf_group divides */
		return ret;
	case 3: /* block_size: the same in every group (dconf_groups) */
		ret = dconf_bytes(p, sec, key, v, 512, 65536, &x);
		if (ret == 1 && (x & (x - 1)))
			return dconf_fail(p, p->line, sec, key,
					  "%s is not a power of two from 512 to 64K", v);
		if (ret == 1 && p->c->block_size && p->c->block_size != x)
			return dconf_fail(p, p->line, sec, key,
					  "%s differs from another group's %u (one block size for "
					  "every group)",
					  v, p->c->block_size);
		if (ret == 1)
			p->c->block_size = (uint32_t)x;
		return ret;
	case 4: /* amfs */
		return dconf_nodes(p, sec, key, v, &gr->amfs);
	case 5: /* preferred */
		return dconf_u32(p, sec, key, v, 0, 31, &gr->preferred);
	default: /* address */
		return dconf_path(p, sec, key, v, gr->address);
	}
}

/* dconf_log_key - one key of [log]. */
static int dconf_log_key(struct dconf_parse *p, int k, const char *v)
{
	struct daemon_conf *c = p->c;
	uint32_t r = 0;
	int ret;

	switch (k) {
	case 0:
		return dconf_path(p, "log", "dir", v, c->log_dir);
	case 1:
		return dconf_bytes(p, "log", "bytes", v, 64 << 10, 1ull << 40, &c->log_bytes);
	default: /* replicas: 0 is none (COH_NODE_REPLICAS_NONE); checked against nodes later */
		ret = dconf_u32(p, "log", "replicas", v, 0, 31, &r);
		if (ret == 1)
			c->replicas = r ? (int)r : COH_NODE_REPLICAS_NONE;
		return ret;
	}
}

/* dconf_cache_key - one key of [cache]. */
static int dconf_cache_key(struct dconf_parse *p, int k, const char *v)
{
	struct daemon_conf *c = p->c;

	switch (k) {
	case 0:
		return dconf_u32(p, "cache", "blocks", v, 16, 1u << 30, &c->cache_blocks);
	case 1:
		return dconf_u32(p, "cache", "lanes", v, 1, COH_CACHE_MAX_LANES - 1, &c->lanes);
	default:
		return dconf_u32(p, "cache", "queue_depth", v, 1, 4096, &c->queue_depth);
	}
}

/* dconf_daemon_key - one key of [daemon]. */
static int dconf_daemon_key(struct dconf_parse *p, int k, const char *v)
{
	struct daemon_conf *c = p->c;

	switch (k) {
	case 0:
		return dconf_path(p, "daemon", "control", v, c->control);
	case 1:
		if (strcmp(v, "tcmu") && strcmp(v, "none"))
			return dconf_fail(p, p->line, "daemon", "frontend",
					  "unknown front end \"%s\" (tcmu, none)", v);
		c->frontend_tcmu = !strcmp(v, "tcmu");
		return 1;
	default:
		return dconf_path(p, "daemon", "configfs", v, c->configfs);
	}
}

/* dconf_find_key - the index of @key in @keys, or -1. */
static int dconf_find_key(const char *const *keys, const char *key)
{
	int i;

	for (i = 0; keys[i]; i++) {
		if (!strcmp(keys[i], key))
			return i;
	}
	return -1;
}

/* dconf_group_section - a key of group @g's section, [group] or [group NAME] (@sec). */
static int dconf_group_section(struct dconf_parse *p, uint32_t g, const char *sec, const char *key,
			       const char *v)
{
	int k = dconf_find_key(dconf_group_keys, key);
	unsigned long n;
	char *end;

	if (k < 0 && !strncmp(key, "element", 7) && isdigit((unsigned char)key[7])) {
		n = strtoul(key + 7, &end, 10);
		if (*end || n >= COH_RAID_MAX_ELEMS || (key[7] == '0' && key[8]))
			return dconf_fail(p, p->line, sec, key,
					  "unknown key (element0 .. element%d)",
					  COH_RAID_MAX_ELEMS - 1);
		k = DCONF_ELEMENT_BIT + (int)n;
	}
	if (k < 0)
		return dconf_fail(p, p->line, sec, key, "unknown key");
	if (p->grp_set[g] & (1ull << k))
		return dconf_fail(p, p->line, sec, key, "given twice (first on line %u)",
				  p->grp_key_line[g][k]);
	p->grp_set[g] |= 1ull << k;
	p->grp_key_line[g][k] = p->line;
	if (k >= DCONF_ELEMENT_BIT)
		return dconf_path(p, sec, key, v, p->c->groups[g].elements[k - DCONF_ELEMENT_BIT]);
	return dconf_group_key(p, g, sec, k, v);
}

/* dconf_fixed - a key of one of the fixed sections. */
static int dconf_fixed(struct dconf_parse *p, enum dconf_section s, const char *key, const char *v)
{
	const char *sec = dconf_section_names[s];
	int k = dconf_find_key(dconf_keys[s], key);

	if (k < 0)
		return dconf_fail(p, p->line, sec, key, "unknown key");
	if (p->set[s] & (1ull << k))
		return dconf_fail(p, p->line, sec, key, "given twice (first on line %u)",
				  p->key_line[s][k]);
	p->set[s] |= 1ull << k;
	p->key_line[s][k] = p->line;
	switch (s) {
	case DCONF_CLUSTER:
		return dconf_cluster_key(p, k, v);
	case DCONF_LOG:
		return dconf_log_key(p, k, v);
	case DCONF_CACHE:
		return dconf_cache_key(p, k, v);
	default:
		return dconf_daemon_key(p, k, v);
	}
}

/* dconf_volume_key - a key of [volume NAME] (volume @i). */
static int dconf_volume_key(struct dconf_parse *p, uint32_t i, const char *sec, const char *key,
			    const char *v)
{
	static const char *const keys[] = { "size", "reservations", "group", NULL };
	struct daemon_volume *vol = &p->c->volumes[i];
	int k = dconf_find_key(keys, key);

	if (k < 0)
		return dconf_fail(p, p->line, sec, key, "unknown key (size, reservations, group)");
	if (p->vol_set[i] & (1u << k))
		return dconf_fail(p, p->line, sec, key, "given twice");
	p->vol_set[i] |= 1u << k;
	p->vol_key_line[i][k] = p->line;
	if (k == 2) { /* a name, resolved once every group is read (dconf_volumes) */
		if (!dconf_name_ok(v))
			return dconf_fail(p, p->line, sec, key, "\"%s\" is not a group's name", v);
		strcpy(p->vol_group[i], v);
		return 1;
	}
	if (k == 1) {
		if (strcmp(v, "none") && strcmp(v, "cluster"))
			return dconf_fail(p, p->line, sec, key, "\"%s\" is not none or cluster", v);
		/* Blocks once the block size is known (dconf_volumes); 1 marks it asked for. */
		vol->pr_blocks = !strcmp(v, "cluster");
		return 1;
	}
	p->vol_size_line[i] = p->line;
	/* Bytes for now; dconf_check turns them into blocks once the block size is known. */
	return dconf_bytes(p, sec, key, v, 1, UINT64_MAX, &vol->blocks);
}

/* dconf_virtual_key - a key of [virtual NAME] (volume @i). */
static int dconf_virtual_key(struct dconf_parse *p, uint32_t i, const char *sec, const char *key,
			     const char *v)
{
	static const char *const keys[] = { "layout", "volumes", "chunk", NULL };
	struct daemon_volume *vol = &p->c->volumes[i];
	int k = dconf_find_key(keys, key);
	uint64_t x = 0;
	int ret;

	if (k < 0)
		return dconf_fail(p, p->line, sec, key, "unknown key (layout, volumes, chunk)");
	if (p->vol_set[i] & (1u << k))
		return dconf_fail(p, p->line, sec, key, "given twice");
	p->vol_set[i] |= 1u << k;
	p->vol_key_line[i][k] = p->line;
	switch (k) {
	case 0:
		if (!strcmp(v, "stripe"))
			vol->layout = COH_MAP_STRIPE;
		else if (!strcmp(v, "concat"))
			vol->layout = COH_MAP_CONCAT;
		else
			return dconf_fail(p, p->line, sec, key,
					  "unknown layout \"%s\" (stripe, concat)", v);
		return 1;
	case 1: /* names, resolved once every volume is read (dconf_virtual) */
		snprintf(p->vol_comps[i], sizeof(p->vol_comps[i]), "%s", v);
		return 1;
	default: /* chunk: bytes for now, blocks in dconf_virtual */
		ret = dconf_bytes(p, sec, key, v, 512, 1ull << 30, &x);
		if (ret == 1)
			vol->stripe_blocks = (uint32_t)x;
		return ret;
	}
}

/* dconf_initiator_ok - an initiator's SCSI name: iqn., eui. or naa., then printable characters
 * other than spaces and commas, at most DAEMON_INITIATOR_MAX bytes. */
static bool dconf_initiator_ok(const char *s)
{
	size_t n = strlen(s), i;

	if (n <= 4 || n > DAEMON_INITIATOR_MAX ||
	    (strncmp(s, "iqn.", 4) && strncmp(s, "eui.", 4) && strncmp(s, "naa.", 4)))
		return false;
	for (i = 0; i < n; i++) {
		if (!isgraph((unsigned char)s[i]) || s[i] == ',')
			return false;
	}
	return true;
}

/* dconf_export_key - a key of [export NAME] (export @i). */
static int dconf_export_key(struct dconf_parse *p, uint32_t i, const char *sec, const char *key,
			    const char *v)
{
	static const char *const keys[] = { "volume",	    "device",	 "hba",
					    "cmd_time_out", "initiator", NULL };
	struct daemon_export *e = &p->c->exports[i];
	int k = dconf_find_key(keys, key);

	if (k < 0)
		return dconf_fail(p, p->line, sec, key,
				  "unknown key (volume, device, hba, cmd_time_out, initiator)");
	if (p->exp_set[i] & (1u << k))
		return dconf_fail(p, p->line, sec, key, "given twice");
	p->exp_set[i] |= 1u << k;
	if (k == 2)
		return dconf_u32(p, sec, key, v, 0, 1023, &e->hba);
	if (k == 3)
		/* At least 5 s: more than twice the longest lease (2 s), so that a controller paused past
		 * its commands' time-out has been fenced by then and cannot apply them late. */
		return dconf_u32(p, sec, key, v, 5, 3600, &e->cmd_time_out);
	if (k == 4) {
		if (!dconf_initiator_ok(v))
			return dconf_fail(
			    p, p->line, sec, key,
			    "\"%s\" is not an initiator name (iqn., eui. or naa., "
			    "then at most %d printable bytes without spaces or commas)",
			    v, DAEMON_INITIATOR_MAX - 4);
		strcpy(e->initiator, v);
		return 1;
	}
	if (k == 1 ? !dconf_device_ok(v) : !dconf_name_ok(v))
		return dconf_fail(p, p->line, sec, key,
				  "\"%s\" is not a name (1 to %d letters, digits, '_', '-', '.'%s)",
				  v, DAEMON_NAME_MAX, k == 1 ? "; %n for the node id" : "");
	strcpy(k == 0 ? e->volume : e->device, v);
	return 1;
}

/*
 * dconf_enter - the handler moved into section @i (the reader's latest header), named @section by
 * inih: a named section opens a new volume or export; a name seen before is a duplicate.
 */
static int dconf_enter(struct dconf_parse *p, int i, const char *section)
{
	struct daemon_conf *c = p->c;
	uint32_t j, line;
	const char *name;

	if (i < 0 || strcmp(p->sections[i], section)) {
		/* inih keeps at most 49 bytes of a section's name, and reads a header its own way. */
		return dconf_fail(p, i < 0 ? p->line : p->section_line[i], section, NULL,
				  "section header not understood (a name of at most 49 bytes)");
	}
	line = p->section_line[i];
	for (j = 0; j < (uint32_t)i; j++) {
		if (!strcmp(p->sections[j], section))
			return dconf_fail(p, line, section, NULL,
					  "section given twice (first on line %u)",
					  p->section_line[j]);
	}
	if (!strcmp(section, "group") || !strncmp(section, "group ", 6)) {
		name = section + 5;
		while (*name == ' ')
			name++;
		if (*name && !dconf_name_ok(name))
			return dconf_fail(p, line, section, NULL,
					  "\"%s\" is not a name (1 to %d letters, digits, '_', "
					  "'-', '.')",
					  name, DAEMON_NAME_MAX);
		if (c->ngroups && (!*name || !c->groups[0].name[0]))
			return dconf_fail(p, line, section, NULL,
					  "[group] and [group NAME] do not mix (one unnamed group, "
					  "or named groups for routing)");
		if (c->ngroups == DAEMON_MAX_GROUPS)
			return dconf_fail(p, line, section, NULL, "more than %d groups",
					  DAEMON_MAX_GROUPS);
		strcpy(c->groups[c->ngroups].name, name);
		c->groups[c->ngroups++].line = line;
	}
	if (!strncmp(section, "volume ", 7) || !strncmp(section, "export ", 7) ||
	    !strncmp(section, "virtual ", 8)) {
		bool vol = section[0] == 'v';

		name = section + (section[1] == 'i' ? 8 : 7);
		while (*name == ' ')
			name++;
		if (!dconf_name_ok(name))
			return dconf_fail(p, line, section, NULL,
					  "\"%s\" is not a name (1 to %d letters, digits, '_', "
					  "'-', '.')",
					  name, DAEMON_NAME_MAX);
		if (vol && c->nvolumes == DAEMON_MAX_VOLUMES)
			return dconf_fail(p, line, section, NULL, "more than %d volumes",
					  DAEMON_MAX_VOLUMES);
		if (!vol && c->nexports == DAEMON_MAX_EXPORTS)
			return dconf_fail(p, line, section, NULL, "more than %d exports",
					  DAEMON_MAX_EXPORTS);
		/* Section names are unique, so export names are too, and volume names within
		 * [volume] and within [virtual]; across the two, looked at here. */
		for (j = 0; vol && j < c->nvolumes; j++) {
			if (!strcmp(c->volumes[j].name, name))
				return dconf_fail(p, line, section, NULL,
						  "a volume of that name is on line %u",
						  c->volumes[j].line);
		}
		if (vol) {
			strcpy(c->volumes[c->nvolumes].name, name);
			c->volumes[c->nvolumes].kind =
			    section[1] == 'i' ? COH_MAP_VIRTUAL : COH_MAP_LOGICAL;
			c->volumes[c->nvolumes++].line = line;
		} else {
			strcpy(c->exports[c->nexports].name, name);
			c->exports[c->nexports++].line = line;
		}
	}
	/* Only a section taken is entered: the keys of a refused one are refused too. */
	p->cur = i;
	return 1;
}

/* dconf_handler - inih's callback for each key = value: 1 taken, 0 an error (recorded). */
static int dconf_handler(void *user, const char *section, const char *key, const char *value)
{
	struct dconf_parse *p = user;
	int s, latest = (int)p->nsections - 1;

	if (!*section)
		return dconf_fail(p, p->line, NULL, NULL, "%s: a key before any [section]", key);
	/* The handler runs for a line before the reader reads the next, so the section of this
	 * key is the latest header the reader saw. */
	if (latest != p->cur) {
		p->cur = -1;
		if (!dconf_enter(p, latest, section))
			return 0;
	}
	if (p->cur < 0)
		return 0; /* its header was refused: the error is recorded */
	if (strcmp(p->sections[p->cur], section))
		/* inih is in a section whose header the reader could not record (too long, too
		 * many): the error is recorded; never take its keys for the previous section's. */
		return dconf_fail(p, p->line, section, NULL,
				  "section header not understood (a name of at most 49 bytes)");
	p->section_keys[p->cur]++;
	if (!strcmp(section, "group") || !strncmp(section, "group ", 6))
		return dconf_group_section(p, p->c->ngroups - 1, section, key, value);
	for (s = 0; s < DCONF_VOLUME; s++) {
		if (!strcmp(section, dconf_section_names[s]))
			return dconf_fixed(p, (enum dconf_section)s, key, value);
	}
	if (!strncmp(section, "volume ", 7))
		return dconf_volume_key(p, p->c->nvolumes - 1, section, key, value);
	if (!strncmp(section, "virtual ", 8))
		return dconf_virtual_key(p, p->c->nvolumes - 1, section, key, value);
	if (!strncmp(section, "export ", 7))
		return dconf_export_key(p, p->c->nexports - 1, section, key, value);
	return dconf_fail(p, p->section_line[p->cur], section, NULL,
			  "unknown section (cluster, group, log, cache, daemon, volume NAME, "
			  "export NAME, group NAME, virtual NAME)");
}

/* dconf_header - the reader's look at a line: a section header is recorded with its line. */
static void dconf_header(struct dconf_parse *p, const char *line)
{
	const char *s = line, *e;
	size_t n;
	uint32_t i;

	while (*s == ' ' || *s == '\t')
		s++;
	if (*s != '[')
		return;
	/* The section before this one got no key: inih never tells the handler about it. */
	if (p->nsections && !p->section_keys[p->nsections - 1])
		dconf_fail(p, p->section_line[p->nsections - 1], p->sections[p->nsections - 1],
			   NULL, "empty section");
	e = strchr(s, ']');
	if (!e)
		return; /* inih reports the syntax error */
	n = (size_t)(e - s - 1);
	if (p->nsections == DCONF_MAX_SECTIONS || n >= DCONF_SECTION_MAX) {
		dconf_fail(p, p->line, NULL, NULL, "too many sections, or a section name too long");
		return;
	}
	memcpy(p->sections[p->nsections], s + 1, n);
	p->sections[p->nsections][n] = '\0';
	p->section_line[p->nsections] = p->line;
	p->section_keys[p->nsections] = 0;
	/* A duplicate is found here, where an empty one (no handler call) is seen too. */
	for (i = 0; i < p->nsections; i++) {
		if (!strcmp(p->sections[i], p->sections[p->nsections])) {
			dconf_fail(p, p->line, p->sections[i], NULL,
				   "section given twice (first on line %u)", p->section_line[i]);
			break;
		}
	}
	p->nsections++;
}

/* dconf_reader - inih's fgets over the text: hands out one line at a time and counts them. */
static char *dconf_reader(char *str, int num, void *stream)
{
	struct dconf_parse *p = stream;
	size_t n = 0, max = (size_t)num - 1;

	if (num < 2 || p->pos >= p->len)
		return NULL;
	while (p->pos < p->len && n < max) {
		char ch = p->text[p->pos++];

		str[n++] = ch;
		if (ch == '\n')
			break;
	}
	str[n] = '\0';
	p->line++;
	/* A NUL inside a line would hide the rest of it from inih: refuse the line. */
	if (memchr(str, '\0', n)) {
		dconf_fail(p, p->line, NULL, NULL, "a NUL byte in the line");
		return NULL;
	}
	if (n == max && str[n - 1] != '\n' && p->pos < p->len) {
		dconf_fail(p, p->line, NULL, NULL, "line longer than %d bytes", num - 2);
		return NULL;
	}
	dconf_header(p, str);
	return str;
}

/* dconf_require - an error when key @k of fixed section @s was not given. */
static int dconf_require(struct dconf_parse *p, enum dconf_section s, int k, const char *key)
{
	const char *sec = dconf_section_names[s];
	uint32_t i, line = 0;

	if (p->set[s] & (1ull << k))
		return 1;
	for (i = 0; i < p->nsections; i++) {
		if (!strcmp(p->sections[i], sec)) {
			line = p->section_line[i];
			break;
		}
	}
	if (!line)
		return dconf_fail(p, p->line ? p->line : 1, sec, key, "missing (no [%s] section)",
				  sec);
	return dconf_fail(p, line, sec, key, "missing");
}

/* dconf_secret - read the secret file: regular, not empty, at most 256 bytes, 0600 or stricter. */
static int dconf_secret(struct dconf_parse *p)
{
	struct daemon_conf *c = p->c;
	uint32_t line = p->key_line[DCONF_CLUSTER][5];
	struct stat st;
	ssize_t got;
	int fd;

	fd = open(c->secret_path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return dconf_fail(p, line, "cluster", "secret", "%s: %s", c->secret_path,
				  strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return dconf_fail(p, line, "cluster", "secret", "%s: not a regular file",
				  c->secret_path);
	}
	if (st.st_mode & 077) {
		close(fd);
		return dconf_fail(p, line, "cluster", "secret",
				  "%s: mode %04o lets others read it (chmod 0600)", c->secret_path,
				  (unsigned)(st.st_mode & 07777));
	}
	got = read(fd, c->secret, sizeof(c->secret));
	if (got > 0 && (size_t)got == sizeof(c->secret)) {
		uint8_t more;

		if (read(fd, &more, 1) > 0)
			got = -2;
	}
	close(fd);
	if (got == -2)
		return dconf_fail(p, line, "cluster", "secret", "%s: longer than %u bytes",
				  c->secret_path, COH_FABRIC_SECRET_MAX);
	if (got <= 0)
		return dconf_fail(p, line, "cluster", "secret", "%s: %s", c->secret_path,
				  got < 0 ? strerror(errno) : "empty");
	c->secret_len = (uint32_t)got;
	return 1;
}

/* dconf_addr_check - @addr (of @sec, on @line) for the provider: shm an absolute directory; rdma
 * one host:port per node. */
static int dconf_addr_check(struct dconf_parse *p, const char *sec, uint32_t line, const char *addr)
{
	struct daemon_conf *c = p->c;
	char buf[DAEMON_PATH_MAX + 1], *save = NULL, *tok;
	uint32_t n = 0;

	if (!strcmp(c->provider, "shm")) {
		if (addr[0] != '/')
			return dconf_fail(p, line, sec, "address",
					  "\"%s\": shm wants an absolute directory", addr);
		return 1;
	}
	strcpy(buf, addr);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *colon;
		uint64_t port;

		while (*tok == ' ')
			tok++;
		colon = strrchr(tok, ':');
		if (!colon || colon == tok || dconf_u64(colon + 1, 65535, &port) || !port)
			return dconf_fail(p, line, sec, "address",
					  "\"%s\" is not host:port (entry %u)", tok, n);
		n++;
	}
	if (n != c->nodes)
		return dconf_fail(p, line, sec, "address",
				  "%u addresses for %u nodes (rdma wants one host:port per node)",
				  n, c->nodes);
	return 1;
}

/* dconf_address - [cluster] address. */
static int dconf_address(struct dconf_parse *p)
{
	return dconf_addr_check(p, "cluster", p->key_line[DCONF_CLUSTER][4], p->c->address);
}

/* dconf_rdma_shift - @addr's host:port list with every port + @delta into @out; false if one
 * does not parse or passes 65535 (dconf_address checked the list already). */
static bool dconf_rdma_shift(const char *addr, uint32_t delta, char *out)
{
	char buf[DAEMON_PATH_MAX + 1], *save = NULL, *tok;
	size_t n = 0;

	strcpy(buf, addr);
	out[0] = '\0';
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *colon;
		uint64_t port;
		int w;

		while (*tok == ' ')
			tok++;
		colon = strrchr(tok, ':');
		if (!colon || dconf_u64(colon + 1, 65535, &port) || port + delta > 65535)
			return false;
		*colon = '\0';
		w = snprintf(out + n, DAEMON_PATH_MAX + 1 - n, "%s%s:%" PRIu64, n ? "," : "", tok,
			     port + delta);
		if (w < 0 || (size_t)w >= DAEMON_PATH_MAX + 1 - n)
			return false;
		n += (size_t)w;
	}
	return true;
}

/* dconf_id - SHA-256 over @tag (with its NUL), the cluster's name (with its NUL), the volume's
 * name and, when @version is not 0, the table version it was made in (8 bytes, little-endian). */
static int dconf_id(const char *tag, const char *cluster, const char *name, uint64_t version,
		    uint8_t id[16])
{
	unsigned char md[EVP_MAX_MD_SIZE], v[8];
	unsigned int mdlen = 0, i;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (!ctx)
		return -ENOMEM;
	for (i = 0; i < 8; i++)
		v[i] = (unsigned char)(version >> (8 * i));
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
	     EVP_DigestUpdate(ctx, tag, strlen(tag) + 1) &&
	     EVP_DigestUpdate(ctx, cluster, strlen(cluster) + 1) &&
	     EVP_DigestUpdate(ctx, name, strlen(name)) &&
	     (!version || EVP_DigestUpdate(ctx, v, sizeof(v))) &&
	     EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	if (!ok || mdlen < 16)
		return -EIO;
	memcpy(id, md, 16);
	return 0;
}

/* dconf_volume_id - a config volume's id: the same on every node, from the names alone. */
static int dconf_volume_id(const char *cluster, const char *name, uint8_t id[16])
{
	return dconf_id("cohort-volume", cluster, name, 0, id);
}

int daemon_volume_id_online(const char *cluster, const char *name, uint64_t version, uint8_t id[16])
{
	if (!cluster || !name || !version || !id)
		return -EINVAL;
	return dconf_id("cohort-volume-online", cluster, name, version, id);
}

/* dconf_group_require - an error when key @k of group @g was not given. */
static int dconf_group_require(struct dconf_parse *p, uint32_t g, const char *sec, int k)
{
	if (p->grp_set[g] & (1ull << k))
		return 1;
	return dconf_fail(p, p->c->groups[g].line, sec, dconf_group_keys[k], "missing");
}

/* dconf_group - group @g's elements, chunk and capacity (the block size is known), and for a
 * named group its AMFs, preferred AMF and fabric address. */
static int dconf_group(struct dconf_parse *p, uint32_t g)
{
	struct daemon_conf *c = p->c;
	struct daemon_group *gr = &c->groups[g];
	uint64_t elems = p->grp_set[g] >> DCONF_ELEMENT_BIT, chunk_bytes;
	uint32_t line = p->grp_key_line[g][0], i, j, min;
	char sec[DCONF_SECTION_MAX], addr[DAEMON_PATH_MAX + 1];

	snprintf(sec, sizeof(sec), gr->name[0] ? "group %s" : "group", gr->name);
	if (!dconf_group_require(p, g, sec, 0) || !dconf_group_require(p, g, sec, 1))
		return 0;
	while (elems & 1) {
		gr->nelems++;
		elems >>= 1;
	}
	if (elems) /* a gap: element<nelems> is missing and a later one is there */
		return dconf_fail(p, line, sec, "element",
				  "element%u missing (elements are numbered from 0, no gap)",
				  gr->nelems);
	min = gr->raid == COH_RAID5 ? 3 : 2;
	if (gr->nelems < min)
		return dconf_fail(
		    p, line, sec, "raid", "%s wants %u to %u elements (element0 ...), %u given",
		    gr->raid == COH_RAID5 ? "raid5" : "raid1", min, COH_RAID_MAX_ELEMS, gr->nelems);
	for (i = 0; i < gr->nelems; i++) {
		for (j = 0; j < i; j++) {
			if (!strcmp(gr->elements[i], gr->elements[j])) {
				char key[24];

				snprintf(key, sizeof(key), "element%u", i);
				return dconf_fail(p, p->grp_key_line[g][DCONF_ELEMENT_BIT + i], sec,
						  key, "the same path as element%u", j);
			}
		}
	}
	if (gr->element_bytes % c->block_size)
		return dconf_fail(p, p->grp_key_line[g][1], sec, "element_size",
				  "%" PRIu64 " bytes is not a multiple of the block size (%u)",
				  gr->element_bytes, c->block_size);
	gr->element_blocks = gr->element_bytes / c->block_size;
	chunk_bytes = p->grp_set[g] & (1ull << 2) ? gr->chunk_blocks : c->block_size;
	if (chunk_bytes % c->block_size || chunk_bytes / c->block_size > gr->element_blocks)
		return dconf_fail(p, p->grp_key_line[g][2], sec, "chunk",
				  "%" PRIu64 " bytes is not a multiple of the block size (%u) "
				  "within element_size",
				  chunk_bytes, c->block_size);
	gr->chunk_blocks = (uint32_t)(chunk_bytes / c->block_size);
	/* What coh_raid_new makes of it (engine/raid.c): RAID-5 uses whole stripes only. */
	if (gr->raid == COH_RAID5)
		gr->capacity_blocks =
		    gr->element_blocks / gr->chunk_blocks * gr->chunk_blocks * (gr->nelems - 1);
	else
		gr->capacity_blocks = gr->element_blocks;
	if (!gr->name[0]) {
		/* Every node serves the unnamed group, over the cluster's fabric. */
		gr->amfs = c->nodes >= 32 ? UINT32_MAX : (1u << c->nodes) - 1;
		strcpy(gr->address, c->address);
		strcpy(gr->log_dir, c->log_dir);
		return 1;
	}
	if (c->log_dir[0] &&
	    (size_t)snprintf(addr, sizeof(addr), "%s/%s", c->log_dir, gr->name) >= sizeof(addr))
		return dconf_fail(p, p->key_line[DCONF_LOG][0], "log", "dir",
				  "too long for [group %s]'s directory in it", gr->name);
	if (c->log_dir[0])
		strcpy(gr->log_dir, addr);
	if (strlen(gr->name) > COH_MAP_NAME_MAX)
		return dconf_fail(p, gr->line, sec, NULL,
				  "a routed group's name has at most %d bytes", COH_MAP_NAME_MAX);
	if (!(p->grp_set[g] & (1ull << 4)))
		gr->amfs = c->nodes >= 32 ? UINT32_MAX : (1u << c->nodes) - 1;
	if (c->nodes < 32 && gr->amfs >> c->nodes)
		return dconf_fail(p, p->grp_key_line[g][4], sec, "amfs",
				  "node %d is not below nodes = %u", 31 - __builtin_clz(gr->amfs),
				  c->nodes);
	if (!(p->grp_set[g] & (1ull << 5)))
		gr->preferred = (uint32_t)__builtin_ctz(gr->amfs);
	if (!(gr->amfs & (1u << gr->preferred)))
		return dconf_fail(p, p->grp_key_line[g][5], sec, "preferred",
				  "node %u is not one of the group's amfs", gr->preferred);
	if (!gr->address[0]) {
		/* shm: a directory beside the cluster's; rdma: each node's port + 100 (g + 1), clear
		 * of a cluster that numbers its nodes' ports one after the other. */
		if (!strcmp(c->provider, "shm")) {
			if ((size_t)snprintf(addr, sizeof(addr), "%s-%s", c->address, gr->name) >=
			    sizeof(addr))
				return dconf_fail(p, gr->line, sec, "address",
						  "missing, and [cluster] address-%s is too long",
						  gr->name);
		} else if (!dconf_rdma_shift(c->address, 100 * (1 + g), addr)) {
			return dconf_fail(p, gr->line, sec, "address",
					  "missing, and [cluster] address's ports + %u are not "
					  "ports",
					  100 * (1 + g));
		}
		strcpy(gr->address, addr);
	}
	for (j = 0; j < g; j++) {
		if (!strcmp(c->groups[j].address, gr->address))
			return dconf_fail(p,
					  p->grp_key_line[g][6] ? p->grp_key_line[g][6] : gr->line,
					  sec, "address", "\"%s\" is [group %s]'s too", gr->address,
					  c->groups[j].name);
	}
	if (!strcmp(c->address, gr->address))
		return dconf_fail(p, p->grp_key_line[g][6] ? p->grp_key_line[g][6] : gr->line, sec,
				  "address", "\"%s\" is [cluster] address (the forwarder's)",
				  gr->address);
	return dconf_addr_check(p, sec, p->grp_key_line[g][6] ? p->grp_key_line[g][6] : gr->line,
				gr->address);
}

/* dconf_groups - every group; the block size first (one for all, 4096 by default). */
static int dconf_groups(struct dconf_parse *p)
{
	struct daemon_conf *c = p->c;
	uint32_t g;

	if (!c->ngroups)
		return dconf_fail(p, p->line ? p->line : 1, "group", "raid",
				  "missing (no [group] section)");
	if (!c->block_size)
		c->block_size = 4096;
	for (g = 0; g < c->ngroups; g++) {
		if (!dconf_group(p, g))
			return 0;
	}
	c->routed = c->groups[0].name[0] != '\0';
	return 1;
}

/* dconf_volume_group - the group of logical volume @i: its group = key, or the only group. */
static int dconf_volume_group(struct dconf_parse *p, uint32_t i, const char *sec)
{
	struct daemon_conf *c = p->c;
	struct daemon_volume *v = &c->volumes[i];
	uint32_t g;

	if (!(p->vol_set[i] & 4)) {
		if (c->ngroups > 1)
			return dconf_fail(p, v->line, sec, "group",
					  "missing (%u groups: name the volume's)", c->ngroups);
		v->group = 0;
		return 1;
	}
	for (g = 0; g < c->ngroups; g++) {
		if (c->groups[g].name[0] && !strcmp(c->groups[g].name, p->vol_group[i])) {
			v->group = g;
			return 1;
		}
	}
	return dconf_fail(p, p->vol_key_line[i][2], sec, "group", "no [group %s]", p->vol_group[i]);
}

/* dconf_volumes - logical volumes: sizes to blocks, laid out one after the other in their
 * group, in file order; ids. */
static int dconf_volumes(struct dconf_parse *p)
{
	struct daemon_conf *c = p->c;
	uint64_t next[DAEMON_MAX_GROUPS] = { 0 };
	uint32_t i;
	char sec[DCONF_SECTION_MAX];

	for (i = 0; i < c->nvolumes; i++) {
		struct daemon_volume *v = &c->volumes[i];
		uint64_t bytes = v->blocks, cap;
		const char *gname;

		if (v->kind != COH_MAP_LOGICAL)
			continue;
		snprintf(sec, sizeof(sec), "volume %s", v->name);
		if (c->routed && strlen(v->name) > COH_MAP_NAME_MAX)
			return dconf_fail(p, v->line, sec, NULL,
					  "a routed volume's name has at most %d bytes",
					  COH_MAP_NAME_MAX);
		if (!(p->vol_set[i] & 1))
			return dconf_fail(p, v->line, sec, "size", "missing");
		if (!dconf_volume_group(p, i, sec))
			return 0;
		cap = c->groups[v->group].capacity_blocks;
		gname = c->groups[v->group].name;
		if (bytes % c->block_size)
			return dconf_fail(p, p->vol_size_line[i], sec, "size",
					  "%" PRIu64
					  " bytes is not a multiple of the block size (%u)",
					  bytes, c->block_size);
		v->blocks = bytes / c->block_size;
		if (v->pr_blocks && c->routed)
			/* The unit reads and writes its table through the node's engine, at the
			 * volume's end in the group; a routed unit reaches only the volume. */
			return dconf_fail(p, p->vol_key_line[i][1], sec, "reservations",
					  "cluster is not built for routed volumes ([group NAME])");
		if (v->pr_blocks) {
			/* The reservation table (8 KiB, at least a block) at the volume's end. */
			v->pr_blocks =
			    (COH_SCSI_PR_TABLE_BYTES + c->block_size - 1) / c->block_size;
			if (v->blocks <= v->pr_blocks)
				return dconf_fail(p, p->vol_size_line[i], sec, "size",
						  "%" PRIu64 " bytes leave no room beside the "
						  "reservation table (%u bytes)",
						  bytes, v->pr_blocks * c->block_size);
		}
		if (v->blocks > cap - next[v->group])
			return dconf_fail(
			    p, p->vol_size_line[i], sec, "size",
			    "%" PRIu64 " blocks do not fit: %" PRIu64 " of the group%s%s's %" PRIu64
			    " blocks are left (volumes are "
			    "carved in file order)",
			    v->blocks, cap - next[v->group], gname[0] ? " " : "", gname, cap);
		v->first_block = next[v->group];
		next[v->group] += v->blocks;
		v->blocks -= v->pr_blocks; /* what the host sees */
		if (dconf_volume_id(c->cluster, v->name, v->id))
			return dconf_fail(p, v->line, sec, NULL, "cannot derive its id");
	}
	return 1;
}

/* dconf_virtual - virtual volume @i: its layout and components (logical volumes of the table,
 * distinct), its chunk, its size and id. The mapping table's own check (dconf_map) follows. */
static int dconf_virtual(struct dconf_parse *p, uint32_t i)
{
	struct daemon_conf *c = p->c;
	struct daemon_volume *v = &c->volumes[i];
	char sec[DCONF_SECTION_MAX], buf[DCONF_LINE_MAX], *save = NULL, *tok;
	uint32_t j, k, q, line = p->vol_key_line[i][1];

	snprintf(sec, sizeof(sec), "virtual %s", v->name);
	if (!c->routed)
		return dconf_fail(p, v->line, sec, NULL,
				  "virtual volumes need [group NAME] sections (routing)");
	if (strlen(v->name) > COH_MAP_NAME_MAX)
		return dconf_fail(p, v->line, sec, NULL,
				  "a routed volume's name has at most %d bytes", COH_MAP_NAME_MAX);
	if (!(p->vol_set[i] & 1))
		return dconf_fail(p, v->line, sec, "layout", "missing");
	if (!(p->vol_set[i] & 2))
		return dconf_fail(p, v->line, sec, "volumes", "missing");
	strcpy(buf, p->vol_comps[i]);
	for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		for (j = 0; j < c->nvolumes && strcmp(c->volumes[j].name, tok); j++)
			;
		if (j == c->nvolumes)
			return dconf_fail(p, line, sec, "volumes", "no [volume %s]", tok);
		if (c->volumes[j].kind != COH_MAP_LOGICAL)
			return dconf_fail(p, line, sec, "volumes",
					  "%s is virtual (components are [volume] sections)", tok);
		for (k = 0; k < v->ncomp; k++) {
			if (v->comp[k] == j)
				return dconf_fail(p, line, sec, "volumes", "%s given twice", tok);
		}
		/* The virtual volumes before this one have their components resolved. */
		for (q = 0; q < i; q++) {
			const struct daemon_volume *o = &c->volumes[q];

			for (k = 0; o->kind == COH_MAP_VIRTUAL && k < o->ncomp; k++) {
				if (o->comp[k] == j)
					return dconf_fail(p, line, sec, "volumes",
							  "%s is in [virtual %s] already (a volume "
							  "is in one virtual volume at most)",
							  tok, o->name);
			}
		}
		if (v->ncomp == COH_MAP_MAX_COMPONENTS)
			return dconf_fail(p, line, sec, "volumes", "more than %d volumes",
					  COH_MAP_MAX_COMPONENTS);
		v->comp[v->ncomp++] = j;
	}
	if (!v->ncomp)
		return dconf_fail(p, line, sec, "volumes", "no volume");
	if (v->layout == COH_MAP_STRIPE) {
		uint64_t bytes = p->vol_set[i] & 4 ? v->stripe_blocks : 64u << 10;

		if (bytes % c->block_size)
			return dconf_fail(
			    p, p->vol_key_line[i][2] ? p->vol_key_line[i][2] : v->line, sec,
			    "chunk", "%" PRIu64 " bytes is not a multiple of the block size (%u)",
			    bytes, c->block_size);
		v->stripe_blocks = (uint32_t)(bytes / c->block_size);
		for (k = 0; k < v->ncomp; k++) {
			const struct daemon_volume *cv = &c->volumes[v->comp[k]];

			if (cv->blocks != c->volumes[v->comp[0]].blocks ||
			    cv->blocks % v->stripe_blocks)
				return dconf_fail(p, line, sec, "volumes",
						  "a stripe's volumes are all one size, a multiple "
						  "of the chunk (%u blocks): %s has %" PRIu64,
						  v->stripe_blocks, cv->name, cv->blocks);
		}
	} else if (p->vol_set[i] & 4) {
		return dconf_fail(p, p->vol_key_line[i][2], sec, "chunk",
				  "only with layout = stripe");
	}
	v->blocks = 0;
	for (k = 0; k < v->ncomp; k++)
		v->blocks += c->volumes[v->comp[k]].blocks;
	if (dconf_volume_id(c->cluster, v->name, v->id))
		return dconf_fail(p, v->line, sec, NULL, "cannot derive its id");
	return 1;
}

/* dconf_map - a routed config's table must pass the router's own check. */
static int dconf_map(struct dconf_parse *p)
{
	struct coh_map *m;
	char err[DAEMON_ERR_MAX / 2];
	uint32_t i;
	int ret;

	for (i = 0; i < p->c->nvolumes; i++) {
		if (p->c->volumes[i].kind == COH_MAP_VIRTUAL && !dconf_virtual(p, i))
			return 0;
	}
	if (!p->c->routed)
		return 1;
	m = malloc(sizeof(*m));
	if (!m)
		return dconf_fail(p, 1, NULL, NULL, "out of memory");
	daemon_conf_map(p->c, m);
	ret = coh_map_check(m, err, sizeof(err));
	free(m);
	if (ret)
		return dconf_fail(p, p->c->groups[0].line, NULL, NULL, "the mapping table: %s",
				  err);
	return 1;
}

/* dconf_exports - every export names a volume; devices unique per hba. */
static int dconf_exports(struct dconf_parse *p)
{
	struct daemon_conf *c = p->c;
	const struct daemon_volume *vol;
	uint32_t i, j;
	char sec[DCONF_SECTION_MAX];

	for (i = 0; i < c->nexports; i++) {
		struct daemon_export *e = &c->exports[i];

		snprintf(sec, sizeof(sec), "export %s", e->name);
		if (!(p->exp_set[i] & 1))
			return dconf_fail(p, e->line, sec, "volume", "missing");
		vol = daemon_conf_volume(c, e->volume);
		/* A routed config's export may name a volume made online (cohortctl map add): it is
		 * looked up in the mapping table when attached. Such a volume has no reservations. */
		if (!vol && c->routed && e->initiator[0])
			return dconf_fail(p, e->line, sec, "initiator",
					  "no [volume %s] with reservations = cluster (a volume "
					  "made online has none)",
					  e->volume);
		if (!vol && !c->routed)
			return dconf_fail(p, e->line, sec, "volume", "no [volume %s]", e->volume);
		/* A volume with reservations is reached only through devices that each serve one
		 * named initiator: a device without one would let an unknown host past them. */
		if (vol && vol->pr_blocks && !e->initiator[0])
			return dconf_fail(p, e->line, sec, "initiator",
					  "missing: [volume %s] has reservations = cluster",
					  e->volume);
		if (vol && !vol->pr_blocks && e->initiator[0])
			return dconf_fail(
			    p, e->line, sec, "initiator",
			    "[volume %s] has no reservations (reservations = cluster)", e->volume);
		if (!e->device[0])
			strcpy(e->device, e->name);
		if (!strstr(e->device, "%n") && c->frontend_tcmu && c->nodes > 1 &&
		    !strcmp(c->provider, "shm"))
			return dconf_fail(
			    p, e->line, sec, "device",
			    "every node of an shm cluster runs on this host, so each "
			    "would make user_%u/%s: put %%n (the node id) in the name",
			    e->hba, e->device);
		{
			char raw[sizeof(e->device)];

			strcpy(raw, e->device);
			dconf_expand_node(raw, c->node, e->device, sizeof(e->device));
		}
		for (j = 0; j < i; j++) {
			if (c->exports[j].hba == e->hba && !strcmp(c->exports[j].device, e->device))
				return dconf_fail(p, e->line, sec, "device",
						  "user_%u/%s is [export %s]'s device too", e->hba,
						  e->device, c->exports[j].name);
		}
	}
	return 1;
}

/* dconf_check - the whole config, once read: required keys, ranges across keys, files. */
static int dconf_check(struct dconf_parse *p)
{
	struct daemon_conf *c = p->c;
	static const int cluster_req[] = { 0, 1, 3, 4, 5 };
	size_t i;

	for (i = 0; i < sizeof(cluster_req) / sizeof(cluster_req[0]); i++) {
		if (!dconf_require(p, DCONF_CLUSTER, cluster_req[i],
				   dconf_cluster_keys[cluster_req[i]]))
			return 0;
	}
	if (p->node_override >= 0) {
		c->node = (uint32_t)p->node_override;
	} else if (!(p->set[DCONF_CLUSTER] & (1ull << 2))) {
		return dconf_require(p, DCONF_CLUSTER, 2, "node");
	}
	if (c->node >= c->nodes) {
		if (p->node_override >= 0)
			return dconf_fail(p, p->key_line[DCONF_CLUSTER][1], "cluster", "nodes",
					  "--node %u is not below nodes = %u", c->node, c->nodes);
		return dconf_fail(p, p->key_line[DCONF_CLUSTER][2], "cluster", "node",
				  "%u is not below nodes = %u", c->node, c->nodes);
	}
	if (c->fence == COH_FENCE_AGENT && !c->fence_agent[0])
		return dconf_fail(p, p->key_line[DCONF_CLUSTER][11], "cluster", "fence",
				  "agent needs fence_agent, the command that fences a node");
	if (c->fence != COH_FENCE_AGENT && c->fence_agent[0])
		return dconf_fail(p, p->key_line[DCONF_CLUSTER][12], "cluster", "fence_agent",
				  "used only with fence = agent (fence = %s)",
				  dconf_fence_name(c->fence));
	if (!dconf_address(p))
		return 0;
	if (!dconf_groups(p))
		return 0;
	if (c->replicas >= (int)c->nodes)
		return dconf_fail(p, p->key_line[DCONF_LOG][2], "log", "replicas",
				  "%d is not below nodes = %u", c->replicas, c->nodes);
	if (!c->control[0]) {
		snprintf(c->control, sizeof(c->control), "/run/cohort/%s-%u.sock", c->cluster,
			 c->node);
	} else {
		char raw[sizeof(c->control)];

		strcpy(raw, c->control);
		dconf_expand_node(raw, c->node, c->control, sizeof(c->control));
	}
	if (!dconf_volumes(p) || !dconf_map(p) || !dconf_exports(p))
		return 0;
	/* Last: the secret file is the one check that reads something outside the config. */
	return dconf_secret(p);
}

/* dconf_run - parse from @p's text or file into a new config. */
static int dconf_run(struct dconf_parse *p, int node_override, struct daemon_conf **confp,
		     char *err, size_t errlen)
{
	struct daemon_conf *c;
	int ret;

	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "%s: out of memory", p->name);
		return -ENOMEM;
	}
	c->replicas = 1;
	c->log_bytes = 4u << 20;
	c->cache_blocks = 1024;
	c->lanes = 4;
	c->queue_depth = 128;
	c->frontend_tcmu = true;
	snprintf(c->path, sizeof(c->path), "%s", p->name);
	p->c = c;
	p->cur = -1;
	p->node_override = node_override;
	/* Continuation lines would call the handler twice for one key: turn them off, so an
	 * indented line is an ordinary one. (Debian's libinih makes this a variable.) */
	ini_allow_multiline = false;
	ret = ini_parse_stream(dconf_reader, p, dconf_handler, p);
	if (ret == -2)
		dconf_fail(p, 1, NULL, NULL, "out of memory");
	else if (ret > 0)
		dconf_fail(p, (uint32_t)ret, NULL, NULL,
			   "syntax error (want [section], key = value, or a ;/# comment)");
	if (!p->err_line && p->nsections && !p->section_keys[p->nsections - 1])
		dconf_fail(p, p->section_line[p->nsections - 1], p->sections[p->nsections - 1],
			   NULL, "empty section");
	if (!p->err_line)
		dconf_check(p);
	if (p->err_line) {
		snprintf(err, errlen, "%s", p->err);
		free(c);
		return -EINVAL;
	}
	*confp = c;
	return 0;
}

int daemon_conf_parse(const char *name, const char *text, size_t len, int node_override,
		      struct daemon_conf **confp, char *err, size_t errlen)
{
	struct dconf_parse *p;
	int ret;

	if (!name || (!text && len) || !confp || !err || !errlen)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -ENOMEM;
	}
	p->name = name;
	p->text = text ? text : "";
	p->len = len;
	ret = dconf_run(p, node_override, confp, err, errlen);
	free(p);
	return ret;
}

int daemon_conf_load(const char *path, int node_override, struct daemon_conf **confp, char *err,
		     size_t errlen)
{
	enum {
		DCONF_FILE_MAX = 1 << 20
	};
	char *text;
	size_t len;
	FILE *f;
	int ret;

	if (!path || !confp || !err || !errlen)
		return -EINVAL;
	f = fopen(path, "re");
	if (!f) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return ret;
	}
	text = malloc(DCONF_FILE_MAX + 1);
	if (!text) {
		snprintf(err, errlen, "%s: out of memory", path);
		ret = -ENOMEM;
		goto out_close;
	}
	len = fread(text, 1, DCONF_FILE_MAX + 1, f);
	if (ferror(f)) {
		ret = -EIO;
		snprintf(err, errlen, "%s: read error", path);
		goto out_free;
	}
	if (len > DCONF_FILE_MAX) {
		ret = -EFBIG;
		snprintf(err, errlen, "%s: larger than %d bytes", path, DCONF_FILE_MAX);
		goto out_free;
	}
	ret = daemon_conf_parse(path, text, len, node_override, confp, err, errlen);
out_free:
	free(text);
out_close:
	fclose(f);
	return ret;
}

void daemon_conf_delete(struct daemon_conf **confp)
{
	if (!confp)
		return;
	free(*confp);
	*confp = NULL;
}

const struct daemon_volume *daemon_conf_volume(const struct daemon_conf *c, const char *name)
{
	uint32_t i;

	for (i = 0; c && name && i < c->nvolumes; i++) {
		if (!strcmp(c->volumes[i].name, name))
			return &c->volumes[i];
	}
	return NULL;
}

void daemon_conf_fabric_attr(const struct daemon_conf *c, struct coh_fabric_attr *fa)
{
	memset(fa, 0, sizeof(*fa));
	fa->provider = c->provider;
	fa->cluster = c->address;
	fa->node_id = c->node;
	fa->timeout_ms = c->timeout_ms;
	fa->secret = c->secret;
	fa->secret_len = c->secret_len;
}

void daemon_conf_group_fabric_attr(const struct daemon_conf *c, uint32_t g,
				   struct coh_fabric_attr *fa)
{
	daemon_conf_fabric_attr(c, fa);
	fa->cluster = c->groups[g].address;
}

/* dconf_map_name - a name into the table's COH_MAP_NAME_MAX + 1 bytes (a routed config's names
 * fit: dconf_group and dconf_volumes check them). */
static void dconf_map_name(char *dst, const char *src)
{
	size_t n = strnlen(src, COH_MAP_NAME_MAX);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

void daemon_conf_map(const struct daemon_conf *c, struct coh_map *m)
{
	uint32_t i, k;

	memset(m, 0, sizeof(*m));
	m->version = 1;
	m->nodes = c->nodes;
	m->block_size = c->block_size;
	m->ngroups = c->ngroups;
	for (i = 0; i < c->ngroups; i++) {
		const struct daemon_group *g = &c->groups[i];

		dconf_map_name(m->groups[i].name, g->name[0] ? g->name : "default");
		m->groups[i].amfs = g->amfs;
		m->groups[i].preferred = g->preferred;
		m->groups[i].blocks = g->capacity_blocks;
	}
	m->nvolumes = c->nvolumes;
	for (i = 0; i < c->nvolumes; i++) {
		const struct daemon_volume *v = &c->volumes[i];
		struct coh_map_volume *mv = &m->volumes[i];

		dconf_map_name(mv->name, v->name);
		memcpy(mv->id, v->id, sizeof(mv->id));
		mv->kind = v->kind;
		mv->blocks = v->blocks;
		mv->group = v->group;
		mv->first_block = v->first_block;
		mv->layout = v->layout;
		mv->stripe_blocks = v->stripe_blocks;
		mv->ncomp = v->ncomp;
		for (k = 0; k < v->ncomp; k++)
			mv->comp[k] = v->comp[k];
	}
}

void daemon_conf_node_attr(const struct daemon_conf *c, uint32_t g, struct coh_fabric *fab,
			   struct coh_node_attr *a)
{
	const struct daemon_group *gr = &c->groups[g];
	uint32_t i;

	memset(a, 0, sizeof(*a));
	a->fab = fab;
	a->nodes = c->nodes;
	a->raid.level = (enum coh_raid_level)gr->raid;
	a->raid.nelems = gr->nelems;
	a->raid.chunk_blocks = gr->chunk_blocks;
	for (i = 0; i < gr->nelems; i++)
		a->elem_paths[i] = gr->elements[i];
	a->elem_blocks = gr->element_blocks;
	a->block_size = c->block_size;
	a->replicas = c->replicas;
	a->log_bytes = c->log_bytes;
	a->log_dir = gr->log_dir[0] ? gr->log_dir : NULL;
	a->cache_blocks = c->cache_blocks;
	a->timeout_ms = c->timeout_ms;
	a->lease_ms = c->lease_ms;
	a->fence = c->fence;
	a->open_timeout_ms = c->open_timeout_ms;
	a->force_open = c->force_open;
	a->queue_depth = c->queue_depth;
	a->lanes = c->lanes;
}

void daemon_volume_id_hex(const uint8_t id[16], char out[33])
{
	static const char hex[] = "0123456789abcdef";
	int i;

	for (i = 0; i < 16; i++) {
		out[2 * i] = hex[id[i] >> 4];
		out[2 * i + 1] = hex[id[i] & 15];
	}
	out[32] = '\0';
}

void daemon_conf_print(const struct daemon_conf *c, bool core_only, FILE *f)
{
	uint32_t i, g;
	char id[33];

	fprintf(f, "[cluster] name = %s\n[cluster] nodes = %u\n[cluster] node = %u\n", c->cluster,
		c->nodes, c->node);
	fprintf(f, "[cluster] provider = %s\n[cluster] address = %s\n", c->provider, c->address);
	/* The secret's path and length only: never its bytes. */
	fprintf(f, "[cluster] secret = %s (%u bytes)\n", c->secret_path, c->secret_len);
	fprintf(f, "[cluster] quorum = majority\n[cluster] timeout_ms = %u%s\n", c->timeout_ms,
		c->timeout_ms ? "" : " (the fabric's default)");
	fprintf(f, "[cluster] lease_ms = %u%s\n[cluster] open_timeout_ms = %u%s\n", c->lease_ms,
		c->lease_ms ? "" : " (a quarter of timeout_ms)", c->open_timeout_ms,
		c->open_timeout_ms ? "" : " (ten times timeout_ms)");
	fprintf(f, "[cluster] force_open = %s\n[cluster] fence = %s\n",
		c->force_open ? "yes" : "no", dconf_fence_name(c->fence));
	if (c->fence_agent[0])
		fprintf(f, "[cluster] fence_agent = %s\n", c->fence_agent);
	for (g = 0; g < c->ngroups; g++) {
		const struct daemon_group *gr = &c->groups[g];
		char sec[DAEMON_NAME_MAX + 8];

		snprintf(sec, sizeof(sec), gr->name[0] ? "group %s" : "group", gr->name);
		fprintf(f, "[%s] raid = raid%u\n", sec, gr->raid);
		for (i = 0; i < gr->nelems; i++)
			fprintf(f, "[%s] element%u = %s\n", sec, i, gr->elements[i]);
		fprintf(f,
			"[%s] element_size = %" PRIu64 " (%" PRIu64 " blocks)\n[%s] block_size = "
			"%u\n[%s] chunk = %u blocks\n[%s] capacity = %" PRIu64 " blocks\n",
			sec, gr->element_bytes, gr->element_blocks, sec, c->block_size, sec,
			gr->chunk_blocks, sec, gr->capacity_blocks);
		if (gr->name[0]) {
			char amfs[128];
			size_t n = 0;

			amfs[0] = '\0';
			for (i = 0; i < 32; i++) {
				if (gr->amfs & (1u << i))
					n += (size_t)snprintf(amfs + n, sizeof(amfs) - n, "%s%u",
							      n ? "," : "", i);
			}
			fprintf(f, "[%s] amfs = %s\n[%s] preferred = %u\n[%s] address = %s\n", sec,
				amfs, sec, gr->preferred, sec, gr->address);
		}
	}
	fprintf(f, "[log] dir = %s\n[log] bytes = %" PRIu64 "\n[log] replicas = %d\n",
		c->log_dir[0] ? c->log_dir : "(the provider's default)", c->log_bytes,
		c->replicas < 0 ? 0 : c->replicas);
	fprintf(f, "[cache] blocks = %u\n[cache] lanes = %u\n[cache] queue_depth = %u\n",
		c->cache_blocks, c->lanes, c->queue_depth);
	fprintf(f, "[daemon] control = %s\n[daemon] frontend = %s\n[daemon] configfs = %s\n",
		c->control, c->frontend_tcmu ? "tcmu" : "none",
		c->configfs[0] ? c->configfs : "/sys/kernel/config/target/core");
	for (i = 0; i < c->nvolumes; i++) {
		const struct daemon_volume *v = &c->volumes[i];
		uint32_t k;

		daemon_volume_id_hex(v->id, id);
		if (v->kind == COH_MAP_VIRTUAL) {
			fprintf(f, "[virtual %s] %s", v->name,
				v->layout == COH_MAP_STRIPE ? "stripe" : "concat");
			if (v->layout == COH_MAP_STRIPE)
				fprintf(f, " (chunk %u blocks)", v->stripe_blocks);
			for (k = 0; k < v->ncomp; k++)
				fprintf(f, "%s%s", k ? "," : " over ", c->volumes[v->comp[k]].name);
			fprintf(f, ", blocks = %" PRIu64 ", id = %s\n", v->blocks, id);
			continue;
		}
		fprintf(f, "[volume %s] ", v->name);
		if (c->groups[v->group].name[0])
			fprintf(f, "group = %s, ", c->groups[v->group].name);
		fprintf(f, "first_block = %" PRIu64 ", blocks = %" PRIu64 ", id = %s",
			v->first_block, v->blocks, id);
		if (v->pr_blocks)
			fprintf(f, ", reservation table = %u blocks at %" PRIu64, v->pr_blocks,
				v->first_block + v->blocks);
		fputc('\n', f);
	}
	if (core_only)
		return;
	for (i = 0; i < c->nexports; i++) {
		const struct daemon_export *e = &c->exports[i];

		fprintf(f,
			"[export %s] volume = %s, device = user_%u/%s, cmd_time_out = %u s%s%s\n",
			e->name, e->volume, e->hba, e->device,
			e->cmd_time_out ? e->cmd_time_out : COH_TCMU_CMD_TIME_OUT_DEFAULT,
			e->initiator[0] ? ", initiator = " : "", e->initiator);
	}
}

bool daemon_conf_core_diff(const struct daemon_conf *a, const struct daemon_conf *b, char *what,
			   size_t len)
{
	char *ta = NULL, *tb = NULL, *la, *lb, *ea, *eb;
	size_t na = 0, nb = 0;
	FILE *fa, *fb;
	bool differ = false;

	fa = open_memstream(&ta, &na);
	fb = open_memstream(&tb, &nb);
	if (!fa || !fb) {
		if (fa)
			fclose(fa);
		if (fb)
			fclose(fb);
		free(ta);
		free(tb);
		snprintf(what, len, "out of memory comparing the configs");
		return true;
	}
	daemon_conf_print(a, true, fa);
	daemon_conf_print(b, true, fb);
	fclose(fa);
	fclose(fb);
	/* The secret's bytes are not printed; compare them apart. */
	if (a->secret_len != b->secret_len || memcmp(a->secret, b->secret, a->secret_len)) {
		snprintf(what, len, "[cluster] secret: the file's content changed");
		differ = true;
		goto out;
	}
	/* Both print the same keys in the same order: the first differing line names the key. */
	for (la = ta, lb = tb; *la || *lb; la = *ea ? ea + 1 : ea, lb = *eb ? eb + 1 : eb) {
		ea = strchrnul(la, '\n');
		eb = strchrnul(lb, '\n');
		if (ea - la != eb - lb || memcmp(la, lb, (size_t)(ea - la))) {
			snprintf(what, len, "%.*s (running) / %.*s (file)", (int)(ea - la), la,
				 (int)(eb - lb), lb);
			if (!*la)
				snprintf(what, len, "%.*s (file only)", (int)(eb - lb), lb);
			else if (!*lb)
				snprintf(what, len, "%.*s (running only)", (int)(ea - la), la);
			differ = true;
			break;
		}
	}
out:
	free(ta);
	free(tb);
	return differ;
}

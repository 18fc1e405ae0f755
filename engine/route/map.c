/*
 * map.c - the mapping table (route.h): its checks, its on-disk form and the two-slot file that
 * keeps it, the choice of a target controller, and the split of a command into component
 * commands with their aggregate status.
 *
 * On disk (little-endian): a 64-byte header, magic 0..7, format 8, length 12, version 16, nodes
 * 24, block size 28, groups 32, volumes 36, zero to 59, crc32c at 60 of the whole length with this
 * field zero; then each group in 64 bytes (name 0..31, NUL-padded; amfs 32, preferred 36, blocks
 * 40, zero to 63); then each volume in 128 bytes (name 0..31; id 32..47; kind 48, group 52,
 * blocks 56, first block 64, layout 72, stripe 76, components 80, their indexes 84..115, zero
 * to 127). Every reserved byte must be zero: a table this build did not write is refused.
 *
 * Leaves out: who changes the table and how every node comes to hold the same one
 * (docs/routing.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "cohort/route.h"
#include "le.h"

#define MAP_HDR 64u
#define MAP_GROUP 64u
#define MAP_VOLUME 128u
#define MAP_FORMAT 1u
#define MAP_SLOT 16384u /* each of the file's two slots; holds COH_MAP_ENCODED_MAX */
#define MAP_MAX_STRIPE (1u << 24)
#define MAP_MAX_BLOCKS (1ull << 48)

_Static_assert(COH_MAP_ENCODED_MAX <= MAP_SLOT, "a slot holds the largest table");
_Static_assert(COH_MAP_MAX_NODES <= 32, "AMF sets are 32-bit masks");

static const uint8_t map_magic[8] = { 'C', 'O', 'H', 'M', 'A', 'P', 0, 1 };

static void map_err(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void map_err(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

/* map_name_ok - 1 to COH_MAP_NAME_MAX printable characters, no blank, NUL-terminated. */
static bool map_name_ok(const char *s)
{
	size_t i;

	for (i = 0; i <= COH_MAP_NAME_MAX && s[i]; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return i >= 1 && i <= COH_MAP_NAME_MAX && !s[i];
}

static bool map_id_zero(const uint8_t *id)
{
	uint32_t i;

	for (i = 0; i < COH_MAP_ID_BYTES && !id[i]; i++)
		;
	return i == COH_MAP_ID_BYTES;
}

/* map_check_group - group @g of @m, alone. */
static int map_check_group(const struct coh_map *m, uint32_t g, char *err, size_t errlen)
{
	const struct coh_map_group *gr = &m->groups[g];
	uint32_t all = m->nodes == 32 ? UINT32_MAX : (1u << m->nodes) - 1, i;

	if (!map_name_ok(gr->name)) {
		map_err(err, errlen, "group %u: bad name (1 to %u printable characters)", g,
			COH_MAP_NAME_MAX);
		return -EINVAL;
	}
	for (i = 0; i < g; i++)
		if (!strcmp(m->groups[i].name, gr->name)) {
			map_err(err, errlen, "group %s: named twice", gr->name);
			return -EINVAL;
		}
	if (!gr->amfs || (gr->amfs & ~all)) {
		map_err(err, errlen, "group %s: AMFs 0x%x: none, or beyond the %u controllers",
			gr->name, gr->amfs, m->nodes);
		return -EINVAL;
	}
	if (gr->preferred >= m->nodes || !(gr->amfs & (1u << gr->preferred))) {
		map_err(err, errlen, "group %s: preferred controller %u is not one of its AMFs",
			gr->name, gr->preferred);
		return -EINVAL;
	}
	if (!gr->blocks || gr->blocks > MAP_MAX_BLOCKS) {
		map_err(err, errlen, "group %s: %llu blocks", gr->name,
			(unsigned long long)gr->blocks);
		return -EINVAL;
	}
	return 0;
}

/* map_check_logical - logical volume @v of @m against its group and the volumes before it. */
static int map_check_logical(const struct coh_map *m, uint32_t v, char *err, size_t errlen)
{
	const struct coh_map_volume *vo = &m->volumes[v], *o;
	const struct coh_map_group *gr;
	uint32_t i;

	if (vo->group >= m->ngroups) {
		map_err(err, errlen, "volume %s: group %u does not exist", vo->name, vo->group);
		return -EINVAL;
	}
	gr = &m->groups[vo->group];
	if (!vo->blocks || vo->first_block >= gr->blocks ||
	    vo->blocks > gr->blocks - vo->first_block) {
		map_err(err, errlen, "volume %s: blocks %llu + %llu are not inside group %s (%llu)",
			vo->name, (unsigned long long)vo->first_block,
			(unsigned long long)vo->blocks, gr->name, (unsigned long long)gr->blocks);
		return -EINVAL;
	}
	if (vo->layout || vo->stripe_blocks || vo->ncomp) {
		map_err(err, errlen, "volume %s: a logical volume has no layout or components",
			vo->name);
		return -EINVAL;
	}
	for (i = 0; i < v; i++) {
		o = &m->volumes[i];
		if (o->kind != COH_MAP_LOGICAL || o->group != vo->group)
			continue;
		if (vo->first_block < o->first_block + o->blocks &&
		    o->first_block < vo->first_block + vo->blocks) {
			map_err(err, errlen, "volume %s overlaps volume %s in group %s", vo->name,
				o->name, gr->name);
			return -EINVAL;
		}
	}
	return 0;
}

/* map_in_virtual_from - the first virtual volume of @m from index @from on that has logical
 * volume @lv as a component, or m->nvolumes. */
static uint32_t map_in_virtual_from(const struct coh_map *m, uint32_t lv, uint32_t from)
{
	uint32_t i, c;

	for (i = from; i < m->nvolumes && i < COH_MAP_MAX_VOLUMES; i++) {
		if (m->volumes[i].kind != COH_MAP_VIRTUAL)
			continue;
		for (c = 0; c < m->volumes[i].ncomp && c < COH_MAP_MAX_COMPONENTS; c++)
			if (m->volumes[i].comp[c] == lv)
				return i;
	}
	return m->nvolumes;
}

/* map_check_virtual - virtual volume @v of @m against its components. */
static int map_check_virtual(const struct coh_map *m, uint32_t v, char *err, size_t errlen)
{
	const struct coh_map_volume *vo = &m->volumes[v], *c;
	uint64_t sum = 0;
	uint32_t i, j;

	if (vo->ncomp < 1 || vo->ncomp > COH_MAP_MAX_COMPONENTS) {
		map_err(err, errlen, "volume %s: %u components (1 to %u)", vo->name, vo->ncomp,
			COH_MAP_MAX_COMPONENTS);
		return -EINVAL;
	}
	if (vo->group || vo->first_block) {
		map_err(err, errlen, "volume %s: a virtual volume has no group or first block",
			vo->name);
		return -EINVAL;
	}
	if (vo->layout == COH_MAP_CONCAT ? vo->stripe_blocks != 0
					 : vo->layout != COH_MAP_STRIPE || !vo->stripe_blocks ||
					       vo->stripe_blocks > MAP_MAX_STRIPE) {
		map_err(err, errlen, "volume %s: layout %u, stripe %u blocks", vo->name, vo->layout,
			vo->stripe_blocks);
		return -EINVAL;
	}
	for (i = 0; i < COH_MAP_MAX_COMPONENTS; i++) {
		if (i >= vo->ncomp) {
			if (vo->comp[i]) {
				map_err(err, errlen, "volume %s: component %u past its count",
					vo->name, i);
				return -EINVAL;
			}
			continue;
		}
		if (vo->comp[i] >= m->nvolumes || m->volumes[vo->comp[i]].kind != COH_MAP_LOGICAL) {
			map_err(err, errlen, "volume %s: component %u is not a logical volume",
				vo->name, i);
			return -EINVAL;
		}
		for (j = 0; j < i; j++)
			if (vo->comp[j] == vo->comp[i]) {
				map_err(err, errlen, "volume %s: component %s twice", vo->name,
					m->volumes[vo->comp[i]].name);
				return -EINVAL;
			}
		/* In one virtual volume at most: the coordination ranges are a virtual volume's
		 * own blocks, so two virtual volumes over the same components would not meet
		 * there, and two writes over both could each land first on one component. */
		j = map_in_virtual_from(m, vo->comp[i], v + 1);
		if (j < m->nvolumes) {
			map_err(err, errlen,
				"volume %s: %s is a component of virtual volume %s too (a logical "
				"volume is in one virtual volume at most)",
				vo->name, m->volumes[vo->comp[i]].name, m->volumes[j].name);
			return -EINVAL;
		}
		c = &m->volumes[vo->comp[i]];
		if (vo->layout == COH_MAP_STRIPE && (c->blocks != m->volumes[vo->comp[0]].blocks ||
						     c->blocks % vo->stripe_blocks)) {
			map_err(
			    err, errlen,
			    "volume %s: striped components must be the same size, a multiple of "
			    "the stripe (%s has %llu blocks)",
			    vo->name, c->name, (unsigned long long)c->blocks);
			return -EINVAL;
		}
		sum += c->blocks;
	}
	if (vo->blocks != sum) {
		map_err(err, errlen, "volume %s: %llu blocks, its components have %llu", vo->name,
			(unsigned long long)vo->blocks, (unsigned long long)sum);
		return -EINVAL;
	}
	return 0;
}

int coh_map_check(const struct coh_map *m, char *err, size_t errlen)
{
	uint32_t i, j;
	int ret;

	if (!m) {
		map_err(err, errlen, "no table");
		return -EINVAL;
	}
	if (!m->version) {
		map_err(err, errlen, "version 0 (the first table is version 1)");
		return -EINVAL;
	}
	if (m->nodes < 1 || m->nodes > COH_MAP_MAX_NODES) {
		map_err(err, errlen, "%u controllers (1 to %u)", m->nodes, COH_MAP_MAX_NODES);
		return -EINVAL;
	}
	if (m->block_size < 512 || m->block_size > 65536 || (m->block_size & (m->block_size - 1))) {
		map_err(err, errlen, "block size %u (a power of two, 512 to 65536)", m->block_size);
		return -EINVAL;
	}
	if (m->ngroups < 1 || m->ngroups > COH_MAP_MAX_GROUPS ||
	    m->nvolumes > COH_MAP_MAX_VOLUMES) {
		map_err(err, errlen, "%u groups (1 to %u), %u volumes (at most %u)", m->ngroups,
			COH_MAP_MAX_GROUPS, m->nvolumes, COH_MAP_MAX_VOLUMES);
		return -EINVAL;
	}
	for (i = 0; i < m->ngroups; i++) {
		ret = map_check_group(m, i, err, errlen);
		if (ret)
			return ret;
	}
	for (i = 0; i < m->nvolumes; i++) {
		const struct coh_map_volume *vo = &m->volumes[i];

		if (!map_name_ok(vo->name)) {
			map_err(err, errlen, "volume %u: bad name (1 to %u printable characters)",
				i, COH_MAP_NAME_MAX);
			return -EINVAL;
		}
		if (map_id_zero(vo->id)) {
			map_err(err, errlen, "volume %s: id all zero", vo->name);
			return -EINVAL;
		}
		for (j = 0; j < i; j++) {
			if (!strcmp(m->volumes[j].name, vo->name)) {
				map_err(err, errlen, "volume %s: named twice", vo->name);
				return -EINVAL;
			}
			if (!memcmp(m->volumes[j].id, vo->id, COH_MAP_ID_BYTES)) {
				map_err(err, errlen, "volume %s: the same id as volume %s",
					vo->name, m->volumes[j].name);
				return -EINVAL;
			}
		}
		if (vo->kind == COH_MAP_LOGICAL)
			ret = map_check_logical(m, i, err, errlen);
		else if (vo->kind == COH_MAP_VIRTUAL)
			ret = map_check_virtual(m, i, err, errlen);
		else {
			map_err(err, errlen, "volume %s: kind %u", vo->name, vo->kind);
			ret = -EINVAL;
		}
		if (ret)
			return ret;
	}
	return 0;
}

int coh_map_find(const struct coh_map *m, const char *name)
{
	uint32_t i;

	if (!m || !name)
		return -ENOENT;
	for (i = 0; i < m->nvolumes && i < COH_MAP_MAX_VOLUMES; i++)
		if (!strncmp(m->volumes[i].name, name, COH_MAP_NAME_MAX + 1))
			return (int)i;
	return -ENOENT;
}

static size_t map_encoded_len(uint32_t ngroups, uint32_t nvolumes)
{
	return MAP_HDR + (size_t)ngroups * MAP_GROUP + (size_t)nvolumes * MAP_VOLUME;
}

static uint32_t map_crc(const uint8_t *buf, size_t len)
{
	static const uint8_t zero[4];
	uint32_t crc;

	crc = crc32_iscsi((unsigned char *)buf, 60, 0);
	crc = crc32_iscsi((unsigned char *)zero, 4, crc);
	return crc32_iscsi((unsigned char *)buf + MAP_HDR, (int)(len - MAP_HDR), crc);
}

int coh_map_encode(const struct coh_map *m, void *buf, size_t len, size_t *used)
{
	uint8_t *p = buf, *q;
	size_t need;
	uint32_t i, j;
	int ret;

	ret = coh_map_check(m, NULL, 0);
	if (ret)
		return ret;
	need = map_encoded_len(m->ngroups, m->nvolumes);
	if (!buf || len < need)
		return -ENOSPC;
	memset(p, 0, need);
	memcpy(p, map_magic, sizeof(map_magic));
	le_put32(p + 8, MAP_FORMAT);
	le_put32(p + 12, (uint32_t)need);
	le_put64(p + 16, m->version);
	le_put32(p + 24, m->nodes);
	le_put32(p + 28, m->block_size);
	le_put32(p + 32, m->ngroups);
	le_put32(p + 36, m->nvolumes);
	for (i = 0; i < m->ngroups; i++) {
		q = p + MAP_HDR + i * MAP_GROUP;
		memcpy(q, m->groups[i].name, strlen(m->groups[i].name));
		le_put32(q + 32, m->groups[i].amfs);
		le_put32(q + 36, m->groups[i].preferred);
		le_put64(q + 40, m->groups[i].blocks);
	}
	for (i = 0; i < m->nvolumes; i++) {
		const struct coh_map_volume *vo = &m->volumes[i];

		q = p + MAP_HDR + m->ngroups * MAP_GROUP + i * MAP_VOLUME;
		memcpy(q, vo->name, strlen(vo->name));
		memcpy(q + 32, vo->id, COH_MAP_ID_BYTES);
		le_put32(q + 48, vo->kind);
		le_put32(q + 52, vo->group);
		le_put64(q + 56, vo->blocks);
		le_put64(q + 64, vo->first_block);
		le_put32(q + 72, vo->layout);
		le_put32(q + 76, vo->stripe_blocks);
		le_put32(q + 80, vo->ncomp);
		for (j = 0; j < COH_MAP_MAX_COMPONENTS; j++)
			le_put32(q + 84 + 4 * j, vo->comp[j]);
	}
	le_put32(p + 60, map_crc(p, need));
	if (used)
		*used = need;
	return 0;
}

/* map_decode_name - a 32-byte NUL-padded name field into @out; false if not padded with NULs
 * or without one. */
static bool map_decode_name(const uint8_t *q, char *out)
{
	size_t n = strnlen((const char *)q, COH_MAP_NAME_MAX + 1);

	if (n > COH_MAP_NAME_MAX || !le_zero(q + n, COH_MAP_NAME_MAX + 1 - n))
		return false;
	memcpy(out, q, n);
	out[n] = '\0';
	return true;
}

int coh_map_decode(const void *buf, size_t len, struct coh_map *m, char *err, size_t errlen)
{
	const uint8_t *p = buf, *q;
	uint32_t total, ng, nv, i, j;

	if (!m)
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	if (!p || len < MAP_HDR) {
		map_err(err, errlen, "%zu bytes: shorter than a table's header", len);
		return !p || !le_zero(p, len) ? -EBADMSG : -ENODATA;
	}
	if (le_zero(p, len)) {
		map_err(err, errlen, "no table (all zero)");
		return -ENODATA;
	}
	if (memcmp(p, map_magic, sizeof(map_magic)) || le_get32(p + 8) != MAP_FORMAT) {
		map_err(err, errlen, "not a mapping table of format %u (magic or format)",
			MAP_FORMAT);
		return -EBADMSG;
	}
	total = le_get32(p + 12);
	ng = le_get32(p + 32);
	nv = le_get32(p + 36);
	if (ng > COH_MAP_MAX_GROUPS || nv > COH_MAP_MAX_VOLUMES ||
	    total != map_encoded_len(ng, nv) || total > len) {
		map_err(err, errlen, "length %u for %u groups and %u volumes, %zu bytes there",
			total, ng, nv, len);
		return -EBADMSG;
	}
	if (le_get32(p + 60) != map_crc(p, total) || !le_zero(p + 40, 20)) {
		map_err(err, errlen, "checksum or reserved bytes: a torn or corrupt table");
		return -EBADMSG;
	}
	m->version = le_get64(p + 16);
	m->nodes = le_get32(p + 24);
	m->block_size = le_get32(p + 28);
	m->ngroups = ng;
	m->nvolumes = nv;
	for (i = 0; i < ng; i++) {
		q = p + MAP_HDR + i * MAP_GROUP;
		if (!map_decode_name(q, m->groups[i].name) || !le_zero(q + 48, 16))
			goto bad_record;
		m->groups[i].amfs = le_get32(q + 32);
		m->groups[i].preferred = le_get32(q + 36);
		m->groups[i].blocks = le_get64(q + 40);
	}
	for (i = 0; i < nv; i++) {
		struct coh_map_volume *vo = &m->volumes[i];

		q = p + MAP_HDR + ng * MAP_GROUP + i * MAP_VOLUME;
		if (!map_decode_name(q, vo->name) || !le_zero(q + 116, 12))
			goto bad_record;
		memcpy(vo->id, q + 32, COH_MAP_ID_BYTES);
		vo->kind = le_get32(q + 48);
		vo->group = le_get32(q + 52);
		vo->blocks = le_get64(q + 56);
		vo->first_block = le_get64(q + 64);
		vo->layout = le_get32(q + 72);
		vo->stripe_blocks = le_get32(q + 76);
		vo->ncomp = le_get32(q + 80);
		for (j = 0; j < COH_MAP_MAX_COMPONENTS; j++)
			vo->comp[j] = le_get32(q + 84 + 4 * j);
	}
	return coh_map_check(m, err, errlen);

bad_record:
	map_err(err, errlen, "a record's name or reserved bytes are not what this build writes");
	memset(m, 0, sizeof(*m));
	return -EBADMSG;
}

/* map_pread_all - up to @len bytes of @fd from @at into @buf, to its end: the bytes read into
 * *@got (may be NULL), 0 or -errno. */
static int map_pread_all(int fd, uint8_t *buf, size_t len, off_t at, size_t *got)
{
	size_t off = 0;
	ssize_t n;

	while (off < len) {
		n = pread(fd, buf + off, len - off, at + (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (!n)
			break;
		off += (size_t)n;
	}
	if (got)
		*got = off;
	return 0;
}

/* map_pwrite_all - @len bytes of @buf to @fd at @at: 0 or -errno (-EIO when nothing moves). */
static int map_pwrite_all(int fd, const uint8_t *buf, size_t len, off_t at)
{
	size_t off = 0;
	ssize_t n;

	while (off < len) {
		n = pwrite(fd, buf + off, len - off, at + (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		off += (size_t)n;
	}
	return 0;
}

/* map_read_slots - both slots of @fd (missing bytes read as zero). */
static int map_read_slots(int fd, uint8_t *slots)
{
	memset(slots, 0, 2 * MAP_SLOT);
	return map_pread_all(fd, slots, 2 * MAP_SLOT, 0, NULL);
}

/* map_pick - the newest valid table of @slots into @m; *@slot is its slot, -1 when none. */
static int map_pick(const uint8_t *slots, struct coh_map *m, int *slot, char *err, size_t errlen)
{
	struct coh_map t[2];
	char e[2][128];
	int r[2], i;

	for (i = 0; i < 2; i++)
		r[i] = coh_map_decode(slots + (size_t)i * MAP_SLOT, MAP_SLOT, &t[i], e[i],
				      sizeof(e[i]));
	*slot = -1;
	if (!r[0] && (r[1] || t[0].version >= t[1].version))
		*slot = 0;
	else if (!r[1])
		*slot = 1;
	if (*slot >= 0) {
		*m = t[*slot];
		return 0;
	}
	if (r[0] == -ENODATA && r[1] == -ENODATA) {
		map_err(err, errlen, "no table kept (both slots empty)");
		return -ENODATA;
	}
	map_err(err, errlen, "no valid table: slot 0: %s; slot 1: %s", e[0], e[1]);
	return -EBADMSG;
}

/* map_open - open @path (for writing, and created 0600 if missing, with @rw) and read its two
 * slots into a new buffer *@slotsp (missing bytes read as zero). On success the caller closes
 * *@fdp and frees *@slotsp; *@created says whether the file is new. */
static int map_open(const char *path, bool rw, int *fdp, bool *created, uint8_t **slotsp, char *err,
		    size_t errlen)
{
	int fd, ret;

	*created = false;
	fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fd < 0 && rw && errno == ENOENT) {
		*created = true;
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0) {
		ret = -errno;
		map_err(err, errlen, "%s: %s", path, strerror(errno));
		return ret;
	}
	*slotsp = malloc(2 * MAP_SLOT);
	if (!*slotsp) {
		close(fd);
		return -ENOMEM;
	}
	ret = map_read_slots(fd, *slotsp);
	if (ret) {
		map_err(err, errlen, "%s: %s", path, strerror(-ret));
		free(*slotsp);
		close(fd);
		return ret;
	}
	*fdp = fd;
	return 0;
}

int coh_map_load(const char *path, struct coh_map *m, char *err, size_t errlen)
{
	uint8_t *slots;
	int fd, ret, slot;
	bool created;

	if (!path || !m)
		return -EINVAL;
	ret = map_open(path, false, &fd, &created, &slots, err, errlen);
	if (ret)
		return ret;
	ret = map_pick(slots, m, &slot, err, errlen);
	free(slots);
	close(fd);
	return ret;
}

/* map_sync_dir - fsync the directory holding @path, so that a new file's name lasts. */
static int map_sync_dir(const char *path)
{
	char copy[PATH_MAX];
	int fd, ret = 0;

	if (snprintf(copy, sizeof(copy), "%s", path) >= (int)sizeof(copy))
		return -ENAMETOOLONG;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd))
		ret = -errno;
	close(fd);
	return ret;
}

int coh_map_save(const char *path, const struct coh_map *m, char *err, size_t errlen)
{
	struct coh_map old;
	uint8_t *slots, *to;
	int fd, ret, slot;
	bool created;

	if (!path) {
		map_err(err, errlen, "no path");
		return -EINVAL;
	}
	ret = coh_map_check(m, err, errlen);
	if (ret)
		return ret;
	ret = map_open(path, true, &fd, &created, &slots, err, errlen);
	if (ret)
		return ret;
	ret = map_pick(slots, &old, &slot, NULL, 0);
	if (!ret && old.version >= m->version) {
		map_err(err, errlen, "%s: version %llu is not newer than the kept %llu", path,
			(unsigned long long)m->version, (unsigned long long)old.version);
		ret = -ESTALE;
		goto out_free;
	}
	/* The slot that does not hold the newest valid table; slot 0 when none does. */
	to = slots + (size_t)(slot == 0 ? 1 : 0) * MAP_SLOT;
	memset(to, 0, MAP_SLOT);
	ret = coh_map_encode(m, to, MAP_SLOT, NULL);
	if (ret)
		goto out_free;
	ret = map_pwrite_all(fd, to, MAP_SLOT, (off_t)(to - slots));
	if (ret) {
		map_err(err, errlen, "%s: write: %s", path, strerror(-ret));
		goto out_free;
	}
	if (fsync(fd)) {
		ret = -errno;
		map_err(err, errlen, "%s: fsync: %s", path, strerror(errno));
		goto out_free;
	}
	ret = created ? map_sync_dir(path) : 0;
	if (ret)
		map_err(err, errlen, "%s: fsync of its directory: %s", path, strerror(-ret));
out_free:
	free(slots);
	close(fd);
	return ret;
}

/*
 * The acceptor's state (route.h): magic "COHA" at 0, format 1 at 4, version 8, promised 16,
 * ballot 24, the table's length 32 (0 with no ballot), crc32c 36 of the header with it zero and
 * the table, zero 40 to 63, then the table.
 */
#define MAP_ACC_MAGIC 0x41484f43u
#define MAP_ACC_HDR 64u

static uint32_t map_acc_crc(const uint8_t *buf, size_t len)
{
	static const uint8_t zero[4];
	uint32_t crc;

	crc = crc32_iscsi((unsigned char *)buf, 36, 0);
	crc = crc32_iscsi((unsigned char *)zero, 4, crc);
	return crc32_iscsi((unsigned char *)buf + 40, (int)(len - 40), crc);
}

int coh_map_accept_encode(const struct coh_map_accept *a, void *buf, size_t len, size_t *used)
{
	uint8_t *b = buf;
	size_t tlen = 0;
	int ret;

	if (!a || !buf || (a->ballot && a->promised < a->ballot))
		return -EINVAL;
	if (len < MAP_ACC_HDR)
		return -ENOSPC;
	memset(b, 0, MAP_ACC_HDR);
	if (a->ballot) {
		if (a->map.version != a->version)
			return -EINVAL;
		ret = coh_map_encode(&a->map, b + MAP_ACC_HDR, len - MAP_ACC_HDR, &tlen);
		if (ret)
			return ret;
	}
	le_put32(b, MAP_ACC_MAGIC);
	le_put32(b + 4, 1);
	le_put64(b + 8, a->version);
	le_put64(b + 16, a->promised);
	le_put64(b + 24, a->ballot);
	le_put32(b + 32, (uint32_t)tlen);
	le_put32(b + 36, map_acc_crc(b, MAP_ACC_HDR + tlen));
	if (used)
		*used = MAP_ACC_HDR + tlen;
	return 0;
}

int coh_map_accept_decode(const void *buf, size_t len, struct coh_map_accept *a, char *err,
			  size_t errlen)
{
	const uint8_t *b = buf;
	uint32_t tlen;
	int ret;

	if (!buf || !a)
		return -EINVAL;
	memset(a, 0, sizeof(*a));
	if (len < MAP_ACC_HDR || le_get32(b) != MAP_ACC_MAGIC || le_get32(b + 4) != 1 ||
	    !le_zero(b + 40, MAP_ACC_HDR - 40)) {
		map_err(err, errlen, "not an acceptor's state (magic, format or header)");
		return -EBADMSG;
	}
	tlen = le_get32(b + 32);
	if (tlen > len - MAP_ACC_HDR || tlen > COH_MAP_ENCODED_MAX ||
	    le_get32(b + 36) != map_acc_crc(b, MAP_ACC_HDR + tlen)) {
		map_err(err, errlen, "an acceptor's state cut short or corrupt (length, crc32c)");
		return -EBADMSG;
	}
	a->version = le_get64(b + 8);
	a->promised = le_get64(b + 16);
	a->ballot = le_get64(b + 24);
	if (!a->ballot != !tlen || a->promised < a->ballot) {
		map_err(err, errlen,
			"an acceptor's state with a table and no ballot, or a ballot "
			"above its promise");
		return -EINVAL;
	}
	if (!tlen)
		return 0;
	ret = coh_map_decode(b + MAP_ACC_HDR, tlen, &a->map, err, errlen);
	if (ret)
		return ret == -ENODATA ? -EBADMSG : ret;
	if (a->map.version != a->version) {
		map_err(err, errlen, "an accepted table of version %llu in a state for %llu",
			(unsigned long long)a->map.version, (unsigned long long)a->version);
		return -EINVAL;
	}
	return 0;
}

int coh_map_accept_save(const char *path, const struct coh_map_accept *a, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	uint8_t *buf;
	size_t len = 0;
	int fd, ret;

	if (!path || !a)
		return -EINVAL;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	buf = calloc(1, COH_MAP_ACCEPT_ENCODED_MAX);
	if (!buf)
		return -ENOMEM;
	ret = coh_map_accept_encode(a, buf, COH_MAP_ACCEPT_ENCODED_MAX, &len);
	if (ret)
		goto out_free;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		map_err(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out_free;
	}
	ret = map_pwrite_all(fd, buf, len, 0);
	if (!ret && fsync(fd))
		ret = -errno;
	close(fd);
	if (!ret && rename(tmp, path))
		ret = -errno;
	if (!ret)
		ret = map_sync_dir(path);
	if (ret) {
		map_err(err, errlen, "%s: %s", path, strerror(-ret));
		unlink(tmp);
	}
out_free:
	free(buf);
	return ret;
}

int coh_map_accept_load(const char *path, struct coh_map_accept *a, char *err, size_t errlen)
{
	uint8_t *buf;
	size_t got = 0;
	int fd, ret;

	if (!path || !a)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		if (ret != -ENOENT)
			map_err(err, errlen, "%s: %s", path, strerror(errno));
		return ret;
	}
	buf = calloc(1, COH_MAP_ACCEPT_ENCODED_MAX);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	ret = map_pread_all(fd, buf, COH_MAP_ACCEPT_ENCODED_MAX, 0, &got);
	close(fd);
	if (ret)
		map_err(err, errlen, "%s: %s", path, strerror(-ret));
	if (!ret) {
		ret = coh_map_accept_decode(buf, got, a, err, errlen);
		if (ret && err && errlen) {
			char why[160];

			snprintf(why, sizeof(why), "%s", err);
			map_err(err, errlen, "%s: %s", path, why);
		}
	}
	free(buf);
	return ret;
}

int coh_map_target(const struct coh_map *m, uint32_t vol, uint32_t me, uint32_t alive,
		   uint32_t holder, uint32_t *target)
{
	const struct coh_map_group *g;
	uint32_t live;

	if (!m || !target || vol >= m->nvolumes || vol >= COH_MAP_MAX_VOLUMES ||
	    m->volumes[vol].kind != COH_MAP_LOGICAL || m->volumes[vol].group >= m->ngroups)
		return -EINVAL;
	g = &m->groups[m->volumes[vol].group];
	live = g->amfs & alive;
	if (!live)
		return -EHOSTDOWN;
	if (me < 32 && (live & (1u << me)))
		*target = me;
	else if (holder < 32 && (live & (1u << holder)))
		*target = holder;
	else if (g->preferred < 32 && (live & (1u << g->preferred)))
		*target = g->preferred;
	else
		*target = (uint32_t)__builtin_ctz(live);
	return 0;
}

/* map_volume_ok - @vol is a volume of @m that a split can use. */
static bool map_volume_ok(const struct coh_map *m, uint32_t vol)
{
	return m && vol < m->nvolumes && vol < COH_MAP_MAX_VOLUMES &&
	       (m->volumes[vol].kind == COH_MAP_LOGICAL ||
		(m->volumes[vol].kind == COH_MAP_VIRTUAL && m->volumes[vol].ncomp >= 1 &&
		 m->volumes[vol].ncomp <= COH_MAP_MAX_COMPONENTS));
}

uint32_t coh_map_split_pieces(const struct coh_map *m, uint32_t vol, uint32_t nblocks)
{
	const struct coh_map_volume *vo;

	if (!map_volume_ok(m, vol) || !nblocks)
		return 1;
	vo = &m->volumes[vol];
	if (vo->kind == COH_MAP_LOGICAL)
		return 1;
	if (vo->layout == COH_MAP_CONCAT)
		return vo->ncomp;
	/* chunks a range of @nblocks can touch, wherever it starts */
	return (nblocks - 1) / vo->stripe_blocks + 2;
}

/* map_comp_add - append component command for logical volume @lv at @lba. */
static int map_comp_add(const struct coh_map *m, uint32_t lv, uint64_t lba,
			struct coh_map_comp *comps, uint32_t maxcomps, uint32_t *ncomps,
			uint32_t npieces)
{
	struct coh_map_comp *c;

	if (*ncomps >= maxcomps)
		return -EOVERFLOW;
	c = &comps[(*ncomps)++];
	c->volume = lv;
	c->group = m->volumes[lv].group;
	c->lba = lba;
	c->group_block = m->volumes[lv].first_block + lba;
	c->nblocks = 0;
	c->first_piece = npieces;
	c->npieces = 0;
	return 0;
}

/* map_piece_add - append @n host blocks from @host to the last component command. */
static int map_piece_add(struct coh_map_comp *c, uint64_t host, uint32_t n,
			 struct coh_map_piece *pieces, uint32_t maxpieces, uint32_t *npieces)
{
	if (*npieces >= maxpieces)
		return -EOVERFLOW;
	pieces[*npieces].host_block = host;
	pieces[*npieces].nblocks = n;
	(*npieces)++;
	c->npieces++;
	c->nblocks += n;
	return 0;
}

int coh_map_split(const struct coh_map *m, uint32_t vol, uint64_t lba, uint32_t nblocks,
		  struct coh_map_comp *comps, uint32_t maxcomps, uint32_t *ncomps,
		  struct coh_map_piece *pieces, uint32_t maxpieces, uint32_t *npieces)
{
	const struct coh_map_volume *vo;
	uint64_t end, base, s, e, stripe, first_chunk, last_chunk, ch, row;
	uint32_t i, k, lv;
	int ret;

	if (!map_volume_ok(m, vol) || !nblocks || !comps || !ncomps || !pieces || !npieces)
		return -EINVAL;
	vo = &m->volumes[vol];
	if (lba >= vo->blocks || nblocks > vo->blocks - lba)
		return -EINVAL;
	*ncomps = 0;
	*npieces = 0;
	end = lba + nblocks;
	if (vo->kind == COH_MAP_LOGICAL) {
		ret = map_comp_add(m, vol, lba, comps, maxcomps, ncomps, *npieces);
		return ret ? ret : map_piece_add(&comps[0], 0, nblocks, pieces, maxpieces, npieces);
	}
	if (vo->layout == COH_MAP_CONCAT) {
		for (i = 0, base = 0; i < vo->ncomp && base < end; i++) {
			lv = vo->comp[i];
			s = lba > base ? lba : base;
			e = end < base + m->volumes[lv].blocks ? end : base + m->volumes[lv].blocks;
			if (s < e) {
				ret = map_comp_add(m, lv, s - base, comps, maxcomps, ncomps,
						   *npieces);
				if (!ret)
					ret = map_piece_add(&comps[*ncomps - 1], s - lba,
							    (uint32_t)(e - s), pieces, maxpieces,
							    npieces);
				if (ret)
					return ret;
			}
			base += m->volumes[lv].blocks;
		}
		return 0;
	}
	/* A stripe: chunk ch of the volume is chunk ch / ncomp of component ch % ncomp. A
	 * component's chunks in the range are every ncomp-th, so its blocks there are contiguous
	 * in it; the components in order of their first chunk are in host order. */
	stripe = vo->stripe_blocks;
	first_chunk = lba / stripe;
	last_chunk = (end - 1) / stripe;
	for (k = 0; k < vo->ncomp && first_chunk + k <= last_chunk; k++) {
		ch = first_chunk + k;
		lv = vo->comp[ch % vo->ncomp];
		row = ch / vo->ncomp;
		s = ch * stripe > lba ? ch * stripe : lba;
		ret = map_comp_add(m, lv, row * stripe + (s - ch * stripe), comps, maxcomps, ncomps,
				   *npieces);
		if (ret)
			return ret;
		for (; ch <= last_chunk; ch += vo->ncomp) {
			s = ch * stripe > lba ? ch * stripe : lba;
			e = (ch + 1) * stripe < end ? (ch + 1) * stripe : end;
			ret = map_piece_add(&comps[*ncomps - 1], s - lba, (uint32_t)(e - s), pieces,
					    maxpieces, npieces);
			if (ret)
				return ret;
		}
	}
	return 0;
}

void coh_map_aggregate(const struct coh_map_comp *comps, const struct coh_map_piece *pieces,
		       uint32_t ncomps, uint32_t nblocks, const struct coh_map_result *res,
		       struct coh_map_status *out)
{
	uint64_t fb, acc;
	uint32_t i, j, d;

	out->status = 0;
	out->comp = -1;
	out->fail_block = nblocks;
	out->good = nblocks;
	out->miscompare = 0;
	for (i = 0; i < ncomps; i++) {
		const struct coh_map_comp *c = &comps[i];

		if (!res[i].status)
			continue;
		d = res[i].done < c->nblocks ? res[i].done : 0;
		fb = pieces[c->first_piece].host_block;
		for (j = 0, acc = 0; j < c->npieces; j++) {
			const struct coh_map_piece *p = &pieces[c->first_piece + j];

			if (d < acc + p->nblocks) {
				fb = p->host_block + (d - acc);
				break;
			}
			acc += p->nblocks;
		}
		if (out->comp < 0 || fb < out->fail_block) {
			out->status = res[i].status;
			out->comp = (int)i;
			out->fail_block = fb;
			out->good = (uint32_t)fb;
		}
	}
}

int coh_map_find_id(const struct coh_map *m, const uint8_t *id, uint32_t hint)
{
	uint32_t i;

	if (!m || !id)
		return -ENOENT;
	if (hint < m->nvolumes && !memcmp(m->volumes[hint].id, id, COH_MAP_ID_BYTES))
		return (int)hint;
	for (i = 0; i < m->nvolumes && i < COH_MAP_MAX_VOLUMES; i++)
		if (!memcmp(m->volumes[i].id, id, COH_MAP_ID_BYTES))
			return (int)i;
	return -ENOENT;
}

/* map_in_virtual - the virtual volume of @m that has logical volume @v as a component, or -1. */
static int map_in_virtual(const struct coh_map *m, uint32_t v)
{
	uint32_t i, c;

	for (i = 0; i < m->nvolumes; i++) {
		if (m->volumes[i].kind != COH_MAP_VIRTUAL)
			continue;
		for (c = 0; c < m->volumes[i].ncomp; c++)
			if (m->volumes[i].comp[c] == v)
				return (int)i;
	}
	return -1;
}

int coh_map_same_groups(const struct coh_map *a, const struct coh_map *b, char *err, size_t errlen)
{
	uint32_t g;

	if (!a || !b || a->nodes != b->nodes || a->block_size != b->block_size ||
	    a->ngroups != b->ngroups) {
		map_err(err, errlen, "controllers, block size or groups differ");
		return -EINVAL;
	}
	for (g = 0; g < a->ngroups; g++) {
		const struct coh_map_group *x = &a->groups[g], *y = &b->groups[g];

		if (strcmp(x->name, y->name) || x->amfs != y->amfs || x->blocks != y->blocks) {
			map_err(err, errlen, "group %s: name, AMFs or size differ", x->name);
			return -EINVAL;
		}
	}
	return 0;
}

int coh_map_compatible(const struct coh_map *old, const struct coh_map *next, char *err,
		       size_t errlen)
{
	uint32_t i, c;
	int j, ret;

	ret = coh_map_check(next, err, errlen);
	if (!ret)
		ret = coh_map_same_groups(old, next, err, errlen);
	if (ret)
		return ret;
	for (i = 0; i < old->nvolumes; i++) {
		const struct coh_map_volume *a = &old->volumes[i], *b;
		bool comp = a->kind == COH_MAP_LOGICAL && map_in_virtual(old, i) >= 0;

		j = coh_map_find_id(next, a->id, i);
		if (j < 0)
			continue; /* deleted */
		b = &next->volumes[j];
		comp =
		    comp || (b->kind == COH_MAP_LOGICAL && map_in_virtual(next, (uint32_t)j) >= 0);
		if (strcmp(a->name, b->name) || a->kind != b->kind || b->blocks < a->blocks ||
		    (comp && b->blocks != a->blocks)) {
			map_err(err, errlen,
				"volume %s: renamed, another kind, shrunk, or grown while a "
				"component of a virtual volume",
				a->name);
			return -EINVAL;
		}
		if (a->kind == COH_MAP_LOGICAL &&
		    (a->group != b->group || a->first_block != b->first_block)) {
			map_err(err, errlen, "volume %s: moved", a->name);
			return -EINVAL;
		}
		if (a->kind == COH_MAP_VIRTUAL) {
			if (a->layout != b->layout || a->stripe_blocks != b->stripe_blocks ||
			    a->ncomp != b->ncomp || a->blocks != b->blocks) {
				map_err(err, errlen, "volume %s: its layout changed", a->name);
				return -EINVAL;
			}
			for (c = 0; c < a->ncomp; c++) {
				if (memcmp(old->volumes[a->comp[c]].id,
					   next->volumes[b->comp[c]].id, COH_MAP_ID_BYTES)) {
					map_err(err, errlen, "volume %s: its components changed",
						a->name);
					return -EINVAL;
				}
			}
		}
	}
	return 0;
}

int coh_map_add(struct coh_map *m, const struct coh_map_volume *v, char *err, size_t errlen)
{
	struct coh_map next;
	int ret;

	if (!m || !v)
		return -EINVAL;
	if (m->nvolumes >= COH_MAP_MAX_VOLUMES) {
		map_err(err, errlen, "already %u volumes", COH_MAP_MAX_VOLUMES);
		return -ENOSPC;
	}
	if (coh_map_find(m, v->name) >= 0) {
		map_err(err, errlen, "volume %s: exists", v->name);
		return -EEXIST;
	}
	next = *m;
	next.volumes[next.nvolumes++] = *v;
	next.version++;
	ret = coh_map_check(&next, err, errlen);
	if (ret)
		return ret;
	*m = next;
	return 0;
}

int coh_map_grow(struct coh_map *m, const char *name, uint64_t blocks, char *err, size_t errlen)
{
	struct coh_map next;
	int v, ret;

	v = coh_map_find(m, name);
	if (v < 0) {
		map_err(err, errlen, "volume %s: no such volume", name ? name : "(null)");
		return -ENOENT;
	}
	if (m->volumes[v].kind != COH_MAP_LOGICAL || map_in_virtual(m, (uint32_t)v) >= 0) {
		map_err(err, errlen,
			"volume %s: only a logical volume that is no virtual volume's component "
			"grows",
			name);
		return -EBUSY;
	}
	if (blocks < m->volumes[v].blocks) {
		map_err(err, errlen, "volume %s: %llu blocks is smaller than its %llu", name,
			(unsigned long long)blocks, (unsigned long long)m->volumes[v].blocks);
		return -EINVAL;
	}
	next = *m;
	next.volumes[v].blocks = blocks;
	next.version++;
	ret = coh_map_check(&next, err, errlen);
	if (ret)
		return ret;
	*m = next;
	return 0;
}

int coh_map_remove(struct coh_map *m, const char *name, char *err, size_t errlen)
{
	struct coh_map next;
	uint32_t i, c;
	int v, in;

	v = coh_map_find(m, name);
	if (v < 0) {
		map_err(err, errlen, "volume %s: no such volume", name ? name : "(null)");
		return -ENOENT;
	}
	in = m->volumes[v].kind == COH_MAP_LOGICAL ? map_in_virtual(m, (uint32_t)v) : -1;
	if (in >= 0) {
		map_err(err, errlen, "volume %s: a component of virtual volume %s", name,
			m->volumes[in].name);
		return -EBUSY;
	}
	next = *m;
	for (i = (uint32_t)v; i + 1 < next.nvolumes; i++)
		next.volumes[i] = next.volumes[i + 1];
	memset(&next.volumes[--next.nvolumes], 0, sizeof(next.volumes[0]));
	/* The volumes after it moved down one: so do the components that name them. */
	for (i = 0; i < next.nvolumes; i++)
		for (c = 0; next.volumes[i].kind == COH_MAP_VIRTUAL && c < next.volumes[i].ncomp;
		     c++)
			if (next.volumes[i].comp[c] > (uint32_t)v)
				next.volumes[i].comp[c]--;
	next.version++;
	*m = next;
	return coh_map_check(m, err, errlen);
}

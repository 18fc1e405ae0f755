/*
 * route.h - where a host command goes when a cluster has several redundancy groups (issue 16;
 * seed 000 claims 1-18, seed 001): the mapping table, the split of a command on a virtual volume
 * into component commands with their aggregate status, and the coordination ranges of conflict
 * detection (claims 17-18).
 *
 * - The mapping table lays logical volumes on redundancy groups (a range of a group's blocks)
 *   and virtual volumes over logical volumes (concatenated or striped), and names for each group
 *   the controllers cabled to it, its AMFs, which alone can execute a command on it. It is
 *   versioned and has an on-disk form (little-endian, crc32c) kept in two slots, so that a torn
 *   write of the new version leaves the old one.
 * - coh_map_target picks the controller that executes a command on a logical volume: this one
 *   when it is an AMF; else the AMF that holds the resource's lock, when the caller knows one (no
 *   lock ping-pong); else the group's preferred AMF; else the lowest live one.
 * - coh_map_split cuts a command on any volume into one component command per logical volume it
 *   touches, each a contiguous range of that volume gathered from one or more pieces of the
 *   host's buffer; coh_map_aggregate turns their statuses into the host's: success only if every
 *   component succeeded, otherwise the error of the lowest failing host block, and the residual
 *   of everything from that block on.
 * - A coordination table (struct coh_coord) grants a request its address range, or enters it in
 *   its conflict table and holds it until the overlapping holders release. Each request reserves
 *   one range all at once (no hold and wait: no deadlock), and a request waits behind every
 *   earlier held request it overlaps (first come, first served among overlapping requests: none
 *   is starved). Waits are bounded by a deadline the caller gives.
 *
 * Consumer tier: pure functions and one self-contained table; no I/O except coh_map_save and
 * coh_map_load, no fabric.
 *
 * Leaves out: forwarding a command to its target and relaying its status, and making a change
 * on every node (router.h, coh_route_map_change), and a coordination table shared between
 * controllers (docs/routing.md says what is built and what is not).
 */
#ifndef COHORT_ROUTE_H
#define COHORT_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define COH_MAP_MAX_NODES 32	 /* controllers: AMF sets are 32-bit masks */
#define COH_MAP_MAX_GROUPS 16	 /* redundancy groups */
#define COH_MAP_MAX_VOLUMES 64	 /* logical and virtual volumes together */
#define COH_MAP_MAX_COMPONENTS 8 /* logical volumes under one virtual volume */
#define COH_MAP_NAME_MAX 31	 /* a group's or a volume's name, without its NUL */
#define COH_MAP_ID_BYTES 16	 /* a volume's id: its SCSI identity derives from it */
#define COH_MAP_NO_NODE UINT32_MAX

enum coh_map_kind {
	COH_MAP_LOGICAL = 1, /* a range of one group's blocks */
	COH_MAP_VIRTUAL = 2, /* logical volumes, concatenated or striped */
};

enum coh_map_layout {
	COH_MAP_CONCAT = 1, /* the components one after the other */
	COH_MAP_STRIPE = 2, /* chunks of stripe_blocks, round robin over equal components */
};

struct coh_map_group {
	char name[COH_MAP_NAME_MAX + 1];
	uint32_t amfs;	    /* the controllers cabled to the group: bit i is node i, at least one */
	uint32_t preferred; /* an AMF: where a forwarded command goes when no AMF holds its lock */
	uint64_t blocks;    /* the group's capacity in blocks */
};

struct coh_map_volume {
	char name[COH_MAP_NAME_MAX + 1];
	uint8_t id[COH_MAP_ID_BYTES]; /* unique, not all zero */
	uint32_t kind;		      /* enum coh_map_kind */
	uint64_t blocks;	      /* its size; a virtual volume's follows from its components */
	/* COH_MAP_LOGICAL: blocks first_block .. first_block + blocks - 1 of @group. Logical
	 * volumes of one group do not overlap. */
	uint32_t group;
	uint64_t first_block;
	/* COH_MAP_VIRTUAL: @ncomp distinct logical volumes (indexes into coh_map.volumes). A
	 * stripe's components are all the same size, a multiple of @stripe_blocks. */
	uint32_t layout; /* enum coh_map_layout */
	uint32_t stripe_blocks;
	uint32_t ncomp;
	uint32_t comp[COH_MAP_MAX_COMPONENTS];
};

struct coh_map {
	uint64_t version;    /* a change makes a new version, greater than the last */
	uint32_t nodes;	     /* controllers in the cluster, 1 .. COH_MAP_MAX_NODES */
	uint32_t block_size; /* bytes, the same in every group: 512 .. 65536, a power of two */
	uint32_t ngroups, nvolumes;
	struct coh_map_group groups[COH_MAP_MAX_GROUPS];
	struct coh_map_volume volumes[COH_MAP_MAX_VOLUMES];
};

/**
 * coh_map_check - validate @m: counts and sizes in range, names unique and printable, AMF sets
 * non-empty and within the cluster, each preferred AMF one of its group's, volume ids unique,
 * logical volumes inside their group and not overlapping, virtual volumes over distinct logical
 * volumes of the right sizes. Returns 0 or -EINVAL with one line in @err (may be NULL) naming the
 * group or volume and what is wrong.
 */
int coh_map_check(const struct coh_map *m, char *err, size_t errlen);

/** coh_map_find - the index of the volume named @name, or -ENOENT. */
int coh_map_find(const struct coh_map *m, const char *name);

/* The on-disk form: a 64-byte header, 64 bytes per group, 128 per volume. */
#define COH_MAP_ENCODED_MAX (64u + 64u * COH_MAP_MAX_GROUPS + 128u * COH_MAP_MAX_VOLUMES)

/**
 * coh_map_encode - write @m's on-disk form to @buf (@len bytes, at least COH_MAP_ENCODED_MAX
 * is always enough) and its length to *@used. -EINVAL if @m does not pass coh_map_check,
 * -ENOSPC if @len is short.
 */
int coh_map_encode(const struct coh_map *m, void *buf, size_t len, size_t *used);

/**
 * coh_map_decode - read a table from @len bytes at @buf. Returns 0; -ENODATA when the bytes are
 * all zero (no table was ever written); -EBADMSG when they are not a whole, intact table (magic,
 * format, lengths, crc32c: a torn or corrupt write); -EINVAL when they are one but it does not
 * pass coh_map_check (a table this build would not write). @err says which.
 */
int coh_map_decode(const void *buf, size_t len, struct coh_map *m, char *err, size_t errlen);

/**
 * coh_map_save - make @m the table kept in the file @path (created 0600 if missing). The file has
 * two slots; the new version goes to the slot that does not hold the newest valid table, then
 * is fsynced, so a crash at any point leaves the old table or the new one, never neither.
 * @m->version must be greater than the kept table's: -ESTALE otherwise. -EINVAL for a table
 * that does not pass coh_map_check, or -errno from the file.
 */
int coh_map_save(const char *path, const struct coh_map *m, char *err, size_t errlen);

/**
 * coh_map_load - the newest valid table of the two slots of @path. -ENOENT when the file does
 * not exist; -ENODATA when both slots are empty; -EBADMSG when neither slot holds a valid table
 * and at least one is not empty (never read as "no table"); -errno from the file.
 */
int coh_map_load(const char *path, struct coh_map *m, char *err, size_t errlen);

/*
 * The acceptor's state of a table change (router.c: a change is single-decree Paxos per table
 * version, docs/routing.md "Online changes"): for table version @version, the highest ballot
 * this controller promised, and the table it accepted last with that table's ballot (0: none).
 * A table accepted is not in effect; it becomes the table once a majority has accepted it. Kept
 * in its own file beside the table's, replaced whole (a new file renamed over it).
 */
struct coh_map_accept {
	uint64_t version;  /* the table version this is for (the kept table's + 1) */
	uint64_t promised; /* the highest ballot promised for @version */
	uint64_t ballot;   /* the ballot @map was accepted in; 0 when none was */
	struct coh_map map;
};

/* Its on-disk form: a 64-byte header, then the accepted table's (coh_map_encode). */
#define COH_MAP_ACCEPT_ENCODED_MAX (64u + COH_MAP_ENCODED_MAX)

/** coh_map_accept_encode - @a's on-disk form into @buf (@len bytes): 0, -EINVAL, -ENOSPC. */
int coh_map_accept_encode(const struct coh_map_accept *a, void *buf, size_t len, size_t *used);

/**
 * coh_map_accept_decode - @a from @len bytes at @buf: 0; -EBADMSG when they are not a whole,
 * intact state (magic, lengths, crc32c); -EINVAL when its table does not pass coh_map_check or
 * is not of @version. @err says which.
 */
int coh_map_accept_decode(const void *buf, size_t len, struct coh_map_accept *a, char *err,
			  size_t errlen);

/**
 * coh_map_accept_save - keep @a in @path: written to @path.tmp, fsynced, renamed over @path, and
 * the directory fsynced, so that a crash leaves the old state or the new. -errno.
 * coh_map_accept_load - the state kept in @path: -ENOENT when there is none, -EBADMSG or
 * -EINVAL as coh_map_accept_decode (never read as "none").
 */
int coh_map_accept_save(const char *path, const struct coh_map_accept *a, char *err, size_t errlen);
int coh_map_accept_load(const char *path, struct coh_map_accept *a, char *err, size_t errlen);

/**
 * coh_map_target - the controller that executes a command on logical volume @vol, for the
 * controller @me that received it: @me when it is a live AMF of the volume's group; else
 * @holder (an AMF known to hold the resource's lock, COH_MAP_NO_NODE when none is known) when
 * it is a live AMF; else the group's preferred AMF when it is alive; else its lowest live AMF.
 * @alive is the cluster's live controllers (a mask). Returns 0 with *@target set, -EINVAL for a
 * bad @vol (not a logical volume), -EHOSTDOWN when no AMF of the group is alive.
 */
int coh_map_target(const struct coh_map *m, uint32_t vol, uint32_t me, uint32_t alive,
		   uint32_t holder, uint32_t *target);

/** coh_map_find_id - the index of the volume whose id is @id (@hint first), or -ENOENT. */
int coh_map_find_id(const struct coh_map *m, const uint8_t *id, uint32_t hint);

/*
 * Online changes (the router's coh_route_map_change makes them cluster-wide). Each helper makes
 * the next version of @m in place (version + 1) or leaves it as it was on an error.
 * - coh_map_add: a new volume (its name and id unused): -EEXIST, -ENOSPC, -EINVAL.
 * - coh_map_grow: a logical volume that is no virtual volume's component, to @blocks (not
 *   fewer): -ENOENT, -EBUSY (a component), -EINVAL (smaller, or past its group's end, or over
 *   another volume).
 * - coh_map_remove: a volume that is no virtual volume's component (the indexes of those after
 *   it go down one; ids do not change): -ENOENT, -EBUSY.
 */
int coh_map_add(struct coh_map *m, const struct coh_map_volume *v, char *err, size_t errlen);
int coh_map_grow(struct coh_map *m, const char *name, uint64_t blocks, char *err, size_t errlen);
int coh_map_remove(struct coh_map *m, const char *name, char *err, size_t errlen);

/**
 * coh_map_same_groups - whether @a and @b have the same controllers, block size and groups
 * (names, AMFs and sizes; the preferred AMF may differ): 0 or -EINVAL with a line in @err.
 */
int coh_map_same_groups(const struct coh_map *a, const struct coh_map *b, char *err, size_t errlen);

/**
 * coh_map_compatible - whether @next may replace @old online: @next passes coh_map_check; the
 * same controllers, block size and groups (names, AMFs and sizes; a preferred AMF may change);
 * and every volume of @old that @next still has (by id) keeps its name, kind, place (group and
 * first block) and layout, and its size, or grows when it is a logical volume that no virtual
 * volume has as a component. Volumes may be added and deleted. So a command routed by either
 * table means the same blocks under the other, as far as both have its volume. 0 or -EINVAL
 * with a line in @err.
 */
int coh_map_compatible(const struct coh_map *old, const struct coh_map *next, char *err,
		       size_t errlen);

/** A run of the host's transfer: blocks @host_block .. + @nblocks - 1 of the command. */
struct coh_map_piece {
	uint64_t host_block; /* offset from the command's first block */
	uint32_t nblocks;
};

/** One component command: a contiguous range of one logical volume. */
struct coh_map_comp {
	uint32_t volume;      /* the logical volume's index */
	uint32_t group;	      /* its group's index */
	uint64_t lba;	      /* first block in the logical volume */
	uint64_t group_block; /* the same block in the group */
	uint32_t nblocks;
	/* pieces[first_piece .. first_piece + npieces - 1]: the host's blocks, in the order of
	 * the component's, which is also the host's order */
	uint32_t first_piece, npieces;
};

/**
 * coh_map_split - cut a command of @nblocks (>= 1) blocks at @lba of volume @vol into component
 * commands, in the order of their first host block. A logical volume gives one component; a
 * virtual volume one per logical volume the range touches. Returns 0 with *@ncomps and
 * *@npieces set; -EINVAL for a bad volume or a range past its end; -EOVERFLOW when @maxcomps
 * or @maxpieces is short (coh_map_split_pieces says how many pieces suffice).
 */
int coh_map_split(const struct coh_map *m, uint32_t vol, uint64_t lba, uint32_t nblocks,
		  struct coh_map_comp *comps, uint32_t maxcomps, uint32_t *ncomps,
		  struct coh_map_piece *pieces, uint32_t maxpieces, uint32_t *npieces);

/** coh_map_split_pieces - pieces enough for any command of @nblocks on volume @vol. */
uint32_t coh_map_split_pieces(const struct coh_map *m, uint32_t vol, uint32_t nblocks);

/** A component command's outcome. */
struct coh_map_result {
	int status;    /* 0 or -errno */
	uint32_t done; /* on an error: its blocks done, in order, before the first that failed
			* (0 when it does not know) */
};

/** The host command's outcome. */
struct coh_map_status {
	int status;	     /* 0, or the error of the lowest failing host block */
	int comp;	     /* the component that error came from; -1 on success */
	uint64_t fail_block; /* that block, as an offset from the command's first block */
	uint32_t good;	     /* blocks of the host's transfer done whole before it: fail_block
			      * on an error (the residual is the rest), all on success */
	uint32_t miscompare; /* a compare-and-write's -EILSEQ (router.h): the byte offset of the
			      * first difference */
};

/**
 * coh_map_aggregate - the host's status from @ncomps components' results (@res, in the order
 * of @comps) for a command of @nblocks blocks: success only if every component succeeded; else
 * the error of the lowest failing host block. A @done beyond a component's length counts as 0.
 */
void coh_map_aggregate(const struct coh_map_comp *comps, const struct coh_map_piece *pieces,
		       uint32_t ncomps, uint32_t nblocks, const struct coh_map_result *res,
		       struct coh_map_status *out);

/* Conflict detection (claims 17-18). */
struct coh_coord;

/**
 * A request for a coordination grant on blocks @lba .. @lba + @nblocks - 1 of one address space
 * (a virtual volume). The caller owns it; the table uses it from coh_coord_request until the
 * grant's callback, then until coh_coord_release.
 */
struct coh_coord_req {
	uint64_t lba;
	uint32_t nblocks;
	uint32_t origin; /* the module (controller) that asked: notifications name it */
	/* Called exactly once for a held request (coh_coord_request returned -EINPROGRESS): 0 once
	 * granted, -ETIMEDOUT past its deadline, -ESHUTDOWN when the table is deleted. Runs on the
	 * thread that released the range, expired the wait or deleted the table, with no lock of
	 * the table held: it may call coh_coord_release or coh_coord_request. */
	void (*granted)(struct coh_coord_req *req, int status);
	void *arg;
	/* the table's */
	uint64_t deadline_ns;
	uint32_t state;
	struct coh_coord_req *next; /* in the reserved ranges or in the conflict table */
	struct coh_coord_req *wake; /* among the callbacks a release or an expiry owes */
};

/**
 * coh_coord_new - a table for up to @max_granted reserved ranges and @max_held held requests
 * (each 1 .. 65536). 0 or -EINVAL, -ENOMEM.
 */
int coh_coord_new(uint32_t max_granted, uint32_t max_held, struct coh_coord **cp);

/** coh_coord_delete - fail every held request with -ESHUTDOWN, free *@cp, set it to NULL. */
void coh_coord_delete(struct coh_coord **cp);

/**
 * coh_coord_request - ask for @req's range, to be granted by @deadline_ns (CLOCK_MONOTONIC).
 * Returns 0 when granted at once (no reserved range and no held request overlaps it, and the
 * table has room for another reserved range); -EINPROGRESS when held in the conflict table (its
 * callback will run); -EBUSY when the conflict table is full (nothing was entered:
 * back-pressure); -EINVAL for an empty range, no callback, or a request already in the table.
 */
int coh_coord_request(struct coh_coord *c, struct coh_coord_req *req, uint64_t deadline_ns);

/**
 * coh_coord_release - give up @req's granted range: search the conflict table and grant each
 * held request that no longer conflicts (in arrival order), or else release the range. The
 * callbacks of those granted run on this thread before it returns. -EINVAL if @req holds no
 * grant here.
 */
int coh_coord_release(struct coh_coord *c, struct coh_coord_req *req);

/**
 * coh_coord_expire - fail with -ETIMEDOUT each held request whose deadline is at or before
 * @now_ns, and grant those behind it that no longer conflict. Returns how many expired. A
 * caller that holds requests calls it at least as often as the bound it wants.
 */
uint32_t coh_coord_expire(struct coh_coord *c, uint64_t now_ns);

/** Counters: reserved ranges, held requests, and since creation grants, holds, expiries. */
struct coh_coord_stats {
	uint32_t granted_now, held_now;
	uint64_t grants, holds, expired;
};
void coh_coord_stats(struct coh_coord *c, struct coh_coord_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_ROUTE_H */

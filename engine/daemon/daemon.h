/*
 * daemon.h - the pieces of cohortd and cohortctl: the configuration (conf.c), the export table
 * with the interface a front end plugs into (exports.c), the control socket (control.c) and the
 * daemon's event log (log.c), and the TCMU front end's plug-in (frontend.c). Private to
 * engine/daemon/ and its tests; nothing here is part of the library's public API.
 *
 * Leaves out: the TCMU front end itself (include/cohort/tcmu.h), which plugs into struct
 * daemon_exports_ops through frontend.c; with [daemon] frontend = none, exports are recorded and
 * shown as not attached.
 */
#ifndef COHORT_DAEMON_H
#define COHORT_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "cohort/fabric.h"
#include "cohort/node.h"
#include "cohort/route.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DAEMON_NAME_MAX 64	 /* cluster, volume, export and device names */
#define DAEMON_INITIATOR_MAX 223 /* an initiator's SCSI name: an iSCSI name's longest */
#define DAEMON_PATH_MAX 192	 /* a path in the config (inih reads lines of at most 199 chars) */
#define DAEMON_MAX_VOLUMES 64	 /* [volume NAME] sections */
#define DAEMON_MAX_EXPORTS 64	 /* [export NAME] sections */
#define DAEMON_MAX_GROUPS 16	 /* [group NAME] sections (COH_MAP_MAX_GROUPS) */
#define DAEMON_ERR_MAX 512	 /* an error message: file:line: [section] key: what */
#define DAEMON_CTL_MSG_MAX 4096	 /* a control request, newline included */
#define DAEMON_CTL_IO_MS 2000	 /* the daemon's bound for reading a request or writing a reply */

/*
 * One volume of the mapping table: a logical volume is @blocks blocks of group @group from
 * @first_block on; a virtual volume ([virtual NAME]) lays the logical volumes @comp (indexes into
 * daemon_conf.volumes) one after the other or striped, as route.h's struct coh_map_volume.
 */
struct daemon_volume {
	char name[DAEMON_NAME_MAX + 1];
	uint32_t kind; /* COH_MAP_LOGICAL or COH_MAP_VIRTUAL */
	uint32_t group;
	uint64_t first_block, blocks;
	uint32_t layout, stripe_blocks, ncomp; /* COH_MAP_VIRTUAL */
	uint32_t comp[COH_MAP_MAX_COMPONENTS];
	/* reservations = cluster: the reservation table's blocks, right after @blocks (carved from
	 * the volume's size, so the host sees a volume this much smaller); 0: none */
	uint32_t pr_blocks;
	uint8_t id[16]; /* SHA-256("cohort-volume" NUL cluster NUL name), first 16 bytes */
	uint32_t line;	/* where its section starts */
};

/* One export: a volume handed to the front end as TCMU backstore user_<hba>/<device>. */
struct daemon_export {
	char name[DAEMON_NAME_MAX + 1];
	char volume[DAEMON_NAME_MAX + 1];
	char device[DAEMON_NAME_MAX + 1];
	uint32_t hba;
	uint32_t cmd_time_out; /* seconds; 0: the front end's default */
	/* the one initiator the device serves (required with the volume's reservations) */
	char initiator[DAEMON_INITIATOR_MAX + 1];
	uint32_t line;
};

/*
 * A redundancy group: the unnamed [group] (the whole cluster's, as before routing: every node an
 * AMF, its engines on [cluster] address) or a [group NAME] of a routed config (its AMFs, its
 * preferred AMF, its engines on a fabric of their own).
 */
struct daemon_group {
	char name[DAEMON_NAME_MAX + 1]; /* "" for the unnamed [group] */
	uint32_t raid;			/* enum coh_raid_level */
	uint32_t nelems;
	char elements[COH_RAID_MAX_ELEMS][DAEMON_PATH_MAX + 1];
	uint32_t chunk_blocks;
	uint64_t element_bytes, element_blocks, capacity_blocks;
	uint32_t amfs, preferred;	   /* a node mask; a node id */
	char address[DAEMON_PATH_MAX + 1]; /* its engines' fabric (docs/operations.md) */
	/* its engine's log files and state: [log] dir, and for a named group [log] dir/NAME (two
	 * engines of one node must not share their files); "" for the provider's default */
	char log_dir[DAEMON_PATH_MAX + 1];
	uint32_t line;
};

/*
 * struct daemon_conf - a configuration, resolved and validated: every default applied, the secret
 * read, the volumes laid out. docs/operations.md is the reference of every key.
 */
struct daemon_conf {
	char path[DAEMON_PATH_MAX + 1];
	/* [cluster] */
	char cluster[DAEMON_NAME_MAX + 1];
	uint32_t nodes, node;
	char provider[8];
	char address[DAEMON_PATH_MAX + 1];
	char secret_path[DAEMON_PATH_MAX + 1];
	uint8_t secret[COH_FABRIC_SECRET_MAX];
	uint32_t secret_len;
	uint32_t timeout_ms, lease_ms, open_timeout_ms;
	bool force_open;
	uint32_t fence;			       /* enum coh_fence */
	char fence_agent[DAEMON_PATH_MAX + 1]; /* fence = agent: a shell command, "" otherwise */
	/* [group], or [group NAME] sections (@routed: commands go through a router, routing.md) */
	bool routed;
	uint32_t ngroups;
	uint32_t block_size; /* the same in every group */
	struct daemon_group groups[DAEMON_MAX_GROUPS];
	/* [log] */
	char log_dir[DAEMON_PATH_MAX + 1]; /* "" for the provider's default */
	uint64_t log_bytes;
	int replicas; /* COH_NODE_REPLICAS_NONE for 0 */
	/* [cache] */
	uint32_t cache_blocks, lanes, queue_depth;
	/* [daemon] */
	char control[DAEMON_PATH_MAX + 1];
	bool frontend_tcmu;		    /* frontend = tcmu (the default) or none */
	char configfs[DAEMON_PATH_MAX + 1]; /* the target core directory; "" for the kernel's */
	/* [volume NAME] and [virtual NAME], in file order, and [export NAME] */
	uint32_t nvolumes, nexports;
	struct daemon_volume volumes[DAEMON_MAX_VOLUMES];
	struct daemon_export exports[DAEMON_MAX_EXPORTS];
};

/**
 * daemon_conf_load - read and validate the config file @path. @node_override, when >= 0, is
 * this node's id (cohortd --node) and replaces [cluster] node. On success *@confp is a new
 * config (daemon_conf_delete frees it). On failure returns -EINVAL (a bad config), -ENOENT or
 * another -errno (the file could not be read), -ENOMEM, and @err holds one line naming the file,
 * the line and the key: "c.conf:12: [group] raid: unknown level ...".
 */
int daemon_conf_load(const char *path, int node_override, struct daemon_conf **confp, char *err,
		     size_t errlen);

/**
 * daemon_conf_parse - as daemon_conf_load, from @len bytes at @text (not NUL-terminated), named
 * @name in errors. The secret file is still read from disk. For tests and the fuzz target.
 */
int daemon_conf_parse(const char *name, const char *text, size_t len, int node_override,
		      struct daemon_conf **confp, char *err, size_t errlen);

/** daemon_conf_delete - free *@confp (may be NULL) and set it to NULL. */
void daemon_conf_delete(struct daemon_conf **confp);

/** daemon_conf_volume - the volume named @name, or NULL. */
const struct daemon_volume *daemon_conf_volume(const struct daemon_conf *c, const char *name);

/** daemon_conf_fabric_attr - the fabric attributes for this node (pointers into @c). */
void daemon_conf_fabric_attr(const struct daemon_conf *c, struct coh_fabric_attr *fa);

/** daemon_conf_node_attr - the node attributes for this node's engine of group @g over @fab
 * (pointers into @c). */
void daemon_conf_node_attr(const struct daemon_conf *c, uint32_t g, struct coh_fabric *fab,
			   struct coh_node_attr *a);

/** daemon_conf_group_fabric_attr - the fabric attributes of group @g's engines (a routed
 * config: the group's own address). */
void daemon_conf_group_fabric_attr(const struct daemon_conf *c, uint32_t g,
				   struct coh_fabric_attr *fa);

/** daemon_conf_map - the mapping table of a config (version 1: the config is its source). */
void daemon_conf_map(const struct daemon_conf *c, struct coh_map *m);

/**
 * daemon_conf_print - write the resolved config as "[section] key = value" lines, the volume
 * table and the exports; with @core_only, everything but the exports (what SIGHUP may not
 * change).
 */
void daemon_conf_print(const struct daemon_conf *c, bool core_only, FILE *f);

/**
 * daemon_conf_core_diff - false when @a and @b differ only in their exports; otherwise true, and
 * @what names the first difference: "[group] raid = raid5 (running) / raid1 (file)".
 */
bool daemon_conf_core_diff(const struct daemon_conf *a, const struct daemon_conf *b, char *what,
			   size_t len);

/** daemon_volume_id_online - the id of volume @name made online in table version @version of
 * cluster @cluster (cohortctl map add): another each time a name is made again, so that a
 * command for a deleted volume never reaches a new one of the same name. 0 or -errno. */
int daemon_volume_id_online(const char *cluster, const char *name, uint64_t version,
			    uint8_t id[16]);

/**
 * daemon_map_edit - the next table: the change a "map-change" request @req asks for ("op": add,
 * add-virtual, grow or remove; "name"; "group", "first_block", "blocks"; "layout",
 * "chunk_blocks", "volumes") applied to @m, a copy of the table in effect, its new volumes' ids
 * made for @cluster. 0, or -EINVAL and why in @err (the field), or what coh_map_add, _grow or
 * _remove returned. @m is not yet checked against the table in effect (the router does).
 */
int daemon_map_edit(const char *cluster, json_t *req, struct coh_map *m, char *err, size_t errlen);

/** daemon_volume_id_hex - @id as 32 lower-case hex digits and a NUL into @out (33 bytes). */
void daemon_volume_id_hex(const uint8_t id[16], char out[33]);

/*
 * The export table. A front end plugs in through struct daemon_exports_ops; without one (NULL)
 * the table records the exports and reports them "not attached (no front end built)".
 */
struct daemon_exports_ops {
	const char *name; /* the front end's name, for the log */
	/* attach @e (serving @v); 0 and a short state ("attached user_0/vol0"), or -errno */
	int (*add)(void *ctx, const struct daemon_export *e, const struct daemon_volume *v,
		   char *state, size_t len);
	/* detach @e; 0 or -errno (the export is dropped from the table either way) */
	int (*remove)(void *ctx, const struct daemon_export *e);
	/* Optional: the volume named @name as the front end's block path has it now (a routed
	 * config's mapping table, which changes online): @out holds the config's volume, or
	 * zeros and the name; 0 with its id, kind and size set from the table, or -ENOENT. */
	int (*resolve)(void *ctx, const char *name, struct daemon_volume *out);
};

struct daemon_exports;

/** daemon_exports_new - an empty table driving @ops (NULL: no front end) with @ctx. */
int daemon_exports_new(const struct daemon_exports_ops *ops, void *ctx, struct daemon_exports **xp);

/** daemon_exports_delete - remove every export through the front end, free, set NULL. */
void daemon_exports_delete(struct daemon_exports **xp);

/**
 * daemon_exports_apply - make the table what @c says: exports gone or changed are removed,
 * new or changed ones added, each logged. Returns the number of front-end calls that failed.
 */
int daemon_exports_apply(struct daemon_exports *x, const struct daemon_conf *c);

/** daemon_exports_json - the table as a JSON array (new reference). Any thread. */
json_t *daemon_exports_json(struct daemon_exports *x);

/*
 * The TCMU front end (frontend.c): daemon_tcmu_ops with a struct daemon_tcmu as its context.
 */
struct daemon_tcmu;
extern const struct daemon_exports_ops daemon_tcmu_ops;

/** daemon_tcmu_new - the front end's state for @node (node @node_id of @nodes); @configfs NULL
 * or "" for the kernel's target core. */
int daemon_tcmu_new(struct coh_node *node, uint32_t node_id, uint32_t nodes, const char *configfs,
		    struct daemon_tcmu **tp);
/** daemon_tcmu_set_router - a routed config: every unit added from now on submits through
 * @router, its LBAs the volume's in @m (copied). Before the first export. */
struct coh_route;
int daemon_tcmu_set_router(struct daemon_tcmu *t, struct coh_route *router,
			   const struct coh_map *m);
/**
 * daemon_tcmu_follow - a routed config's units follow the mapping table as it is now: a unit
 * whose volume grew is grown (coh_scsi_lu_grow: hosts see it at their next READ CAPACITY, a
 * rescan), each logged. Returns how many grew. Any thread but a unit's completion.
 */
int daemon_tcmu_follow(struct daemon_tcmu *t);
/** daemon_tcmu_quiesce - every unit answers ALUA unavailable; then a second for hosts to move. */
void daemon_tcmu_quiesce(struct daemon_tcmu *t);
/** daemon_tcmu_delete - free (after the export table removed every unit), set NULL. */
void daemon_tcmu_delete(struct daemon_tcmu **tp);

/*
 * The control socket: one thread serving one request per connection, a JSON object on one line,
 * answered by one JSON object on one line.
 */

/* Answer @req (a JSON object whose "cmd" is @cmd): a new object to send, or NULL and @err. */
typedef json_t *(*daemon_ctl_fn)(void *arg, const char *cmd, json_t *req, char *err, size_t errlen);

struct daemon_ctl;

/**
 * daemon_ctl_open - create the socket at @path (its directory made 0700 if missing, and refused
 * if it exists open to others; the socket 0600; a stale socket replaced, a live one refused with
 * -EADDRINUSE) and start the thread that serves it with @fn. Only root and the daemon's own user
 * may connect (SO_PEERCRED). Returns 0 or -errno with @err saying why.
 */
int daemon_ctl_open(const char *path, daemon_ctl_fn fn, void *arg, struct daemon_ctl **ctlp,
		    char *err, size_t errlen);

/** daemon_ctl_close - stop the thread (after the request it serves), remove the socket, free. */
void daemon_ctl_close(struct daemon_ctl **ctlp);

/**
 * daemon_ctl_request - the client's side: connect to @path, send @req, read the answer within
 * @timeout_ms. Returns 0 and *@resp (new reference), or -ENOENT/-ECONNREFUSED (no daemon),
 * -EACCES (permission), -ETIMEDOUT (daemon busy), -EPROTO (an answer that is not JSON), with
 * @err saying which.
 */
int daemon_ctl_request(const char *path, json_t *req, int timeout_ms, json_t **resp, char *err,
		       size_t errlen);

/* The event log: "cohortd[node N]: OBJECT: message" on stderr, one line per event. */
void daemon_log_set_node(int node);
void daemon_log(const char *object, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif

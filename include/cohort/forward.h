/*
 * forward.h - forwarded commands (issue 16; seed 000 claims 1-3): a controller that receives a
 * command it cannot execute (it is not an AMF of the volume's group, route.h) sends it over the
 * fabric to one that can, which executes it and relays its status back.
 *
 * One forwarder per controller, over a fabric whose node ids are the controllers'. It connects to
 * every peer on its own channel and keeps, for each peer, a number of slots in each direction.
 * The data moves with one-sided operations, never inside a message: the origin stages a write's
 * data in its slot of a registered region and the target READs it from there; the target WRITEs
 * a read's data into the origin's slot before it SENDs the status (operations on one connection
 * are performed in order, so the data is there when the status arrives). Messages are 64 bytes:
 * a request (volume, operation, first block, length, the mapping table's version), a status
 * (0 or -errno, and how many blocks were done before an error), and a hello carrying the
 * region's descriptor.
 *
 * Contract (SPDK's bdev contract, as the engine's): coh_fwd_submit returns 0 when the command was
 * accepted; its @done callback then runs exactly once, on the forwarder's thread. A failed
 * submit did nothing and calls nothing. A command whose target does not answer within the
 * timeout completes with -ETIMEDOUT; its slot stays out of use until the late status comes or
 * the target is down, so that a late READ of the slot by the target can never take another
 * command's data, nor a late WRITE put stale data into another command's buffer. A target whose
 * connection breaks fails its commands at once: with -ECONNRESET when the fabric proves the
 * target dead (shm), so that the caller may send them to another AMF, whose engine serves after
 * the dead one's takeover; with -ECONNABORTED when it does not (rdma: a cut looks the same, and
 * a target still alive may yet execute them), so that the caller must not. Later submits to it
 * get -EHOSTDOWN, as does a command found unsent when the connection broke (docs/routing.md).
 *
 * Consumer tier. Threads: one thread per forwarder runs the fabric; coh_fwd_submit and
 * coh_fwd_complete may be called from any thread, and from callbacks.
 *
 * A peer whose connection is down is tried again every half second, for a short window (a
 * peer that restarts connects at its start, with the fabric's whole timeout, and meets those
 * windows); a new connection gets a new generation, and nothing of an older one (a completion,
 * the answer of a command it brought) is taken for the newer one's. coh_fwd_new connects to
 * every peer that answers and leaves the others to those tries.
 *
 * Leaves out: commands longer than @max_blocks (the caller splits them).
 */
#ifndef COHORT_FORWARD_H
#define COHORT_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohort/fabric.h"

#ifdef __cplusplus
extern "C" {
#endif

#define COH_FWD_CHANNEL 243u  /* the fabric channel, beside the engine's (240-242) */
#define COH_FWD_MAX_NODES 32u /* controllers, as the mapping table's AMF masks */
#define COH_FWD_MSG_BYTES 64u /* every message */
#define COH_FWD_DEFAULT_SLOTS 16u
#define COH_FWD_DEFAULT_MAX_BLOCKS 128u

enum coh_fwd_op {
	COH_FWD_READ = 1,
	COH_FWD_WRITE = 2,
	COH_FWD_FLUSH = 3,
	/* compare @nblocks blocks with @buf's first @nblocks and write its next @nblocks if they
	 * are equal, atomically (the engine's COH_IO_COMPARE_WRITE); 2 * @nblocks <= max_blocks.
	 * A miscompare completes with -EILSEQ and, as blocks_done, the byte offset of the first
	 * difference. */
	COH_FWD_CAW = 4,
	/* the router's mapping table (router.c): @buf its encoded form in @nblocks blocks, @lba
	 * what the origin asks of it (install, offer, propose); the forwarder moves it as a
	 * write's data */
	COH_FWD_MAP = 5,
};

struct coh_fwd;

/** A command, on the origin as the caller fills it and on the target as the forwarder does. */
struct coh_fwd_cmd {
	uint32_t op;	       /* enum coh_fwd_op */
	uint32_t volume;       /* the volume's index in the origin's mapping table */
	uint8_t volume_id[16]; /* its id: the target finds the volume by it in its own table */
	uint64_t map_version;  /* the table the origin routed it by */
	uint64_t lba;
	uint32_t nblocks; /* 1 .. max_blocks; 0 for a flush */
	void *buf;	  /* nblocks * block_size bytes: the origin's data or the target's copy */
	uint32_t origin;  /* on the target: the controller it came from */
	/* The origin's: called exactly once with 0 or -errno and, on an error, the blocks done
	 * before it. */
	void (*done)(struct coh_fwd_cmd *cmd, int status, uint32_t blocks_done);
	void *arg;
	/* the forwarder's */
	uint32_t peer, slot, gen;
	struct coh_fwd_cmd *next;
};

struct coh_fwd_attr {
	size_t attr_size;	/* sizeof(struct coh_fwd_attr): options can grow */
	struct coh_fabric *fab; /* node ids are controllers; not owned */
	uint32_t nodes;		/* controllers, 1 .. COH_FWD_MAX_NODES */
	uint32_t peers;		/* the controllers to connect to (a mask); 0: every other one */
	uint32_t channel;	/* 0: COH_FWD_CHANNEL */
	uint32_t block_size;	/* 512 .. 65536 */
	uint32_t max_blocks;	/* 0: COH_FWD_DEFAULT_MAX_BLOCKS */
	uint32_t slots;		/* commands in flight to each peer, each way; 0: default, <= 256 */
	uint32_t timeout_ms;	/* a command's bound; 0: four times the fabric's timeout */
	/* On the target: execute @cmd (@cmd->buf holds a write's data, or takes a read's), then
	 * call coh_fwd_complete once, from any thread. Called on the forwarder's thread: it must
	 * not wait on the network (submit the work and return). */
	void (*execute)(void *arg, struct coh_fwd_cmd *cmd);
	void *exec_arg;
	/* Optional: a connection to @peer came up (at the start, or the peer came back), on the
	 * forwarder's thread, with @exec_arg; it may submit to @peer. */
	void (*peer_up)(void *arg, uint32_t peer);
	/* Optional: the connection to @peer broke (its commands have been failed), on the
	 * forwarder's thread, with @exec_arg; it may submit to the others. */
	void (*peer_down)(void *arg, uint32_t peer);
	/* Optional: called on the forwarder's thread at least every 20 ms or so, with @exec_arg
	 * (a caller's bounded waits, without a thread of its own); it may submit. */
	void (*tick)(void *arg);
};

/**
 * coh_fwd_new - start a forwarder: connect to every peer that answers (all of them call it;
 * bounded by the fabric's timeout; the others are tried again later) and exchange the regions'
 * descriptors. Returns 0; -EINVAL (attributes); -ENOMEM or a fabric error of this node's own.
 */
int coh_fwd_new(const struct coh_fwd_attr *attr, struct coh_fwd **fp);

/**
 * coh_fwd_delete - stop: commands this controller forwarded and that did not complete get
 * -ESHUTDOWN; commands it executes for others are waited for (each bounded by the caller's
 * engine), their answers not sent. *@fp is set to NULL.
 */
void coh_fwd_delete(struct coh_fwd **fp);

/**
 * coh_fwd_submit - forward @cmd to controller @target. 0: accepted, @cmd->done will run. -EINVAL
 * (a bad command or target, or @target is this controller); -EHOSTDOWN (@target's connection is
 * down); -EBUSY (every slot to @target is in use: submit again after a completion);
 * -ESHUTDOWN.
 */
int coh_fwd_submit(struct coh_fwd *f, uint32_t target, struct coh_fwd_cmd *cmd);

/** coh_fwd_complete - the target's executor is done with @cmd: 0 or -errno, blocks done. */
void coh_fwd_complete(struct coh_fwd_cmd *cmd, int status, uint32_t blocks_done);

/** coh_fwd_on_thread - whether the caller is @f's thread (which must never wait: it forwards
 * every command of this controller). */
bool coh_fwd_on_thread(struct coh_fwd *f);

/**
 * coh_fwd_abandon - stop waiting for the commands in flight to @peer: each completes now with
 * -ECONNABORTED (its outcome on @peer unknown), as if its deadline had passed, and its slot stays
 * out of use until @peer's late status or the connection's end. For a caller that knows @peer
 * is fenced (its group's view excluded it) while the connection stays up: a paused controller.
 * Returns how many were abandoned.
 */
uint32_t coh_fwd_abandon(struct coh_fwd *f, uint32_t peer);

/** coh_fwd_up - the controllers this one can forward to now, and itself (a mask). */
uint32_t coh_fwd_up(struct coh_fwd *f);

struct coh_fwd_stats {
	uint64_t forwarded;  /* commands sent */
	uint64_t executed;   /* commands received and executed for others */
	uint64_t timeouts;   /* commands failed with -ETIMEDOUT */
	uint64_t abandoned;  /* commands failed by coh_fwd_abandon (a fenced target) */
	uint64_t late;	     /* statuses that came after their command's timeout */
	uint64_t bad_msgs;   /* messages refused (malformed, or not fitting any slot) */
	uint64_t peer_downs; /* connections found broken */
	uint64_t reconnects; /* connections made again (a peer that came back) */
};
void coh_fwd_stats(struct coh_fwd *f, struct coh_fwd_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_FORWARD_H */

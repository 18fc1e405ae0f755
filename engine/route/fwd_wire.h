/*
 * fwd_wire.h - the forwarder's messages (forward.c) in their wire form: 64 bytes, little-endian.
 *
 *   0 magic 'C','F'   2 wire version (1)   3 kind   4 slot (u16)   6 op (u8)   7 zero
 *   8 generation (u32)
 *   request:  12 blocks (u32)  16 first block (u64)  24 map version (u64)  32 volume (u32)
 *             36..51 the volume's id (the target finds the volume by it)
 *   status:   12 status (i32, 0 or -errno)  16 blocks done (u32)
 *   hello:    16..63 the sender's region descriptor (COH_MR_DESC_SIZE bytes)
 *   every byte not named is zero.
 *
 * Engine tier, the forwarder's and its fuzz target's.
 */
#ifndef COHORT_ROUTE_FWD_WIRE_H
#define COHORT_ROUTE_FWD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "cohort/fabric.h"

#define COH_MAP_ID_BYTES_WIRE 16u /* route.h's COH_MAP_ID_BYTES */

enum fwd_kind {
	FWD_REQ = 1,
	FWD_STATUS = 2,
	FWD_HELLO = 3,
};

struct fwd_msg {
	uint32_t kind, slot, op, gen, nblocks, volume, done;
	int32_t status;
	uint64_t lba, map_version;
	uint8_t volume_id[16];
	struct coh_mr_desc desc;
};

/* fwd_msg_encode - @m into 64 bytes at @b. */
void fwd_msg_encode(const struct fwd_msg *m, uint8_t *b);

/* fwd_msg_decode - 64 bytes at @b (@len must be 64) into @m: 0, or -EPROTO for anything that is
 * not a message this build sends (magic, version, kind, a nonzero reserved byte, a status that
 * is not 0 or a negative errno). */
int fwd_msg_decode(const uint8_t *b, size_t len, struct fwd_msg *m);

#endif /* COHORT_ROUTE_FWD_WIRE_H */

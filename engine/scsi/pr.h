/*
 * pr.h - SPC-4 persistent reservations over a table kept in the volume (engine/scsi/pr.c): the
 * table's on-disk form, PERSISTENT RESERVE OUT applied to it, PERSISTENT RESERVE IN answered from
 * it, and the reservation-conflict rule for the other commands.
 *
 * Engine tier, the SCSI unit's own (lu.c). Pure functions on a decoded table: the unit reads the
 * table through the coherent cache, applies a command here, and writes the result back with
 * COMPARE AND WRITE against the image it read, so that two controllers changing it at once
 * cannot both succeed against the same old table (docs/frontend.md, "Persistent reservations").
 *
 * An I_T nexus is (initiator name, relative target port): one unit serves one initiator through
 * one controller's port, so each unit knows its nexus without the ring carrying it.
 *
 * Leaves out: SPEC_I_PT and ALL_TG_PT (refused: REPORT CAPABILITIES says so), REGISTER AND MOVE
 * and REPLACE LOST RESERVATION (refused), unit attentions to preempted or released registrants,
 * the aborts of PREEMPT AND ABORT (it preempts; commands in flight on other controllers finish).
 */
#ifndef COHORT_SCSI_PR_H
#define COHORT_SCSI_PR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohort/scsi.h"

#define PR_NAME_MAX 223 /* an iSCSI name's longest (RFC 3720); naa. and eui. names are shorter */
#define PR_HDR 64	/* bytes of the table's header */
#define PR_ENTRY 256	/* bytes of each registration */
#define PR_BYTES ((uint32_t)COH_SCSI_PR_TABLE_BYTES) /* on disk: PR_REGS_MAX registrations */
#define PR_REGS_MAX ((PR_BYTES - PR_HDR) / PR_ENTRY)
#define PR_NO_HOLDER 0xffu /* res_holder when no single nexus holds it (none, or all registrants) */

/* Reservation types (SPC-4 table 193). */
enum pr_type {
	PR_TYPE_NONE = 0,
	PR_TYPE_WE = 1,	   /* write exclusive */
	PR_TYPE_EA = 3,	   /* exclusive access */
	PR_TYPE_WE_RO = 5, /* write exclusive, registrants only */
	PR_TYPE_EA_RO = 6, /* exclusive access, registrants only */
	PR_TYPE_WE_AR = 7, /* write exclusive, all registrants */
	PR_TYPE_EA_AR = 8, /* exclusive access, all registrants */
};

struct pr_nexus {
	const char *initiator; /* at most PR_NAME_MAX bytes */
	uint16_t rel_port;
};

struct pr_reg {
	uint64_t key;
	uint16_t rel_port;
	char name[PR_NAME_MAX + 1];
};

/* struct pr_table - the table, decoded. All zeros is a volume's first: nobody registered. */
struct pr_table {
	uint32_t gen; /* PRgeneration: every change of the registrations */
	uint32_t nreg;
	uint8_t res_type;   /* enum pr_type */
	uint8_t res_holder; /* index into @regs, or PR_NO_HOLDER */
	struct pr_reg regs[PR_REGS_MAX];
};

/* What a PERSISTENT RESERVE OUT came to. */
enum pr_result {
	PR_OK = 0,	/* done, the table unchanged */
	PR_CHANGED,	/* done, the table changed: write it back */
	PR_CONFLICT,	/* RESERVATION CONFLICT */
	PR_BAD_CDB,	/* ILLEGAL REQUEST, INVALID FIELD IN CDB at @field */
	PR_BAD_PARAM,	/* ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST at @field */
	PR_BAD_LENGTH,	/* ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR */
	PR_BAD_RELEASE, /* ILLEGAL REQUEST, INVALID RELEASE OF PERSISTENT RESERVATION */
	PR_NO_ROOM,	/* ILLEGAL REQUEST, INSUFFICIENT REGISTRATION RESOURCES */
};

/* pr_decode - @len bytes read from the volume into @t: 0, or -EBADMSG (a torn or corrupt table,
 * or one from another version). All zeros decodes as the empty table. */
int pr_decode(const uint8_t *buf, size_t len, struct pr_table *t);
/* pr_encode - @t into @len (>= PR_BYTES) bytes, the rest zero. */
void pr_encode(const struct pr_table *t, uint8_t *buf, size_t len);

/* pr_out - apply PERSISTENT RESERVE OUT @cdb (10 bytes) with its @plen bytes of @param, from
 * nexus @me, to @t. On PR_BAD_CDB and PR_BAD_PARAM, @field is the byte at fault. */
enum pr_result pr_out(struct pr_table *t, const struct pr_nexus *me, const uint8_t *cdb,
		      const uint8_t *param, uint32_t plen, int *field);

/* pr_in - answer PERSISTENT RESERVE IN with service action @sa into @out (@cap bytes): the
 * answer's whole length (which may exceed @cap: the caller truncates), or -1 for an unknown
 * service action. */
int pr_in(const struct pr_table *t, uint8_t sa, uint8_t *out, uint32_t cap);

/* pr_conflict - does command @op (its opcode) from @me conflict with @t's reservation (SPC-4
 * 5.13.1, table 189 in the form SBC-3 gives for block commands)? */
bool pr_conflict(const struct pr_table *t, const struct pr_nexus *me, uint8_t op);

#endif

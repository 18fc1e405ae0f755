/*
 * fuzz_scsi.c - libFuzzer target of the SCSI unit's CDB parser (engine/scsi/lu.c): arbitrary
 * CDBs and data through a unit on the mock block path (scsi_shim.c). Every command must be
 * answered exactly once, with a SAM status the unit uses, sense only with CHECK CONDITION, and
 * no more Data-In than the buffer holds. Input: [cdb length][iovec pieces][unit state][how: opcode from the list, shaped][cdb][data].
 *
 * The units have a reservation table (sm_open_pr): PERSISTENT RESERVE IN and OUT reach its
 * parser and rules, from three nexuses, and some inputs write their data over the table itself,
 * with a valid checksum, so that the table's decoder meets arbitrary fields (a table it refuses
 * must be refused for every command, not read as empty).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/crc.h>

#include "../engine/scsi/pr.h"
#include "cohort/scsi.h"
#include "scsi_shim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The opcodes the unit knows: an input may put one in byte 0, so that random bytes reach each
 * command's handler and not only the unknown-opcode answer. */
static const uint8_t fs_ops[] = { 0x00, 0x03, 0x08, 0x0a, 0x12, 0x15, 0x1a, 0x25, 0x28, 0x2a,
				  0x2f, 0x35, 0x41, 0x42, 0x55, 0x5a, 0x88, 0x89, 0x8a, 0x8f,
				  0x91, 0x93, 0x9e, 0xa3, 0xa8, 0xaa, 0x5e, 0x5f, 0x5f, 0x5f };

/* fs_shape - make a CDB more likely to be accepted: a small LBA (the unit has 256 blocks), a
 * transfer length that fits the @data bytes given, the right length for its group, the service
 * action its opcode takes. */
static void fs_shape(uint8_t *cdb, uint32_t *cdb_len, uint32_t data)
{
	static const uint8_t len[8] = { 6, 10, 10, 16, 16, 12, 16, 16 };
	uint32_t n = len[cdb[0] >> 5], i, fit = data / 512 + 1;

	if (*cdb_len < n)
		memset(cdb + *cdb_len, 0, n - *cdb_len);
	*cdb_len = n;
	cdb[1] &= 0x1f; /* no protection fields */
	if (n == 6) {
		cdb[1] &= 0x00;
		cdb[4] = (uint8_t)(cdb[4] % fit);
	} else if (n == 16) {
		for (i = 2; i < 9; i++)
			cdb[i] = 0;
		cdb[10] = cdb[11] = cdb[12] = 0;
		cdb[13] = (uint8_t)(cdb[13] % (cdb[0] == 0x89 ? fit / 2 + 1 : fit));
	} else if (n == 12) {
		cdb[2] = cdb[3] = cdb[4] = cdb[6] = cdb[7] = cdb[8] = 0;
		cdb[9] = (uint8_t)(cdb[9] % fit);
	} else {
		cdb[2] = cdb[3] = cdb[4] = 0;
		cdb[7] = 0;
		cdb[8] = (uint8_t)(cdb[8] % fit);
	}
	if (cdb[0] == 0x5f) { /* a basic parameter list */
		cdb[5] = cdb[6] = cdb[7] = 0;
		cdb[8] = 24;
		cdb[2] = (uint8_t)(cdb[9] & 0x0f);
		cdb[1] &= 0x07;
	}
	if (cdb[0] == 0x9e)
		cdb[1] = 0x10;
	if (cdb[0] == 0xa3)
		cdb[1] = (cdb[1] & 0x20) | 0x0a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int opened;
	static uint8_t buf[8192];
	struct sm_result r;
	uint32_t cdb_len, pieces, len;
	uint8_t cdb[COH_SCSI_CDB_MAX], how;

	if (!opened) {
		if (sm_open_pr(512, 256, 16, SM_INLINE))
			abort();
		opened = 1;
	}
	if (size < 4)
		return 0;
	cdb_len = data[0] % (COH_SCSI_CDB_MAX + 1);
	pieces = data[1] % 8 + 1;
	sm_set_state(data[2] % 4 ? COH_SCSI_LU_ACTIVE : data[2] / 4 % 3);
	how = data[3];
	data += 4;
	size -= 4;
	if (cdb_len > size)
		cdb_len = (uint32_t)size;
	memcpy(cdb, data, cdb_len);
	data += cdb_len;
	size -= cdb_len;
	/* Half the inputs: a known opcode; half: shaped to pass the checks. */
	if (cdb_len && (how & 1))
		cdb[0] = fs_ops[(how >> 2) % sizeof(fs_ops)];
	len = size > sizeof(buf) ? (uint32_t)sizeof(buf) : (uint32_t)size;
	if (cdb_len && (how & 2))
		fs_shape(cdb, &cdb_len, len);
	memcpy(buf, data, len);
	if ((how & 0xf0) == 0x40) /* now and then a fresh table, so that a corrupt one ends */
		memset(sm_mem() + 256 * 512, 0, PR_BYTES);
	if ((how & 0xc0) == 0xc0 && len) {
		/* The data as a table: the magic, the fuzzer's fields, a checksum that matches. */
		uint8_t *t = sm_mem() + 256 * 512;

		memset(t, 0, PR_BYTES);
		memcpy(t, data, len > PR_BYTES ? PR_BYTES : len);
		memcpy(t, "COHPR\0\0\1", 8);
		memset(t + 60, 0, 4);
		{
			uint32_t crc = crc32_iscsi(t, PR_BYTES, 0);

			t[60] = (uint8_t)crc, t[61] = (uint8_t)(crc >> 8);
			t[62] = (uint8_t)(crc >> 16), t[63] = (uint8_t)(crc >> 24);
		}
	}
	if (how & 0x80 ? sm_run_on((uint32_t)(how >> 4) % 3, cdb, cdb_len, buf, len, &r)
		       : sm_run(cdb, cdb_len, buf, len, len ? pieces : 1, &r))
		abort(); /* never answered */
	if (r.calls != 1)
		abort();
	if (r.status != COH_SCSI_GOOD && r.status != COH_SCSI_CHECK_CONDITION &&
	    r.status != COH_SCSI_BUSY && r.status != COH_SCSI_TASK_SET_FULL &&
	    r.status != COH_SCSI_RESERVATION_CONFLICT)
		abort();
	if ((r.status == COH_SCSI_CHECK_CONDITION) != (r.sense_len == 18))
		abort();
	if (r.status == COH_SCSI_CHECK_CONDITION && (r.key == 0 || r.asc == 0))
		abort(); /* a CHECK CONDITION always says why */
	if (r.data_len > len)
		abort();
	return 0;
}

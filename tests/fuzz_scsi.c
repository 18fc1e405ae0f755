/*
 * fuzz_scsi.c - libFuzzer target of the SCSI unit's CDB parser (engine/scsi/lu.c): arbitrary
 * CDBs and data through a unit on the mock block path (scsi_shim.c). Every command must be
 * answered exactly once, with a SAM status the unit uses, sense only with CHECK CONDITION, and
 * no more Data-In than the buffer holds. Input: [cdb length][iovec pieces][unit state][cdb][data].
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cohort/scsi.h"
#include "scsi_shim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int opened;
	static uint8_t buf[8192];
	struct sm_result r;
	uint32_t cdb_len, pieces, len;
	uint8_t cdb[COH_SCSI_CDB_MAX];

	if (!opened) {
		if (sm_open(512, 256, 4, SM_INLINE))
			abort();
		opened = 1;
	}
	if (size < 3)
		return 0;
	cdb_len = data[0] % (COH_SCSI_CDB_MAX + 1);
	pieces = data[1] % 8 + 1;
	sm_set_state(data[2] % 3);
	data += 3;
	size -= 3;
	if (cdb_len > size)
		cdb_len = (uint32_t)size;
	memcpy(cdb, data, cdb_len);
	data += cdb_len;
	size -= cdb_len;
	len = size > sizeof(buf) ? (uint32_t)sizeof(buf) : (uint32_t)size;
	memcpy(buf, data, len);
	if (sm_run(cdb, cdb_len, buf, len, len ? pieces : 1, &r))
		abort(); /* never answered */
	if (r.calls != 1)
		abort();
	if (r.status != COH_SCSI_GOOD && r.status != COH_SCSI_CHECK_CONDITION &&
	    r.status != COH_SCSI_BUSY && r.status != COH_SCSI_TASK_SET_FULL)
		abort();
	if ((r.status == COH_SCSI_CHECK_CONDITION) != (r.sense_len == 18))
		abort();
	if (r.data_len > len)
		abort();
	return 0;
}

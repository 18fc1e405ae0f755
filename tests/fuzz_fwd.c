/*
 * fuzz_fwd.c - fuzz target for the forwarder's message decoder (engine/route/fwd_wire.h): any 64
 * bytes, and any length. Built with libFuzzer under COHORT_FUZZ (fuzz_fwd), and always with
 * fuzz_driver.c, the bounded random driver ctest runs (fuzz_fwd_driver). Properties: nothing
 * crashes; only 64 bytes can decode; a message that decodes encodes back to the same 64 bytes
 * (nothing the decoder accepts is ignored), and a status is 0 or a negative errno.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fwd_wire.h"
#include "cohort/forward.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t copy[COH_FWD_MSG_BYTES], again[COH_FWD_MSG_BYTES];
	struct fwd_msg m;
	size_t len = size < sizeof(copy) ? size : sizeof(copy);

	/* The first bytes may be a real header: the magic and version make decodes likely. */
	memset(copy, 0, sizeof(copy));
	memcpy(copy, data, len);
	if (size >= 1 && (data[0] & 1)) {
		copy[0] = 'C';
		copy[1] = 'F';
		copy[2] = 1;
		copy[3] = (uint8_t)(1 + (data[0] >> 2) % 3);
		copy[7] = 0;
		/* and the reserved tail zero from some offset on */
		if (data[0] & 4)
			memset(copy + 16 + (data[0] >> 4) * 3, 0,
			       sizeof(copy) - 16 - (size_t)(data[0] >> 4) * 3);
	}
	if (fwd_msg_decode(copy, size < 1 || (data[0] & 2) ? sizeof(copy) : len, &m))
		return 0;
	if (size < 1 || (!(data[0] & 2) && len != sizeof(copy)))
		abort(); /* only 64 bytes decode */
	if (m.kind == FWD_STATUS && m.status > 0)
		abort();
	fwd_msg_encode(&m, again);
	if (memcmp(again, copy, sizeof(copy)))
		abort();
	return 0;
}

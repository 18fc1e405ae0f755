/*
 * fuzz_driver.c - runs a libFuzzer-style target without libFuzzer: random inputs and mutations
 * of a few valid seeds, a fixed number of iterations from a fixed seed, so the run is bounded
 * and repeatable. Usage: fuzz_driver [iterations] [seed].
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

int main(int argc, char **argv)
{
	static const uint8_t desc_seed[48] = { 0x43, 0x4d, 1,	 1, 3, 0, 0, 0, 9, 0,	 0, 0,
					       0xef, 0xcd, 0xab, 0, 2, 0, 0, 0, 0, 0,	 0, 0,
					       0,    0x10, 0,	 0, 0, 0, 0, 0, 0, 0x20, 0, 0,
					       0,    0,	   0,	 0, 5, 0, 0, 0, 0, 0,	 0, 0 };
	static const uint8_t msg_seed[32] = { 0x43, 0x4d, 1,	2,    3, 0, 0, 0, 7, 0,
					      0,    0,	  0,	0,    0, 0, 5, 0, 0, 0,
					      0xff, 0xff, 0xff, 0xff, 4, 0, 0, 0, 9 };
	static const char *addr_seeds[] = { "\x01"
					    "10.0.0.1:7000,10.0.0.2:7001",
					    "\x00"
					    "[::1]:9,a:1",
					    "\x02"
					    "a:1,b:2,c:3" };
	unsigned long iters = argc > 1 ? strtoul(argv[1], NULL, 0) : 1000000;
	uint64_t s = argc > 2 ? strtoull(argv[2], NULL, 0) : 0x9e3779b97f4a7c15ull;
	uint8_t buf[600];
	unsigned long i;

	for (i = 0; i < iters; i++) {
		size_t len, k, flips;
		uint64_t pick = rnd(&s) % 5;

		if (pick == 4) {
			len = 32;
			memcpy(buf, msg_seed, len);
		} else if (pick == 0) {
			len = 48;
			memcpy(buf, desc_seed, len);
		} else if (pick < 3) {
			const char *a = addr_seeds[rnd(&s) % 3];

			len = strlen(a + 1) + 1;
			memcpy(buf, a, len);
		} else {
			len = rnd(&s) % sizeof(buf);
			for (k = 0; k < len; k++)
				buf[k] = (uint8_t)rnd(&s);
		}
		flips = rnd(&s) % 4;
		for (k = 0; k < flips && len; k++)
			buf[rnd(&s) % len] = (uint8_t)rnd(&s);
		if (len && rnd(&s) % 8 == 0)
			len = rnd(&s) % len;
		LLVMFuzzerTestOneInput(buf, len);
	}
	printf("fuzz_driver: %lu inputs, no failure\n", iters);
	return 0;
}

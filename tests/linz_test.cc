// linz_test.cc - the linearizability checker must accept linearizable histories and reject the
// classic violations, or the cache tests that rely on it prove nothing.
#include <gtest/gtest.h>

#include <vector>

#include "linz.h"

namespace
{
linz_op W(uint64_t inv, uint64_t resp, uint64_t v, uint64_t block = 0)
{
	return linz_op{ inv, resp, block, v, 0, 1 };
}
linz_op R(uint64_t inv, uint64_t resp, uint64_t v, uint64_t block = 0)
{
	return linz_op{ inv, resp, block, v, 1, 0 };
}
int check(std::vector<linz_op> h)
{
	return linz_check(h.data(), h.size(), nullptr);
}

TEST(linz, sequential_and_concurrent_histories_pass)
{
	EXPECT_EQ(0, check({}));
	EXPECT_EQ(0, check({ R(1, 2, 0), W(3, 4, 7), R(5, 6, 7) }));
	// A read overlapping a write may return either value.
	EXPECT_EQ(0, check({ W(10, 20, 7), R(12, 14, 0), R(15, 25, 7) }));
	// Concurrent writes may be ordered either way.
	EXPECT_EQ(0, check({ W(0, 10, 1), W(5, 15, 2), R(20, 25, 1) }));
	EXPECT_EQ(0, check({ W(0, 10, 1), W(5, 15, 2), R(20, 25, 2) }));
	// Blocks are independent registers.
	EXPECT_EQ(0, check({ W(0, 1, 5, 0), R(2, 3, 0, 1), R(4, 5, 5, 0) }));
}

TEST(linz, stale_read_after_completed_write_fails)
{
	EXPECT_EQ(1, check({ W(0, 10, 1), W(20, 30, 2), R(40, 50, 1) }));
	EXPECT_EQ(1, check({ W(0, 10, 1), R(20, 30, 0) })); // initial value after a write
}

TEST(linz, read_from_the_future_fails)
{
	EXPECT_EQ(1, check({ R(0, 5, 9), W(10, 20, 9) }));
}

TEST(linz, value_never_written_fails)
{
	EXPECT_EQ(1, check({ W(0, 10, 1), R(20, 30, 3) }));
}

TEST(linz, new_then_old_across_readers_fails)
{
	// Write of 2 concurrent with two reads; the first read sees 2, a later one sees 1 again.
	EXPECT_EQ(1, check({ W(0, 5, 1), W(10, 100, 2), R(20, 30, 2), R(40, 50, 1) }));
}

TEST(linz, bad_input)
{
	EXPECT_EQ(-EINVAL, check({ W(0, 1, 3), W(2, 3, 3) }));
	EXPECT_EQ(-EINVAL, check({ W(0, 1, 0) }));
}
} // namespace

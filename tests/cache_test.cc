// cache_test.cc - googletest driver of the coherent cache scenarios (ctest label "cache"). Each
// test forks a cluster of node processes on the fabric provider under test, sharing one store
// file; the randomized linearizability test runs several seeds and node counts, bounded.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <unistd.h>

#include "cache_scenarios.h"

namespace
{
constexpr unsigned kTimeout = 120;

std::string fresh_store()
{
	const char *base = getenv("COHORT_TEST_SHM_BASE");
	std::string p = std::string(base && *base ? base : "/dev/shm") + "/cohort-store-" +
			std::to_string(getpid()) + "-" + std::to_string(rand());
	unlink(p.c_str());
	return p;
}

struct Store {
	std::string path = fresh_store();
	Store()
	{
		cache_sc_set_store(path.c_str());
	}
	~Store()
	{
		unlink(path.c_str());
	}
};

TEST(cache, grants__old_news_is_ignored)
{
	char why[256] = "";
	EXPECT_EQ(0, cache_unit_stale_grants(why, sizeof(why))) << why;
}

TEST(cache, res_walk__visits_the_used_groups_only)
{
	char why[256] = "";
	EXPECT_EQ(0, cache_unit_res_walk(why, sizeof(why))) << why;
}

TEST(cache, costs__hits_and_held_writes_are_free_peer_serves_miss)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_costs", 2, sc_cache_costs, 0, kTimeout));
}

TEST(cache, hold_and_yield__no_grant_while_held_writeback_gives_way)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_hold_and_yield", 2, sc_cache_hold_and_yield, 0, kTimeout));
}

TEST(cache, lost_grant__taken_as_the_word_says_when_its_giver_lives)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_lost_grant", 2, sc_cache_lost_grant, 0, kTimeout));
}

TEST(cache, serve_unlocked__a_read_hit_goes_on_during_a_hand_over)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_serve_unlocked", 2, sc_cache_serve_unlocked, 0, kTimeout));
}

TEST(cache, inv_shared_word__a_spurious_invalidation_costs_a_fetch_not_a_stale_read)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_inv_shared_word", 2, sc_cache_inv_shared_word, 0, kTimeout));
}

TEST(cache, range_batch__a_ranges_cases_go_together)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_range_batch", 2, sc_cache_range_batch, 0, kTimeout));
}

TEST(cache, fence_waits_handover__no_claim_before_the_grant_leaves)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_fence_waits_handover", 3, sc_cache_fence_waits_handover, 0,
			      kTimeout));
}

TEST(cache, invalidation__exactly_the_sharers)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_invalidation", 4, sc_cache_invalidation, 0, kTimeout));
}

TEST(cache, contention__exclusive_and_no_starvation)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_contention", 4, sc_cache_contention, 0, kTimeout));
}

TEST(cache, handover__fifo_by_arrival_at_the_holder)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_handover", 4, sc_cache_handover_order, 0, kTimeout));
}

TEST(cache, refused_request__the_queue_behind_it_is_not_stranded)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_retry_queue", 3, sc_cache_retry_drains_queue, 0, kTimeout));
}

TEST(cache, write_not_installed__undone_for_that_block_only)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_write_undo", 1, sc_cache_write_undo, 0, kTimeout));
}

TEST(cache, rekey__a_fenced_node_takes_no_lock)
{
	Store s;
	EXPECT_EQ(0, conf_run("cache_rekey_fences", 3, sc_cache_rekey_fences, 0, kTimeout));
}

TEST(cache, version_wrap__old_copy_never_current_again)
{
	if (cache_sc_version_bits() > 10)
		GTEST_SKIP() << "a wrap of " << cache_sc_version_bits()
			     << "-bit versions takes too long here: build with -DCOHORT_VER_BITS=8";
	Store s;
	EXPECT_EQ(0, conf_run("cache_version_wrap", 3, sc_cache_version_wrap, 0, kTimeout));
}

TEST(cache, linearizable__random_histories_3_to_5_nodes)
{
	const char *env = getenv("COHORT_CACHE_SEEDS");
	int seeds = env ? atoi(env) : 6;
	for (int seed = 1; seed <= seeds; seed++) {
		for (uint32_t n = 3; n <= 5; n++) {
			Store s;
			cache_sc_set_seed((uint64_t)seed);
			ASSERT_EQ(0, conf_run("cache_linearizable", n, sc_cache_linearizable, 0,
					      kTimeout))
			    << "seed " << seed << ", " << n << " nodes";
		}
	}
}
} // namespace

// raid_test.cc - redundancy groups (engine/raid.c) through the C API: RAID-1 and RAID-5 over file
// stores in a fresh directory under /dev/shm. Every element is a file store behind a thin store
// that can be told to fail its reads, writes or flushes, so that I/O errors are injected in test
// code and the files can still be read raw. Allocation failures come from --wrap (see the end).
// Random data and ranges come from fixed seeds; every loop is bounded.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cohort/log.h"
#include "cohort/raid.h"
#include "cohort/store.h"

// Fault injection for allocations and lock set-up: the binary is linked with
// -Wl,--wrap=calloc,--wrap=posix_memalign,--wrap=pthread_rwlock_init, so the library's calls
// come here. Armed with the number of calls to let through before one fails; -1 is off.
extern "C" {
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
int __real_posix_memalign(void **p, size_t align, size_t size);
int __wrap_posix_memalign(void **p, size_t align, size_t size);
int __real_pthread_rwlock_init(pthread_rwlock_t *l, const pthread_rwlockattr_t *a);
int __wrap_pthread_rwlock_init(pthread_rwlock_t *l, const pthread_rwlockattr_t *a);
}

namespace
{
std::atomic<long> calloc_fail_after{ -1 };
std::atomic<long> memalign_fail_after{ -1 };
std::atomic<long> rwlock_fail_after{ -1 };

// should_fail - whether this call is the armed one (the counter then disarms itself).
bool should_fail(std::atomic<long> &after)
{
	long v = after.load();

	while (v >= 0) {
		if (after.compare_exchange_weak(v, v - 1))
			return v == 0;
	}
	return false;
}
} // namespace

void *__wrap_calloc(size_t n, size_t size)
{
	if (should_fail(calloc_fail_after)) {
		errno = ENOMEM;
		return nullptr;
	}
	return __real_calloc(n, size);
}

int __wrap_posix_memalign(void **p, size_t align, size_t size)
{
	if (should_fail(memalign_fail_after))
		return ENOMEM;
	return __real_posix_memalign(p, align, size);
}

int __wrap_pthread_rwlock_init(pthread_rwlock_t *l, const pthread_rwlockattr_t *a)
{
	if (should_fail(rwlock_fail_after))
		return EAGAIN;
	return __real_pthread_rwlock_init(l, a);
}

namespace
{

constexpr uint64_t kElemBlocks = 66; // not a multiple of any chunk: the tail goes unused

// Errors logged by the library (element failures are logged at ERR).
std::atomic<int> logged_errors{ 0 };

void count_sink(void *, coh_log_level level, const char *, int, const char *)
{
	if (level == COH_LOG_LEVEL_ERR)
		logged_errors++;
}

// A store in front of a file store that fails on demand.
enum {
	FAIL_READ = 1,
	FAIL_WRITE = 2,
	FAIL_FLUSH = 4,
	FAIL_WRITE_AGAIN =
	    8 // -EAGAIN: what a file store's write gate says (coh_store_set_write_gate)
};

struct fault_elem {
	coh_store *file = nullptr;  // the file store (raw access for the tests)
	coh_store *store = nullptr; // what the group is given
	std::atomic<int> fail{ 0 };
};

int fault_read(void *ctx, uint64_t lba, uint32_t n, void *buf)
{
	auto *f = static_cast<fault_elem *>(ctx);

	return (f->fail & FAIL_READ) ? -EIO : coh_store_read(f->file, lba, n, buf);
}

int fault_write(void *ctx, uint64_t lba, uint32_t n, const void *buf)
{
	auto *f = static_cast<fault_elem *>(ctx);

	if (f->fail & FAIL_WRITE_AGAIN)
		return -EAGAIN;
	return (f->fail & FAIL_WRITE) ? -EIO : coh_store_write(f->file, lba, n, buf);
}

int fault_flush(void *ctx)
{
	auto *f = static_cast<fault_elem *>(ctx);

	return (f->fail & FAIL_FLUSH) ? -EIO : coh_store_flush(f->file);
}

const coh_store_ops fault_ops = { fault_read, fault_write, fault_flush, nullptr };

// A fresh directory under /dev/shm, removed with everything in it.
class temp_dir
{
      public:
	temp_dir()
	{
		char t[] = "/dev/shm/cohort-raid-XXXXXX";

		if (mkdtemp(t))
			path_ = t;
	}
	~temp_dir()
	{
		for (const auto &f : files_)
			unlink(f.c_str());
		if (!path_.empty())
			rmdir(path_.c_str());
	}
	bool ok() const
	{
		return !path_.empty();
	}
	std::string file(const std::string &name)
	{
		files_.push_back(path_ + "/" + name);
		return files_.back();
	}

      private:
	std::string path_;
	std::vector<std::string> files_;
};

// The elements of one group: file stores, each behind a fault store.
class elements
{
      public:
	elements(temp_dir &dir, const std::string &prefix, uint32_t n, uint32_t bs,
		 uint64_t nblocks = kElemBlocks)
	    : bs_(bs)
	{
		for (uint32_t i = 0; i < n; i++) {
			auto f = std::make_unique<fault_elem>();
			std::string path = dir.file(prefix + "-" + std::to_string(i));

			if (coh_store_open_file(path.c_str(), bs, nblocks, true, &f->file) ||
			    coh_store_new(&fault_ops, f.get(), bs, nblocks, &f->store))
				return;
			e_.push_back(std::move(f));
		}
		ok_ = true;
	}
	~elements()
	{
		for (auto &f : e_) {
			coh_store_delete(&f->store);
			coh_store_delete(&f->file);
		}
	}
	bool ok() const
	{
		return ok_;
	}
	fault_elem &operator[](size_t i)
	{
		return *e_[i];
	}
	// attr - group attributes over these elements, with the ones in @missing left out.
	coh_raid_attr attr(coh_raid_level level, uint32_t chunk, uint32_t missing = 0)
	{
		coh_raid_attr a = {};

		a.level = level;
		a.nelems = (uint32_t)e_.size();
		a.chunk_blocks = chunk;
		for (size_t i = 0; i < e_.size(); i++)
			a.elems[i] = (missing & (1u << i)) ? nullptr : e_[i]->store;
		return a;
	}
	// raw - element @i's blocks [lba, lba + n), read from its file.
	std::vector<uint8_t> raw(size_t i, uint64_t lba, uint32_t n)
	{
		std::vector<uint8_t> b((size_t)n * bs_);

		EXPECT_EQ(0, coh_store_read(e_[i]->file, lba, n, b.data()));
		return b;
	}
	// snapshot - every element's whole file.
	std::vector<std::vector<uint8_t>> snapshot(uint64_t nblocks = kElemBlocks)
	{
		std::vector<std::vector<uint8_t>> s;

		for (size_t i = 0; i < e_.size(); i++)
			s.push_back(raw(i, 0, (uint32_t)nblocks));
		return s;
	}

      private:
	uint32_t bs_;
	bool ok_ = false;
	std::vector<std::unique_ptr<fault_elem>> e_;
};

struct cfg {
	coh_raid_level level;
	uint32_t n;
	uint32_t chunk;
	uint32_t bs;
	const char *name;
};

// PrintTo - how gtest names a configuration in its messages.
void PrintTo(const cfg &c, std::ostream *os)
{
	*os << c.name;
}

// group - owns a coh_raid.
struct group {
	coh_raid *r = nullptr;
	~group()
	{
		coh_raid_delete(&r);
	}
};

// The volume as written so far, beside the group that should hold it.
class model
{
      public:
	model(coh_raid *r, uint64_t seed)
	    : r_(r), bs_(coh_raid_block_size(r)), data_(coh_raid_nblocks(r) * bs_), rng_(seed)
	{
	}
	void rebind(coh_raid *r)
	{
		r_ = r;
	}
	std::vector<uint8_t> random(uint32_t n)
	{
		std::vector<uint8_t> b((size_t)n * bs_);

		for (auto &x : b)
			x = (uint8_t)rng_();
		return b;
	}
	// range - a random range, at most about three stripes long.
	std::pair<uint64_t, uint32_t> range()
	{
		uint64_t nb = coh_raid_nblocks(r_);
		uint64_t lba = rng_() % nb;
		uint64_t most = std::min<uint64_t>(nb - lba, 3 * coh_raid_stripe_blocks(r_) + 2);

		return { lba, (uint32_t)(1 + rng_() % most) };
	}
	int write(uint64_t lba, uint32_t n)
	{
		auto b = random(n);
		int ret = coh_raid_write(r_, lba, n, b.data());

		if (!ret)
			std::memcpy(&data_[lba * bs_], b.data(), b.size());
		return ret;
	}
	void write_all()
	{
		ASSERT_EQ(0, write(0, (uint32_t)coh_raid_nblocks(r_)));
	}
	std::vector<uint8_t> expect(uint64_t lba, uint32_t n) const
	{
		return std::vector<uint8_t>(data_.begin() + lba * bs_,
					    data_.begin() + (lba + n) * bs_);
	}
	void set(uint64_t lba, const std::vector<uint8_t> &b)
	{
		std::memcpy(&data_[lba * bs_], b.data(), b.size());
	}
	std::mt19937_64 &rng()
	{
		return rng_;
	}

      private:
	coh_raid *r_;
	uint32_t bs_;
	std::vector<uint8_t> data_;
	std::mt19937_64 rng_;
};

std::vector<uint8_t> read_back(coh_raid *r, uint64_t lba, uint32_t n, int *ret = nullptr)
{
	std::vector<uint8_t> b((size_t)n * coh_raid_block_size(r));
	int rc = coh_raid_read(r, lba, n, b.data());

	if (ret)
		*ret = rc;
	else
		EXPECT_EQ(0, rc);
	return b;
}

// volume_matches - the whole volume reads back as the model has it.
bool volume_matches(coh_raid *r, const model &m)
{
	uint32_t n = (uint32_t)coh_raid_nblocks(r);

	return read_back(r, 0, n) == m.expect(0, n);
}

// inconsistent_stripes - how many stripes fail the check.
int inconsistent_stripes(coh_raid *r)
{
	int bad = 0;

	for (uint64_t s = 0; s < coh_raid_nstripes(r); s++) {
		bool ok = false;

		EXPECT_EQ(0, coh_raid_stripe_check(r, s, &ok));
		bad += !ok;
	}
	return bad;
}

// Records the steps; aborts at (abort_stripe, abort_step) with 42.
struct hook_rec {
	std::vector<std::pair<uint64_t, coh_raid_step>> seen;
	uint64_t abort_stripe = UINT64_MAX;
	coh_raid_step abort_step = COH_RAID_STEP_DONE;
};

int rec_hook(void *arg, uint64_t stripe, coh_raid_step step)
{
	auto *h = static_cast<hook_rec *>(arg);

	h->seen.emplace_back(stripe, step);
	return stripe == h->abort_stripe && step == h->abort_step ? 42 : 0;
}

using steps = std::vector<std::pair<uint64_t, coh_raid_step>>;

// A write gate (coh_raid_attr.may_write) that lets @allow calls pass and counts them all.
struct gate_rec {
	int calls = 0;
	int allow = 0; // calls that pass
};

static int count_gate(void *arg)
{
	auto *g = static_cast<gate_rec *>(arg);

	return g->calls++ < g->allow ? 0 : 1;
}

class raid : public ::testing::TestWithParam<cfg>
{
      protected:
	void SetUp() override
	{
		logged_errors = 0;
		coh_log_set_sink(count_sink, nullptr);
		ASSERT_TRUE(dir.ok());
	}
	void TearDown() override
	{
		coh_log_set_sink(nullptr, nullptr);
	}
	// open - elements named @prefix and a group over them without @missing.
	void open(const std::string &prefix, std::unique_ptr<elements> &el, group &g,
		  uint32_t missing = 0)
	{
		const cfg &c = GetParam();

		el = std::make_unique<elements>(dir, prefix, c.n, c.bs);
		ASSERT_TRUE(el->ok());
		coh_raid_attr a = el->attr(c.level, c.chunk, missing);
		ASSERT_EQ(0, coh_raid_new(&a, &g.r));
	}
	// open_gated - as open, with @gr as the group's write gate (open at first).
	void open_gated(const std::string &prefix, std::unique_ptr<elements> &el, group &g,
			gate_rec &gr)
	{
		const cfg &c = GetParam();

		el = std::make_unique<elements>(dir, prefix, c.n, c.bs);
		ASSERT_TRUE(el->ok());
		coh_raid_attr a = el->attr(c.level, c.chunk, 0);
		a.may_write = count_gate;
		a.arg = &gr;
		gr.allow = INT32_MAX;
		ASSERT_EQ(0, coh_raid_new(&a, &g.r));
	}
	bool is_raid5() const
	{
		return GetParam().level == COH_RAID5;
	}
	temp_dir dir;
};

// Suites for what only one level has.
class raid5 : public raid
{
};
class raid1 : public raid
{
};

TEST_P(raid, geometry__follows_level_and_chunk)
{
	std::unique_ptr<elements> el;
	group g;
	const cfg &c = GetParam();

	open("g", el, g);
	uint32_t sb = c.level == COH_RAID5 ? (c.n - 1) * c.chunk : c.chunk;
	EXPECT_EQ(c.bs, coh_raid_block_size(g.r));
	EXPECT_EQ(sb, coh_raid_stripe_blocks(g.r));
	if (c.level == COH_RAID5) {
		EXPECT_EQ(kElemBlocks / c.chunk, coh_raid_nstripes(g.r));
		EXPECT_EQ(kElemBlocks / c.chunk * sb, coh_raid_nblocks(g.r));
	} else {
		EXPECT_EQ((kElemBlocks + c.chunk - 1) / c.chunk, coh_raid_nstripes(g.r));
		EXPECT_EQ(kElemBlocks, coh_raid_nblocks(g.r));
	}
	EXPECT_EQ(0u, coh_raid_stripe_of(g.r, 0));
	EXPECT_EQ(1u, coh_raid_stripe_of(g.r, sb));
	EXPECT_EQ((coh_raid_nblocks(g.r) - 1) / sb,
		  coh_raid_stripe_of(g.r, coh_raid_nblocks(g.r) - 1));
	EXPECT_EQ(UINT64_MAX, coh_raid_stripe_of(g.r, coh_raid_nblocks(g.r)));
	EXPECT_EQ(0u, coh_raid_missing(g.r));
}

TEST_P(raid, layout__left_symmetric_on_the_elements)
{
	std::unique_ptr<elements> el;
	group g;
	const cfg &c = GetParam();

	open("l", el, g);
	model m(g.r, 1);
	m.write_all();
	uint32_t sb = coh_raid_stripe_blocks(g.r);
	for (uint64_t s = 0; s < coh_raid_nstripes(g.r); s++) {
		if (c.level == COH_RAID1) {
			uint64_t lba = s * c.chunk;
			uint32_t rows = (uint32_t)std::min<uint64_t>(c.chunk, kElemBlocks - lba);
			for (uint32_t e = 0; e < c.n; e++)
				EXPECT_EQ(m.expect(lba, rows), el->raw(e, lba, rows))
				    << s << " " << e;
			continue;
		}
		// Parity starts on the last element and moves left; data follows it, wrapping.
		uint32_t pe = c.n - 1 - (uint32_t)(s % c.n);
		std::vector<uint8_t> parity((size_t)c.chunk * c.bs, 0);
		for (uint32_t d = 0; d < c.n - 1; d++) {
			uint32_t e = (pe + 1 + d) % c.n;
			auto want = m.expect(s * sb + d * c.chunk, c.chunk);
			EXPECT_EQ(want, el->raw(e, s * c.chunk, c.chunk)) << s << " " << d;
			for (size_t i = 0; i < parity.size(); i++)
				parity[i] ^= want[i];
		}
		EXPECT_EQ(parity, el->raw(pe, s * c.chunk, c.chunk)) << s;
	}
}

TEST_P(raid, write_read__random_ranges)
{
	std::unique_ptr<elements> el;
	group g;

	open("rw", el, g);
	model m(g.r, 2);
	for (int i = 0; i < 150; i++) {
		auto [lba, n] = m.range();
		ASSERT_EQ(0, m.write(lba, n)) << i;
		auto [rlba, rn] = m.range();
		ASSERT_EQ(m.expect(rlba, rn), read_back(g.r, rlba, rn)) << i;
	}
	EXPECT_TRUE(volume_matches(g.r, m));
	EXPECT_EQ(0, inconsistent_stripes(g.r));
	EXPECT_EQ(0, logged_errors.load());
}

TEST_P(raid, write_read__cross_stripe_and_whole_volume)
{
	std::unique_ptr<elements> el;
	group g;

	open("x", el, g);
	model m(g.r, 3);
	uint32_t sb = coh_raid_stripe_blocks(g.r);
	// The last block of one stripe and the first of the next; then a range from mid-stripe 1
	// to mid-stripe 3; then everything.
	ASSERT_EQ(0, m.write(sb - 1, 2));
	ASSERT_EQ(0, m.write(sb + sb / 2, 2 * sb));
	EXPECT_EQ(m.expect(0, 4 * sb), read_back(g.r, 0, 4 * sb));
	m.write_all();
	EXPECT_TRUE(volume_matches(g.r, m));
	ASSERT_EQ(0, m.write(sb - 1, 2));
	EXPECT_TRUE(volume_matches(g.r, m));
	EXPECT_EQ(0, inconsistent_stripes(g.r));
}

TEST_P(raid, degraded_read__each_element_missing)
{
	std::unique_ptr<elements> el;
	group g;
	const cfg &c = GetParam();

	open("dr", el, g);
	model m(g.r, 4);
	m.write_all();
	for (int i = 0; i < 20; i++) {
		auto [lba, n] = m.range();
		ASSERT_EQ(0, m.write(lba, n));
	}
	for (uint32_t gone = 0; gone < c.n; gone++) {
		group d;
		coh_raid_attr a = el->attr(c.level, c.chunk, 1u << gone);

		ASSERT_EQ(0, coh_raid_new(&a, &d.r)) << gone;
		EXPECT_EQ(1u << gone, coh_raid_missing(d.r));
		EXPECT_TRUE(volume_matches(d.r, m)) << gone;
		for (int i = 0; i < 20; i++) {
			auto [lba, n] = m.range();
			EXPECT_EQ(m.expect(lba, n), read_back(d.r, lba, n)) << gone << " " << i;
		}
		EXPECT_EQ(0, inconsistent_stripes(d.r));
	}
}

TEST_P(raid, degraded_write__each_element_missing)
{
	const cfg &c = GetParam();

	for (uint32_t gone = 0; gone < c.n; gone++) {
		std::unique_ptr<elements> el;
		group g;

		open("dw" + std::to_string(gone), el, g);
		model m(g.r, 5 + gone);
		m.write_all();
		coh_raid_delete(&g.r);
		coh_raid_attr a = el->attr(c.level, c.chunk, 1u << gone);
		ASSERT_EQ(0, coh_raid_new(&a, &g.r));
		m.rebind(g.r);
		for (int i = 0; i < 60; i++) {
			auto [lba, n] = m.range();
			ASSERT_EQ(0, m.write(lba, n)) << gone << " " << i;
			auto [rlba, rn] = m.range();
			ASSERT_EQ(m.expect(rlba, rn), read_back(g.r, rlba, rn)) << gone << " " << i;
		}
		// A fresh group over the same files, still without the element, agrees.
		coh_raid_delete(&g.r);
		ASSERT_EQ(0, coh_raid_new(&a, &g.r));
		EXPECT_TRUE(volume_matches(g.r, m)) << gone;
		EXPECT_EQ(0, inconsistent_stripes(g.r)) << gone;
		if (c.level == COH_RAID1) {
			// The mirror left out kept its old blocks: it is stale, not written.
			ASSERT_EQ(0, coh_raid_delete(&g.r));
			a = el->attr(c.level, c.chunk);
			ASSERT_EQ(0, coh_raid_new(&a, &g.r));
			EXPECT_GT(inconsistent_stripes(g.r), 0) << gone;
		}
	}
}

TEST_P(raid, fail_element__at_run_time)
{
	const cfg &c = GetParam();

	for (uint32_t gone = 0; gone < c.n; gone++) {
		std::unique_ptr<elements> el;
		group g;

		open("fe" + std::to_string(gone), el, g);
		model m(g.r, 20 + gone);
		m.write_all();
		ASSERT_EQ(0, coh_raid_fail_element(g.r, gone));
		ASSERT_EQ(0, coh_raid_fail_element(g.r, gone)); // already missing: no-op
		EXPECT_EQ(1u << gone, coh_raid_missing(g.r));
		auto before = el->raw(gone, 0, (uint32_t)kElemBlocks);
		EXPECT_TRUE(volume_matches(g.r, m)) << gone;
		for (int i = 0; i < 30; i++) {
			auto [lba, n] = m.range();
			ASSERT_EQ(0, m.write(lba, n)) << gone << " " << i;
		}
		EXPECT_TRUE(volume_matches(g.r, m)) << gone;
		EXPECT_EQ(0, inconsistent_stripes(g.r));
		// A missing element is not touched any more.
		EXPECT_EQ(before, el->raw(gone, 0, (uint32_t)kElemBlocks)) << gone;
	}
}

TEST_P(raid, fail_element__too_many_is_eio)
{
	std::unique_ptr<elements> el;
	group g;
	const cfg &c = GetParam();

	open("tm", el, g);
	model m(g.r, 6);
	m.write_all();
	uint32_t keep = c.level == COH_RAID5 ? c.n - 2 : 0; // elements that stay
	for (uint32_t e = keep; e < c.n; e++)
		ASSERT_EQ(0, coh_raid_fail_element(g.r, e));
	int ret = 0;
	read_back(g.r, 0, (uint32_t)coh_raid_nblocks(g.r), &ret);
	EXPECT_EQ(-EIO, ret);
	auto b = m.random(coh_raid_stripe_blocks(g.r));
	EXPECT_EQ(-EIO, coh_raid_write(g.r, 0, coh_raid_stripe_blocks(g.r), b.data()));
	bool ok;
	EXPECT_EQ(-EIO, coh_raid_stripe_check(g.r, 0, &ok));
	EXPECT_EQ(-EIO, coh_raid_stripe_repair(g.r, 0));
	EXPECT_EQ(-EIO, coh_raid_flush(g.r));
}

TEST_P(raid, io_error__marks_element_failed_and_goes_on)
{
	const cfg &c = GetParam();

	for (int kind : { FAIL_READ, FAIL_WRITE }) {
		for (uint32_t bad = 0; bad < c.n; bad++) {
			std::unique_ptr<elements> el;
			group g;

			open("io" + std::to_string(kind) + "-" + std::to_string(bad), el, g);
			model m(g.r, 30 + bad);
			m.write_all();
			logged_errors = 0;
			(*el)[bad].fail = kind;
			for (int i = 0; i < 30; i++) {
				auto [lba, n] = m.range();
				ASSERT_EQ(0, m.write(lba, n)) << bad << " " << i;
				auto [rlba, rn] = m.range();
				ASSERT_EQ(m.expect(rlba, rn), read_back(g.r, rlba, rn));
			}
			EXPECT_TRUE(volume_matches(g.r, m)) << bad;
			// The check reads every element, so a mirror that is never read from
			// otherwise is found out here at the latest.
			EXPECT_EQ(0, inconsistent_stripes(g.r));
			EXPECT_EQ(1u << bad, coh_raid_missing(g.r)) << kind << " " << bad;
			EXPECT_EQ(1, logged_errors.load()) << "one failure, logged once";
		}
	}
}

// on_missing: told once per element that goes missing, with the bitmap, whether an I/O error
// or an operator made it so; never for one already missing.
struct missing_seen {
	int calls = 0;
	uint32_t last = 0;
};

static void record_missing(void *arg, uint32_t missing)
{
	auto *s = static_cast<missing_seen *>(arg);

	s->calls++;
	s->last = missing;
}

TEST_P(raid, on_missing__told_once_per_element)
{
	const cfg &c = GetParam();
	std::unique_ptr<elements> el;
	missing_seen seen;
	group g;

	el = std::make_unique<elements>(dir, "om", c.n, c.bs);
	ASSERT_TRUE(el->ok());
	coh_raid_attr a = el->attr(c.level, c.chunk, 0);
	a.on_missing = record_missing;
	a.arg = &seen;
	ASSERT_EQ(0, coh_raid_new(&a, &g.r));
	model m(g.r, 41);
	m.write_all();
	EXPECT_EQ(0, seen.calls);
	(*el)[1].fail = FAIL_WRITE; // every level writes every present element
	for (int i = 0; i < 20; i++) {
		auto [lba, n] = m.range();
		ASSERT_EQ(0, m.write(lba, n)) << i;
	}
	ASSERT_EQ(0, m.write(0, (uint32_t)coh_raid_nblocks(g.r)));
	EXPECT_EQ(1, seen.calls);
	EXPECT_EQ(1u << 1, seen.last);
	ASSERT_EQ(0, coh_raid_fail_element(g.r, 1)); // already missing
	EXPECT_EQ(1, seen.calls);
	ASSERT_EQ(0, coh_raid_fail_element(g.r, 0));
	EXPECT_EQ(2, seen.calls);
	EXPECT_EQ(1u << 1 | 1u << 0, seen.last);
}

TEST_P(raid, io_error__second_failure_is_eio)
{
	std::unique_ptr<elements> el;
	group g;
	const cfg &c = GetParam();

	open("io2", el, g);
	model m(g.r, 7);
	m.write_all();
	// All but one element fail (RAID-5: two fail, which is already too many).
	uint32_t fails = c.level == COH_RAID5 ? 2 : c.n;
	for (uint32_t e = 0; e < fails; e++)
		(*el)[e].fail = FAIL_READ | FAIL_WRITE | FAIL_FLUSH;
	int ret = 0;
	read_back(g.r, 0, (uint32_t)coh_raid_nblocks(g.r), &ret);
	EXPECT_EQ(-EIO, ret);
	auto b = m.random((uint32_t)coh_raid_nblocks(g.r));
	EXPECT_EQ(-EIO, coh_raid_write(g.r, 0, (uint32_t)coh_raid_nblocks(g.r), b.data()));
	EXPECT_EQ(-EIO, coh_raid_flush(g.r));
}

TEST_P(raid, flush__error_marks_element_failed)
{
	std::unique_ptr<elements> el;
	group g;

	open("fl", el, g);
	EXPECT_EQ(0, coh_raid_flush(g.r));
	(*el)[1].fail = FAIL_FLUSH;
	EXPECT_EQ(0, coh_raid_flush(g.r));
	EXPECT_EQ(2u, coh_raid_missing(g.r));
}

TEST_P(raid, hook__steps_in_order)
{
	std::unique_ptr<elements> el;
	group g;

	open("hs", el, g);
	model m(g.r, 8);
	uint32_t sb = coh_raid_stripe_blocks(g.r);
	auto b = m.random(3 * sb);
	hook_rec h;

	// Part of stripe 1, all of stripe 2, part of stripe 3.
	ASSERT_EQ(0, coh_raid_write_stepped(g.r, sb + sb - 1, sb + 2, b.data(), rec_hook, &h));
	if (is_raid5())
		EXPECT_EQ((steps{ { 1, COH_RAID_STEP_READ_OLD },
				  { 1, COH_RAID_STEP_WRITE_DATA },
				  { 1, COH_RAID_STEP_WRITE_PARITY },
				  { 1, COH_RAID_STEP_DONE },
				  { 2, COH_RAID_STEP_WRITE_DATA },
				  { 2, COH_RAID_STEP_WRITE_PARITY },
				  { 2, COH_RAID_STEP_DONE },
				  { 3, COH_RAID_STEP_READ_OLD },
				  { 3, COH_RAID_STEP_WRITE_DATA },
				  { 3, COH_RAID_STEP_WRITE_PARITY },
				  { 3, COH_RAID_STEP_DONE } }),
			  h.seen);
	else
		EXPECT_EQ((steps{ { 1, COH_RAID_STEP_WRITE_DATA },
				  { 1, COH_RAID_STEP_DONE },
				  { 2, COH_RAID_STEP_WRITE_DATA },
				  { 2, COH_RAID_STEP_DONE },
				  { 3, COH_RAID_STEP_WRITE_DATA },
				  { 3, COH_RAID_STEP_DONE } }),
			  h.seen);
	EXPECT_EQ(0, inconsistent_stripes(g.r));
}

TEST_P(raid5, hook__degraded_steps)
{
	const cfg &c = GetParam();
	std::unique_ptr<elements> el;
	group g;

	// Stripe 0's parity is on the last element: without it, no READ_OLD and no parity write.
	open("hd", el, g, 1u << (c.n - 1));
	model m(g.r, 9);
	auto b = m.random(1);
	hook_rec h;
	ASSERT_EQ(0, coh_raid_write_stepped(g.r, 0, 1, b.data(), rec_hook, &h));
	EXPECT_EQ((steps{ { 0, COH_RAID_STEP_WRITE_DATA }, { 0, COH_RAID_STEP_DONE } }), h.seen);
	// Without the element of the block written (stripe 0, data chunk 0 = element 0), the rest
	// of the stripe is read so that the block reconstructs to the new data.
	group g0;
	coh_raid_attr a = el->attr(c.level, c.chunk, 1u);
	ASSERT_EQ(0, coh_raid_new(&a, &g0.r));
	h.seen.clear();
	auto b0 = m.random(1);
	ASSERT_EQ(0, coh_raid_write_stepped(g0.r, 0, 1, b0.data(), rec_hook, &h));
	EXPECT_EQ((steps{ { 0, COH_RAID_STEP_READ_OLD },
			  { 0, COH_RAID_STEP_WRITE_DATA },
			  { 0, COH_RAID_STEP_WRITE_PARITY },
			  { 0, COH_RAID_STEP_DONE } }),
		  h.seen);
	EXPECT_EQ(b0, read_back(g0.r, 0, 1));
}

// The partial-stripe update of stripe 1 aborted before each step in turn.
TEST_P(raid5, hook__abort_at_each_step_then_repair)
{
	const coh_raid_step all[] = { COH_RAID_STEP_READ_OLD, COH_RAID_STEP_WRITE_DATA,
				      COH_RAID_STEP_WRITE_PARITY, COH_RAID_STEP_DONE };

	for (coh_raid_step at : all) {
		std::unique_ptr<elements> el;
		group g;

		open("ab" + std::to_string((int)at), el, g);
		model m(g.r, 10 + at);
		m.write_all();
		uint32_t sb = coh_raid_stripe_blocks(g.r);
		uint64_t lba = sb + (sb > 2 ? 1 : 0);
		uint32_t n = sb > 2 ? sb - 2 : 1;
		auto old = m.expect(lba, n);
		auto b = m.random(n);
		hook_rec h;
		h.abort_stripe = 1;
		h.abort_step = at;

		EXPECT_EQ(42, coh_raid_write_stepped(g.r, lba, n, b.data(), rec_hook, &h)) << at;
		EXPECT_EQ(at, h.seen.back().second);
		bool ok = false;
		ASSERT_EQ(0, coh_raid_stripe_check(g.r, 1, &ok));
		if (at <= COH_RAID_STEP_WRITE_DATA) {
			// Nothing written yet.
			EXPECT_TRUE(ok) << at;
			EXPECT_EQ(old, read_back(g.r, lba, n)) << at;
			EXPECT_TRUE(volume_matches(g.r, m));
		} else if (at == COH_RAID_STEP_WRITE_PARITY) {
			// The data is written, the parity is not: the write hole, open.
			EXPECT_FALSE(ok);
			EXPECT_EQ(b, read_back(g.r, lba, n));
			// A survivor rewrites the data from its log (read-modify-write keeps the
			// stale parity stale), then repairs.
			ASSERT_EQ(0, coh_raid_write(g.r, lba, n, b.data()));
			ASSERT_EQ(0, coh_raid_stripe_repair(g.r, 1));
			m.set(lba, b);
			ASSERT_EQ(0, coh_raid_stripe_check(g.r, 1, &ok));
			EXPECT_TRUE(ok);
			EXPECT_TRUE(volume_matches(g.r, m));
		} else {
			EXPECT_TRUE(ok);
			m.set(lba, b);
			EXPECT_TRUE(volume_matches(g.r, m));
		}
		// Repair is idempotent from wherever the update stopped, and changes nothing on a
		// consistent stripe.
		ASSERT_EQ(0, coh_raid_stripe_repair(g.r, 1));
		auto once = el->snapshot();
		for (int i = 0; i < 3; i++)
			ASSERT_EQ(0, coh_raid_stripe_repair(g.r, 1));
		EXPECT_EQ(once, el->snapshot());
		EXPECT_EQ(0, inconsistent_stripes(g.r)) << at;
		// What the data reads as after repair is either all old or all new.
		auto got = read_back(g.r, lba, n);
		EXPECT_TRUE(got == old || got == b) << at;
		// Finishing the write completes it.
		ASSERT_EQ(0, coh_raid_write(g.r, lba, n, b.data()));
		m.set(lba, b);
		EXPECT_TRUE(volume_matches(g.r, m));
		EXPECT_EQ(0, inconsistent_stripes(g.r));
	}
}

TEST_P(raid, hook__abort_full_stripe_then_repair)
{
	std::unique_ptr<elements> el;
	group g;

	open("af", el, g);
	model m(g.r, 11);
	m.write_all();
	uint32_t sb = coh_raid_stripe_blocks(g.r);
	auto b = m.random(sb);
	hook_rec h;
	h.abort_stripe = 2;
	h.abort_step = is_raid5() ? COH_RAID_STEP_WRITE_PARITY : COH_RAID_STEP_DONE;

	EXPECT_EQ(42, coh_raid_write_stepped(g.r, 2 * sb, sb, b.data(), rec_hook, &h));
	EXPECT_EQ(COH_RAID_STEP_WRITE_DATA, h.seen.front().second) << "no READ_OLD";
	EXPECT_EQ(b, read_back(g.r, 2 * sb, sb));
	bool ok = true;
	ASSERT_EQ(0, coh_raid_stripe_check(g.r, 2, &ok));
	EXPECT_EQ(!is_raid5(), ok);
	ASSERT_EQ(0, coh_raid_stripe_repair(g.r, 2));
	ASSERT_EQ(0, coh_raid_stripe_check(g.r, 2, &ok));
	EXPECT_TRUE(ok);
	m.set(2 * sb, b);
	EXPECT_TRUE(volume_matches(g.r, m));
}

TEST_P(raid, hook__abort_keeps_earlier_stripes)
{
	std::unique_ptr<elements> el;
	group g;

	open("ak", el, g);
	model m(g.r, 12);
	m.write_all();
	uint32_t sb = coh_raid_stripe_blocks(g.r);
	auto b = m.random(3 * sb);
	hook_rec h;
	h.abort_stripe = 1;
	h.abort_step = COH_RAID_STEP_WRITE_DATA;

	EXPECT_EQ(42, coh_raid_write_stepped(g.r, 0, 3 * sb, b.data(), rec_hook, &h));
	m.set(0, std::vector<uint8_t>(b.begin(), b.begin() + (size_t)sb * GetParam().bs));
	EXPECT_TRUE(volume_matches(g.r, m));
	EXPECT_EQ(0, inconsistent_stripes(g.r));
}

// may_write: the gate is asked before each element write; a refusal stops the update there
// with -EAGAIN (nothing more is written, no element is marked, nothing is logged), and a repair
// with the gate open again makes the stripe whole. A repair refused is -EAGAIN too.
TEST_P(raid, may_write__refusal_stops_the_update_and_marks_nothing)
{
	const cfg &c = GetParam();

	// Let 0 writes through, then 1, ...: each leaves the stripe partly updated.
	for (int allow = 0; allow < (int)c.n; allow++) {
		std::unique_ptr<elements> el;
		gate_rec gr;
		group g;

		open_gated("mw" + std::to_string(allow), el, g, gr);
		model m(g.r, 50 + allow);
		m.write_all();
		uint32_t sb = coh_raid_stripe_blocks(g.r);
		auto b = m.random(sb);

		logged_errors = 0;
		gr.calls = 0;
		gr.allow = allow;
		EXPECT_EQ(-EAGAIN, coh_raid_write(g.r, sb, sb, b.data())) << allow;
		EXPECT_EQ(allow + 1, gr.calls) << "nothing asked (or written) after the refusal";
		EXPECT_EQ(0u, coh_raid_missing(g.r));
		EXPECT_EQ(0, logged_errors.load());
		gr.calls = 0;
		gr.allow = 0;
		EXPECT_EQ(-EAGAIN, coh_raid_stripe_repair(g.r, 1)) << allow;
		EXPECT_EQ(0u, coh_raid_missing(g.r));

		// The gate open again: the repair makes the stripe whole, whatever it holds.
		gr.allow = INT32_MAX;
		ASSERT_EQ(0, coh_raid_stripe_repair(g.r, 1));
		EXPECT_EQ(0, inconsistent_stripes(g.r)) << allow;
		ASSERT_EQ(0, coh_raid_write(g.r, sb, sb, b.data()));
		m.set(sb, b);
		EXPECT_TRUE(volume_matches(g.r, m)) << allow;
		EXPECT_EQ(0, inconsistent_stripes(g.r));
	}
}

// A store's -EAGAIN is the gate's when the gate refuses once asked again (a file store's
// interrupted write not issued again: coh_store_set_write_gate): -EAGAIN, nothing marked. With
// the gate open it is the element's failure, as any other error.
TEST_P(raid, may_write__a_stores_eagain_is_the_gates_only_while_it_refuses)
{
	const cfg &c = GetParam();

	for (bool refuses : { true, false }) {
		std::unique_ptr<elements> el;
		gate_rec gr;
		group g;

		open_gated(std::string("ma") + (refuses ? "r" : "o"), el, g, gr);
		model m(g.r, 60);
		m.write_all();
		uint32_t sb = coh_raid_stripe_blocks(g.r);
		auto b = m.random(sb);

		logged_errors = 0;
		gr.calls = 0;
		if (refuses) {
			for (uint32_t e = 0; e < c.n; e++)
				(*el)[e].fail = FAIL_WRITE_AGAIN;
			gr.allow = 1; // the first write's own check passes, the second ask does not
			EXPECT_EQ(-EAGAIN, coh_raid_write(g.r, sb, sb, b.data()));
			EXPECT_EQ(2, gr.calls);
			EXPECT_EQ(0u, coh_raid_missing(g.r));
			EXPECT_EQ(0, logged_errors.load());
		} else {
			(*el)[1].fail = FAIL_WRITE_AGAIN;
			ASSERT_EQ(0, m.write(0, (uint32_t)coh_raid_nblocks(g.r)));
			EXPECT_EQ(1u << 1, coh_raid_missing(g.r));
			EXPECT_EQ(1, logged_errors.load());
			EXPECT_TRUE(volume_matches(g.r, m));
		}
	}
}

TEST_P(raid, repair__degraded_stripe_left_as_is)
{
	const cfg &c = GetParam();
	std::unique_ptr<elements> el;
	group g;

	open("wh", el, g);
	model m(g.r, 13);
	m.write_all();
	auto b = m.random(1);
	hook_rec h;
	h.abort_stripe = 0;
	h.abort_step = is_raid5() ? COH_RAID_STEP_WRITE_PARITY : COH_RAID_STEP_DONE;
	EXPECT_EQ(42, coh_raid_write_stepped(g.r, 0, 1, b.data(), rec_hook, &h));
	for (uint32_t gone = 0; gone < c.n; gone++) {
		group d;
		coh_raid_attr a = el->attr(c.level, c.chunk, 1u << gone);

		ASSERT_EQ(0, coh_raid_new(&a, &d.r));
		auto before = el->snapshot();
		EXPECT_EQ(0, coh_raid_stripe_repair(d.r, 0)) << gone;
		// RAID-5 leaves the stripe as it is; RAID-1's mirrors were equal already.
		EXPECT_EQ(before, el->snapshot()) << gone;
		if (is_raid5() && gone == 1) {
			// The hole itself: data chunk 1 (element 1) was not written, but rebuilt
			// from the stale parity it reads as something else.
			EXPECT_NE(m.expect(c.chunk, 1), read_back(d.r, c.chunk, 1));
		}
	}
}

TEST_P(raid1, repair__copies_first_mirror)
{
	const cfg &c = GetParam();
	std::unique_ptr<elements> el;
	group g;

	open("rm", el, g);
	model m(g.r, 14);
	m.write_all();
	// One block of the last mirror differs: stripe 1 is inconsistent until repaired.
	auto junk = m.random(1);
	ASSERT_EQ(0, coh_store_write((*el)[c.n - 1].file, c.chunk, 1, junk.data()));
	bool ok = true;
	ASSERT_EQ(0, coh_raid_stripe_check(g.r, 1, &ok));
	EXPECT_FALSE(ok);
	EXPECT_EQ(1, inconsistent_stripes(g.r));
	ASSERT_EQ(0, coh_raid_stripe_repair(g.r, 1));
	EXPECT_EQ(0, inconsistent_stripes(g.r));
	EXPECT_EQ(m.expect(c.chunk, 1), el->raw(c.n - 1, c.chunk, 1));
	// The short last stripe repairs too.
	ASSERT_EQ(0, coh_raid_stripe_repair(g.r, coh_raid_nstripes(g.r) - 1));
	EXPECT_TRUE(volume_matches(g.r, m));
}

TEST_P(raid, store_view__reads_and_writes_the_group)
{
	std::unique_ptr<elements> el;
	group g;

	open("sv", el, g);
	model m(g.r, 15);
	coh_store *s = nullptr;
	ASSERT_EQ(0, coh_raid_store_new(g.r, &s));
	EXPECT_EQ(coh_raid_block_size(g.r), coh_store_block_size(s));
	EXPECT_EQ(coh_raid_nblocks(g.r), coh_store_nblocks(s));
	auto b = m.random(5);
	ASSERT_EQ(0, coh_store_write(s, 3, 5, b.data()));
	EXPECT_EQ(b, read_back(g.r, 3, 5));
	std::vector<uint8_t> got(b.size());
	ASSERT_EQ(0, coh_store_read(s, 3, 5, got.data()));
	EXPECT_EQ(b, got);
	EXPECT_EQ(0, coh_store_flush(s));
	EXPECT_EQ(-EINVAL, coh_store_read(s, coh_raid_nblocks(g.r), 1, got.data()));
	EXPECT_EQ(0, coh_store_delete(&s));
	// The group outlives its view.
	EXPECT_EQ(b, read_back(g.r, 3, 5));
	EXPECT_EQ(0, inconsistent_stripes(g.r));
}

// Threads update different blocks of the same stripes at once; without the stripe lock two
// read-modify-writes of one stripe would interleave and lose a parity update.
TEST_P(raid, threads__updates_of_one_stripe_serialise)
{
	std::unique_ptr<elements> el;
	group g;

	open("th", el, g);
	uint32_t sb = coh_raid_stripe_blocks(g.r), bs = GetParam().bs;
	// Threads that share one stripe, each owning one block of it, and the sets of stripes
	// they are split over when a stripe has fewer than four blocks.
	uint32_t share = std::min<uint32_t>(sb, 4);
	uint32_t sets = sb >= 4 ? 1 : 4 / share;
	uint32_t nthreads = share * sets;
	// Whole stripes only: RAID-1's last one may be short.
	uint64_t nstripes = coh_raid_nstripes(g.r) - 1;
	std::vector<uint8_t> want(coh_raid_nblocks(g.r) * bs, 0); // the files start as zeros
	std::vector<std::thread> th;
	std::atomic<int> failures{ 0 };

	for (uint32_t t = 0; t < nthreads; t++) {
		th.emplace_back([&, t] {
			std::mt19937_64 rng(100 + t);
			std::vector<uint8_t> b(bs), r(bs);

			// Thread t writes block t % share of the stripes s with s % sets ==
			// t / share: no two threads write one block.
			for (int i = 0; i < 150; i++) {
				uint64_t s = rng() % nstripes;
				s = s - s % sets + t / share;
				if (s >= nstripes)
					continue;
				uint64_t lba = s * sb + t % share;
				for (auto &x : b)
					x = (uint8_t)rng();
				if (coh_raid_write(g.r, lba, 1, b.data()))
					failures++;
				std::memcpy(&want[lba * bs], b.data(), bs);
				if (coh_raid_read(g.r, lba, 1, r.data()) || r != b)
					failures++;
			}
		});
	}
	for (auto &x : th)
		x.join();
	EXPECT_EQ(0, failures.load());
	EXPECT_EQ(0, inconsistent_stripes(g.r));
	EXPECT_EQ(0u, coh_raid_missing(g.r));
	EXPECT_TRUE(read_back(g.r, 0, (uint32_t)coh_raid_nblocks(g.r)) == want);
}

// A reader of a whole stripe beside a writer of whole stripes sees one write or the other, never
// a mix: a stripe's update and a read of it do not interleave.
TEST_P(raid, threads__stripe_reads_see_whole_updates)
{
	std::unique_ptr<elements> el;
	group g;

	open("rs", el, g);
	uint32_t bs = GetParam().bs;
	uint32_t sb = coh_raid_stripe_blocks(g.r);
	std::atomic<bool> stop{ false };
	std::atomic<int> mixed{ 0 }, failures{ 0 };

	std::thread writer([&] {
		std::vector<uint8_t> b((size_t)sb * bs);
		for (int i = 1; i <= 150; i++) {
			std::memset(b.data(), i, b.size());
			if (coh_raid_write(g.r, (uint64_t)(i % 3) * sb, sb, b.data()))
				failures++;
		}
		stop = true;
	});
	std::thread reader([&] {
		std::vector<uint8_t> b((size_t)sb * bs);
		for (int i = 0; i < 1000 && !stop; i++) {
			if (coh_raid_read(g.r, (uint64_t)(i % 3) * sb, sb, b.data())) {
				failures++;
				continue;
			}
			for (size_t j = 1; j < b.size(); j++)
				if (b[j] != b[0]) {
					mixed++;
					break;
				}
		}
	});
	writer.join();
	reader.join();
	EXPECT_EQ(0, failures.load());
	EXPECT_EQ(0, mixed.load());
	EXPECT_EQ(0, inconsistent_stripes(g.r));
}

const cfg configs[] = {
	{ COH_RAID1, 2, 1, 512, "raid1_n2_c1" },     { COH_RAID1, 3, 4, 512, "raid1_n3_c4" },
	{ COH_RAID5, 3, 1, 512, "raid5_n3_c1" },     { COH_RAID5, 3, 4, 512, "raid5_n3_c4" },
	{ COH_RAID5, 5, 1, 512, "raid5_n5_c1" },     { COH_RAID5, 5, 4, 512, "raid5_n5_c4" },
	{ COH_RAID5, 4, 2, 4096, "raid5_n4_c2_4k" },
};

std::string cfg_name(const ::testing::TestParamInfo<cfg> &i)
{
	return i.param.name;
}

INSTANTIATE_TEST_SUITE_P(levels, raid, ::testing::ValuesIn(configs), cfg_name);
INSTANTIATE_TEST_SUITE_P(levels, raid1, ::testing::ValuesIn(configs, configs + 2), cfg_name);
INSTANTIATE_TEST_SUITE_P(levels, raid5, ::testing::ValuesIn(configs + 2, std::end(configs)),
			 cfg_name);

// Argument checking, and the paths that only failures reach.
class raid_args : public ::testing::Test
{
      protected:
	void SetUp() override
	{
		coh_log_set_sink(count_sink, nullptr);
		ASSERT_TRUE(dir.ok());
		el = std::make_unique<elements>(dir, "a", 4, 512);
		ASSERT_TRUE(el->ok());
	}
	void TearDown() override
	{
		calloc_fail_after = memalign_fail_after = rwlock_fail_after = -1;
		coh_log_set_sink(nullptr, nullptr);
	}
	temp_dir dir;
	std::unique_ptr<elements> el;
};

TEST_F(raid_args, new__rejects_bad_attributes)
{
	coh_raid *r = nullptr;
	coh_raid_attr a = el->attr(COH_RAID5, 1);

	EXPECT_EQ(-EINVAL, coh_raid_new(nullptr, &r));
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, nullptr));
	a.level = (coh_raid_level)2;
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, &r));
	a = el->attr(COH_RAID5, 1);
	a.nelems = 2;
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, &r)) << "RAID-5 needs three";
	a = el->attr(COH_RAID1, 1);
	a.nelems = 1;
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, &r)) << "RAID-1 needs two";
	a.nelems = COH_RAID_MAX_ELEMS + 1;
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, &r));
	a = el->attr(COH_RAID5, 1, 0x3);
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, &r)) << "two missing";
	a = el->attr(COH_RAID1, 1, 0xf);
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, &r)) << "none present";
	a = el->attr(COH_RAID1, 1);
	a.elems[2] = a.elems[1];
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, &r)) << "one element twice";
	elements wide(dir, "w", 3, 512, 2 * COH_RAID_MAX_CHUNK_BYTES / 512);
	ASSERT_TRUE(wide.ok());
	a = wide.attr(COH_RAID5, COH_RAID_MAX_CHUNK_BYTES / 512);
	ASSERT_EQ(0, coh_raid_new(&a, &r)) << "the largest chunk";
	coh_raid_delete(&r);
	a = wide.attr(COH_RAID5, COH_RAID_MAX_CHUNK_BYTES / 512 + 1);
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, &r)) << "chunk too large";
	a = el->attr(COH_RAID5, (uint32_t)kElemBlocks + 1);
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, &r)) << "chunk beyond an element";
	elements big(dir, "b", 1, 4096);
	ASSERT_TRUE(big.ok());
	a = el->attr(COH_RAID5, 1);
	a.elems[3] = big[0].store;
	EXPECT_EQ(-EINVAL, coh_raid_new(&a, &r)) << "block sizes differ";
	EXPECT_EQ(nullptr, r) << "untouched on failure";
	EXPECT_EQ(0, coh_raid_delete(nullptr));
	EXPECT_EQ(0, coh_raid_delete(&r));
}

TEST_F(raid_args, new__smallest_element_sets_the_size)
{
	elements small(dir, "s", 1, 512, kElemBlocks - 10);
	ASSERT_TRUE(small.ok());
	coh_raid_attr a = el->attr(COH_RAID5, 4);
	a.elems[2] = small[0].store;
	coh_raid *r = nullptr;

	ASSERT_EQ(0, coh_raid_new(&a, &r));
	EXPECT_EQ((kElemBlocks - 10) / 4, coh_raid_nstripes(r));
	EXPECT_EQ((kElemBlocks - 10) / 4 * 12, coh_raid_nblocks(r));
	EXPECT_EQ(0, coh_raid_delete(&r));
	EXPECT_EQ(nullptr, r);
	a = el->attr(COH_RAID1, 0);
	a.elems[0] = small[0].store;
	ASSERT_EQ(0, coh_raid_new(&a, &r));
	EXPECT_EQ(kElemBlocks - 10, coh_raid_nblocks(r));
	EXPECT_EQ(1u, coh_raid_stripe_blocks(r)) << "chunk 0 means 1";
	coh_raid_delete(&r);
}

TEST_F(raid_args, calls__reject_bad_arguments)
{
	coh_raid *r = nullptr;
	coh_raid_attr a = el->attr(COH_RAID5, 2);
	ASSERT_EQ(0, coh_raid_new(&a, &r));
	uint64_t nb = coh_raid_nblocks(r);
	std::vector<uint8_t> b(4 * 512);
	bool ok;
	coh_store *s = nullptr;

	EXPECT_EQ(-EINVAL, coh_raid_read(nullptr, 0, 1, b.data()));
	EXPECT_EQ(-EINVAL, coh_raid_read(r, 0, 1, nullptr));
	EXPECT_EQ(-EINVAL, coh_raid_read(r, 0, 0, b.data()));
	EXPECT_EQ(-EINVAL, coh_raid_read(r, nb, 1, b.data()));
	EXPECT_EQ(-EINVAL, coh_raid_read(r, nb - 1, 2, b.data()));
	EXPECT_EQ(-EINVAL, coh_raid_read(r, UINT64_MAX, 1, b.data()));
	EXPECT_EQ(-EINVAL, coh_raid_read(r, 1, UINT32_MAX, b.data()));
	EXPECT_EQ(-EINVAL, coh_raid_write(nullptr, 0, 1, b.data()));
	EXPECT_EQ(-EINVAL, coh_raid_write(r, 0, 1, nullptr));
	EXPECT_EQ(-EINVAL, coh_raid_write(r, 0, 0, b.data()));
	EXPECT_EQ(-EINVAL, coh_raid_write(r, nb, 1, b.data()));
	EXPECT_EQ(-EINVAL, coh_raid_write(r, UINT64_MAX - 1, 4, b.data()));
	EXPECT_EQ(-EINVAL, coh_raid_write_stepped(r, nb - 1, 2, b.data(), rec_hook, nullptr));
	EXPECT_EQ(-EINVAL, coh_raid_stripe_repair(nullptr, 0));
	EXPECT_EQ(-EINVAL, coh_raid_stripe_repair(r, coh_raid_nstripes(r)));
	EXPECT_EQ(-EINVAL, coh_raid_stripe_check(nullptr, 0, &ok));
	EXPECT_EQ(-EINVAL, coh_raid_stripe_check(r, 0, nullptr));
	EXPECT_EQ(-EINVAL, coh_raid_stripe_check(r, coh_raid_nstripes(r), &ok));
	EXPECT_EQ(-EINVAL, coh_raid_fail_element(nullptr, 0));
	EXPECT_EQ(-EINVAL, coh_raid_fail_element(r, 4));
	EXPECT_EQ(-EINVAL, coh_raid_flush(nullptr));
	EXPECT_EQ(-EINVAL, coh_raid_store_new(nullptr, &s));
	EXPECT_EQ(-EINVAL, coh_raid_store_new(r, nullptr));
	EXPECT_EQ(0u, coh_raid_missing(r));
	EXPECT_EQ(0u, coh_raid_missing(nullptr));
	EXPECT_EQ(0u, coh_raid_block_size(nullptr));
	EXPECT_EQ(0u, coh_raid_nblocks(nullptr));
	EXPECT_EQ(0u, coh_raid_nstripes(nullptr));
	EXPECT_EQ(0u, coh_raid_stripe_blocks(nullptr));
	EXPECT_EQ(UINT64_MAX, coh_raid_stripe_of(nullptr, 0));
	coh_raid_delete(&r);
}

TEST_F(raid_args, new__allocation_and_lock_failures_unwind)
{
	coh_raid *r = nullptr;
	coh_raid_attr a = el->attr(COH_RAID5, 1);

	calloc_fail_after = 0;
	EXPECT_EQ(-ENOMEM, coh_raid_new(&a, &r));
	EXPECT_EQ(nullptr, r);
	// A lock in the middle fails: the ones before it are destroyed (ASAN sees any leak).
	rwlock_fail_after = 17;
	EXPECT_EQ(-EAGAIN, coh_raid_new(&a, &r));
	EXPECT_EQ(nullptr, r);
	ASSERT_EQ(0, coh_raid_new(&a, &r));
	coh_raid_delete(&r);
}

TEST_F(raid_args, calls__scratch_allocation_failure_changes_nothing)
{
	for (coh_raid_level level : { COH_RAID5, COH_RAID1 }) {
		coh_raid *r = nullptr;
		coh_raid_attr a = el->attr(level, 2);
		ASSERT_EQ(0, coh_raid_new(&a, &r));
		std::vector<uint8_t> b(3 * 2 * 512, 0x5a), got(b.size());
		bool ok;

		auto before = el->snapshot();
		memalign_fail_after = 0;
		EXPECT_EQ(-ENOMEM, coh_raid_stripe_check(r, 0, &ok));
		memalign_fail_after = 0;
		EXPECT_EQ(-ENOMEM, coh_raid_stripe_repair(r, 0));
		if (level == COH_RAID5) {
			memalign_fail_after = 0;
			EXPECT_EQ(-ENOMEM, coh_raid_write(r, 1, 2, b.data()));
			// Degraded, a read of the missing chunk needs scratch to rebuild it.
			ASSERT_EQ(0, coh_raid_fail_element(r, 0));
			memalign_fail_after = 0;
			EXPECT_EQ(-ENOMEM, coh_raid_read(r, 0, 6, got.data()));
		}
		memalign_fail_after = -1;
		EXPECT_EQ(before, el->snapshot());
		coh_raid_delete(&r);
	}
}

TEST_F(raid_args, hook__any_nonzero_value_aborts)
{
	coh_raid *r = nullptr;
	coh_raid_attr a = el->attr(COH_RAID5, 1);
	ASSERT_EQ(0, coh_raid_new(&a, &r));
	std::vector<uint8_t> b(512, 1);
	auto before = el->snapshot();

	EXPECT_EQ(-EINTR, coh_raid_write_stepped(
			      r, 0, 1, b.data(),
			      [](void *, uint64_t, coh_raid_step) { return -EINTR; }, nullptr));
	EXPECT_EQ(before, el->snapshot());
	coh_raid_delete(&r);
}

} // namespace

TEST_F(raid_args, set_write_gate__file_stores_only)
{
	temp_dir d;
	coh_store *file = nullptr, *other = nullptr;
	int x = 0;

	ASSERT_TRUE(d.ok());
	ASSERT_EQ(0, coh_store_open_file(d.file("g").c_str(), 512, 64, true, &file));
	ASSERT_EQ(0, coh_store_new(&fault_ops, &x, 512, 64, &other));
	EXPECT_EQ(-EINVAL, coh_store_set_write_gate(nullptr, count_gate, nullptr));
	EXPECT_EQ(-EOPNOTSUPP, coh_store_set_write_gate(other, count_gate, nullptr));
	gate_rec gr; // refuses every ask: only a write issued again asks
	EXPECT_EQ(0, coh_store_set_write_gate(file, count_gate, &gr));
	// A gated store writes with pwrite: what it writes reads back, and an uninterrupted write
	// does not ask the gate (its first issue is the caller's to check).
	std::vector<uint8_t> w(64 * 512), r(64 * 512);
	for (size_t i = 0; i < w.size(); i++)
		w[i] = (uint8_t)(i * 7 + 3);
	EXPECT_EQ(0, coh_store_write(file, 0, 64, w.data()));
	EXPECT_EQ(0, coh_store_flush(file));
	EXPECT_EQ(0, coh_store_read(file, 0, 64, r.data()));
	EXPECT_EQ(w, r);
	EXPECT_EQ(0, gr.calls);
	EXPECT_EQ(0, coh_store_set_write_gate(file, nullptr, nullptr));
	coh_store_delete(&other);
	coh_store_delete(&file);
}

// router_test.cc - the router (engine/route/router.c, include/cohort/router.h) on three
// controller processes of the fabric harness (conf.h: shm here, rdma in the rig), with the
// issue's shape: group ga cabled to controllers 0-1, group gb to 1-2; logical volumes on each,
// a virtual volume striped over both and one concatenating them.
//
// The groups' engines are stand-ins: each group is a store in memory shared by its AMFs'
// processes, which applies a command's blocks at once under the group's lock (as a group's
// coherent cache applies a multi-block write under its exclusive holds), completes inline, can
// be told to fail a range of blocks, and can be told to keep the commands it gets on one
// controller. What is under test is the routing: forwarding from every controller to every
// group, the coordinator of virtual volumes, component commands and their aggregate status,
// conflict detection across controllers, and a target killed mid-command.
//
// Every wait is bounded (the harness's alarm, and each wait's own bound).
#include <gtest/gtest.h>

#include <atomic>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cohort/route_hooks.h"
#include "cohort/router.h"
#include "conf.h"
#include "linz.h"

namespace
{
constexpr uint32_t kBs = 512, kGroupBlocks = 1024, kMaxBlocks = 32;
constexpr unsigned kTimeout = 180;
constexpr uint32_t kNoNode = UINT32_MAX;

// What the controller processes share: the groups' stores, the faults, the writes made.
struct shared_state {
	pthread_mutex_t mu[2];
	uint8_t store[2][kGroupBlocks * kBs];
	uint64_t fail_lo[2], fail_hi[2]; // group blocks that fail
	uint32_t hold_node;		 // its stand-in engines keep what they get
	std::atomic<uint32_t> held;
	std::atomic<uint32_t> nw[3];
	struct {
		uint32_t volume, n;
		uint64_t lba;
		uint32_t acked; // the real-engine trials: its callback said 0
	} w[3][8192];
	// the linearizability test: every controller's history, a block per entry
	std::atomic<uint32_t> nlz[3];
	linz_op lz[3][6144];
	// the compare-and-write race: successes and the winner of each round
	std::atomic<uint32_t> caw_wins[64];
	uint32_t caw_winner[64];
	// the online table changes: the changes are made; I/O done meanwhile
	std::atomic<uint32_t> changes_done, io_during;
	// the stand-in groups' views: the controllers excluded (set by one about to be killed, as
	// a view change excludes a dead node once it is fenced)
	std::atomic<uint32_t> excluded;
	// each survivor's table version, for the change killed midway
	std::atomic<uint64_t> version[3];
	// the paused controller: its pid once it stops itself; resumed by a survivor; done
	std::atomic<int> paused_pid;
	std::atomic<uint32_t> resumed;
	// the change held in its first step while another is asked: 1 held, 2 let go
	std::atomic<uint32_t> busy_step;
};
shared_state *sh;

struct layout {
	coh_map m;
	uint32_t la, lb, sa, sb, ca, cb, vs, vc;
};

void name(char *dst, const char *s)
{
	snprintf(dst, COH_MAP_NAME_MAX + 1, "%s", s);
}

uint32_t logical(coh_map &m, const char *n, uint32_t g, uint64_t first, uint64_t blocks)
{
	coh_map_volume &v = m.volumes[m.nvolumes];

	name(v.name, n);
	v.id[0] = (uint8_t)(m.nvolumes + 1);
	v.kind = COH_MAP_LOGICAL;
	v.group = g;
	v.first_block = first;
	v.blocks = blocks;
	return m.nvolumes++;
}

uint32_t virt(coh_map &m, const char *n, uint32_t layout, uint32_t stripe, uint32_t a, uint32_t b)
{
	coh_map_volume &v = m.volumes[m.nvolumes];

	name(v.name, n);
	v.id[0] = (uint8_t)(m.nvolumes + 1);
	v.kind = COH_MAP_VIRTUAL;
	v.layout = layout;
	v.stripe_blocks = stripe;
	v.ncomp = 2;
	v.comp[0] = a;
	v.comp[1] = b;
	v.blocks = m.volumes[a].blocks + m.volumes[b].blocks;
	return m.nvolumes++;
}

layout make_layout()
{
	layout l;

	memset(&l.m, 0, sizeof(l.m));
	l.m.version = 3;
	l.m.nodes = 3;
	l.m.block_size = kBs;
	l.m.ngroups = 2;
	name(l.m.groups[0].name, "ga");
	l.m.groups[0].amfs = 0x3;
	l.m.groups[0].preferred = 0;
	l.m.groups[0].blocks = kGroupBlocks;
	name(l.m.groups[1].name, "gb");
	l.m.groups[1].amfs = 0x6;
	l.m.groups[1].preferred = 2;
	l.m.groups[1].blocks = kGroupBlocks;
	l.la = logical(l.m, "la", 0, 0, 192);
	l.lb = logical(l.m, "lb", 1, 0, 192);
	l.sa = logical(l.m, "sa", 0, 256, 256);
	l.sb = logical(l.m, "sb", 1, 256, 256);
	l.ca = logical(l.m, "ca", 0, 512, 96);
	l.cb = logical(l.m, "cb", 1, 512, 96);
	l.vs = virt(l.m, "vs", COH_MAP_STRIPE, 8, l.sa, l.sb);
	l.vc = virt(l.m, "vc", COH_MAP_CONCAT, 0, l.ca, l.cb);
	return l;
}

// The stand-in engine of group @arg on this controller.
uint32_t my_id;
pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
std::vector<coh_io *> held_ios;

int stand_in_submit(void *arg, coh_io *io)
{
	uint32_t g = (uint32_t)(uintptr_t)arg, i;
	int st = 0;

	if (__atomic_load_n(&sh->hold_node, __ATOMIC_ACQUIRE) == my_id) {
		pthread_mutex_lock(&held_mu);
		held_ios.push_back(io);
		pthread_mutex_unlock(&held_mu);
		sh->held++;
		return 0;
	}
	if (io->type != COH_IO_FLUSH) {
		if (io->lba + io->nblocks > kGroupBlocks)
			return -EINVAL;
		pthread_mutex_lock(&sh->mu[g]);
		for (i = 0; i < io->nblocks; i++)
			if (io->lba + i >= sh->fail_lo[g] && io->lba + i < sh->fail_hi[g])
				st = -EIO;
		for (i = 0; !st && i < io->nblocks; i++) {
			uint8_t *blk = sh->store[g] + (io->lba + i) * kBs;
			uint8_t *b = (uint8_t *)io->buf + (size_t)i * kBs;

			if (io->type == COH_IO_WRITE)
				memcpy(blk, b, kBs);
			else
				memcpy(b, blk, kBs);
		}
		pthread_mutex_unlock(&sh->mu[g]);
	}
	io->cb(io, st, io->cb_arg);
	return 0;
}

// The stand-in groups' view: every controller but those excluded.
uint32_t stand_in_view(void *, uint32_t)
{
	return 0x7u & ~sh->excluded.load();
}

int router_open(conf_node *cn, const layout &l, coh_route **r, const char *map_path = nullptr)
{
	coh_route_attr a = {};

	my_id = cn->id;
	a.attr_size = sizeof(a);
	a.map = &l.m;
	a.fab = cn->fab;
	a.fwd.max_blocks = kMaxBlocks;
	a.fwd.slots = 8;
	a.map_path = map_path;
	a.group_view = stand_in_view;
	for (uint32_t g = 0; g < 2; g++) {
		if (l.m.groups[g].amfs & (1u << cn->id)) {
			a.group_submit[g] = stand_in_submit;
			a.group_arg[g] = (void *)(uintptr_t)g;
		}
	}
	return coh_route_new(&a, r);
}

// A command and its outcome.
struct rcmd {
	coh_route_io rio;
	std::vector<uint8_t> buf;
	coh_map_status st;
	std::atomic<int> calls{ 0 };
};

pthread_mutex_t wait_mu = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t wait_cv = PTHREAD_COND_INITIALIZER;
uint32_t completed;

void rcmd_done(coh_route_io *rio, const coh_map_status *st)
{
	rcmd *c = static_cast<rcmd *>(rio->arg);

	c->st = *st;
	c->calls++;
	pthread_mutex_lock(&wait_mu);
	completed++;
	pthread_cond_broadcast(&wait_cv);
	pthread_mutex_unlock(&wait_mu);
}

void rcmd_prepare(rcmd &c, uint32_t type, uint32_t vol, uint64_t lba, uint32_t n)
{
	memset(&c.rio, 0, sizeof(c.rio));
	c.buf.assign((size_t)(n ? n : 1) * kBs, 0);
	c.rio.type = type;
	c.rio.volume = vol;
	c.rio.lba = lba;
	c.rio.nblocks = n;
	c.rio.buf = c.buf.data();
	c.rio.done = rcmd_done;
	c.rio.arg = &c;
	c.calls = 0;
	memset(&c.st, 0, sizeof(c.st));
	c.st.status = 1;
}

uint32_t completed_now()
{
	pthread_mutex_lock(&wait_mu);
	uint32_t n = completed;
	pthread_mutex_unlock(&wait_mu);
	return n;
}

// wait_cmd - wait until @c has completed, at most @ms.
bool wait_cmd(rcmd &c, int ms)
{
	struct timespec until;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000 + 1;
	pthread_mutex_lock(&wait_mu);
	while (!c.calls && !pthread_cond_timedwait(&wait_cv, &wait_mu, &until))
		;
	ok = c.calls > 0;
	pthread_mutex_unlock(&wait_mu);
	return ok;
}

bool wait_completed(uint32_t n, int ms)
{
	struct timespec until;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000 + 1;
	pthread_mutex_lock(&wait_mu);
	while (completed < n && !pthread_cond_timedwait(&wait_cv, &wait_mu, &until))
		;
	ok = completed >= n;
	pthread_mutex_unlock(&wait_mu);
	return ok;
}

// submit - submit, waiting for a completion while the router pushes back (bounded).
int submit(coh_route *r, rcmd &c)
{
	for (int i = 0; i < 1000; i++) {
		uint32_t seen = completed_now();
		int ret = coh_route_submit(r, &c.rio);

		if (ret != -EBUSY)
			return ret;
		if (!wait_completed(seen + 1, 10000))
			return -ETIMEDOUT;
	}
	return -EBUSY;
}

// A block's stamp: every 8 bytes of it.
void stamp(uint8_t *b, uint64_t s)
{
	for (uint32_t w = 0; w < kBs / 8; w++)
		memcpy(b + w * 8, &s, 8);
}

bool stamp_of(const uint8_t *b, uint64_t *s)
{
	memcpy(s, b, 8);
	for (uint32_t w = 1; w < kBs / 8; w++)
		if (memcmp(b + w * 8, s, 8))
			return false;
	return true;
}

// Each controller writes its third of every volume through its router, a flush, then reads
// every volume whole (from every controller) and finds each third as its writer left it.
int sc_every_controller_every_volume(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	uint32_t vols[] = { l.la, l.lb, l.vs, l.vc }, n = 0, v;
	std::vector<rcmd> cmds(256);

	CONF_CHECK(router_open(cn, l, &r) == 0, "router");
	for (v = 0; v < 4; v++) {
		uint64_t size = l.m.volumes[vols[v]].blocks, third = size / 3;

		for (uint64_t lba = cn->id * third; lba < (cn->id + 1) * third; lba += 16) {
			rcmd &c = cmds[n++];
			uint32_t len = (uint32_t)std::min<uint64_t>(16, (cn->id + 1) * third - lba);

			rcmd_prepare(c, COH_IO_WRITE, vols[v], lba, len);
			for (uint32_t b = 0; b < len; b++)
				stamp(c.buf.data() + b * kBs, (uint64_t)vols[v] << 32 | (lba + b));
			CONF_CHECK(submit(r, c) == 0, "write %u of volume %u", n, vols[v]);
		}
	}
	rcmd fl;
	rcmd_prepare(fl, COH_IO_FLUSH, 0, 0, 0);
	CONF_CHECK(submit(r, fl) == 0, "flush");
	n++;
	CONF_CHECK(wait_completed(n, 30000), "writes complete");
	for (uint32_t i = 0; i + 1 < n; i++)
		CONF_CHECK(cmds[i].calls == 1 && cmds[i].st.status == 0, "write %u: %d", i,
			   cmds[i].st.status);
	CONF_CHECK(fl.calls == 1 && fl.st.status == 0, "flush: %d", fl.st.status);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier after the writes");

	uint32_t base = completed_now(), nr = 0;
	std::vector<rcmd> reads(256);
	for (v = 0; v < 4; v++) {
		uint64_t size = l.m.volumes[vols[v]].blocks / 3 * 3;

		for (uint64_t lba = 0; lba < size; lba += kMaxBlocks) {
			rcmd &c = reads[nr++];

			rcmd_prepare(c, COH_IO_READ, vols[v], lba,
				     (uint32_t)std::min<uint64_t>(kMaxBlocks, size - lba));
			CONF_CHECK(submit(r, c) == 0, "read");
		}
	}
	CONF_CHECK(wait_completed(base + nr, 30000), "reads complete");
	for (uint32_t i = 0; i < nr; i++) {
		rcmd &c = reads[i];

		CONF_CHECK(c.calls == 1 && c.st.status == 0, "read %u: %d", i, c.st.status);
		for (uint32_t b = 0; b < c.rio.nblocks; b++) {
			uint64_t s, want = (uint64_t)c.rio.volume << 32 | (c.rio.lba + b);

			CONF_CHECK(stamp_of(c.buf.data() + b * kBs, &s) && s == want,
				   "volume %u block %llu: %llx, not %llx", c.rio.volume,
				   (unsigned long long)(c.rio.lba + b), (unsigned long long)s,
				   (unsigned long long)want);
		}
	}
	struct coh_route_stats st;
	coh_route_stats(r, &st);
	// Controller 1 is an AMF of both groups: it forwards only virtual volumes' commands, to
	// their coordinator (0). Controllers 0 and 2 forward the other group's commands.
	CONF_CHECK(st.forwarded > 0, "controller %u forwarded nothing", cn->id);
	if (cn->id == 0)
		CONF_CHECK(st.executed_for_others > 0 && st.components > 0,
			   "the coordinator: executed %llu, split %llu",
			   (unsigned long long)st.executed_for_others,
			   (unsigned long long)st.components);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier before the end");
	coh_route_delete(&r);
	return 0;
}

TEST(router, every_controller_to_every_volume)
{
	EXPECT_EQ(0, conf_run("router_every", 3, sc_every_controller_every_volume, 0, kTimeout));
}

// A component fails (group gb, blocks of sb's second chunk and of cb's start): the host's
// status is that error, at the lowest failing block, with the blocks before it done.
int sc_component_error(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	rcmd w, rd, ok;

	CONF_CHECK(router_open(cn, l, &r) == 0, "router");
	if (cn->id == 2) {
		// vs, blocks 0-31, stripe 8: sa has host blocks 0-7 and 16-23, sb has 8-15 and
		// 24-31. sb's blocks 8-15 (host 24-31) fail.
		pthread_mutex_lock(&sh->mu[1]);
		sh->fail_lo[1] = l.m.volumes[l.sb].first_block + 8;
		sh->fail_hi[1] = sh->fail_lo[1] + 8;
		pthread_mutex_unlock(&sh->mu[1]);
		rcmd_prepare(w, COH_IO_WRITE, l.vs, 0, 32);
		CONF_CHECK(submit(r, w) == 0, "write");
		CONF_CHECK(wait_completed(1, 20000), "write completes");
		CONF_CHECK(w.st.status == -EIO && w.st.fail_block == 24 && w.st.good == 24,
			   "write: %d at %llu, %u good", w.st.status,
			   (unsigned long long)w.st.fail_block, w.st.good);
		// vc, blocks 90-101: ca's 90-95 then cb's 0-5; cb's 2.. fail.
		pthread_mutex_lock(&sh->mu[1]);
		sh->fail_lo[1] = l.m.volumes[l.cb].first_block + 2;
		sh->fail_hi[1] = sh->fail_lo[1] + 1;
		pthread_mutex_unlock(&sh->mu[1]);
		rcmd_prepare(rd, COH_IO_READ, l.vc, 90, 12);
		CONF_CHECK(submit(r, rd) == 0, "read");
		CONF_CHECK(wait_completed(2, 20000), "read completes");
		// The stand-in does not say how far it got: the whole component counts as failed.
		CONF_CHECK(rd.st.status == -EIO && rd.st.fail_block == 6 && rd.st.good == 6,
			   "read: %d at %llu, %u good", rd.st.status,
			   (unsigned long long)rd.st.fail_block, rd.st.good);
		pthread_mutex_lock(&sh->mu[1]);
		sh->fail_lo[1] = sh->fail_hi[1] = 0;
		pthread_mutex_unlock(&sh->mu[1]);
		rcmd_prepare(ok, COH_IO_WRITE, l.vs, 0, 32);
		CONF_CHECK(submit(r, ok) == 0 && wait_completed(3, 20000) && ok.st.status == 0 &&
			       ok.st.good == 32,
			   "the same write once the fault is gone: %d", ok.st.status);
		// Bad commands: refused at once, no callback.
		rcmd bad;
		rcmd_prepare(bad, COH_IO_READ, l.vs, 500, 20);
		CONF_CHECK(coh_route_submit(r, &bad.rio) == -EINVAL, "past the end");
		rcmd_prepare(bad, COH_IO_READ, l.la, 0, kMaxBlocks + 1);
		CONF_CHECK(coh_route_submit(r, &bad.rio) == -EINVAL, "longer than a forward");
		rcmd_prepare(bad, COH_IO_READ, 99, 0, 1);
		CONF_CHECK(coh_route_submit(r, &bad.rio) == -EINVAL, "no such volume");
		rcmd_prepare(bad, COH_IO_COMPARE_WRITE, l.la, 0, kMaxBlocks / 2 + 1);
		CONF_CHECK(coh_route_submit(r, &bad.rio) == -EINVAL,
			   "a compare-and-write longer than half a forward");
		rcmd_prepare(bad, 9, l.la, 0, 1);
		CONF_CHECK(coh_route_submit(r, &bad.rio) == -EINVAL, "no such operation");
		CONF_CHECK(bad.calls == 0, "no callback");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier");
	coh_route_delete(&r);
	return 0;
}

TEST(router, a_component_error_is_the_lowest_failing_block)
{
	EXPECT_EQ(0, conf_run("router_error", 3, sc_component_error, 0, kTimeout));
}

// Every controller writes and reads overlapping ranges of the striped volume at once (each
// write over both groups), eight in flight each. A read that sees two overlapping writes must
// see the same one of them on every block they share: no write is applied in part.
int sc_overlapping(conf_node *cn)
{
	constexpr uint32_t kOps = 300, kDepth = 8;
	layout l = make_layout();
	coh_route *r = nullptr;
	std::vector<rcmd> slot(kDepth);
	std::mt19937_64 rng(1000 + cn->id);
	uint32_t issued = 0, torn = 0, checked = 0;

	CONF_CHECK(router_open(cn, l, &r) == 0, "router");
	CONF_CHECK(conf_barrier(cn) == 0, "start together");
	auto check_read = [&](rcmd &c) {
		std::vector<uint64_t> s(c.rio.nblocks);
		for (uint32_t b = 0; b < c.rio.nblocks; b++)
			if (!stamp_of(c.buf.data() + b * kBs, &s[b]))
				torn++;
		for (uint32_t x = 0; x < c.rio.nblocks; x++) {
			for (uint32_t y = x + 1; y < c.rio.nblocks; y++) {
				if (!s[x] || !s[y] || s[x] == s[y])
					continue;
				// Blocks x and y show writes A and B. If both A and B cover both
				// blocks, one of them was applied in part.
				auto cov = [&](uint64_t st, uint64_t blk) {
					uint32_t node = (uint32_t)(st >> 32) - 1, i = (uint32_t)st;
					uint32_t len =
					    __atomic_load_n(&sh->w[node][i].n, __ATOMIC_ACQUIRE);
					uint64_t lo = sh->w[node][i].lba;
					return lo <= blk && blk < lo + len;
				};
				uint64_t bx = c.rio.lba + x, by = c.rio.lba + y;
				if (cov(s[x], by) && cov(s[y], bx))
					torn++;
				checked++;
			}
		}
	};
	for (uint32_t k = 0; k < kOps + kDepth; k++) {
		rcmd &c = slot[k % kDepth];

		if (k >= kDepth) {
			CONF_CHECK(wait_cmd(c, 30000), "op %u completes", k - kDepth);
			CONF_CHECK(c.calls == 1 && c.st.status == 0, "op %u: %d", k - kDepth,
				   c.st.status);
			if (c.rio.type == COH_IO_READ)
				check_read(c);
		}
		if (k >= kOps)
			continue;
		uint64_t lba = rng() % 96;
		uint32_t n = 2 + (uint32_t)(rng() % 30);
		bool write = rng() % 2;

		rcmd_prepare(c, write ? COH_IO_WRITE : COH_IO_READ, l.vs, lba, n);
		if (write) {
			uint32_t i = sh->nw[cn->id]++;

			sh->w[cn->id][i].volume = l.vs;
			sh->w[cn->id][i].lba = lba;
			__atomic_store_n(&sh->w[cn->id][i].n, n, __ATOMIC_RELEASE);
			for (uint32_t b = 0; b < n; b++)
				stamp(c.buf.data() + b * kBs, (uint64_t)(cn->id + 1) << 32 | i);
		}
		CONF_CHECK(submit(r, c) == 0, "submit %u", k);
		issued++;
	}
	CONF_CHECK(torn == 0, "%u torn of %u pairs checked", torn, checked);
	CONF_CHECK(checked > 0, "no read met two writes");
	struct coh_route_stats st;
	coh_route_stats(r, &st);
	fprintf(stderr, "node %u: %u ops, %u pairs checked, %llu held for a grant\n", cn->id,
		issued, checked, (unsigned long long)st.coord_held);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier before the end");
	coh_route_delete(&r);
	return 0;
}

TEST(router, overlapping_writes_from_every_controller_apply_whole)
{
	EXPECT_EQ(0, conf_run("router_overlap", 3, sc_overlapping, 0, kTimeout));
}

// Controller 2's engines keep the commands they get, and controller 2 is killed holding them:
// controller 0's writes to lb (group gb, preferred AMF 2) and to the striped volume's gb
// components are routed again to controller 1, and each completes once, with success; the data
// reads back.
int sc_target_killed(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	rcmd w[4], rd[4];
	struct timespec until;

	if (cn->id == 0)
		__atomic_store_n(&sh->hold_node, 2u, __ATOMIC_RELEASE);
	CONF_CHECK(router_open(cn, l, &r) == 0, "router");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up");
	if (cn->id == 2) {
		clock_gettime(CLOCK_REALTIME, &until);
		for (int i = 0; i < 20000 && sh->held < 4; i++)
			usleep(1000); // polling a shared counter, bounded: 20 s
		CONF_CHECK(sh->held >= 4, "holding %u", (unsigned)sh->held);
		sh->excluded |= 1u
				<< 2; // on rdma, what lets the survivors route the commands again
		raise(SIGKILL);
		return 1;
	}
	if (cn->id == 0) {
		for (int i = 0; i < 4; i++) {
			uint32_t vol = i < 2 ? l.lb : l.vs;
			uint64_t lba = i % 2 ? 40 : 8; // vs 8-15 and 40-47: sb's chunks

			rcmd_prepare(w[i], COH_IO_WRITE, vol, lba, 8);
			for (uint32_t b = 0; b < 8; b++)
				stamp(w[i].buf.data() + b * kBs, 0xabc000u + i * 16 + b);
			CONF_CHECK(coh_route_submit(r, &w[i].rio) == 0, "write %d", i);
		}
		CONF_CHECK(wait_completed(4, 60000), "writes complete");
		for (int i = 0; i < 4; i++)
			CONF_CHECK(w[i].calls == 1 && w[i].st.status == 0, "write %d: %d calls, %d",
				   i, w[i].calls.load(), w[i].st.status);
		for (int i = 0; i < 4; i++) {
			rcmd_prepare(rd[i], COH_IO_READ, w[i].rio.volume, w[i].rio.lba, 8);
			CONF_CHECK(coh_route_submit(r, &rd[i].rio) == 0, "read %d", i);
		}
		CONF_CHECK(wait_completed(8, 30000), "reads complete");
		for (int i = 0; i < 4; i++)
			CONF_CHECK(rd[i].st.status == 0 && rd[i].buf == w[i].buf, "read %d: %d", i,
				   rd[i].st.status);
		struct coh_route_stats st;
		coh_route_stats(r, &st);
		CONF_CHECK(st.rerouted >= 4, "rerouted %llu", (unsigned long long)st.rerouted);
	}
	uint8_t token = 1;
	CONF_CHECK(conf_send(cn, 1 - cn->id, &token, 1) == 0, "tell the other survivor");
	CONF_CHECK(conf_recv(cn, 1 - cn->id, &token, NULL, 60000) == 0, "hear from it");
	coh_route_delete(&r);
	coh_ep_delete(&cn->ep[2]);
	coh_ep_delete(&cn->ctl[2]);
	cn->n = 2;
	return 0;
}

TEST(router, a_target_killed_mid_command_is_routed_again)
{
	EXPECT_EQ(0, conf_run("router_killed", 3, sc_target_killed, 1u << 2, kTimeout));
}

// Online table changes (router.h coh_route_map_change) on the stand-in engines, each
// controller keeping its table in a file of its own:
// A. controller 2 asks for changes (the configuration controller is 0: they are forwarded
//    there) while controller 1 writes and reads volumes the changes leave alone, every command
//    succeeding: a volume added, grown, a virtual volume deleted; a stale version, a component's
//    deletion and a move are refused. Every controller then has the same table; the deleted
//    volume's id gets -ENXIO; the new volume is written from every controller and read back.
// B. controller 2's router stops; controller 1 adds a volume; controller 2 starts again from
//    its kept (older) table and gets the new one.
// C. every router stops and starts again from the version the test began with: the kept table
//    wins, and the data written to the added volume reads back.
// D. the configuration controller (0) is killed: controller 2's change goes to controller 1,
//    the lowest live one, which makes it with controller 2 (a majority of three).
char map_dir[64];

// map_dir_scope - a fresh map_dir for one test's table files, removed at its end.
struct map_dir_scope {
	bool ok;

	map_dir_scope()
	{
		snprintf(map_dir, sizeof(map_dir), "/tmp/cohort-map-XXXXXX");
		ok = mkdtemp(map_dir) != nullptr;
	}
	~map_dir_scope()
	{
		std::error_code ec;
		std::filesystem::remove_all(map_dir, ec);
	}
};

// map_path - controller @id's table file in map_dir.
void map_path(char *path, size_t len, uint32_t id)
{
	snprintf(path, len, "%s/map%u", map_dir, id);
}

int table_version(coh_route *r, coh_map *m)
{
	return coh_route_map(r, m) ? -1 : (int)m->version;
}

// change - a change made by @edit on this controller's current table, asked through @r.
template <typename F> int change(coh_route *r, F edit, char *err, size_t errlen)
{
	coh_map m;
	int ret = coh_route_map(r, &m);

	if (!ret)
		ret = edit(m);
	return ret ? ret : coh_route_map_change(r, &m, err, errlen);
}

// add_volume - the change that adds logical volume @n (its id's first byte @id) on group @g.
int add_volume(coh_route *r, const char *n, uint8_t id, uint32_t g, uint64_t first, uint64_t blocks,
	       char *err, size_t errlen)
{
	return change(
	    r,
	    [&](coh_map &m) {
		    coh_map_volume v = {};
		    name(v.name, n);
		    v.id[0] = id;
		    v.kind = COH_MAP_LOGICAL;
		    v.group = g;
		    v.first_block = first;
		    v.blocks = blocks;
		    return coh_map_add(&m, &v, nullptr, 0);
	    },
	    err, errlen);
}

// io_until_changed - controller 1: write and read back la and vs until the changes are made.
int io_until_changed(conf_node *cn, coh_route *r, const layout &l)
{
	rcmd w, rd;

	for (uint32_t i = 0; i < 200000 && !sh->changes_done; i++) {
		uint32_t vol = i % 2 ? l.vs : l.la;
		uint64_t lba = (i * 7) % (l.m.volumes[vol].blocks - 4);

		rcmd_prepare(w, COH_IO_WRITE, vol, lba, 4);
		for (uint32_t b = 0; b < 4; b++)
			stamp(w.buf.data() + b * kBs, (uint64_t)i << 8 | b);
		CONF_CHECK(submit(r, w) == 0 && wait_cmd(w, 30000), "write %u", i);
		CONF_CHECK(w.st.status == 0, "write %u during the changes: %d", i, w.st.status);
		rcmd_prepare(rd, COH_IO_READ, vol, lba, 4);
		CONF_CHECK(submit(r, rd) == 0 && wait_cmd(rd, 30000), "read %u", i);
		CONF_CHECK(rd.st.status == 0 && rd.buf == w.buf, "read %u during the changes: %d",
			   i, rd.st.status);
		sh->io_during++;
	}
	CONF_CHECK(sh->changes_done, "the changes never ended");
	(void)cn;
	return 0;
}

int make_changes(conf_node *cn, coh_route *r, const layout &l)
{
	char err[200] = "";
	int ret;

	ret = add_volume(r, "nv", 0x40, 1, 640, 32, err, sizeof(err));
	CONF_CHECK(ret == 0, "add nv: %d %s", ret, err);
	// The same change again: its version is no longer the next one.
	ret = change(
	    r,
	    [](coh_map &m) {
		    m.version--;
		    return 0;
	    },
	    err, sizeof(err));
	CONF_CHECK(ret == -ESTALE, "a stale version: %d %s", ret, err);
	ret = change(
	    r, [](coh_map &m) { return coh_map_grow(&m, "nv", 64, nullptr, 0); }, err, sizeof(err));
	CONF_CHECK(ret == 0, "grow nv: %d %s", ret, err);
	ret = change(
	    r, [](coh_map &m) { return coh_map_remove(&m, "ca", nullptr, 0); }, err, sizeof(err));
	CONF_CHECK(ret == -EBUSY, "remove vc's component: %d", ret);
	ret = change(
	    r, [](coh_map &m) { return coh_map_remove(&m, "vc", nullptr, 0); }, err, sizeof(err));
	CONF_CHECK(ret == 0, "remove vc: %d %s", ret, err);
	ret = change(
	    r,
	    [&](coh_map &m) {
		    m.version++;
		    m.volumes[l.la].first_block = 800; // a move: not online
		    return 0;
	    },
	    err, sizeof(err));
	CONF_CHECK(ret == -EINVAL && strstr(err, "moved"), "a move: %d %s", ret, err);
	return 0;
}

// nv_io - write (@write) or read back this controller's third of nv; bounded.
int nv_io(conf_node *cn, coh_route *r, const layout &l, bool write)
{
	coh_map m;
	int v;

	CONF_CHECK(coh_route_map(r, &m) == 0 && (v = coh_map_find(&m, "nv")) >= 0, "nv");
	for (uint32_t part = 0; part < 3; part++) {
		if (write && part != cn->id)
			continue;
		rcmd c;

		rcmd_prepare(c, write ? COH_IO_WRITE : COH_IO_READ, (uint32_t)v, part * 20, 20);
		memcpy(c.rio.volume_id, m.volumes[v].id, COH_MAP_ID_BYTES);
		if (write)
			for (uint32_t b = 0; b < 20; b++)
				stamp(c.buf.data() + b * kBs, 0x77700u + part * 20 + b);
		CONF_CHECK(submit(r, c) == 0 && wait_cmd(c, 30000), "nv part %u", part);
		CONF_CHECK(c.st.status == 0, "nv part %u: %d", part, c.st.status);
		for (uint32_t b = 0; !write && b < 20; b++) {
			uint64_t st;

			CONF_CHECK(stamp_of(c.buf.data() + b * kBs, &st) &&
				       st == 0x77700u + part * 20 + b,
				   "nv block %u", part * 20 + b);
		}
	}
	(void)l;
	return 0;
}

// wait_down - until @peer is no longer among the forwarder's live peers (bounded: 30 s).
bool wait_down(coh_route *r, uint32_t peer)
{
	for (int i = 0; i < 3000 && (coh_fwd_up(coh_route_forwarder(r)) & (1u << peer)); i++)
		usleep(10000); // polling the forwarder's view, bounded
	return !(coh_fwd_up(coh_route_forwarder(r)) & (1u << peer));
}

int sc_online(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	char path[128], err[200] = "";
	uint8_t vc_id[COH_MAP_ID_BYTES];
	uint8_t token = 1;
	coh_map m;
	int ret;

	map_path(path, sizeof(path), cn->id);
	memcpy(vc_id, l.m.volumes[l.vc].id, COH_MAP_ID_BYTES);
	CONF_CHECK(router_open(cn, l, &r, path) == 0, "router");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up");
	// A
	if (cn->id == 1 && io_until_changed(cn, r, l))
		return 1;
	if (cn->id == 2) {
		ret = make_changes(cn, r, l);
		sh->changes_done = 1;
		if (ret)
			return 1;
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: changes made");
	CONF_CHECK(table_version(r, &m) == 6, "version %llu", (unsigned long long)m.version);
	CONF_CHECK(coh_map_find(&m, "vc") < 0 && coh_map_find(&m, "nv") >= 0 &&
		       m.volumes[coh_map_find(&m, "nv")].blocks == 64,
		   "the table's volumes");
	rcmd gone;
	rcmd_prepare(gone, COH_IO_READ, l.vc, 0, 1);
	memcpy(gone.rio.volume_id, vc_id, COH_MAP_ID_BYTES);
	CONF_CHECK(coh_route_submit(r, &gone.rio) == -ENXIO, "the deleted volume");
	if (nv_io(cn, r, l, true))
		return 1;
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: nv written");
	if (nv_io(cn, r, l, false))
		return 1;
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: nv read");
	// B
	if (cn->id == 2) {
		coh_route_delete(&r);
		CONF_CHECK(conf_send(cn, 1, &token, 1) == 0, "tell 1");
		CONF_CHECK(conf_recv(cn, 1, &token, NULL, 60000) == 0, "hear from 1");
		CONF_CHECK(router_open(cn, l, &r, path) == 0, "router again");
	} else if (cn->id == 1) {
		CONF_CHECK(conf_recv(cn, 2, &token, NULL, 60000) == 0, "hear from 2");
		wait_down(r, 2);
		ret = add_volume(r, "nw", 0x41, 0, 704, 16, err, sizeof(err));
		CONF_CHECK(ret == 0, "add nw with 2 away: %d %s", ret, err);
		CONF_CHECK(conf_send(cn, 2, &token, 1) == 0, "tell 2");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: 2 is back");
	CONF_CHECK(table_version(r, &m) == 7 && coh_map_find(&m, "nw") >= 0,
		   "after 2's restart: version %llu", (unsigned long long)m.version);
	// C
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: before the restart");
	coh_route_delete(&r);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router stopped");
	CONF_CHECK(router_open(cn, l, &r, path) == 0, "router after the restart");
	CONF_CHECK(table_version(r, &m) == 7, "after the restart: version %llu",
		   (unsigned long long)m.version);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up again");
	if (nv_io(cn, r, l, false))
		return 1;
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: before the kill");
	// D
	if (cn->id == 0)
		raise(SIGKILL);
	CONF_CHECK(wait_down(r, 0), "controller 0 still up");
	if (cn->id == 2) {
		ret = change(
		    r, [](coh_map &mm) { return coh_map_grow(&mm, "nw", 32, nullptr, 0); }, err,
		    sizeof(err));
		CONF_CHECK(ret == 0, "grow nw through controller 1: %d %s", ret, err);
	}
	uint32_t other = 3 - cn->id;
	CONF_CHECK(conf_send(cn, other, &token, 1) == 0, "tell the other survivor");
	CONF_CHECK(conf_recv(cn, other, &token, NULL, 60000) == 0, "hear from it");
	CONF_CHECK(table_version(r, &m) == 8 && m.volumes[coh_map_find(&m, "nw")].blocks == 32,
		   "after the change by 1: version %llu", (unsigned long long)m.version);
	CONF_CHECK(sh->io_during > 0, "no I/O ran during the changes");
	coh_route_delete(&r);
	_exit(0); // the harness's goodbye needs controller 0
}

// A change whose configuration controller dies midway: controller 0's offer of the new version
// to controller 2 is lost, and 0 is SIGKILLed once controller 1 has answered its own (so 1 has
// kept and adopted the new version, 2 has not: route_hooks.h). The asker (2) gets an error; the
// survivors must end with one table, the new one (each offers its own when the connection to 0
// breaks, and the newer wins), and the next change, made by controller 1 now, works. **Without
// those offers the survivors stay one version apart** and the test fails.
int kill_midway(void *, uint32_t point, uint64_t detail)
{
	if (point == COH_ROUTE_POINT_CHANGE_SEND && detail == (2ull << 32 | 2u))
		return COH_ROUTE_DROP;
	if (point == COH_ROUTE_POINT_CHANGE_ANSWER && detail == (2ull << 32 | 1u))
		raise(SIGKILL);
	return 0;
}

// The other steps the configuration controller can die between (route_hooks.h): with every
// peer's SYNC answered and no PUSH sent yet, and with SYNC sent to controller 1 only.
uint32_t change_kill_mode; // 0: kill_midway; 1: before the first PUSH; 2: between the SYNCs

int kill_at_change_step(void *, uint32_t point, uint64_t detail)
{
	if (point == COH_ROUTE_POINT_CHANGE_SEND &&
	    detail == (change_kill_mode == 1 ? 2ull << 32 | 1u : 1ull << 32 | 2u))
		raise(SIGKILL);
	return 0;
}

int sc_change_killed(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	char err[200] = "";
	coh_map m;
	int ret;

	CONF_CHECK(router_open(cn, l, &r) == 0, "router");
	if (cn->id == 0) {
		coh_route_hooks h = { sizeof(h),
				      change_kill_mode ? kill_at_change_step : kill_midway,
				      nullptr };
		CONF_CHECK(coh_route_set_hooks(r, &h) == 0, "hooks");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up");
	if (cn->id == 0) {
		for (int i = 0; i < 60000; i++)
			usleep(1000); // killed by its hook within this (bounded: 60 s)
		CONF_CHECK(false, "the hook never ran");
	}
	if (cn->id == 2) {
		ret = add_volume(r, "nk", 0x42, 1, 640, 32, err, sizeof(err));
		CONF_CHECK(ret != 0, "a change whose controller died reported success");
	}
	CONF_CHECK(wait_down(r, 0), "controller 0 still up");
	// One table on both survivors (bounded: 20 s). Killed after a peer accepted, the new one:
	// the recovery round that finishes it runs after the death, so both first read the old.
	uint32_t other = 3 - cn->id;
	bool same = false;
	for (int i = 0; i < 2000 && !same; i++) {
		sh->version[cn->id] = (uint64_t)table_version(r, &m);
		same = sh->version[cn->id] == sh->version[other] &&
		       (change_kill_mode || sh->version[cn->id] == 4);
		if (!same)
			usleep(10000); // polling the two survivors' versions, bounded
	}
	// Killed after a PUSH was answered, the new table is kept somewhere: it must win. Killed
	// before, either table may be the survivors' one, as long as it is one, whole.
	CONF_CHECK(same && (change_kill_mode ? m.version == 3 || m.version == 4 : m.version == 4) &&
		       (coh_map_find(&m, "nk") >= 0) == (m.version == 4),
		   "controller %u at version %llu, controller %u at %llu (%s wanted, nk with 4)",
		   cn->id, (unsigned long long)sh->version[cn->id], other,
		   (unsigned long long)sh->version[other], change_kill_mode ? "3 or 4" : "4");
	fprintf(stderr, "node %u: version %llu after the configuration controller's death\n",
		cn->id, (unsigned long long)m.version);
	uint8_t token = 1;
	CONF_CHECK(conf_send(cn, other, &token, 1) == 0, "tell the other survivor");
	CONF_CHECK(conf_recv(cn, other, &token, NULL, 60000) == 0, "hear from it");
	uint64_t before = m.version;
	if (cn->id == 2) {
		// The recovery round may still be offering the table it finished: -EBUSY meanwhile.
		ret = -EBUSY;
		for (int i = 0; i < 400 && ret == -EBUSY; i++) {
			ret = add_volume(r, "nl", 0x43, 0, 704, 16, err, sizeof(err));
			if (ret == -EBUSY)
				usleep(50000); // asked again, bounded: 20 s
		}
		CONF_CHECK(ret == 0, "the next change, through controller 1: %d %s", ret, err);
	}
	CONF_CHECK(conf_send(cn, other, &token, 1) == 0, "tell the other survivor again");
	CONF_CHECK(conf_recv(cn, other, &token, NULL, 60000) == 0, "hear from it again");
	CONF_CHECK(table_version(r, &m) == (int)before + 1 && coh_map_find(&m, "nl") >= 0,
		   "after the next change: version %llu (was %llu)", (unsigned long long)m.version,
		   (unsigned long long)before);
	coh_route_delete(&r);
	_exit(0); // the harness's goodbye needs controller 0
}

TEST(router, a_change_whose_controller_dies_midway_leaves_one_table)
{
	change_kill_mode = 0;
	EXPECT_EQ(0, conf_run("router_change_killed", 3, sc_change_killed, 1u << 0, kTimeout));
}

// The configuration controller SIGKILLed with every SYNC answered and no PUSH sent, then with
// SYNC sent to one peer only: the survivors end with one table (the old or the new, whole), the
// asker gets an error, and the next change is made by controller 1.
TEST(router, a_change_whose_controller_dies_between_sync_and_push_leaves_one_table)
{
	for (uint32_t mode = 1; mode <= 2; mode++) {
		change_kill_mode = mode;
		EXPECT_EQ(0,
			  conf_run("router_change_killed", 3, sc_change_killed, 1u << 0, kTimeout))
		    << "mode " << mode;
	}
	change_kill_mode = 0;
}

// A change accepted by a minority, whose proposer and acceptor both die (docs/routing.md,
// "Online changes"). Run 1: controller 0 makes nk: its ACCEPT to 2 is lost, 1 keeps nk as
// accepted and is killed before it answers, and 0 is killed when that answer fails. Run 2 (the
// same table files): 0 and 2 start; 2 asks for nl; 1 starts last. Every controller must end
// with one table, nk's change finished (0 accepted it too: it may have been chosen) and nl made
// after it, with no conflict. **When a peer put a table in effect as it took it (the protocol
// before), 1 came back with nk as version 4 in effect and 0 and 2 had made nl version 4**: two
// tables of one version, the conflict this test fails on.
int accepted_killer(void *arg, uint32_t point, uint64_t detail)
{
	coh_route *r = static_cast<coh_route *>(arg);
	coh_map m;

	if (point == COH_ROUTE_POINT_CHANGE_ACCEPTED && my_id == 1) {
		// Kept as accepted, and not in effect here: the table is still the one before.
		sh->version[1] =
		    coh_route_map(r, &m) ? 0 : m.version + (coh_map_find(&m, "nk") >= 0 ? 100 : 0);
		raise(SIGKILL);
	}
	if (my_id == 0 && point == COH_ROUTE_POINT_CHANGE_SEND && detail == (2ull << 32 | 2u))
		return COH_ROUTE_DROP;
	if (my_id == 0 && point == COH_ROUTE_POINT_CHANGE_ANSWER && detail == (2ull << 32 | 1u))
		raise(SIGKILL);
	return 0;
}

// add_nl - ask for volume nl (over ga's blocks 640-655) until it is made: again while another
// change runs or the table moved under the ask (-EAGAIN, -EBUSY, -ESTALE), bounded: 60 s. 0, or
// the last error with why in @err.
int add_nl(coh_route *r, char *err, size_t errlen)
{
	int ret = -1;

	for (int i = 0; i < 1200 && ret; i++) {
		ret = add_volume(r, "nl", 0x53, 0, 640, 16, err, errlen);
		if (ret && ret != -EAGAIN && ret != -EBUSY && ret != -ESTALE)
			break;
		if (ret)
			usleep(50000); // another change (a recovery round) runs: ask again, bounded
	}
	return ret;
}

// wait_version - until this controller's table is version @v (a peer's offer, a recovery
// round), bounded: 60 s. The version it has then, its table in @m.
int wait_version(coh_route *r, coh_map *m, int v)
{
	for (int i = 0; i < 6000 && table_version(r, m) != v; i++)
		usleep(10000); // polling this controller's table, bounded
	return table_version(r, m);
}

// nk_then_nl - how the table-change tests end: version @v with nk and nl, and no conflict;
// else why, in @why.
bool nk_then_nl(coh_route *r, int v, char *why, size_t len)
{
	struct coh_route_stats st;
	coh_map m;

	coh_route_stats(r, &st);
	if (table_version(r, &m) != v || coh_map_find(&m, "nk") < 0 || coh_map_find(&m, "nl") < 0) {
		snprintf(why, len, "version %llu, nk %d, nl %d", (unsigned long long)m.version,
			 coh_map_find(&m, "nk"), coh_map_find(&m, "nl"));
		return false;
	}
	if (st.conflict_peers || st.map_conflicts) {
		snprintf(why, len, "conflicts: %#x, %llu", st.conflict_peers,
			 (unsigned long long)st.map_conflicts);
		return false;
	}
	return true;
}

int sc_accepted_run1(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	char path[128], err[200] = "";
	coh_map m;

	map_path(path, sizeof(path), cn->id);
	CONF_CHECK(router_open(cn, l, &r, path) == 0, "router");
	coh_route_hooks h = { sizeof(h), accepted_killer, r };
	CONF_CHECK(coh_route_set_hooks(r, &h) == 0, "hooks");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up");
	if (cn->id != 2) {
		for (int i = 0; i < 60000; i++)
			usleep(1000); // killed by its hook within this (bounded: 60 s)
		CONF_CHECK(false, "the hook never ran");
	}
	CONF_CHECK(add_volume(r, "nk", 0x52, 0, 608, 16, err, sizeof(err)) != 0,
		   "a change whose controller died reported success");
	CONF_CHECK(wait_down(r, 0) && wait_down(r, 1), "0 or 1 still up");
	CONF_CHECK(table_version(r, &m) == (int)l.m.version && coh_map_find(&m, "nk") < 0,
		   "2 never accepted nk, and has version %llu", (unsigned long long)m.version);
	coh_route_delete(&r);
	_exit(0); // the harness's goodbye needs controller 0
}

int sc_accepted_run2(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	char path[128], err[200] = "";
	uint8_t token = 1;
	coh_map m;
	int ret = -1;

	map_path(path, sizeof(path), cn->id);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every process up");
	if (cn->id == 1)
		CONF_CHECK(conf_recv(cn, 2, &token, NULL, 60000) == 0, "hear from 2");
	CONF_CHECK(router_open(cn, l, &r, path) == 0, "router");
	if (cn->id == 2) {
		// 0 and 2 start together with 1 away: their forwarders meet in a reconnect round
		// (bounded: 60 s)
		for (int i = 0; i < 6000 && !(coh_fwd_up(coh_route_forwarder(r)) & 1u); i++)
			usleep(10000); // polling the forwarder's view, bounded
		ret = add_nl(r, err, sizeof(err));
		CONF_CHECK(ret == 0, "add nl: %d %s", ret, err);
		CONF_CHECK(conf_send(cn, 1, &token, 1) == 0, "tell 1");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: 1 is back");
	CONF_CHECK(nk_then_nl(r, (int)l.m.version + 2, err, sizeof(err)), "%s", err);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: checked");
	coh_route_delete(&r);
	return 0;
}

TEST(router, a_change_accepted_by_a_minority_whose_controllers_die_is_finished_not_forked)
{
	map_dir_scope dir;
	ASSERT_TRUE(dir.ok);
	sh->version[1] = 0;
	EXPECT_EQ(0, conf_run("router_accepted_1", 3, sc_accepted_run1, 0x3u, kTimeout));
	EXPECT_EQ(sh->version[1].load(), (uint64_t)make_layout().m.version)
	    << "1's table when it had accepted nk (+100: nk in effect)";
	EXPECT_EQ(0, conf_run("router_accepted_2", 3, sc_accepted_run2, 0, kTimeout));
}

// A whole-cluster crash inside a table change (docs/routing.md, "Online changes"): every
// controller SIGKILLed (mode 1) once the change is chosen and no one has it in effect (each kept
// nk as accepted and died before answering, 0 when their answers failed); (mode 2) once 0 and 1
// have it in effect and 2 only accepted it (2 died at its accept, 0 when 1 answered the
// commit, 1 once nk was in effect); (mode 3) right after the asker heard success. Run 2, on the
// same table files, all three at once: each ends with nk at the next version (chosen or
// acknowledged, it is the table: the recovery round finishes it), no conflict, and the next
// change works. **With the acceptor's state not kept on disk, mode 1 comes back with version 3
// everywhere and nk lost** although a majority had accepted it (checked: the .accept files
// removed between the runs fail run 2's first check).
uint32_t crash_all_mode;

int crash_all_hook(void *arg, uint32_t point, uint64_t detail)
{
	uint32_t step = (uint32_t)(detail >> 32), peer = (uint32_t)detail;

	(void)arg;
	if (point == COH_ROUTE_POINT_CHANGE_ACCEPTED &&
	    ((crash_all_mode == 1 && my_id != 0) || (crash_all_mode == 2 && my_id == 2)))
		raise(SIGKILL);
	if (point == COH_ROUTE_POINT_CHANGE_ANSWER && my_id == 0 &&
	    ((crash_all_mode == 1 && step == 2) || (crash_all_mode == 2 && step == 3 && peer == 1)))
		raise(SIGKILL);
	return 0;
}

int sc_crash_all_run1(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	char path[128], err[200] = "";
	coh_map m;
	int ret;

	map_path(path, sizeof(path), cn->id);
	CONF_CHECK(router_open(cn, l, &r, path) == 0, "router");
	coh_route_hooks h = { sizeof(h), crash_all_hook, r };
	CONF_CHECK(coh_route_set_hooks(r, &h) == 0, "hooks");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up");
	if (cn->id == 2) {
		// modes 1 and 2: killed by its hook inside this call
		ret = add_volume(r, "nk", 0x52, 0, 608, 16, err, sizeof(err));
		CONF_CHECK(crash_all_mode == 3 && ret == 0, "mode %u: add nk: %d %s",
			   crash_all_mode, ret, err);
		sh->changes_done = 1;
	} else {
		bool mine = crash_all_mode == 2 && cn->id == 1;

		// killed by its hook, or kills itself below (bounded: 60 s)
		for (int i = 0; i < 60000 && !sh->changes_done &&
				!(mine && table_version(r, &m) == (int)l.m.version + 1);
		     i++)
			usleep(1000); // polling the shared flag or its table, bounded
		CONF_CHECK(sh->changes_done || mine, "mode %u: never killed", crash_all_mode);
	}
	raise(SIGKILL);
	return 1;
}

int sc_crash_all_run2(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	char path[128], err[200] = "";
	coh_map m;
	int ret = -1;

	map_path(path, sizeof(path), cn->id);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every process up");
	CONF_CHECK(router_open(cn, l, &r, path) == 0, "router");
	CONF_CHECK(wait_version(r, &m, (int)l.m.version + 1) == (int)l.m.version + 1 &&
		       coh_map_find(&m, "nk") >= 0,
		   "mode %u: version %llu, nk %d", crash_all_mode, (unsigned long long)m.version,
		   coh_map_find(&m, "nk"));
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: nk everywhere");
	if (cn->id == 2) {
		ret = add_nl(r, err, sizeof(err));
		CONF_CHECK(ret == 0, "add nl: %d %s", ret, err);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: nl made");
	CONF_CHECK(nk_then_nl(r, (int)l.m.version + 2, err, sizeof(err)), "%s", err);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: checked");
	coh_route_delete(&r);
	return 0;
}

TEST(router, a_whole_cluster_crash_inside_a_change_keeps_the_chosen_table)
{
	for (uint32_t mode = 1; mode <= 3; mode++) {
		map_dir_scope dir;
		ASSERT_TRUE(dir.ok);
		crash_all_mode = mode;
		sh->changes_done = 0;
		EXPECT_EQ(0, conf_run("router_crash_all_1", 3, sc_crash_all_run1, 0x7u, kTimeout))
		    << "mode " << mode;
		EXPECT_EQ(0, conf_run("router_crash_all_2", 3, sc_crash_all_run2, 0, kTimeout))
		    << "mode " << mode;
	}
	crash_all_mode = 0;
}

// The configuration controller paused (SIGSTOP: a frozen VM) inside its own change: its ACCEPT
// of nk reached controller 1 only (the one to 2 lost), and it stops when 1's answer comes, as
// the groups' views exclude it (the stand-in views: sh->excluded). Its connection stays up.
// Controller 2 then asks for nl: the role has gone to 1, the lowest live controller, whose
// round finds nk accepted and finishes it first (2 asks again: nl comes after it). Then 1 takes
// 0 back into the views and resumes it: 0 finishes its own round (nk was chosen: the same
// table), and every controller ends with nk and nl, in order, and no conflict. **With the role
// kept by the lowest connected controller (before), 1 refused the change as not its role (node
// 0's, paused) and nl was never made** (checked).
int paused_config_hook(void *arg, uint32_t point, uint64_t detail)
{
	(void)arg;
	if (my_id == 0 && point == COH_ROUTE_POINT_CHANGE_SEND && detail == (2ull << 32 | 2u))
		return COH_ROUTE_DROP;
	if (my_id == 0 && point == COH_ROUTE_POINT_CHANGE_ANSWER && detail == (2ull << 32 | 1u) &&
	    !sh->paused_pid.load()) {
		sh->excluded |= 1u << 0; // as both groups' view changes would, once it is fenced
		sh->paused_pid.store(getpid());
		raise(SIGSTOP);
	}
	return 0;
}

int sc_paused_config(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	char path[128], err[200] = "";
	uint8_t token = 1;
	coh_map m;
	int ret = -1;

	map_path(path, sizeof(path), cn->id);
	CONF_CHECK(router_open(cn, l, &r, path) == 0, "router");
	coh_route_hooks h = { sizeof(h), paused_config_hook, r };
	CONF_CHECK(coh_route_set_hooks(r, &h) == 0, "hooks");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up");
	if (cn->id == 0) {
		// paused inside; nk was chosen, so made, whatever this call says (it may have
		// taken the newer table first)
		ret = add_volume(r, "nk", 0x52, 0, 608, 16, err, sizeof(err));
		CONF_CHECK(sh->resumed.load() == 1, "never paused (add nk: %d %s)", ret, err);
	} else if (cn->id == 2) {
		for (int i = 0; i < 6000 && !sh->paused_pid.load(); i++)
			usleep(10000); // until 0 has stopped itself, bounded: 60 s
		CONF_CHECK(sh->paused_pid.load() != 0, "0 never paused");
		ret = add_nl(r, err, sizeof(err)); // nk's change is finished first: asked again
		CONF_CHECK(ret == 0, "add nl with 0 paused: %d %s", ret, err);
		CONF_CHECK(table_version(r, &m) == (int)l.m.version + 2 &&
			       coh_map_find(&m, "nk") >= 0,
			   "with 0 paused: version %llu, nk %d", (unsigned long long)m.version,
			   coh_map_find(&m, "nk"));
		CONF_CHECK(conf_send(cn, 1, &token, 1) == 0, "tell 1");
	} else {
		bool heard = conf_recv(cn, 2, &token, NULL, 120000) == 0;

		sh->excluded &= ~(1u << 0); // taken back into the groups
		sh->resumed.store(1);
		// resumed even when 2 failed: a stopped process would outlive the harness's alarm
		CONF_CHECK(sh->paused_pid.load() && kill(sh->paused_pid.load(), SIGCONT) == 0,
			   "resume 0");
		CONF_CHECK(heard, "hear from 2");
	}
	wait_version(r, &m, (int)l.m.version + 2); // 0 takes the newer table (offers)
	CONF_CHECK(nk_then_nl(r, (int)l.m.version + 2, err, sizeof(err)), "%s", err);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: checked");
	coh_route_delete(&r);
	return 0;
}

TEST(router, the_configuration_controller_paused_mid_change_hands_its_role_on)
{
	map_dir_scope dir;
	ASSERT_TRUE(dir.ok);
	sh->excluded = 0;
	sh->paused_pid.store(0);
	sh->resumed.store(0);
	EXPECT_EQ(0, conf_run("router_paused_config", 3, sc_paused_config, 0, kTimeout));
	sh->excluded = 0;
	sh->paused_pid.store(0);
	sh->resumed.store(0);
}

// A change asked while another runs: controller 0's own change (nk) is held in its PREPARE
// step (its hook, on the asking thread) until 0 has refused controller 2's change (nl) as busy
// once (changes_busy). 2's call must not return -EBUSY: it asks again, backing off, until 0's
// change is made, and then hears -ESTALE (its table was built on the version before), builds nl
// on the new table and makes it. **With -EBUSY returned at once (before), 2's first call fails
// with it** (checked).
int busy_hook(void *arg, uint32_t point, uint64_t detail)
{
	coh_route *r = static_cast<coh_route *>(arg);
	struct coh_route_stats st = {};

	if (my_id != 0 || point != COH_ROUTE_POINT_CHANGE_SEND || (detail >> 32) != 1 ||
	    sh->busy_step.load() != 0)
		return 0;
	sh->busy_step.store(1);
	for (int i = 0; i < 6000 && !st.changes_busy; i++) {
		usleep(10000); // polling this controller's counter, bounded: 60 s
		coh_route_stats(r, &st);
	}
	sh->busy_step.store(2);
	return 0;
}

int sc_busy(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	char err[200] = "";
	struct coh_route_stats st;
	coh_map m;
	int ret = -1;

	CONF_CHECK(router_open(cn, l, &r) == 0, "router");
	coh_route_hooks h = { sizeof(h), busy_hook, r };
	CONF_CHECK(coh_route_set_hooks(r, &h) == 0, "hooks");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up");
	if (cn->id == 0) {
		ret = add_volume(r, "nk", 0x52, 0, 608, 16, err, sizeof(err));
		CONF_CHECK(ret == 0, "add nk: %d %s", ret, err);
		coh_route_stats(r, &st);
		CONF_CHECK(sh->busy_step.load() == 2 && st.changes_busy >= 1,
			   "2's change never found 0's running (step %u, busy %llu)",
			   sh->busy_step.load(), (unsigned long long)st.changes_busy);
	} else if (cn->id == 2) {
		for (int i = 0; i < 6000 && !sh->busy_step.load(); i++)
			usleep(10000); // until 0's change is held, bounded: 60 s
		CONF_CHECK(sh->busy_step.load() != 0, "0's change never started");
		for (int i = 0; i < 20 && ret; i++) {
			ret = add_volume(r, "nl", 0x53, 0, 640, 16, err, sizeof(err));
			if (ret && ret != -ESTALE)
				break; // -EBUSY among them: the point of the test
		}
		CONF_CHECK(ret == 0, "add nl while nk's change runs: %d %s", ret, err);
	}
	CONF_CHECK(wait_version(r, &m, (int)l.m.version + 2) == (int)l.m.version + 2 &&
		       coh_map_find(&m, "nk") >= 0 && coh_map_find(&m, "nl") >= 0,
		   "version %llu, nk %d, nl %d", (unsigned long long)m.version,
		   coh_map_find(&m, "nk"), coh_map_find(&m, "nl"));
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: checked");
	coh_route_delete(&r);
	return 0;
}

TEST(router, a_change_asked_while_another_runs_waits_for_it)
{
	sh->busy_step.store(0);
	EXPECT_EQ(0, conf_run("router_busy", 3, sc_busy, 0, kTimeout));
}

TEST(router, the_table_changes_online_survives_restarts_and_its_controller)
{
	map_dir_scope dir;
	ASSERT_TRUE(dir.ok);
	EXPECT_EQ(0, conf_run("router_online", 3, sc_online, 1u << 0, kTimeout));
}

// vol_io - write (@write) or read back blocks @lba.. of volume @name (its stamps from @seed)
// through @r: the router's answer to the submit, or the command's status. Bounded.
int vol_io(coh_route *r, const char *vname, uint64_t lba, uint32_t n, bool write, uint64_t seed)
{
	coh_map m;
	rcmd c;
	int v, ret;

	if (coh_route_map(r, &m) || (v = coh_map_find(&m, vname)) < 0)
		return -ENXIO;
	rcmd_prepare(c, write ? COH_IO_WRITE : COH_IO_READ, (uint32_t)v, lba, n);
	memcpy(c.rio.volume_id, m.volumes[v].id, COH_MAP_ID_BYTES);
	for (uint32_t b = 0; write && b < n; b++)
		stamp(c.buf.data() + b * kBs, seed + b);
	ret = submit(r, c);
	if (ret)
		return ret;
	if (!wait_cmd(c, 30000))
		return -ETIMEDOUT;
	for (uint32_t b = 0; !write && !c.st.status && b < n; b++) {
		uint64_t st;

		if (!stamp_of(c.buf.data() + b * kBs, &st) || st != seed + b)
			return -EILSEQ;
	}
	return c.st.status;
}

// Two tables of one version (docs/routing.md): controller 2, away, keeps a change no other
// controller saw (its table file is written here as such a change leaves it: la grown over
// ga's blocks 192-223, ny added over 608-639), while 0 and 1 make another (nx added over
// 608-639). When 2 is back, each controller fences the volumes the two tables disagree on: la,
// nx and ny are refused (-ENOTUNIQ) from every controller, lb and vs are served. Once 2's
// stale table file is gone and 2 starts again, the conflict ends and la and nx serve from every
// controller. **Without the fence, 2 writes la's grown blocks and ny, which are nx's blocks for
// 0 and 1**: the test fails at its first refusal.
int sc_conflict(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	char path[128], err[200] = "";
	uint8_t token = 1;
	struct coh_route_stats st;
	coh_map m;
	int ret;

	map_path(path, sizeof(path), cn->id);
	CONF_CHECK(router_open(cn, l, &r, path) == 0, "router");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up");
	if (cn->id == 2) {
		coh_route_delete(&r);
		CONF_CHECK(coh_map_load(path, &m, err, sizeof(err)) == 0, "load: %s", err);
		CONF_CHECK(coh_map_grow(&m, "la", 224, err, sizeof(err)) == 0, "grow: %s", err);
		coh_map_volume v = {};
		name(v.name, "ny");
		v.id[0] = 0x51;
		v.kind = COH_MAP_LOGICAL;
		v.group = 0;
		v.first_block = 608;
		v.blocks = 32;
		CONF_CHECK(coh_map_add(&m, &v, err, sizeof(err)) == 0, "add ny: %s", err);
		m.version = l.m.version + 1; // one change, as the others' will be
		CONF_CHECK(coh_map_save(path, &m, err, sizeof(err)) == 0, "save: %s", err);
		CONF_CHECK(conf_send(cn, 0, &token, 1) == 0, "tell 0");
		CONF_CHECK(conf_recv(cn, 0, &token, NULL, 60000) == 0, "hear from 0");
		CONF_CHECK(router_open(cn, l, &r, path) == 0, "router again");
	} else if (cn->id == 0) {
		CONF_CHECK(conf_recv(cn, 2, &token, NULL, 60000) == 0, "hear from 2");
		CONF_CHECK(wait_down(r, 2), "2 still up");
		ret = add_volume(r, "nx", 0x50, 0, 608, 32, err, sizeof(err));
		CONF_CHECK(ret == 0, "add nx with 2 away: %d %s", ret, err);
		CONF_CHECK(conf_send(cn, 2, &token, 1) == 0, "tell 2");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: 2 is back");
	// 2's router came up only after both conflicts were known (route_sync).
	coh_route_stats(r, &st);
	CONF_CHECK(st.conflict_peers == (cn->id == 2 ? 0x3u : 0x4u), "conflicts with %#x",
		   st.conflict_peers);
	CONF_CHECK(table_version(r, &m) == (int)l.m.version + 1, "version %llu",
		   (unsigned long long)m.version);
	CONF_CHECK(vol_io(r, "la", 0, 4, true, 0x1a00u + cn->id * 16) == -ENOTUNIQ,
		   "la written through a conflict");
	CONF_CHECK(vol_io(r, cn->id == 2 ? "ny" : "nx", 0, 4, true, 0x2a00u) == -ENOTUNIQ,
		   "the other table's blocks written through a conflict");
	CONF_CHECK(vol_io(r, cn->id == 2 ? "nx" : "ny", 0, 4, true, 0x2a00u) == -ENXIO,
		   "a volume only the other table has");
	CONF_CHECK(vol_io(r, "lb", 8 * cn->id, 8, true, 0x3a00u + cn->id * 16) == 0,
		   "lb, the same in both, written");
	CONF_CHECK(vol_io(r, "vs", 16 * cn->id, 16, true, 0x4a00u + cn->id * 32) == 0,
		   "vs, the same in both, written");
	coh_route_stats(r, &st);
	CONF_CHECK(st.refused_conflict >= 2, "refused %llu",
		   (unsigned long long)st.refused_conflict);
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: the fence checked");
	for (uint32_t p = 0; p < 3; p++) {
		CONF_CHECK(vol_io(r, "lb", 8 * p, 8, false, 0x3a00u + p * 16) == 0, "lb of %u", p);
		CONF_CHECK(vol_io(r, "vs", 16 * p, 16, false, 0x4a00u + p * 32) == 0, "vs of %u",
			   p);
	}
	// The operator's way out: the stale table file goes, and 2 starts again.
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: before 2 starts again");
	if (cn->id == 2) {
		coh_route_delete(&r);
		CONF_CHECK(unlink(path) == 0, "remove %s", path);
		CONF_CHECK(router_open(cn, l, &r, path) == 0, "router with the others' table");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: 2 started again");
	coh_route_stats(r, &st);
	CONF_CHECK(st.conflict_peers == 0, "conflicts with %#x after", st.conflict_peers);
	CONF_CHECK(table_version(r, &m) == (int)l.m.version + 1 && coh_map_find(&m, "nx") >= 0 &&
		       coh_map_find(&m, "ny") < 0 &&
		       m.volumes[coh_map_find(&m, "la")].blocks == 192,
		   "the others' table on every controller");
	CONF_CHECK(vol_io(r, "la", 4 * cn->id, 4, true, 0x5a00u + cn->id * 16) == 0, "la written");
	CONF_CHECK(vol_io(r, "nx", 4 * cn->id, 4, true, 0x6a00u + cn->id * 16) == 0, "nx written");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: written after");
	for (uint32_t p = 0; p < 3; p++) {
		CONF_CHECK(vol_io(r, "la", 4 * p, 4, false, 0x5a00u + p * 16) == 0, "la of %u", p);
		CONF_CHECK(vol_io(r, "nx", 4 * p, 4, false, 0x6a00u + p * 16) == 0, "nx of %u", p);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: read after");
	coh_route_delete(&r);
	return 0;
}

TEST(router, two_tables_of_one_version_fence_the_volumes_they_disagree_on)
{
	map_dir_scope dir;
	ASSERT_TRUE(dir.ok);
	EXPECT_EQ(0, conf_run("router_conflict", 3, sc_conflict, 0, kTimeout));
}

// The coordinator of virtual volumes (controller 0) keeps the components it runs on its own
// engine of ga and is killed holding them: controller 2's writes to vs, sent whole to it, are
// sent whole again to controller 1, the next coordinator, and each completes once with
// success; the data reads back through controllers 1 and 2. On shm the death is proven; on
// rdma the commands wait until every group's view has excluded controller 0.
int sc_coordinator_killed(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	rcmd w[2], rd[2];

	if (cn->id == 2)
		__atomic_store_n(&sh->hold_node, 0u, __ATOMIC_RELEASE);
	CONF_CHECK(router_open(cn, l, &r) == 0, "router");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up");
	if (cn->id == 0) {
		for (int i = 0; i < 20000 && sh->held < 2; i++)
			usleep(1000); // polling a shared counter, bounded: 20 s
		CONF_CHECK(sh->held >= 2, "holding %u", (unsigned)sh->held);
		sh->excluded |= 1u << 0; // as both groups' view changes would, once it is fenced
		raise(SIGKILL);
		return 1;
	}
	if (cn->id == 2) {
		for (int i = 0; i < 2; i++) {
			rcmd_prepare(w[i], COH_IO_WRITE, l.vs, i * 32, 16); // a chunk on each group
			for (uint32_t b = 0; b < 16; b++)
				stamp(w[i].buf.data() + b * kBs, 0xc00d000u + i * 64 + b);
			CONF_CHECK(coh_route_submit(r, &w[i].rio) == 0, "write %d", i);
		}
		CONF_CHECK(wait_completed(2, 60000), "writes complete");
		for (int i = 0; i < 2; i++)
			CONF_CHECK(w[i].calls == 1 && w[i].st.status == 0, "write %d: %d calls, %d",
				   i, w[i].calls.load(), w[i].st.status);
		struct coh_route_stats st;
		coh_route_stats(r, &st);
		CONF_CHECK(st.rerouted >= 2, "rerouted %llu", (unsigned long long)st.rerouted);
	}
	uint8_t token = 1;
	uint32_t other = 3 - cn->id;
	CONF_CHECK(conf_send(cn, other, &token, 1) == 0, "tell the other survivor");
	CONF_CHECK(conf_recv(cn, other, &token, NULL, 60000) == 0, "hear from it");
	// Read back through both survivors (1 is the coordinator now).
	for (int i = 0; i < 2; i++) {
		uint32_t base = completed_now();

		rcmd_prepare(rd[i], COH_IO_READ, l.vs, i * 32, 16);
		CONF_CHECK(coh_route_submit(r, &rd[i].rio) == 0, "read %d", i);
		CONF_CHECK(wait_completed(base + 1, 30000) && rd[i].st.status == 0, "read %d: %d",
			   i, rd[i].st.status);
		for (uint32_t b = 0; b < 16; b++) {
			uint64_t v;

			CONF_CHECK(stamp_of(rd[i].buf.data() + b * kBs, &v) &&
				       v == 0xc00d000u + i * 64 + b,
				   "vs block %u", i * 32 + b);
		}
	}
	CONF_CHECK(conf_send(cn, other, &token, 1) == 0, "tell the other survivor again");
	CONF_CHECK(conf_recv(cn, other, &token, NULL, 60000) == 0, "hear from it again");
	coh_route_delete(&r);
	_exit(0); // the harness's goodbye needs controller 0
}

TEST(router, the_coordinator_killed_mid_command_its_commands_go_whole_to_the_next)
{
	EXPECT_EQ(0, conf_run("router_coord_killed", 3, sc_coordinator_killed, 1u << 0, kTimeout));
}

// Conflict detection is per virtual volume: the same blocks of two virtual volumes (vs and vc,
// which share no component) do not wait for each other. Controller 0, the coordinator, keeps
// what its engine of ga gets. Its write to vs's blocks 0-7 (sa, on ga) holds that range; its
// write to vc's blocks 0-7 (ca, on ga) must still reach the engine at once, and a second write
// to vs's blocks 4-11 must be held for a grant. Then the engine answers, and all three
// complete. **With the table keyed by the block alone, vc's write is held too** (checked).
int sc_coord_per_volume(conf_node *cn)
{
	layout l = make_layout();
	coh_route *r = nullptr;
	rcmd w[3];

	CONF_CHECK(router_open(cn, l, &r) == 0, "router");
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: every router up");
	if (cn->id == 0) {
		struct coh_route_stats st;
		std::vector<coh_io *> ios;

		__atomic_store_n(&sh->hold_node, 0u, __ATOMIC_RELEASE);
		rcmd_prepare(w[0], COH_IO_WRITE, l.vs, 0, 8);
		rcmd_prepare(w[1], COH_IO_WRITE, l.vc, 0, 8);
		rcmd_prepare(w[2], COH_IO_WRITE, l.vs, 4, 8);
		for (int i = 0; i < 3; i++)
			CONF_CHECK(coh_route_submit(r, &w[i].rio) == 0, "write %d", i);
		// Each submit ran on this thread up to the engine or the conflict table.
		coh_route_stats(r, &st);
		CONF_CHECK(sh->held == 2 && st.coord_held == 1,
			   "%u at the engine, %llu held for a grant (2 and 1 wanted)",
			   (unsigned)sh->held, (unsigned long long)st.coord_held);
		__atomic_store_n(&sh->hold_node, kNoNode, __ATOMIC_RELEASE);
		pthread_mutex_lock(&held_mu);
		ios.swap(held_ios);
		pthread_mutex_unlock(&held_mu);
		for (coh_io *io : ios)
			io->cb(io, 0, io->cb_arg);
		CONF_CHECK(wait_completed(3, 30000), "every write completes");
		for (int i = 0; i < 3; i++)
			CONF_CHECK(w[i].calls == 1 && w[i].st.status == 0, "write %d: %d calls, %d",
				   i, w[i].calls.load(), w[i].st.status);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier: done");
	coh_route_delete(&r);
	return 0;
}

TEST(router, conflict_detection_is_per_virtual_volume)
{
	sh->held = 0;
	EXPECT_EQ(0, conf_run("router_coord_per_volume", 3, sc_coord_per_volume, 0, kTimeout));
}

// Real engines: each group is a Cohort cluster (a coh_node on every controller, RAID-5 over
// three element files, one log copy), and the router gives each controller's engine of a group
// it is an AMF of. Every controller is a member of both clusters (a majority of three survives
// one death), and only a group's AMFs execute on it. Every controller writes its own regions
// of la, lb and the striped volume, eight in flight, and one of them is SIGKILLed once a given
// number of its writes are acknowledged. Every survivor's write must be acknowledged (routed
// again to a live AMF or coordinator, whose engine serves after the takeover). Then every
// block of every region must hold its writer's last acknowledged write, or, for the victim's
// blocks only, a later write of the victim's that was in flight when it died, whole.
constexpr uint32_t kEngBs = 4096, kEngElemBlocks = 512;
char group_dir[2][256];
uint32_t victim;		 // the controller killed mid-run
uint32_t fence = COH_FENCE_AUTO; // how the groups' clusters fence a node they exclude

int group_open(conf_node *cn, uint32_t g, coh_fabric **fab, coh_node **node)
{
	coh_fabric_attr fa = {};
	coh_node_attr na = {};
	char paths[3][320];
	int ret;

	fa.provider = "shm";
	fa.cluster = group_dir[g];
	fa.node_id = cn->id;
	fa.timeout_ms = 5000;
	ret = coh_fabric_open(&fa, fab);
	if (ret)
		return ret;
	na.fab = *fab;
	na.nodes = 3;
	na.raid.level = COH_RAID5;
	na.raid.nelems = 3;
	na.raid.chunk_blocks = 2;
	for (uint32_t i = 0; i < 3; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/elem%u", group_dir[g], i);
		na.elem_paths[i] = paths[i];
	}
	na.elem_blocks = kEngElemBlocks;
	na.replicas = 1;
	na.log_bytes = 1u << 20;
	na.cache_blocks = 128;
	na.timeout_ms = 5000;
	na.fence = fence;
	return coh_node_open(&na, node);
}

int engine_submit(void *arg, coh_io *io)
{
	return coh_node_submit(static_cast<coh_node *>(arg), io);
}

layout engine_layout()
{
	layout l;

	memset(&l.m, 0, sizeof(l.m));
	l.m.version = 1;
	l.m.nodes = 3;
	l.m.block_size = kEngBs;
	l.m.ngroups = 2;
	name(l.m.groups[0].name, "ga");
	l.m.groups[0].amfs = 0x3;
	l.m.groups[0].preferred = 0;
	l.m.groups[0].blocks = 2 * kEngElemBlocks;
	name(l.m.groups[1].name, "gb");
	l.m.groups[1].amfs = 0x6;
	l.m.groups[1].preferred = 2;
	l.m.groups[1].blocks = 2 * kEngElemBlocks;
	l.la = logical(l.m, "la", 0, 0, 96);
	l.lb = logical(l.m, "lb", 1, 0, 96);
	l.sa = logical(l.m, "sa", 0, 256, 256);
	l.sb = logical(l.m, "sb", 1, 256, 256);
	l.vs = virt(l.m, "vs", COH_MAP_STRIPE, 8, l.sa, l.sb);
	l.ca = l.cb = l.vc = 0;
	return l;
}

// A controller's two group engines (group_open) and its router over them, and their end.
struct engines {
	coh_fabric *gfab[2] = {};
	coh_node *gnode[2] = {};
	coh_route *r = nullptr;
};

int engine_read_cached(void *arg, uint64_t lba, void *buf)
{
	return coh_node_read_cached(static_cast<coh_node *>(arg), lba, buf);
}

int engines_holders(void *arg, uint32_t g, uint64_t gblock, uint32_t *owner, uint32_t *sharers)
{
	auto *e = static_cast<engines *>(arg);

	return g < 2 ? coh_node_lock_holders(e->gnode[g], gblock, owner, sharers) : -EINVAL;
}

uint32_t engines_view(void *arg, uint32_t g)
{
	auto *e = static_cast<engines *>(arg);

	return g < 2 ? coh_node_members(e->gnode[g]) : 0;
}

int engines_up(conf_node *cn, const layout &l, engines *e)
{
	coh_route_attr a = {};
	uint32_t g;

	for (g = 0; g < 2; g++)
		CONF_CHECK(group_open(cn, g, &e->gfab[g], &e->gnode[g]) == 0, "group %u's engine",
			   g);
	my_id = cn->id;
	a.attr_size = sizeof(a);
	a.map = &l.m;
	a.fab = cn->fab;
	a.fwd.max_blocks = 16;
	a.fwd.slots = 8;
	for (g = 0; g < 2; g++) {
		if (l.m.groups[g].amfs & (1u << cn->id)) {
			a.group_submit[g] = engine_submit;
			a.group_read_cached[g] = engine_read_cached;
			a.group_arg[g] = e->gnode[g];
		}
	}
	// As cohortd does: every controller is a member of both groups' clusters, so its engine
	// of a group can say who holds a block's lock.
	a.group_holders = engines_holders;
	a.group_view = engines_view;
	a.view_arg = e;
	CONF_CHECK(coh_route_new(&a, &e->r) == 0, "router");
	return 0;
}

// engines_down - the engines, once the router is deleted.
void engines_down(engines *e)
{
	for (uint32_t g = 0; g < 2; g++) {
		coh_node_close(&e->gnode[g]);
		coh_fabric_close(&e->gfab[g]);
	}
}

uint32_t kill_after; // the victim dies once this many of its writes are acknowledged

// real_stamp - the stamp of write @k of controller @c (0: never written).
uint64_t real_stamp(uint32_t c, uint32_t k)
{
	return (uint64_t)(c + 1) << 32 | (k + 1);
}

// real_check - controller @me, a survivor, reads every controller's regions through its router
// and checks each block: the last acknowledged write of it, or a later write of the victim that
// was in flight when it died (whole: every block of a block is one stamp). With @failed, a read
// may fail (counted there: a controller excluded while paused); one that succeeds is checked.
int real_check(conf_node *cn, coh_route *r, const layout &l, uint32_t nwrites,
	       uint32_t *failed = nullptr)
{
	uint32_t vols[3] = { l.lb, l.la, l.vs };

	for (uint32_t owner = 0; owner < 3; owner++) {
		for (uint32_t v = 0; v < 3; v++) {
			uint64_t base = vols[v] == l.vs ? owner * 96 : owner * 32;
			uint32_t len = vols[v] == l.vs ? 96 : 32;

			for (uint32_t off = 0; off < len; off += 16) {
				rcmd c;

				rcmd_prepare(c, COH_IO_READ, vols[v], base + off, 16);
				c.buf.assign(16 * 4096, 0);
				c.rio.buf = c.buf.data();
				CONF_CHECK(submit(r, c) == 0 && wait_cmd(c, 60000) &&
					       (c.st.status == 0 || failed),
					   "read back: %d", c.st.status);
				if (c.st.status) {
					(*failed)++;
					continue;
				}
				for (uint32_t b = 0; b < 16; b++) {
					uint64_t blk = base + off + b, got, acked = 0;
					bool whole = true, ok;

					memcpy(&got, c.buf.data() + b * 4096, 8);
					for (uint32_t w = 1; w < 4096 / 8 && whole; w++)
						whole = !memcmp(c.buf.data() + b * 4096 + w * 8,
								&got, 8);
					CONF_CHECK(whole, "block %llu of %s torn inside",
						   (unsigned long long)blk,
						   l.m.volumes[vols[v]].name);
					// The writes of @owner covering the block, in order.
					uint32_t last_acked = UINT32_MAX;
					for (uint32_t k = 0; k < nwrites; k++) {
						auto &e = sh->w[owner][k];
						if (e.n && e.volume == vols[v] && e.lba <= blk &&
						    blk < e.lba + e.n && e.acked)
							last_acked = k;
					}
					if (last_acked != UINT32_MAX)
						acked = real_stamp(owner, last_acked);
					ok = got == acked;
					// A write after it that was never acknowledged (the victim's, in
					// flight when it died) may be there instead, whole.
					for (uint32_t k = last_acked == UINT32_MAX ? 0
										   : last_acked + 1;
					     !ok && k < nwrites; k++) {
						auto &e = sh->w[owner][k];
						ok = e.n && !e.acked && owner == victim &&
						     e.volume == vols[v] && e.lba <= blk &&
						     blk < e.lba + e.n &&
						     got == real_stamp(owner, k);
					}
					CONF_CHECK(
					    ok,
					    "%s block %llu (controller %u's): %llx, last acknowledged "
					    "%llx",
					    l.m.volumes[vols[v]].name, (unsigned long long)blk,
					    owner, (unsigned long long)got,
					    (unsigned long long)acked);
				}
			}
		}
	}
	(void)cn;
	return 0;
}

int sc_real_engines(conf_node *cn)
{
	constexpr uint32_t kDepth = 8, kLen = 4, kWrites = 240;
	layout l = engine_layout();
	engines e;
	std::vector<rcmd> slot(kDepth);
	std::vector<uint32_t> slot_k(kDepth);
	// this controller's regions: 32 blocks of lb and of la, 96 of vs
	uint64_t lb0 = cn->id * 32, vs0 = cn->id * 96;
	uint32_t acked = 0;

	if (engines_up(cn, l, &e))
		return 1;
	coh_route *r = e.r;
	CONF_CHECK(conf_barrier(cn) == 0, "every controller up");
	// Rounds over this controller's regions of lb, la and vs, one write of kLen blocks after
	// the other, at most kDepth in flight and never two at once on the same blocks. Each
	// write is logged (shared) before it is submitted, and marked when acknowledged.
	for (uint32_t k = 0; k < kWrites + kDepth; k++) {
		rcmd &c = slot[k % kDepth];

		if (k >= kDepth) {
			uint32_t done_k = slot_k[k % kDepth];

			CONF_CHECK(wait_cmd(c, 60000), "write %u completes", done_k);
			CONF_CHECK(c.calls == 1 && c.st.status == 0, "write %u: %d", done_k,
				   c.st.status);
			__atomic_store_n(&sh->w[cn->id][done_k].acked, 1u, __ATOMIC_RELEASE);
			if (cn->id == victim && ++acked == kill_after)
				raise(SIGKILL); // with kDepth writes of its own in flight
		}
		if (k >= kWrites)
			continue;
		uint32_t vol = k % 3 == 0 ? l.lb : k % 3 == 1 ? l.la : l.vs;
		uint64_t lba = vol == l.vs ? vs0 + (k / 3 * kLen) % 96 : lb0 + (k / 3 * kLen) % 32;

		rcmd_prepare(c, COH_IO_WRITE, vol, lba, kLen);
		c.buf.assign((size_t)kLen * kEngBs, 0);
		c.rio.buf = c.buf.data();
		for (uint32_t b = 0; b < kLen; b++) {
			uint64_t st = real_stamp(cn->id, k);

			for (uint32_t w = 0; w < kEngBs / 8; w++)
				memcpy(c.buf.data() + b * kEngBs + w * 8, &st, 8);
		}
		sh->w[cn->id][k].volume = vol;
		sh->w[cn->id][k].lba = lba;
		__atomic_store_n(&sh->w[cn->id][k].n, kLen, __ATOMIC_RELEASE);
		slot_k[k % kDepth] = k;
		CONF_CHECK(submit(r, c) == 0, "submit %u", k);
	}
	CONF_CHECK(cn->id != victim, "the victim outlived its writes");
	uint32_t other = 3 - victim - cn->id;
	uint8_t token = 1;
	// Both survivors have every write acknowledged before either checks.
	CONF_CHECK(conf_send(cn, other, &token, 1) == 0, "tell the other survivor");
	CONF_CHECK(conf_recv(cn, other, &token, NULL, 60000) == 0, "hear from it");
	if (cn->id < other && real_check(cn, r, l, kWrites))
		return 1;
	struct coh_route_stats st;
	coh_route_stats(r, &st);
	fprintf(stderr, "node %u: victim %u after %u: %llu rerouted\n", cn->id, victim, kill_after,
		(unsigned long long)st.rerouted);
	CONF_CHECK(conf_send(cn, other, &token, 1) == 0, "tell the other survivor again");
	CONF_CHECK(conf_recv(cn, other, &token, NULL, 60000) == 0, "hear from it again");
	coh_route_delete(&r);
	engines_down(&e);
	// The harness's goodbye needs controllers 0 .. n-1: with 0 or 1 dead, the survivors are done.
	if (victim != 2)
		_exit(0);
	coh_ep_delete(&cn->ep[victim]);
	coh_ep_delete(&cn->ctl[victim]);
	cn->n = 2;
	return 0;
}

// run_in_groups - conf_run(@name, @fn) on three controllers whose two groups' clusters are
// made in fresh directories (group_dir), removed after. 0, or 1 on any failure.
int run_in_groups(const char *name, conf_scenario_fn fn, uint64_t expect_killed)
{
	char tmpl[] = "/dev/shm/cohort-rg-XXXXXX";
	int ret;

	if (!mkdtemp(tmpl))
		return 1;
	for (uint32_t g = 0; g < 2; g++) {
		snprintf(group_dir[g], sizeof(group_dir[g]), "%s/g%u", tmpl, g);
		if (mkdir(group_dir[g], 0700))
			return 1;
	}
	ret = conf_run(name, 3, fn, expect_killed, kTimeout);
	std::error_code ec;
	std::filesystem::remove_all(tmpl, ec);
	return ret || ec ? 1 : 0;
}

// run_real - the scenario with @v killed after @after of its writes, in fresh group
// directories.
int run_real(uint32_t v, uint32_t after)
{
	memset(static_cast<void *>(sh->w), 0, sizeof(sh->w));
	victim = v;
	kill_after = after;
	return run_in_groups("router_engines", sc_real_engines, 1u << v);
}

// Controller 2 killed: an AMF of gb (its preferred one) and a member of ga's cluster.
TEST(router, real_engines_two_groups_an_amf_killed_mid_run)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	EXPECT_EQ(0, run_real(2, 40));
}

// Controller 0 killed: the coordinator of virtual volumes, and ga's preferred AMF.
TEST(router, real_engines_two_groups_the_coordinator_killed_mid_run)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	EXPECT_EQ(0, run_real(0, 40));
}

// A paused controller (SIGSTOP: a frozen VM, a stalled host) in the routed cluster, with its own
// writes, forwarded commands and component commands in flight, and the others' commands
// forwarded to it. Every controller writes its regions as above, eight in flight; the victim
// stops itself once @kill_after of its writes are acknowledged. Both groups' clusters exclude it
// for its silence (fenced by the lease: it lives on), and every survivor's write must be
// acknowledged (what was forwarded to it is routed again). Once both groups' views have
// excluded it, a survivor resumes it. It then finishes the writes it had in flight, each
// acknowledged or failed, submits no more, and reads every controller's regions through its
// router: a read may fail (its engines are fenced), but one that succeeds must hold the last
// acknowledged data, never its own old copy of a block the survivors rewrote meanwhile. Last,
// a survivor reads every block: every acknowledged write is there, the victim's ones after its
// pause too.
int sc_real_pause(conf_node *cn)
{
	constexpr uint32_t kDepth = 8, kLen = 4, kWrites = 240;
	layout l = engine_layout();
	engines e;
	std::vector<rcmd> slot(kDepth);
	std::vector<uint32_t> slot_k(kDepth, UINT32_MAX);
	uint64_t lb0 = cn->id * 32, vs0 = cn->id * 96;
	uint32_t acked = 0, failed_writes = 0, failed_reads = 0, i;
	bool paused = false;

	if (engines_up(cn, l, &e))
		return 1;
	coh_route *r = e.r;
	CONF_CHECK(conf_barrier(cn) == 0, "every controller up");
	for (uint32_t k = 0; k < kWrites + kDepth; k++) {
		rcmd &c = slot[k % kDepth];
		uint32_t done_k = slot_k[k % kDepth];

		if (done_k != UINT32_MAX) {
			CONF_CHECK(wait_cmd(c, 60000), "write %u completes", done_k);
			CONF_CHECK(c.calls == 1, "write %u completed %d times", done_k,
				   c.calls.load());
			if (c.st.status == 0) {
				__atomic_store_n(&sh->w[cn->id][done_k].acked, 1u,
						 __ATOMIC_RELEASE);
				if (cn->id == victim && !paused && ++acked == kill_after) {
					sh->paused_pid.store(getpid());
					raise(SIGSTOP); // kDepth - 1 writes of its own in flight
					CONF_CHECK(sh->resumed.load() == 1,
						   "resumed by a survivor");
					paused = true;
				}
			} else {
				CONF_CHECK(cn->id == victim && paused, "write %u: %d", done_k,
					   c.st.status);
				failed_writes++;
			}
		}
		slot_k[k % kDepth] = UINT32_MAX;
		if (k >= kWrites || paused)
			continue;
		uint32_t vol = k % 3 == 0 ? l.lb : k % 3 == 1 ? l.la : l.vs;
		uint64_t lba = vol == l.vs ? vs0 + (k / 3 * kLen) % 96 : lb0 + (k / 3 * kLen) % 32;

		rcmd_prepare(c, COH_IO_WRITE, vol, lba, kLen);
		c.buf.assign((size_t)kLen * kEngBs, 0);
		c.rio.buf = c.buf.data();
		for (uint32_t b = 0; b < kLen; b++) {
			uint64_t st = real_stamp(cn->id, k);

			for (uint32_t w = 0; w < kEngBs / 8; w++)
				memcpy(c.buf.data() + b * kEngBs + w * 8, &st, 8);
		}
		sh->w[cn->id][k].volume = vol;
		sh->w[cn->id][k].lba = lba;
		__atomic_store_n(&sh->w[cn->id][k].n, kLen, __ATOMIC_RELEASE);
		slot_k[k % kDepth] = k;
		CONF_CHECK(submit(r, c) == 0, "submit %u", k);
	}
	uint8_t token = 1;
	if (cn->id == victim) {
		CONF_CHECK(paused, "paused");
		if (real_check(cn, r, l, kWrites, &failed_reads))
			return 1;
		fprintf(
		    stderr,
		    "node %u: resumed after %u writes: %u of its writes in flight failed, %u of "
		    "its reads failed, none stale\n",
		    cn->id, kill_after, failed_writes, failed_reads);
		for (i = 0; i < 3; i++) {
			if (i != cn->id)
				CONF_CHECK(conf_send(cn, i, &token, 1) == 0, "tell %u", i);
		}
	} else {
		uint32_t other = 3 - victim - cn->id;
		bool out = false;

		// Both groups' views without the victim, then the lower survivor resumes it
		// (bounded: 60 s).
		for (i = 0; i < 600 && !out; i++) {
			struct coh_node_stats st;

			out = sh->paused_pid.load() != 0;
			for (uint32_t g = 0; g < 2 && out; g++)
				out =
				    !coh_node_stats(e.gnode[g], &st) && !(st.members >> victim & 1);
			if (!out)
				usleep(100000); // polling the views, bounded by the count
		}
		CONF_CHECK(out, "both groups' views exclude the paused controller %u", victim);
		CONF_CHECK(conf_send(cn, other, &token, 1) == 0, "tell the other survivor");
		CONF_CHECK(conf_recv(cn, other, &token, NULL, 60000) == 0, "hear from it");
		if (cn->id < other) {
			sh->resumed.store(1);
			CONF_CHECK(kill(sh->paused_pid.load(), SIGCONT) == 0, "resume %u", victim);
		}
		CONF_CHECK(conf_recv(cn, victim, &token, NULL, 120000) == 0,
			   "the resumed controller's reads");
		if (cn->id < other && real_check(cn, r, l, kWrites))
			return 1;
		struct coh_fwd_stats fs = {};
		struct coh_route_stats rs;
		coh_fwd_stats(coh_route_forwarder(r), &fs);
		coh_route_stats(r, &rs);
		fprintf(stderr, "node %u: %llu commands to %u abandoned, %llu routed again\n",
			cn->id, (unsigned long long)fs.abandoned, victim,
			(unsigned long long)rs.rerouted);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "every controller checked");
	coh_route_delete(&r);
	engines_down(&e);
	return 0;
}

// run_pause - the pause scenario with @v stopped after @after of its writes.
int run_pause(uint32_t v, uint32_t after)
{
	int ret;

	memset(static_cast<void *>(sh->w), 0, sizeof(sh->w));
	sh->paused_pid.store(0);
	sh->resumed.store(0);
	victim = v;
	kill_after = after;
	fence = COH_FENCE_LEASE;
	ret = run_in_groups("router_pause", sc_real_pause, 0);
	fence = COH_FENCE_AUTO;
	return ret;
}

// Controller 2 paused: gb's preferred AMF, where controllers 0 and 1 forward lb and vs's
// components.
TEST(router, real_engines_a_paused_amf_excluded_and_resumed)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	EXPECT_EQ(0, run_pause(2, 40));
}

// Controller 1 paused: an AMF of both groups, whose reads after its pause go to its own fenced
// engines.
TEST(router, real_engines_the_amf_of_both_groups_paused_and_resumed)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	EXPECT_EQ(0, run_pause(1, 40));
}

// Crash trials: each controller in turn (1 is an AMF of both groups: each is left with one),
// killed after a number of its writes drawn from the seed, with its own writes, forwarded
// commands and component commands in flight. COHORT_ROUTER_TRIALS (default 9) and
// COHORT_ROUTER_SEED choose them.
TEST(router, real_engines_crash_trials)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	const char *t = getenv("COHORT_ROUTER_TRIALS"), *sd = getenv("COHORT_ROUTER_SEED");
	uint32_t trials = t ? (uint32_t)strtoul(t, nullptr, 0) : 9;
	std::mt19937 rng(sd ? (uint32_t)strtoul(sd, nullptr, 0) : 16);

	for (uint32_t i = 0; i < trials && i < 1000; i++) {
		uint32_t v = i % 3, after = 1 + rng() % 200;

		ASSERT_EQ(0, run_real(v, after)) << "trial " << i << ": controller " << v
						 << " killed after " << after << " writes";
	}
}

// The conflict checker on real engines. Controllers 0 and 1 write and read overlapping ranges of
// the striped volume (2 to 16 blocks in its first 96, chunks of 8: most writes span both groups,
// its components on two clusters), eight in flight each, every write with a stamp of its own in
// every block. A read that sees two writes on two of its blocks, where both writes cover both
// blocks, must see the same one on both: otherwise one was applied in part (torn across
// components). A block's stamp must be a write that covers it. Controller 2 (gb's preferred AMF,
// where controller 0 forwards gb's components) reads only, and with @kill_after set is SIGKILLed
// once that many of its reads are done: gb's components then go to controller 1, whose engine
// serves after the takeover, and every survivor's command must still succeed, whole. Last, the
// survivors read the range whole and check it the same way.
constexpr uint32_t kOvOps = 240, kOvDepth = 8, kOvRange = 96;

uint64_t ov_stamp(uint32_t c, uint32_t i)
{
	return (uint64_t)(c + 1) << 32 | i;
}

// ov_check - the pairs of a read of @n blocks at @lba (@buf): 0 or 1 (an error, said).
int ov_check(conf_node *cn, const uint8_t *buf, uint64_t lba, uint32_t n, uint32_t *checked)
{
	std::vector<uint64_t> s(n);
	auto cov = [&](uint64_t st, uint64_t blk) {
		uint32_t node = (uint32_t)(st >> 32) - 1, i = (uint32_t)st;

		if (node >= 3 || i >= 8192)
			return false;
		uint32_t len = __atomic_load_n(&sh->w[node][i].n, __ATOMIC_ACQUIRE);
		uint64_t lo = sh->w[node][i].lba;
		return lo <= blk && blk < lo + len;
	};

	for (uint32_t b = 0; b < n; b++) {
		memcpy(&s[b], buf + (size_t)b * kEngBs, 8);
		for (uint32_t w = 1; w < kEngBs / 8; w++)
			CONF_CHECK(!memcmp(buf + (size_t)b * kEngBs + w * 8, &s[b], 8),
				   "block %llu torn inside", (unsigned long long)(lba + b));
		CONF_CHECK(!s[b] || cov(s[b], lba + b), "block %llu holds %llx, no write of it",
			   (unsigned long long)(lba + b), (unsigned long long)s[b]);
	}
	for (uint32_t x = 0; x < n; x++) {
		for (uint32_t y = x + 1; y < n; y++) {
			if (!s[x] || !s[y] || s[x] == s[y])
				continue;
			(*checked)++;
			CONF_CHECK(!(cov(s[x], lba + y) && cov(s[y], lba + x)),
				   "blocks %llu and %llu: writes %llx and %llx both cover both, "
				   "and each shows on one: one was applied in part",
				   (unsigned long long)(lba + x), (unsigned long long)(lba + y),
				   (unsigned long long)s[x], (unsigned long long)s[y]);
		}
	}
	return 0;
}

int sc_real_overlap(conf_node *cn)
{
	layout l = engine_layout();
	engines e;
	std::vector<rcmd> slot(kOvDepth);
	std::mt19937_64 rng(3000 + cn->id + 7 * kill_after);
	uint32_t checked = 0, reads = 0;
	bool writer = cn->id != 2;

	if (engines_up(cn, l, &e))
		return 1;
	coh_route *r = e.r;
	CONF_CHECK(conf_barrier(cn) == 0, "every controller up");
	for (uint32_t k = 0; k < kOvOps + kOvDepth; k++) {
		rcmd &c = slot[k % kOvDepth];

		if (k >= kOvDepth) {
			CONF_CHECK(wait_cmd(c, 60000), "op %u completes", k - kOvDepth);
			CONF_CHECK(c.calls == 1 && c.st.status == 0, "op %u: %d", k - kOvDepth,
				   c.st.status);
			if (c.rio.type == COH_IO_READ) {
				if (ov_check(cn, c.buf.data(), c.rio.lba, c.rio.nblocks, &checked))
					return 1;
				if (cn->id == victim && ++reads == kill_after)
					raise(SIGKILL); // with reads of its own in flight
			}
		}
		if (k >= kOvOps)
			continue;
		uint32_t n = 2 + (uint32_t)(rng() % 15); // at most the forwarder's 16 blocks
		uint64_t lba = rng() % (kOvRange - n + 1);
		bool write = writer && rng() % 2;

		rcmd_prepare(c, write ? COH_IO_WRITE : COH_IO_READ, l.vs, lba, n);
		c.buf.assign((size_t)n * kEngBs, 0);
		c.rio.buf = c.buf.data();
		if (write) {
			uint32_t i = sh->nw[cn->id]++;

			sh->w[cn->id][i].volume = l.vs;
			sh->w[cn->id][i].lba = lba;
			__atomic_store_n(&sh->w[cn->id][i].n, n, __ATOMIC_RELEASE);
			uint64_t st = ov_stamp(cn->id, i);

			for (uint32_t b = 0; b < n; b++)
				for (uint32_t w = 0; w < kEngBs / 8; w++)
					memcpy(c.buf.data() + (size_t)b * kEngBs + w * 8, &st, 8);
		}
		CONF_CHECK(submit(r, c) == 0, "submit %u", k);
	}
	CONF_CHECK(cn->id != victim, "the victim outlived its reads");
	// Every survivor done before the last look; then the range whole, in pieces of 16 blocks.
	uint8_t token = 1;
	for (uint32_t o = 0; o < 3; o++) {
		if (o == cn->id || o == victim)
			continue;
		CONF_CHECK(conf_send(cn, o, &token, 1) == 0, "tell %u", o);
	}
	for (uint32_t o = 0; o < 3; o++) {
		if (o == cn->id || o == victim)
			continue;
		CONF_CHECK(conf_recv(cn, o, &token, NULL, 60000) == 0, "hear from %u", o);
	}
	for (uint64_t off = 0; off < kOvRange; off += 16) {
		rcmd c;

		rcmd_prepare(c, COH_IO_READ, l.vs, off, 16);
		c.buf.assign(16 * kEngBs, 0);
		c.rio.buf = c.buf.data();
		CONF_CHECK(submit(r, c) == 0 && wait_cmd(c, 60000) && c.st.status == 0,
			   "the last read at %llu: %d", (unsigned long long)off, c.st.status);
		if (ov_check(cn, c.buf.data(), off, 16, &checked))
			return 1;
	}
	struct coh_route_stats st;
	coh_route_stats(r, &st);
	fprintf(stderr, "node %u: %u pairs checked, %llu held for a grant, %llu routed again\n",
		cn->id, checked, (unsigned long long)st.coord_held,
		(unsigned long long)st.rerouted);
	CONF_CHECK(!writer || checked > 0, "no read met two writes");
	for (uint32_t o = 0; o < 3; o++) {
		if (o == cn->id || o == victim)
			continue;
		CONF_CHECK(conf_send(cn, o, &token, 1) == 0, "tell %u again", o);
	}
	for (uint32_t o = 0; o < 3; o++) {
		if (o == cn->id || o == victim)
			continue;
		CONF_CHECK(conf_recv(cn, o, &token, NULL, 60000) == 0, "hear from %u again", o);
	}
	coh_route_delete(&r);
	if (victim == 3)
		CONF_CHECK(conf_barrier(cn) == 0, "every router gone");
	engines_down(&e);
	if (victim == 2) {
		coh_ep_delete(&cn->ep[victim]);
		coh_ep_delete(&cn->ctl[victim]);
		cn->n = 2;
	}
	return 0;
}

// run_overlap - the checker on fresh groups; @v killed after @after reads (@v 3: none).
int run_overlap(uint32_t v, uint32_t after)
{
	memset(static_cast<void *>(sh->w), 0, sizeof(sh->w));
	for (auto &n : sh->nw)
		n = 0;
	victim = v;
	kill_after = after;
	return run_in_groups("router_overlap_engines", sc_real_overlap, v < 3 ? 1u << v : 0);
}

TEST(router, real_engines_overlapping_writes_apply_whole)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	EXPECT_EQ(0, run_overlap(3, 0));
}

// Randomized: controller 2 killed after a number of its reads drawn from the seed
// (COHORT_ROUTER_TRIALS, default 3; COHORT_ROUTER_SEED).
TEST(router, real_engines_overlapping_writes_apply_whole_across_a_death)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	const char *t = getenv("COHORT_ROUTER_TRIALS"), *sd = getenv("COHORT_ROUTER_SEED");
	uint32_t trials = t ? (uint32_t)strtoul(t, nullptr, 0) / 3 : 3;
	std::mt19937 rng(sd ? (uint32_t)strtoul(sd, nullptr, 0) : 23);

	for (uint32_t i = 0; i < trials && i < 300; i++) {
		uint32_t after = 5 + rng() % 150;

		ASSERT_EQ(0, run_overlap(2, after))
		    << "trial " << i << ": killed after " << after << " reads";
	}
}

// Compare-and-write through the router, on real engines. In each round every controller reads
// the same block (of lb, group gb's: controller 0 forwards it; or of the striped volume, on
// either group: the coordinator runs it), then all three, at once, compare it with what they
// read and write a value of their own. Exactly one must succeed each round; the others get
// -EILSEQ with the offset of the first byte that differs; the block then holds the winner's
// value, read from another controller. A compare-and-write across two chunks of the stripe
// (two groups) is refused with -EINVAL, and one longer than half the forwarder's max_blocks
// at the submit.
constexpr uint32_t kCawRounds = 24;

int caw_read(conf_node *cn, coh_route *r, uint32_t vol, uint64_t lba, uint64_t *v)
{
	rcmd c;

	rcmd_prepare(c, COH_IO_READ, vol, lba, 1);
	c.buf.assign(kEngBs, 0);
	c.rio.buf = c.buf.data();
	CONF_CHECK(submit(r, c) == 0 && wait_cmd(c, 60000) && c.st.status == 0, "read: %d",
		   c.st.status);
	memcpy(v, c.buf.data(), 8);
	return 0;
}

int sc_real_caw(conf_node *cn)
{
	layout l = engine_layout();
	engines e;

	if (engines_up(cn, l, &e))
		return 1;
	coh_route *r = e.r;
	CONF_CHECK(conf_barrier(cn) == 0, "every controller up");
	for (uint32_t k = 0; k < kCawRounds; k++) {
		uint32_t vol = k % 2 ? l.vs : l.lb;
		uint64_t lba = k % 2 ? (k * 5) % 64 : (k * 3) % 32, old, now;
		uint64_t mine = (uint64_t)(cn->id + 1) << 32 | (k + 1);
		rcmd c;

		if (caw_read(cn, r, vol, lba, &old))
			return 1;
		CONF_CHECK(conf_barrier(cn) == 0, "round %u: every controller has read", k);
		rcmd_prepare(c, COH_IO_COMPARE_WRITE, vol, lba, 1);
		c.buf.assign(2 * kEngBs, 0);
		c.rio.buf = c.buf.data();
		for (uint32_t w = 0; w < kEngBs / 8; w++) {
			memcpy(c.buf.data() + w * 8, &old, 8);
			memcpy(c.buf.data() + kEngBs + w * 8, &mine, 8);
		}
		CONF_CHECK(submit(r, c) == 0 && wait_cmd(c, 60000), "round %u: submit", k);
		CONF_CHECK(c.calls == 1 && (c.st.status == 0 || c.st.status == -EILSEQ),
			   "round %u: %d", k, c.st.status);
		if (c.st.status == 0) {
			sh->caw_wins[k]++;
			sh->caw_winner[k] = cn->id;
		} else {
			CONF_CHECK(c.st.miscompare < 8, "round %u: miscompare at byte %u", k,
				   c.st.miscompare);
		}
		CONF_CHECK(conf_barrier(cn) == 0, "round %u: every controller is done", k);
		if (cn->id == (k + 1) % 3) {
			CONF_CHECK(sh->caw_wins[k] == 1,
				   "round %u: %u compare-and-writes succeeded", k,
				   sh->caw_wins[k].load());
			if (caw_read(cn, r, vol, lba, &now))
				return 1;
			CONF_CHECK(now == ((uint64_t)(sh->caw_winner[k] + 1) << 32 | (k + 1)),
				   "round %u: the block holds %llx", k, (unsigned long long)now);
		}
		CONF_CHECK(conf_barrier(cn) == 0, "round %u: checked", k);
	}
	// across two chunks of the stripe (blocks 6-9: chunk 0 on ga, chunk 1 on gb): refused
	{
		rcmd c;

		rcmd_prepare(c, COH_IO_COMPARE_WRITE, l.vs, 6, 4);
		c.buf.assign(8 * kEngBs, 0);
		c.rio.buf = c.buf.data();
		CONF_CHECK(submit(r, c) == 0 && wait_cmd(c, 60000) && c.calls == 1 &&
			       c.st.status == -EINVAL,
			   "a compare-and-write across groups: %d", c.st.status);
		rcmd_prepare(c, COH_IO_COMPARE_WRITE, l.lb, 0, 9); // 18 blocks > max_blocks 16
		c.buf.assign(18 * kEngBs, 0);
		c.rio.buf = c.buf.data();
		CONF_CHECK(coh_route_submit(r, &c.rio) == -EINVAL && c.calls == 0,
			   "a long compare-and-write is refused at the submit");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier before the end");
	coh_route_delete(&r);
	CONF_CHECK(conf_barrier(cn) == 0, "every router gone");
	engines_down(&e);
	return 0;
}

TEST(router, compare_and_write_one_winner_across_controllers)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	EXPECT_EQ(0, run_in_groups("router_caw", sc_real_caw, 0));
}

// A forwarded command goes to the AMF that holds its block's lock (no lock ping-pong): ga's AMFs
// are 0 (preferred) and 1. Controller 1 writes blocks 0-3 of la on its own engine (it holds that
// resource exclusive from then on); controller 2, no AMF of ga, then reads and writes them: each
// command goes to 1, not to 0, and 1 gives the lock to no one; its one-block reads are answered
// from 1's cache on 1's forwarder thread (group_read_cached). A block no AMF holds goes to the
// preferred AMF, 0. Every value read back is the last one written.
int sc_holder(conf_node *cn)
{
	constexpr uint32_t kCmds = 8;
	layout l = engine_layout();
	engines e;
	rcmd c;
	struct coh_route_stats st;
	struct coh_node_stats ns0, ns1;

	if (engines_up(cn, l, &e))
		return 1;
	coh_route *r = e.r;
	auto fill = [&](uint32_t n, uint64_t v) {
		c.buf.assign((size_t)n * kEngBs, 0);
		c.rio.buf = c.buf.data();
		for (uint32_t w = 0; w < n * kEngBs / 8; w++)
			memcpy(c.buf.data() + w * 8, &v, 8);
	};
	auto run = [&](uint32_t type, uint64_t lba, uint32_t n, uint64_t v) {
		rcmd_prepare(c, type, l.la, lba, n);
		fill(n, type == COH_IO_WRITE ? v : 0);
		return submit(r, c) == 0 && wait_cmd(c, 60000) && c.calls == 1 && c.st.status == 0;
	};
	CONF_CHECK(conf_barrier(cn) == 0, "every controller up");
	if (cn->id == 1)
		CONF_CHECK(run(COH_IO_WRITE, 0, 4, 0x100), "controller 1 writes la 0-3");
	CONF_CHECK(coh_node_stats(e.gnode[0], &ns0) == 0, "ga's stats before");
	CONF_CHECK(conf_barrier(cn) == 0, "la 0-3 held by 1");
	if (cn->id == 2) {
		uint32_t owner, sharers;

		CONF_CHECK(coh_node_lock_holders(e.gnode[0], 0, &owner, &sharers) == 0 &&
			       owner == 1,
			   "ga's directory names controller 1 as la 0's holder: %u", owner);
		for (uint32_t k = 0; k < kCmds; k++) {
			uint64_t v = 0x200 + k;

			if (k % 2) {
				CONF_CHECK(run(COH_IO_READ, 0, 4, 0), "read %u", k);
				v = 0x200 + k - 1;
				for (uint32_t w = 0; w < 4 * kEngBs / 8; w++)
					CONF_CHECK(!memcmp(c.buf.data() + w * 8, &v, 8),
						   "read %u: the last write's data", k);
			} else {
				CONF_CHECK(run(COH_IO_WRITE, 0, 4, v), "write %u", k);
			}
		}
		// One-block reads of what the holder has at hand: answered from its cache on its
		// forwarder's thread, each the last value written.
		for (uint32_t b = 0; b < 4; b++) {
			uint64_t v = 0x200 + kCmds - 2;

			CONF_CHECK(run(COH_IO_READ, b, 1, 0), "one-block read %u", b);
			for (uint32_t w = 0; w < kEngBs / 8; w++)
				CONF_CHECK(!memcmp(c.buf.data() + w * 8, &v, 8),
					   "one-block read %u: the last write's data", b);
		}
		CONF_CHECK(run(COH_IO_WRITE, 64, 1, 0x300), "a block nobody holds");
		coh_route_stats(r, &st);
		CONF_CHECK(st.forwarded == kCmds + 5 && st.to_holder == kCmds + 4,
			   "forwarded %llu, to the holder %llu", (unsigned long long)st.forwarded,
			   (unsigned long long)st.to_holder);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "controller 2 done");
	coh_route_stats(r, &st);
	CONF_CHECK(coh_node_stats(e.gnode[0], &ns1) == 0 && ns1.cache_valid && ns0.cache_valid,
		   "ga's stats after");
	if (cn->id == 0)
		CONF_CHECK(st.executed_for_others == 1,
			   "the preferred AMF executed only the block nobody held: %llu",
			   (unsigned long long)st.executed_for_others);
	if (cn->id == 1) {
		CONF_CHECK(st.executed_for_others == kCmds + 4, "the holder executed %llu",
			   (unsigned long long)st.executed_for_others);
		// (a read finds the cache's lock busy at times, and goes to the engine then)
		CONF_CHECK(st.read_cached >= 1, "one-block reads answered from the cache: %llu",
			   (unsigned long long)st.read_cached);
		CONF_CHECK(ns1.lock_transfers == ns0.lock_transfers,
			   "the holder gave its lock away %llu times",
			   (unsigned long long)(ns1.lock_transfers - ns0.lock_transfers));
	}
	CONF_CHECK(conf_barrier(cn) == 0, "checked");
	coh_route_delete(&r);
	CONF_CHECK(conf_barrier(cn) == 0, "every router gone");
	engines_down(&e);
	return 0;
}

TEST(router, a_forwarded_command_goes_to_the_amf_holding_the_lock)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	EXPECT_EQ(0, run_in_groups("router_holder", sc_holder, 0));
}

// Deaths between a command's steps: controller 0 (ga's preferred AMF, and the coordinator of
// virtual volumes) is SIGKILLed at a named step of a command controller 2 forwarded to it
// (route_hooks.h): received and not run, run and not answered, or one component of a striped
// write done and the others not. Controller 2 writes la (4 blocks, forwarded to 0) and vs (16
// blocks across three chunks of both groups, whole to the coordinator 0) in turn, one at a time,
// each block stamped with the write's number: every write completes once with success (the one
// cut off at 0 is routed again, to 1, after the takeover), and every block read back through
// the survivors holds the last write of it.
uint32_t step_point, step_nth;
std::atomic<uint32_t> step_seen;

int kill_at_step(void *, uint32_t point, uint64_t detail)
{
	bool from2 = point != COH_ROUTE_POINT_CMD_RECEIVED || detail >> 32 == 2;

	if (point == step_point && from2 && ++step_seen == step_nth)
		raise(SIGKILL);
	return 0;
}

int sc_step_kill(conf_node *cn)
{
	constexpr uint32_t kWrites = 16;
	layout l = engine_layout();
	engines e;
	rcmd c;
	std::vector<uint64_t> la_stamp(64, 0), vs_stamp(128, 0);

	if (engines_up(cn, l, &e))
		return 1;
	coh_route *r = e.r;
	if (cn->id == 0) {
		coh_route_hooks h = { sizeof(h), kill_at_step, nullptr };
		CONF_CHECK(coh_route_set_hooks(r, &h) == 0, "hooks");
	}
	CONF_CHECK(conf_barrier(cn) == 0, "every controller up");
	if (cn->id == 2) {
		for (uint32_t k = 0; k < kWrites; k++) {
			bool virt = k % 2;
			uint32_t n = virt ? 16 : 4;
			uint64_t lba = virt ? 4 + 16 * (k / 2 % 7) : 4 * (k / 2 % 16);
			uint64_t st = 0x5000 + k;

			rcmd_prepare(c, COH_IO_WRITE, virt ? l.vs : l.la, lba, n);
			c.buf.assign((size_t)n * kEngBs, 0);
			c.rio.buf = c.buf.data();
			for (uint32_t w = 0; w < n * kEngBs / 8; w++)
				memcpy(c.buf.data() + w * 8, &st, 8);
			CONF_CHECK(submit(r, c) == 0 && wait_cmd(c, 60000), "write %u completes",
				   k);
			CONF_CHECK(c.calls == 1 && c.st.status == 0, "write %u: %s", k,
				   coh_strerror(c.st.status));
			for (uint32_t b = 0; b < n; b++)
				(virt ? vs_stamp : la_stamp)[lba + b] = st;
		}
		struct coh_route_stats rs;
		coh_route_stats(r, &rs);
		CONF_CHECK(rs.rerouted >= 1, "the command cut off at 0 was routed again");
		fprintf(stderr, "node 2: step %u #%u: %llu routed again, %llu forwarded\n",
			step_point, step_nth, (unsigned long long)rs.rerouted,
			(unsigned long long)rs.forwarded);
		// Read back through the survivors: la's blocks from 1 (ga's only live AMF), vs's
		// through the next coordinator, 1.
		for (uint32_t v = 0; v < 2; v++) {
			std::vector<uint64_t> &want = v ? vs_stamp : la_stamp;

			for (uint32_t off = 0; off < want.size(); off += 16) {
				rcmd_prepare(c, COH_IO_READ, v ? l.vs : l.la, off, 16);
				c.buf.assign(16 * kEngBs, 0);
				c.rio.buf = c.buf.data();
				CONF_CHECK(submit(r, c) == 0 && wait_cmd(c, 60000) &&
					       c.st.status == 0,
					   "read back %s %u", v ? "vs" : "la", off);
				for (uint32_t b = 0; b < 16; b++) {
					uint64_t got;

					memcpy(&got, c.buf.data() + b * kEngBs, 8);
					for (uint32_t w = 1; w < kEngBs / 8; w++)
						CONF_CHECK(
						    !memcmp(c.buf.data() + b * kEngBs + w * 8, &got,
							    8),
						    "%s block %u torn", v ? "vs" : "la", off + b);
					CONF_CHECK(got == want[off + b],
						   "%s block %u: %llx, the last write %llx",
						   v ? "vs" : "la", off + b,
						   (unsigned long long)got,
						   (unsigned long long)want[off + b]);
				}
			}
		}
	}
	uint8_t token = 1;
	if (cn->id == 0) {
		// Serves until the step kills it (bounded: controller 2 never sends this).
		(void)conf_recv(cn, 2, &token, NULL, 120000);
		CONF_CHECK(false, "controller 0 outlived its step");
	}
	uint32_t other = 3 - cn->id;
	CONF_CHECK(conf_send(cn, other, &token, 1) == 0, "tell the other survivor");
	CONF_CHECK(conf_recv(cn, other, &token, NULL, 120000) == 0, "hear from it");
	coh_route_delete(&r);
	engines_down(&e);
	_exit(0); // the harness's goodbye needs controller 0
}

int run_step_kill(uint32_t point, uint32_t nth)
{
	step_point = point;
	step_nth = nth;
	step_seen = 0;
	return run_in_groups("router_step_kill", sc_step_kill, 1u << 0);
}

TEST(router, a_target_killed_between_a_commands_steps)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	// la's third write (the fifth command) received, not run; vs's second (the fourth
	// command) run, not answered; a component of vs's third write done, the others not.
	EXPECT_EQ(0, run_step_kill(COH_ROUTE_POINT_CMD_RECEIVED, 5)) << "received";
	EXPECT_EQ(0, run_step_kill(COH_ROUTE_POINT_CMD_EXECUTED, 4)) << "executed";
	EXPECT_EQ(0, run_step_kill(COH_ROUTE_POINT_COMPONENT_DONE, 5)) << "one component done";
}

// Linearizability across a virtual volume, on real engines: every controller submits random
// reads and writes of 1 to 16 blocks at random places of the volume striped over both groups,
// four in flight, each write with a value of its own in every block. Each block of each
// command is one entry of a per-block register history (its submit and callback times, the
// value written or read); linz_check then checks every block's history, across controllers.
int sc_linz(conf_node *cn)
{
	constexpr uint32_t kDepth = 4, kOps = 200;
	layout l = engine_layout();
	engines e;
	std::vector<rcmd> slot(kDepth);
	std::vector<uint64_t> inv(kDepth);
	std::mt19937_64 rng(500 + cn->id);

	if (engines_up(cn, l, &e))
		return 1;
	coh_route *r = e.r;
	CONF_CHECK(conf_barrier(cn) == 0, "every controller up");
	auto now = [] {
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
	};
	for (uint32_t k = 0; k < kOps + kDepth; k++) {
		rcmd &c = slot[k % kDepth];

		if (k >= kDepth) {
			CONF_CHECK(wait_cmd(c, 60000), "op %u completes", k - kDepth);
			uint64_t resp = now();
			CONF_CHECK(c.calls == 1 && c.st.status == 0, "op %u: %d", k - kDepth,
				   c.st.status);
			for (uint32_t b = 0; b < c.rio.nblocks; b++) {
				uint32_t i = sh->nlz[cn->id]++;
				uint64_t v;

				CONF_CHECK(i < 6144, "history full");
				memcpy(&v, c.buf.data() + b * kEngBs, 8);
				for (uint32_t w = 1; w < kEngBs / 8; w++)
					CONF_CHECK(
					    !memcmp(c.buf.data() + b * kEngBs + w * 8, &v, 8),
					    "block torn inside");
				sh->lz[cn->id][i] = {
					inv[k % kDepth], resp,
					c.rio.lba + b,	 v,
					cn->id,		 (uint8_t)(c.rio.type == COH_IO_WRITE)
				};
			}
		}
		if (k >= kOps)
			continue;
		uint32_t n = 1 + (uint32_t)(rng() % 16);
		uint64_t lba = rng() % (64 - n + 1); // 64 blocks: 8 chunks, 4 on each group
		bool write = rng() % 2;

		rcmd_prepare(c, write ? COH_IO_WRITE : COH_IO_READ, l.vs, lba, n);
		c.buf.assign((size_t)n * kEngBs, 0);
		c.rio.buf = c.buf.data();
		if (write) {
			for (uint32_t b = 0; b < n; b++) {
				uint64_t v = (uint64_t)(cn->id + 1) << 48 | (uint64_t)k << 16 | b;

				for (uint32_t w = 0; w < kEngBs / 8; w++)
					memcpy(c.buf.data() + b * kEngBs + w * 8, &v, 8);
			}
		}
		inv[k % kDepth] = now();
		CONF_CHECK(submit(r, c) == 0, "submit %u", k);
	}
	CONF_CHECK(conf_barrier(cn) == 0, "barrier before the end");
	struct coh_route_stats st;
	coh_route_stats(r, &st);
	fprintf(stderr, "node %u: %llu executed for others, %llu of them reads from the cache\n",
		cn->id, (unsigned long long)st.executed_for_others,
		(unsigned long long)st.read_cached);
	coh_route_delete(&r);
	CONF_CHECK(conf_barrier(cn) == 0, "every router gone");
	engines_down(&e);
	return 0;
}

TEST(router, linearizable_across_a_virtual_volume)
{
	if (strcmp(conf_provider(), "shm"))
		GTEST_SKIP() << "the groups' clusters are made on shm here";
	ASSERT_EQ(0, run_in_groups("router_linz", sc_linz, 0));
	std::vector<linz_op> ops;
	for (uint32_t c = 0; c < 3; c++)
		for (uint32_t i = 0; i < sh->nlz[c]; i++)
			ops.push_back(sh->lz[c][i]);
	EXPECT_GT(ops.size(), 1000u);
	EXPECT_EQ(0, linz_check(ops.data(), ops.size(), stderr));
}

class RouterEnv : public ::testing::Environment
{
      public:
	void SetUp() override
	{
		void *p = mmap(nullptr, sizeof(shared_state), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(p, MAP_FAILED);
		sh = static_cast<shared_state *>(p);
	}
};

// Each test starts from a clean shared state (the children inherit it at fork).
class RouterReset : public ::testing::EmptyTestEventListener
{
	void OnTestStart(const ::testing::TestInfo &) override
	{
		pthread_mutexattr_t a;

		memset(static_cast<void *>(sh), 0, sizeof(*sh));
		pthread_mutexattr_init(&a);
		pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
		for (auto &m : sh->mu)
			pthread_mutex_init(&m, &a);
		pthread_mutexattr_destroy(&a);
		sh->hold_node = kNoNode;
		completed = 0;
	}
};

const bool registered = [] {
	::testing::AddGlobalTestEnvironment(new RouterEnv);
	::testing::UnitTest::GetInstance()->listeners().Append(new RouterReset);
	return true;
}();
} // namespace

// unit_fabric_test.cc - unit tests of the fabric API on the shm provider, in one process:
// argument checking, descriptors, cluster addresses, events, endpoints between two fabrics of
// the same process, loopback operations, persistent regions, a peer that corrupts its ring, and
// logging.
#include <gtest/gtest.h>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "cohort/log.h"
#include "unit_shim.h"

namespace
{

class Cluster
{
      public:
	Cluster()
	{
		char buf[256];
		EXPECT_EQ(0, conf_cluster_new(buf, sizeof(buf), 2));
		dir = buf;
	}
	~Cluster()
	{
		conf_cluster_cleanup(dir.c_str());
	}
	coh_fabric_attr attr(uint32_t node, uint32_t timeout_ms = 2000) const
	{
		coh_fabric_attr a = {};
		a.provider = "shm";
		a.cluster = dir.c_str();
		a.node_id = node;
		a.timeout_ms = timeout_ms;
		return a;
	}
	std::string dir;
};

struct Node {
	coh_fabric *fab = nullptr;
	coh_cq *cq = nullptr;
	coh_ep *ep = nullptr;
	~Node()
	{
		coh_ep_delete(&ep);
		coh_cq_delete(&cq);
		coh_fabric_close(&fab);
	}
};

coh_ep_attr ep_attr(uint32_t peer, coh_cq *cq, uint32_t channel = 0)
{
	coh_ep_attr a = {};
	a.peer = peer;
	a.channel = channel;
	a.send_cq = cq;
	a.recv_cq = cq;
	a.max_send_wr = 16;
	a.max_recv_wr = 16;
	return a;
}

// Open two nodes of one cluster in this process and connect them (each side's coh_ep_new
// waits for the other, so one side runs on a thread).
void connect_pair(const Cluster &c, Node &a, Node &b)
{
	coh_fabric_attr fa = c.attr(0), fb = c.attr(1);
	ASSERT_EQ(0, coh_fabric_open(&fa, &a.fab));
	ASSERT_EQ(0, coh_fabric_open(&fb, &b.fab));
	ASSERT_EQ(0, coh_cq_new(a.fab, 64, &a.cq));
	ASSERT_EQ(0, coh_cq_new(b.fab, 64, &b.cq));
	coh_ep_attr ea = ep_attr(1, a.cq), eb = ep_attr(0, b.cq);
	int rb = -1;
	std::thread t([&] { rb = coh_ep_new(b.fab, &eb, &b.ep); });
	int ra = coh_ep_new(a.fab, &ea, &a.ep);
	t.join();
	ASSERT_EQ(0, ra);
	ASSERT_EQ(0, rb);
}

TEST(fabric_open, bad_arguments)
{
	Cluster c;
	coh_fabric *fab = nullptr;
	coh_fabric_attr a = c.attr(0);

	EXPECT_EQ(-EINVAL, coh_fabric_open(nullptr, &fab));
	EXPECT_EQ(-EINVAL, coh_fabric_open(&a, nullptr));
	a.node_id = COH_FABRIC_MAX_NODES;
	EXPECT_EQ(-EINVAL, coh_fabric_open(&a, &fab));
	a = c.attr(0);
	a.provider = "nonesuch";
	EXPECT_EQ(-ENOENT, coh_fabric_open(&a, &fab));
	a = c.attr(0);
	a.cluster = "";
	EXPECT_EQ(-EINVAL, coh_fabric_open(&a, &fab));
	a.cluster = "/proc/definitely/not/here";
	EXPECT_GT(0, coh_fabric_open(&a, &fab));
	EXPECT_EQ(nullptr, fab);
}

TEST(fabric_open, node_id_in_use)
{
	Cluster c;
	Node n1, n2;
	coh_fabric_attr a = c.attr(3, 200);

	ASSERT_EQ(0, coh_fabric_open(&a, &n1.fab));
	EXPECT_EQ(-EADDRINUSE, coh_fabric_open(&a, &n2.fab));
	EXPECT_EQ(nullptr, n2.fab);
	// Once the first closes, the id is free again, as a new incarnation.
	ASSERT_EQ(0, coh_fabric_close(&n1.fab));
	EXPECT_EQ(nullptr, n1.fab);
	EXPECT_EQ(0, coh_fabric_open(&a, &n2.fab));
}

TEST(fabric_close, leftovers)
{
	Cluster c;
	coh_fabric *fab = nullptr;
	coh_fabric_attr a = c.attr(0);
	coh_mr *mr = nullptr;

	EXPECT_EQ(0, coh_fabric_close(nullptr));
	EXPECT_EQ(0, coh_fabric_close(&fab));
	ASSERT_EQ(0, coh_fabric_open(&a, &fab));
	ASSERT_EQ(0, coh_mr_new(fab, 4096, COH_ACCESS_REMOTE_READ, &mr));
	// Closing with a region left is reported, and the fabric is still freed.
	EXPECT_EQ(-EBUSY, coh_fabric_close(&fab));
	EXPECT_EQ(nullptr, fab);
	// The region's memory is its own mapping; deleting it after the fabric is gone is not
	// allowed, so it is leaked here on purpose (documented misuse).
}

TEST(fabric_query, shm)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(5);
	coh_fabric_info info;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	EXPECT_EQ(-EINVAL, coh_fabric_query(nullptr, &info));
	EXPECT_EQ(-EINVAL, coh_fabric_query(n.fab, nullptr));
	ASSERT_EQ(0, coh_fabric_query(n.fab, &info));
	EXPECT_STREQ("shm", info.provider);
	EXPECT_EQ(5u, info.node_id);
	EXPECT_EQ(5u, coh_fabric_node_id(n.fab));
	EXPECT_FALSE(info.native_flush);
	EXPECT_FALSE(info.persistent); // the test cluster lives on tmpfs
	EXPECT_EQ(-1, info.numa_node);
}

TEST(mr, bad_arguments)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(0);
	coh_mr *mr = nullptr;
	char buf[64];

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	EXPECT_EQ(-EINVAL, coh_mr_new(nullptr, 64, 0, &mr));
	EXPECT_EQ(-EINVAL, coh_mr_new(n.fab, 0, 0, &mr));
	EXPECT_EQ(-EINVAL, coh_mr_new(n.fab, (size_t)COH_FABRIC_MAX_XFER + 1, 0, &mr));
	EXPECT_EQ(-EINVAL, coh_mr_new(n.fab, 64, 0x100, &mr));
	EXPECT_EQ(-EINVAL, coh_mr_reg(n.fab, nullptr, 64, 0, &mr));
	EXPECT_EQ(-EOPNOTSUPP, coh_mr_reg(n.fab, buf, sizeof(buf), COH_ACCESS_REMOTE_READ, &mr));
	EXPECT_EQ(nullptr, mr);
	ASSERT_EQ(0, coh_mr_reg(n.fab, buf, sizeof(buf), COH_ACCESS_LOCAL_WRITE, &mr));
	EXPECT_EQ(buf, coh_mr_addr(mr));
	EXPECT_EQ(sizeof(buf), coh_mr_len(mr));
	EXPECT_EQ(-EINVAL, coh_mr_rekey(mr));
	coh_mr_desc d;
	EXPECT_EQ(-EINVAL, coh_mr_export(mr, &d));
	EXPECT_EQ(0, coh_mr_delete(&mr));
	EXPECT_EQ(nullptr, mr);
	EXPECT_EQ(0, coh_mr_delete(&mr));
	EXPECT_EQ(0, coh_mr_delete(nullptr));
	ASSERT_EQ(0, coh_mr_new(n.fab, 100, COH_ACCESS_REMOTE_WRITE, &mr));
	EXPECT_EQ(0u, (uintptr_t)coh_mr_addr(mr) % 4096);  // page-aligned
	EXPECT_EQ(0, ((const char *)coh_mr_addr(mr))[99]); // zeroed
	EXPECT_EQ(0, coh_mr_delete(&mr));
}

TEST(cq, bad_arguments)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(0);
	coh_cq *cq = nullptr;
	coh_wc wc;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	EXPECT_EQ(-EINVAL, coh_cq_new(n.fab, 0, &cq));
	EXPECT_EQ(-EINVAL, coh_cq_new(n.fab, 65537, &cq));
	EXPECT_EQ(-EINVAL, coh_cq_new(nullptr, 8, &cq));
	ASSERT_EQ(0, coh_cq_new(n.fab, 8, &cq));
	EXPECT_EQ(-EINVAL, coh_cq_poll(cq, &wc, 0));
	EXPECT_EQ(-EINVAL, coh_cq_poll(nullptr, &wc, 1));
	EXPECT_EQ(-EINVAL, coh_cq_wait(cq, &wc, 1, -1));
	EXPECT_EQ(0, coh_cq_poll(cq, &wc, 1));
	EXPECT_EQ(-EAGAIN, coh_cq_wait(cq, &wc, 1, 0));
	EXPECT_EQ(-ETIMEDOUT, coh_cq_wait(cq, &wc, 1, 5));
	EXPECT_EQ(0, coh_cq_delete(&cq));
	EXPECT_EQ(0, coh_cq_delete(&cq));
}

TEST(ep_new, bad_attributes)
{
	Cluster c;
	Node n, other;
	coh_fabric_attr a = c.attr(0, 100), b = c.attr(1, 100);
	coh_ep *ep = nullptr;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	ASSERT_EQ(0, coh_fabric_open(&b, &other.fab));
	ASSERT_EQ(0, coh_cq_new(n.fab, 40, &n.cq));
	ASSERT_EQ(0, coh_cq_new(other.fab, 40, &other.cq));
	coh_ep_attr e = ep_attr(0, n.cq);
	e.peer = COH_FABRIC_MAX_NODES;
	EXPECT_EQ(-EINVAL, coh_ep_new(n.fab, &e, &ep));
	e = ep_attr(0, n.cq, 256);
	EXPECT_EQ(-EINVAL, coh_ep_new(n.fab, &e, &ep));
	e = ep_attr(0, nullptr);
	EXPECT_EQ(-EINVAL, coh_ep_new(n.fab, &e, &ep));
	e = ep_attr(0, other.cq); // a queue of another fabric
	EXPECT_EQ(-EINVAL, coh_ep_new(n.fab, &e, &ep));
	e = ep_attr(0, n.cq);
	e.max_msg_size = (1u << 20) + 1;
	EXPECT_EQ(-EINVAL, coh_ep_new(n.fab, &e, &ep));
	e = ep_attr(0, n.cq);
	e.max_send_wr = 30; // 30 + 16 > 40
	EXPECT_EQ(-ENOSPC, coh_ep_new(n.fab, &e, &ep));
	// A peer that never shows up: bounded by the timeout.
	e = ep_attr(7, n.cq);
	EXPECT_EQ(-ETIMEDOUT, coh_ep_new(n.fab, &e, &ep));
	// Loopback works alone, once per channel.
	e = ep_attr(0, n.cq);
	ASSERT_EQ(0, coh_ep_new(n.fab, &e, &n.ep));
	coh_ep_attr e2 = ep_attr(0, other.cq);
	e2.send_cq = e2.recv_cq = n.cq;
	e2.max_send_wr = e2.max_recv_wr = 1;
	EXPECT_EQ(-EEXIST, coh_ep_new(n.fab, &e2, &ep));
	EXPECT_EQ(nullptr, ep);
	EXPECT_EQ(0, coh_ep_delete(&n.ep));
	// What the failed attempts reserved was released: a full-depth endpoint fits again.
	e = ep_attr(0, n.cq);
	e.max_send_wr = 20;
	e.max_recv_wr = 20;
	EXPECT_EQ(0, coh_ep_new(n.fab, &e, &n.ep));
}

TEST(ep, loopback_operations)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(2);
	coh_mr *mr = nullptr, *loc = nullptr;
	coh_rmr *rmr = nullptr;
	coh_mr_desc d;
	coh_wc wc;
	uint64_t old = 0;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	ASSERT_EQ(0, coh_cq_new(n.fab, 64, &n.cq));
	coh_ep_attr e = ep_attr(2, n.cq);
	ASSERT_EQ(0, coh_ep_new(n.fab, &e, &n.ep));
	EXPECT_TRUE(coh_ep_is_up(n.ep));
	EXPECT_EQ(2u, coh_ep_peer(n.ep));
	ASSERT_EQ(0,
		  coh_mr_new(n.fab, 4096, COH_ACCESS_REMOTE_ATOMIC | COH_ACCESS_REMOTE_READ, &mr));
	ASSERT_EQ(0, coh_mr_new(n.fab, 4096, COH_ACCESS_LOCAL_WRITE, &loc));
	ASSERT_EQ(0, coh_mr_export(mr, &d));
	ASSERT_EQ(0, coh_rmr_import(n.ep, &d, &rmr));
	EXPECT_EQ(4096u, coh_rmr_len(rmr));
	EXPECT_EQ(0, coh_ep_faa_sync(n.ep, rmr, 8, 5, &old));
	EXPECT_EQ(0u, old);
	EXPECT_EQ(0, coh_ep_cas_sync(n.ep, rmr, 8, 5, 9, &old));
	EXPECT_EQ(5u, old);
	EXPECT_EQ(0, coh_ep_cas_sync(n.ep, rmr, 8, 5, 1, &old)); // fails: value is 9
	EXPECT_EQ(9u, old);
	EXPECT_EQ(9u, ((uint64_t *)coh_mr_addr(mr))[1]);
	// Loopback SEND/RECV.
	memcpy(coh_mr_addr(loc), "hello", 6);
	ASSERT_EQ(0, coh_ep_post_recv(n.ep, loc, 100, 64, 42));
	ASSERT_EQ(0, coh_ep_send_sync(n.ep, loc, 0, 6));
	ASSERT_EQ(1, coh_cq_wait(n.cq, &wc, 1, 1000));
	EXPECT_EQ(42u, wc.wr_id);
	EXPECT_EQ(0, wc.status);
	EXPECT_EQ((uint32_t)COH_WC_RECV, wc.opcode);
	EXPECT_EQ(6u, wc.byte_len);
	EXPECT_STREQ("hello", (char *)coh_mr_addr(loc) + 100);
	// Deleting the endpoint with an imported region is reported.
	EXPECT_EQ(0, coh_rmr_delete(&rmr));
	EXPECT_EQ(0, coh_rmr_delete(&rmr));
	coh_mr_delete(&loc);
	coh_mr_delete(&mr);
}

TEST(ep, pair_send_recv_and_sync_stash)
{
	Cluster c;
	Node a, b;
	connect_pair(c, a, b);
	coh_mr *la = nullptr, *lb = nullptr;
	coh_wc wc;

	ASSERT_EQ(0, coh_mr_new(a.fab, 4096, COH_ACCESS_LOCAL_WRITE, &la));
	ASSERT_EQ(0, coh_mr_new(b.fab, 4096, COH_ACCESS_LOCAL_WRITE, &lb));
	// a has a receive posted and a message waiting when its blocking helper runs: the helper
	// must keep that receive completion for the next poll, not consume or lose it.
	ASSERT_EQ(0, coh_ep_post_recv(a.ep, la, 0, 64, 7));
	ASSERT_EQ(0, coh_ep_post_recv(b.ep, lb, 0, 64, 8));
	ASSERT_EQ(0, coh_ep_send_sync(b.ep, lb, 100, 10));
	ASSERT_EQ(0, coh_ep_send_sync(a.ep, la, 100, 12));
	ASSERT_EQ(1, coh_cq_wait(a.cq, &wc, 1, 1000));
	EXPECT_EQ(7u, wc.wr_id);
	EXPECT_EQ(10u, wc.byte_len);
	ASSERT_EQ(1, coh_cq_wait(b.cq, &wc, 1, 1000));
	EXPECT_EQ(8u, wc.wr_id);
	EXPECT_EQ(12u, wc.byte_len);
	EXPECT_EQ(-EAGAIN, coh_cq_wait(a.cq, &wc, 1, 0));
	coh_mr_delete(&la);
	coh_mr_delete(&lb);
}

TEST(ep, peer_corrupts_message_length)
{
	Cluster c;
	Node a, b;
	connect_pair(c, a, b);
	coh_mr *la = nullptr, *lb = nullptr;
	coh_wc wc;

	ASSERT_EQ(0, coh_mr_new(a.fab, 4096, COH_ACCESS_LOCAL_WRITE, &la));
	ASSERT_EQ(0, coh_mr_new(b.fab, 4096, COH_ACCESS_LOCAL_WRITE, &lb));
	ASSERT_EQ(0, coh_ep_send_sync(a.ep, la, 0, 32));
	ASSERT_EQ(0, shim_corrupt_ring(c.dir.c_str(), 0, SHIM_CORRUPT_LEN));
	ASSERT_EQ(0, coh_ep_post_recv(b.ep, lb, 0, 4096, 1));
	ASSERT_EQ(1, coh_cq_wait(b.cq, &wc, 1, 1000));
	EXPECT_EQ(-EPROTO, wc.status);
	// The bad message is dropped; the next one gets through.
	ASSERT_EQ(0, coh_ep_send_sync(a.ep, la, 0, 16));
	ASSERT_EQ(0, coh_ep_post_recv(b.ep, lb, 0, 4096, 2));
	ASSERT_EQ(1, coh_cq_wait(b.cq, &wc, 1, 1000));
	EXPECT_EQ(0, wc.status);
	EXPECT_EQ(16u, wc.byte_len);
	coh_mr_delete(&la);
	coh_mr_delete(&lb);
}

TEST(ep, peer_corrupts_ring_index)
{
	Cluster c;
	Node a, b;
	connect_pair(c, a, b);
	coh_mr *lb = nullptr;
	coh_wc wc;

	ASSERT_EQ(0, coh_mr_new(b.fab, 4096, COH_ACCESS_LOCAL_WRITE, &lb));
	ASSERT_EQ(0, coh_ep_post_recv(b.ep, lb, 0, 4096, 1));
	ASSERT_EQ(0, shim_corrupt_ring(c.dir.c_str(), 0, SHIM_CORRUPT_TAIL));
	// The endpoint is declared down and its receive flushed, instead of reading garbage.
	ASSERT_EQ(1, coh_cq_wait(b.cq, &wc, 1, 1000));
	EXPECT_EQ(-ECONNRESET, wc.status);
	EXPECT_FALSE(coh_ep_is_up(b.ep));
	coh_mr_delete(&lb);
}

TEST(ep, peer_closes)
{
	Cluster c;
	Node a, b;
	connect_pair(c, a, b);
	coh_event ev;

	EXPECT_EQ(-EAGAIN, coh_fabric_event_get(a.fab, &ev, 0));
	coh_ep_delete(&b.ep);
	coh_cq_delete(&b.cq);
	ASSERT_EQ(0, coh_fabric_close(&b.fab));
	ASSERT_EQ(0, coh_fabric_event_get(a.fab, &ev, 5000));
	EXPECT_EQ((uint32_t)COH_EVENT_PEER_DOWN, ev.type);
	EXPECT_EQ(1u, ev.peer);
	EXPECT_FALSE(coh_ep_is_up(a.ep));
}

TEST(events, coalesced_and_fd)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(0);
	coh_event ev;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	int fd = coh_fabric_event_fd(n.fab);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(-EINVAL, coh_fabric_event_fd(nullptr));
	EXPECT_EQ(-EINVAL, coh_fabric_event_get(n.fab, &ev, -1));
	pollfd p = { fd, POLLIN, 0 };
	EXPECT_EQ(0, poll(&p, 1, 0));
	shim_peer_down(n.fab, 4, 7);
	shim_peer_down(n.fab, 4, 7);
	shim_peer_down(n.fab, 2, 3);
	shim_peer_down(n.fab, 99, 1); // out of range: ignored
	EXPECT_EQ(1, poll(&p, 1, 0));
	ASSERT_EQ(0, coh_fabric_event_get(n.fab, &ev, 0));
	EXPECT_EQ(2u, ev.peer);
	EXPECT_EQ(3u, ev.incarnation);
	ASSERT_EQ(0, coh_fabric_event_get(n.fab, &ev, 0));
	EXPECT_EQ(4u, ev.peer);
	EXPECT_EQ(7u, ev.incarnation);
	EXPECT_EQ(-EAGAIN, coh_fabric_event_get(n.fab, &ev, 0));
	EXPECT_EQ(-ETIMEDOUT, coh_fabric_event_get(n.fab, &ev, 5));
	EXPECT_EQ(0, poll(&p, 1, 0));
}

TEST(desc, round_trip_and_corruption)
{
	shim_fields f = { 1, 3, 9, 0xabcdef, COH_ACCESS_REMOTE_READ, 0x1000, 8192, 5 }, g;
	uint8_t b[COH_MR_DESC_SIZE], x[COH_MR_DESC_SIZE];

	shim_desc_encode(&f, b);
	ASSERT_EQ(0, shim_desc_decode(b, &g));
	EXPECT_EQ(f.node, g.node);
	EXPECT_EQ(f.region, g.region);
	EXPECT_EQ(f.rkey, g.rkey);
	EXPECT_EQ(f.len, g.len);
	EXPECT_EQ(f.incarnation, g.incarnation);
	EXPECT_EQ(COH_PERSIST_NONE, g.persist);
	// The persistence mode travels in byte 20; the three bytes after it stay reserved.
	for (uint8_t mode : { COH_PERSIST_FILE, COH_PERSIST_PMEM }) {
		shim_fields p = f;
		p.persist = mode;
		shim_desc_encode(&p, x);
		EXPECT_EQ(mode, x[20]);
		ASSERT_EQ(0, shim_desc_decode(x, &g));
		EXPECT_EQ(mode, g.persist);
	}
	shim_fields bad = f;
	bad.persist = COH_PERSIST_PMEM + 1;
	shim_desc_encode(&bad, x);
	EXPECT_EQ(-EPROTO, shim_desc_decode(x, nullptr));
	// Any change to magic, version, provider or the reserved word is refused.
	for (int byte : { 0, 1, 2, 3, 20, 21, 22, 23 }) {
		memcpy(x, b, sizeof(b));
		x[byte] ^= 0x40;
		EXPECT_EQ(-EPROTO, shim_desc_decode(x, nullptr)) << "byte " << byte;
	}
	bad = f;
	bad.node = 64;
	shim_desc_encode(&bad, x);
	EXPECT_EQ(-EPROTO, shim_desc_decode(x, nullptr));
	bad = f;
	bad.len = 0;
	shim_desc_encode(&bad, x);
	EXPECT_EQ(-EPROTO, shim_desc_decode(x, nullptr));
	bad = f;
	bad.access = COH_ACCESS_LOCAL_WRITE;
	shim_desc_encode(&bad, x);
	EXPECT_EQ(-EPROTO, shim_desc_decode(x, nullptr));
	bad = f;
	bad.addr = ~0ull - 10;
	shim_desc_encode(&bad, x);
	EXPECT_EQ(-EPROTO, shim_desc_decode(x, nullptr));
}

// A file for a persistent region, named for this test process, removed at the end.
struct TempFile {
	explicit TempFile(const char *dir = "/dev/shm")
	{
		static int counter;
		path = std::string(dir) + "/cohort-unit-pmem-" + std::to_string(getpid()) + "-" +
		       std::to_string(counter++);
		unlink(path.c_str());
	}
	~TempFile()
	{
		unlink(path.c_str());
	}
	const char *c() const
	{
		return path.c_str();
	}
	bool exists() const
	{
		return access(path.c_str(), F_OK) == 0;
	}
	std::string path;
};

void fill_pattern(void *p, size_t len, unsigned seed)
{
	auto *b = static_cast<uint8_t *>(p);
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(i * 131 + seed);
}

bool has_pattern(const void *p, size_t len, unsigned seed)
{
	std::vector<uint8_t> want(len);
	fill_pattern(want.data(), len, seed);
	return memcmp(want.data(), p, len) == 0;
}

constexpr uint32_t kPmemRights =
    COH_ACCESS_REMOTE_WRITE | COH_ACCESS_REMOTE_READ | COH_ACCESS_REMOTE_FLUSH;

TEST(mr_pmem, bad_arguments)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(0);
	coh_mr *mr = nullptr;
	TempFile t;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	EXPECT_EQ(-EINVAL, coh_mr_new_pmem(nullptr, t.c(), 64, 0, &mr));
	EXPECT_EQ(-EINVAL, coh_mr_new_pmem(n.fab, t.c(), 64, 0, nullptr));
	EXPECT_EQ(-EINVAL, coh_mr_new_pmem(n.fab, t.c(), 0, 0, &mr));
	EXPECT_EQ(-EINVAL, coh_mr_new_pmem(n.fab, t.c(), (size_t)COH_FABRIC_MAX_XFER + 1, 0, &mr));
	EXPECT_EQ(-EINVAL, coh_mr_new_pmem(n.fab, t.c(), 64, 0x100, &mr));
	EXPECT_EQ(-EINVAL, coh_mr_new_pmem(n.fab, "", 64, 0, &mr));
	EXPECT_FALSE(t.exists()); // nothing was created for a refused call
	// A directory that does not exist is open(2)'s error, not a generic one.
	EXPECT_EQ(-ENOENT, coh_mr_new_pmem(n.fab, "/dev/shm/cohort-no-such-dir/f", 64, 0, &mr));
	EXPECT_EQ(-EISDIR, coh_mr_new_pmem(n.fab, c.dir.c_str(), 64, 0, &mr));
	// A character device that is not device DAX, and a file of another type.
	EXPECT_EQ(-ENODEV, coh_mr_new_pmem(n.fab, "/dev/null", 64, 0, &mr));
	std::string fifo = c.dir + "/fifo";
	ASSERT_EQ(0, mkfifo(fifo.c_str(), 0600));
	EXPECT_EQ(-EINVAL, coh_mr_new_pmem(n.fab, fifo.c_str(), 64, 0, &mr));
	EXPECT_EQ(nullptr, mr);
}

TEST(mr_pmem, one_region_per_file)
{
	Cluster c;
	Node n, other;
	coh_fabric_attr a = c.attr(0), b = c.attr(1);
	coh_mr *mr = nullptr, *mr2 = nullptr;
	TempFile t;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	ASSERT_EQ(0, coh_fabric_open(&b, &other.fab));
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, t.c(), 4096, kPmemRights, &mr));
	EXPECT_EQ(-EBUSY, coh_mr_new_pmem(n.fab, t.c(), 4096, kPmemRights, &mr2));
	EXPECT_EQ(-EBUSY, coh_mr_new_pmem(other.fab, t.c(), 4096, kPmemRights, &mr2));
	EXPECT_EQ(nullptr, mr2);
	EXPECT_EQ(0, coh_mr_delete(&mr));
	// Free again once the region is gone.
	ASSERT_EQ(0, coh_mr_new_pmem(other.fab, t.c(), 4096, kPmemRights, &mr2));
	EXPECT_EQ(0, coh_mr_delete(&mr2));
}

TEST(mr_pmem, failure_after_create__file_removed)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(0);
	coh_mr *mr = nullptr;
	char name[64];
	TempFile fresh, old;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	// Take the name the region's link would get in the cluster directory.
	shim_shm_next_mr_name(n.fab, name, sizeof(name));
	std::string taken = c.dir + "/" + name;
	int fd = open(taken.c_str(), O_CREAT | O_WRONLY, 0600);
	ASSERT_GE(fd, 0);
	close(fd);
	EXPECT_EQ(-EEXIST, coh_mr_new_pmem(n.fab, fresh.c(), 4096, kPmemRights, &mr));
	EXPECT_EQ(nullptr, mr);
	EXPECT_FALSE(fresh.exists()); // created by the failed call, so removed by it
	// A file that existed before the call keeps its contents through the same failure.
	fd = open(old.c(), O_CREAT | O_WRONLY, 0600);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(5, write(fd, "data!", 5));
	close(fd);
	shim_shm_next_mr_name(n.fab, name, sizeof(name));
	taken = c.dir + "/" + name;
	ASSERT_EQ(0, symlink("/nonexistent", taken.c_str()));
	EXPECT_EQ(-EEXIST, coh_mr_new_pmem(n.fab, old.c(), 4096, kPmemRights, &mr));
	char buf[5] = {};
	fd = open(old.c(), O_RDONLY);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(5, read(fd, buf, 5));
	close(fd);
	EXPECT_EQ(0, memcmp(buf, "data!", 5));
}

TEST(mr_pmem, file_cannot_grow__error_and_created_file_removed)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(0);
	coh_mr *mr = nullptr;
	struct rlimit old_lim, lim;
	TempFile t;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	// A file size limit makes allocating the file fail (EFBIG, and SIGXFSZ, ignored here)
	// without a full file system.
	ASSERT_EQ(0, getrlimit(RLIMIT_FSIZE, &old_lim));
	lim = old_lim;
	lim.rlim_cur = 8192;
	auto old_handler = signal(SIGXFSZ, SIG_IGN);
	ASSERT_EQ(0, setrlimit(RLIMIT_FSIZE, &lim));
	int ret = coh_mr_new_pmem(n.fab, t.c(), 1 << 20, kPmemRights, &mr);
	setrlimit(RLIMIT_FSIZE, &old_lim);
	signal(SIGXFSZ, old_handler);
	EXPECT_EQ(-EFBIG, ret);
	EXPECT_EQ(nullptr, mr);
	EXPECT_FALSE(t.exists());
}

TEST(mr_pmem, persistence_modes)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(0);
	coh_mr *plain = nullptr, *reg = nullptr, *anon = nullptr, *shm = nullptr, *disk = nullptr;
	char buf[64];
	TempFile t, d("/tmp");
	struct stat st;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	EXPECT_EQ(COH_PERSIST_NONE, coh_mr_persistence(nullptr));
	ASSERT_EQ(0, coh_mr_new(n.fab, 4096, kPmemRights, &plain));
	EXPECT_EQ(COH_PERSIST_NONE, coh_mr_persistence(plain));
	ASSERT_EQ(0, coh_mr_reg(n.fab, buf, sizeof(buf), COH_ACCESS_LOCAL_WRITE, &reg));
	EXPECT_EQ(COH_PERSIST_NONE, coh_mr_persistence(reg));

	// No path: a fresh, zeroed file in the cluster directory, under the region's name.
	char name[64];
	shim_shm_next_mr_name(n.fab, name, sizeof(name));
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, nullptr, 10000, kPmemRights, &anon));
	EXPECT_EQ(COH_PERSIST_FILE, coh_mr_persistence(anon)); // tmpfs: page granularity
	EXPECT_EQ(10000u, coh_mr_len(anon));
	EXPECT_EQ(0u, (uintptr_t)coh_mr_addr(anon) % 4096);
	std::vector<uint8_t> zero(10000);
	EXPECT_EQ(0, memcmp(zero.data(), coh_mr_addr(anon), zero.size()));
	std::string in_dir = c.dir + "/" + name;
	ASSERT_EQ(0, lstat(in_dir.c_str(), &st));
	EXPECT_TRUE(S_ISREG(st.st_mode));
	EXPECT_EQ(0, coh_mr_delete(&anon));
	EXPECT_NE(0, lstat(in_dir.c_str(), &st)); // its file goes with it

	// A path on tmpfs: the cluster directory links to the file, which covers header + data.
	shim_shm_next_mr_name(n.fab, name, sizeof(name));
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, t.c(), 10000, kPmemRights, &shm));
	EXPECT_EQ(COH_PERSIST_FILE, coh_mr_persistence(shm));
	in_dir = c.dir + "/" + name;
	ASSERT_EQ(0, lstat(in_dir.c_str(), &st));
	EXPECT_TRUE(S_ISLNK(st.st_mode));
	char target[PATH_MAX] = {};
	ASSERT_GT(readlink(in_dir.c_str(), target, sizeof(target) - 1), 0);
	char *real = realpath(t.c(), nullptr);
	ASSERT_NE(nullptr, real);
	EXPECT_STREQ(real, target);
	free(real);
	ASSERT_EQ(0, stat(t.c(), &st));
	EXPECT_GE((size_t)st.st_size, 4096u + 10000u);
	EXPECT_EQ(0, coh_mr_delete(&shm));
	EXPECT_NE(0, lstat(in_dir.c_str(), &st)); // the link goes,
	EXPECT_TRUE(t.exists());		  // the file stays

	// A file in the page cache of a disk file system is page-granular too.
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, d.c(), 100, kPmemRights, &disk));
	EXPECT_EQ(COH_PERSIST_FILE, coh_mr_persistence(disk));
	EXPECT_EQ(0, coh_mr_delete(&disk));
	coh_mr_delete(&reg);
	coh_mr_delete(&plain);
}

TEST(mr_pmem, contents_survive_delete_and_recreate)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(0);
	coh_mr *mr = nullptr;
	const size_t len = 3 * 4096 + 5;
	TempFile t;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, t.c(), len, kPmemRights, &mr));
	fill_pattern(coh_mr_addr(mr), len, 7);
	ASSERT_EQ(0, coh_mr_delete(&mr));
	// Again on the same fabric.
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, t.c(), len, kPmemRights, &mr));
	EXPECT_TRUE(has_pattern(coh_mr_addr(mr), len, 7));
	ASSERT_EQ(0, coh_mr_delete(&mr));
	// And as a node that restarted: a new incarnation, a larger region on the same file. The
	// old bytes are where they were; the added ones read as zero.
	ASSERT_EQ(0, coh_fabric_close(&n.fab));
	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, t.c(), 2 * len, kPmemRights, &mr));
	EXPECT_TRUE(has_pattern(coh_mr_addr(mr), len, 7));
	std::vector<uint8_t> zero(len);
	EXPECT_EQ(0, memcmp(zero.data(), (uint8_t *)coh_mr_addr(mr) + len, len));
	ASSERT_EQ(0, coh_mr_delete(&mr));
}

TEST(mr_pmem, loopback_write_flush_import_and_revocation)
{
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(2);
	coh_mr *mr = nullptr, *ro = nullptr, *plain = nullptr, *loc = nullptr;
	coh_rmr *rmr = nullptr, *rro = nullptr, *tmp = nullptr;
	coh_mr_desc d, dro, dplain;
	TempFile t, tro;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	ASSERT_EQ(0, coh_cq_new(n.fab, 64, &n.cq));
	coh_ep_attr e = ep_attr(2, n.cq);
	ASSERT_EQ(0, coh_ep_new(n.fab, &e, &n.ep));
	ASSERT_EQ(0, coh_mr_new(n.fab, 8192, COH_ACCESS_LOCAL_WRITE, &loc));
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, t.c(), 8192, kPmemRights, &mr));
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, tro.c(), 100, COH_ACCESS_REMOTE_READ, &ro));
	ASSERT_EQ(0, coh_mr_new(n.fab, 4096, kPmemRights, &plain));

	// The descriptor carries the mode to the importer.
	ASSERT_EQ(0, coh_mr_export(mr, &d));
	ASSERT_EQ(0, coh_rmr_import(n.ep, &d, &rmr));
	EXPECT_EQ(COH_PERSIST_FILE, coh_rmr_persistence(rmr));
	EXPECT_EQ(COH_PERSIST_NONE, coh_rmr_persistence(nullptr));
	ASSERT_EQ(0, coh_mr_export(plain, &dplain));
	ASSERT_EQ(0, coh_rmr_import(n.ep, &dplain, &tmp));
	EXPECT_EQ(COH_PERSIST_NONE, coh_rmr_persistence(tmp));
	coh_rmr_delete(&tmp);

	// WRITE, FLUSH (which msyncs the importer's mapping), and the owner sees the bytes.
	fill_pattern(coh_mr_addr(loc), 8192, 3);
	EXPECT_EQ(0, coh_ep_write_sync(n.ep, loc, 0, rmr, 0, 8192));
	EXPECT_EQ(0, coh_ep_flush_sync(n.ep, rmr, 0, 8192));
	EXPECT_EQ(0, coh_ep_flush_sync(n.ep, rmr, 4095, 2)); // straddles a page boundary
	EXPECT_TRUE(has_pattern(coh_mr_addr(mr), 8192, 3));

	// A read-only region is mapped read-only by the importer and still readable.
	fill_pattern(coh_mr_addr(ro), 100, 9);
	ASSERT_EQ(0, coh_mr_export(ro, &dro));
	ASSERT_EQ(0, coh_rmr_import(n.ep, &dro, &rro));
	EXPECT_EQ(0, coh_ep_read_sync(n.ep, loc, 0, rro, 0, 100));
	EXPECT_TRUE(has_pattern(coh_mr_addr(loc), 100, 9));
	EXPECT_EQ(-EACCES, coh_ep_flush_sync(n.ep, rro, 0, 8)); // no FLUSH right

	// A descriptor that lies about the mode does not match the owner's header.
	shim_fields f;
	uint8_t bytes[COH_MR_DESC_SIZE];
	ASSERT_EQ(0, shim_desc_decode(dplain.bytes, &f));
	f.persist = COH_PERSIST_FILE;
	shim_desc_encode(&f, bytes);
	coh_mr_desc liar;
	memcpy(liar.bytes, bytes, sizeof(bytes));
	EXPECT_EQ(-EACCES, coh_rmr_import(n.ep, &liar, &tmp));

	// A peer whose file is shorter than its descriptor says is not mapped past the end.
	TempFile tshort;
	coh_mr *shrunk = nullptr;
	coh_mr_desc dshrunk;
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, tshort.c(), 3 * 4096, kPmemRights, &shrunk));
	ASSERT_EQ(0, coh_mr_export(shrunk, &dshrunk));
	ASSERT_EQ(0, truncate(tshort.c(), 4096)); // the header page stays, the data goes
	EXPECT_EQ(-EACCES, coh_rmr_import(n.ep, &dshrunk, &tmp));
	EXPECT_EQ(0, coh_mr_delete(&shrunk));

	// Rekey revokes; a region deleted and made again on the same file is a new region, which
	// the old import cannot reach although it maps the same file.
	fill_pattern(coh_mr_addr(loc), 8192, 3);
	ASSERT_EQ(0, coh_mr_rekey(mr));
	EXPECT_EQ(-EACCES, coh_ep_write_sync(n.ep, loc, 0, rmr, 0, 8));
	ASSERT_EQ(0, coh_mr_export(mr, &d));
	ASSERT_EQ(0, coh_rmr_import(n.ep, &d, &tmp));
	EXPECT_EQ(0, coh_ep_write_sync(n.ep, loc, 0, tmp, 0, 8));
	ASSERT_EQ(0, coh_mr_delete(&mr));
	EXPECT_EQ(-EACCES, coh_ep_write_sync(n.ep, loc, 0, tmp, 0, 8));
	EXPECT_EQ(-EACCES, coh_rmr_import(n.ep, &d, &rmr)); // its link is gone
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, t.c(), 8192, kPmemRights, &mr));
	EXPECT_EQ(-EACCES, coh_ep_write_sync(n.ep, loc, 0, tmp, 0, 8));
	EXPECT_EQ(-EACCES, coh_ep_flush_sync(n.ep, tmp, 0, 8));
	EXPECT_TRUE(has_pattern(coh_mr_addr(mr), 8192, 3));

	coh_rmr_delete(&tmp);
	coh_rmr_delete(&rmr);
	coh_rmr_delete(&rro);
	coh_mr_delete(&plain);
	coh_mr_delete(&ro);
	coh_mr_delete(&mr);
	coh_mr_delete(&loc);
}

// Runs where a device DAX is at hand (the VM rig's devdax mode sets COHORT_PMEM_DAX): the
// region's header is the device's first page, and its bytes outlive the region.
TEST(mr_pmem, device_dax)
{
	const char *dev = getenv("COHORT_PMEM_DAX");
	if (!dev || !dev[0])
		GTEST_SKIP() << "COHORT_PMEM_DAX is not set";
	Cluster c;
	Node n;
	coh_fabric_attr a = c.attr(0);
	coh_mr *mr = nullptr;

	ASSERT_EQ(0, coh_fabric_open(&a, &n.fab));
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, dev, 8192, kPmemRights, &mr));
	EXPECT_EQ(COH_PERSIST_PMEM, coh_mr_persistence(mr));
	fill_pattern(coh_mr_addr(mr), 8192, 5);
	ASSERT_EQ(0, coh_mr_delete(&mr));
	ASSERT_EQ(0, coh_mr_new_pmem(n.fab, dev, 8192, kPmemRights, &mr));
	EXPECT_TRUE(has_pattern(coh_mr_addr(mr), 8192, 5));
	coh_mr *second = nullptr;
	EXPECT_EQ(-EBUSY, coh_mr_new_pmem(n.fab, dev, 8192, kPmemRights, &second));
	EXPECT_EQ(0, coh_mr_delete(&mr));
}

TEST(cluster_addr, parse)
{
	char host[64];
	uint16_t port = 0;

	ASSERT_EQ(0,
		  shim_cluster_addr("10.0.0.1:7000,10.0.0.2:7001", 1, host, sizeof(host), &port));
	EXPECT_STREQ("10.0.0.2", host);
	EXPECT_EQ(7001, port);
	ASSERT_EQ(0, shim_cluster_addr("[fe80::1]:9,x:1", 0, host, sizeof(host), &port));
	EXPECT_STREQ("fe80::1", host);
	EXPECT_EQ(9, port);
	EXPECT_EQ(-ENOENT, shim_cluster_addr("a:1,b:2", 2, host, sizeof(host), &port));
	EXPECT_EQ(-EINVAL, shim_cluster_addr("a", 0, host, sizeof(host), &port));
	EXPECT_EQ(-EINVAL, shim_cluster_addr("a:", 0, host, sizeof(host), &port));
	EXPECT_EQ(-EINVAL, shim_cluster_addr("a:0", 0, host, sizeof(host), &port));
	EXPECT_EQ(-EINVAL, shim_cluster_addr("a:65536", 0, host, sizeof(host), &port));
	EXPECT_EQ(-EINVAL, shim_cluster_addr("a:12x", 0, host, sizeof(host), &port));
	EXPECT_EQ(-EINVAL, shim_cluster_addr(":5", 0, host, sizeof(host), &port));
	EXPECT_EQ(-EINVAL, shim_cluster_addr("a:1,,b:2", 1, host, sizeof(host), &port));
	EXPECT_EQ(-EINVAL, shim_cluster_addr("[::1:5", 0, host, sizeof(host), &port));
	EXPECT_EQ(-EINVAL, shim_cluster_addr("abcdefgh:1", 0, host, 4, &port));
	EXPECT_EQ(-EINVAL, shim_cluster_addr(nullptr, 0, host, sizeof(host), &port));
}

TEST(shm_ring, slot_length_check)
{
	EXPECT_FALSE(shim_slot_len_ok(0, 4096));
	EXPECT_TRUE(shim_slot_len_ok(1, 4096));
	EXPECT_TRUE(shim_slot_len_ok(4096, 4096));
	EXPECT_FALSE(shim_slot_len_ok(4097, 4096));
	EXPECT_FALSE(shim_slot_len_ok(0xffffffffu, 4096));
}

struct Captured {
	std::vector<std::string> msgs;
	std::vector<std::string> funcs;
};

void capture(void *ctx, coh_log_level, const char *func, int, const char *msg)
{
	auto *c = static_cast<Captured *>(ctx);
	c->msgs.push_back(msg);
	c->funcs.push_back(func);
}

TEST(log, sink_level_and_errno)
{
	Captured cap;
	coh_log_set_sink(capture, &cap);
	coh_log_set_level(COH_LOG_LEVEL_WARN);
	errno = EPIPE;
	COH_LOG_ERR("value %d", 42);
	EXPECT_EQ(EPIPE, errno);
	COH_LOG_INFO("hidden %d", 1);
	coh_log_set_level(COH_LOG_LEVEL_INFO);
	COH_LOG_INFO("shown");
	coh_log_set_level((coh_log_level)99);
	EXPECT_EQ(COH_LOG_LEVEL_DBG, coh_log_level_get());
	coh_log_set_level(COH_LOG_LEVEL_WARN);
	coh_log_set_sink(nullptr, nullptr);
	ASSERT_EQ(2u, cap.msgs.size());
	EXPECT_EQ("value 42", cap.msgs[0]);
	EXPECT_EQ("shown", cap.msgs[1]);
	EXPECT_EQ("TestBody", cap.funcs[0]);
}

TEST(strerror, every_status_has_text)
{
	for (int e : { 0, -EACCES, -ECONNRESET, -EMSGSIZE, -EPROTO, -ETIMEDOUT, -EAGAIN, -EBUSY,
		       -EINVAL, -ENOMEM, 5 })
		EXPECT_NE(nullptr, coh_strerror(e));
	EXPECT_STREQ("remote access violation", coh_strerror(-EACCES));
}

} // namespace

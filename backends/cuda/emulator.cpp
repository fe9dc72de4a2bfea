// graphc's CUDA emulator runtime: runs a kernel's grid on the CPU. Each block's threads run
// as fibers (own stacks, switched by hand on x86-64, by ucontext elsewhere) on one host
// thread: a fiber runs until it reaches __syncthreads or a warp operation, and the
// scheduler releases a barrier only when every thread of the block is there (a warp
// operation: every lane of its mask), so code between barriers runs in whatever order the
// scheduler picks, and a barrier not reached by every thread, or a shuffle reading an exited
// lane, is reported, not ignored. Fibers rather than loops split at barriers: the kernel
// text is compiled as written (a barrier inside a loop or a branch needs no rewriting) and
// each thread keeps its locals.
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };
extern "C" {
uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
}

namespace gc_emu {

enum State { READY, AT_BARRIER, AT_WARP, DONE };
enum WarpOp { SHFL_DOWN, SHFL_UP, SHFL_XOR, SHFL_IDX, SYNCWARP };

typedef void (*Kernel)(void* const*, int*);
static void fiber_main();

#if defined(__x86_64__)
// A switch of callee-saved registers and stack: glibc's swapcontext also saves the signal
// mask with a system call each time, which made barrier-heavy kernels many times slower.
extern "C" void gc_emu_switch(void** save_sp, void* new_sp);
asm(".text\n.globl gc_emu_switch\n.hidden gc_emu_switch\n.type gc_emu_switch,@function\n"
    "gc_emu_switch:\n pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n"
    " pushq %r15\n movq %rsp, (%rdi)\n movq %rsi, %rsp\n popq %r15\n popq %r14\n"
    " popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n ret\n");
struct Context {
  void* sp;
  void start(char* stack, size_t size) {
    uintptr_t top = ((uintptr_t)(stack + size)) & ~(uintptr_t)15;
    void** frame = (void**)(top - 64);  // six registers, the entry, a pad: aligned as a call
    for (int i = 0; i < 6; ++i) frame[i] = 0;
    frame[6] = (void*)&fiber_main;
    frame[7] = 0;
    sp = frame;
  }
};
static void jump(Context& from, Context& to) { gc_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t ctx;
  void start(char* stack, size_t size) {
    getcontext(&ctx);
    ctx.uc_stack.ss_sp = stack;
    ctx.uc_stack.ss_size = size;
    ctx.uc_link = nullptr;
    makecontext(&ctx, fiber_main, 0);
  }
};
static void jump(Context& from, Context& to) { swapcontext(&from.ctx, &to.ctx); }
#endif

struct Fiber {
  Context ctx;
  State state;
  WarpOp op;
  int arg;
  unsigned mask;
  void* site;  // where in the kernel it waits: every thread must wait at the same one
  unsigned long long send, recv;
};

static const size_t kStack = 64 * 1024;
static std::vector<Fiber> fibers;
static std::vector<char> stacks;
static Context scheduler;
static int current = -1;
static bool fiber_mode = false;
static std::string error;
static Kernel kernel;
static void* const* kernel_slots;
static int* kernel_status;

// The race records, one per byte address (an element's is at its first byte), in pages
// made on first use: for shared memory, a word's writer and readers in a barrier interval
// of one block; for global memory, the block that wrote an element in a launch. A page
// stamped with a past epoch is cleared when next touched, so a new epoch costs nothing.
struct SharedRecord {
  unsigned writer, reader;  // thread + 1; 0: none; reader kWarpReaders + w or kSeveral
  unsigned writer_syncs, reader_syncs;  // the __syncwarps of their warp when they came
};
static const unsigned kSeveral = ~0u;  // several readers of several warps
static const unsigned kWarpReaders = 0x10000;  // + w: several readers, all of warp w

// The pages of the current epoch last used, by their number's low bits (emulator.h reads
// them inline: most accesses need no call).
struct GcEmuPages {
  uintptr_t key[16];
  void* records[16];
};
extern "C" {
GcEmuPages gc_emu_shared_pages, gc_emu_global_pages;
unsigned gc_emu_block;  // the running block + 1
unsigned gc_emu_warp_syncs[32];  // __syncwarps completed by each warp (never reset)
}

template <class R> struct Shadow {
  static const uintptr_t kPage = 4096;
  struct Page {
    unsigned long long epoch;
    R records[kPage];
  };
  std::unordered_map<uintptr_t, Page*> pages;
  GcEmuPages* cache;
  unsigned long long epoch = 1;

  explicit Shadow(GcEmuPages* c) : cache(c) { reset(); }

  R* page(const void* p) {
    uintptr_t key = (uintptr_t)p / kPage;
    Page*& page = pages[key];
    if (!page) page = new Page{0, {}};
    if (page->epoch != epoch) {
      memset(page->records, 0, sizeof page->records);
      page->epoch = epoch;
    }
    cache->key[key % 16] = key;
    cache->records[key % 16] = page->records;
    return page->records;
  }

  R& at(const void* p) { return page(p)[(uintptr_t)p % kPage]; }

  void next_epoch() {
    ++epoch;
    for (int c = 0; c < 16; ++c) cache->key[c] = ~(uintptr_t)0;
  }

  void reset() {
    for (auto& kv : pages) delete kv.second;
    pages.clear();
    next_epoch();
  }
};

static Shadow<SharedRecord> shared_words(&gc_emu_shared_pages);
static Shadow<unsigned> global_words(&gc_emu_global_pages);  // the writing block + 1

static void fail(const std::string& what) {
  if (error.empty()) {
    char where[96];
    snprintf(where, sizeof where, " (block %u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z);
    error = what + where;
  }
}

static void park(State state) {
  if (!fiber_mode) {
    fail("a barrier or warp operation in a kernel launched as barrier-free");
    return;
  }
  fibers[current].state = state;
  jump(fibers[current].ctx, scheduler);
}

static void fiber_main() {
  kernel(kernel_slots, kernel_status);
  fibers[current].state = DONE;
  jump(fibers[current].ctx, scheduler);  // never resumed
}

// Releases warp `w` when every live lane waits at a warp operation; false otherwise.
static bool release_warp(int w, int n) {
  int lo = w * 32, hi = std::min(n, lo + 32);
  bool any = false;
  for (int t = lo; t < hi; ++t) {
    if (fibers[t].state == AT_WARP) any = true;
    else if (fibers[t].state != DONE) return false;
  }
  if (!any) return false;
  for (int t = lo; t < hi; ++t) {
    Fiber& f = fibers[t];
    if (f.state != AT_WARP) continue;
    int lane = t - lo;
    for (int l = 0; l < 32; ++l) {
      if (!(f.mask >> l & 1u)) continue;
      if (lo + l >= hi || fibers[lo + l].state != AT_WARP) {
        fail("a warp operation's mask names an inactive or exited lane");
        return true;
      }
      if (fibers[lo + l].op != f.op || fibers[lo + l].site != f.site) {
        fail("the lanes of a warp meet at different warp operations");
        return true;
      }
    }
    int src = lane;
    switch (f.op) {
      case SHFL_DOWN: src = lane + f.arg < 32 ? lane + f.arg : lane; break;
      case SHFL_UP: src = lane - f.arg >= 0 ? lane - f.arg : lane; break;
      case SHFL_XOR: src = lane ^ f.arg; break;
      case SHFL_IDX: src = f.arg & 31; break;
      case SYNCWARP: break;
    }
    if (f.op != SYNCWARP && !(f.mask >> src & 1u)) {
      fail("a shuffle reads a lane outside its mask (an inactive lane)");
      return true;
    }
    f.recv = fibers[lo + src].send;
  }
  bool sync = false;
  for (int t = lo; t < hi; ++t) {
    if (fibers[t].state != AT_WARP) continue;
    sync |= fibers[t].op == SYNCWARP;
    fibers[t].state = READY;
  }
  // (a __syncwarp orders the shared-memory accesses of its lanes before it and after it)
  if (sync) ++gc_emu_warp_syncs[w];
  return true;
}

static void run_fibers(int n, std::mt19937* rng) {
  if ((int)fibers.size() < n) {
    fibers.resize(n);
    stacks.resize((size_t)n * kStack);
  }
  for (int t = 0; t < n; ++t) {
    fibers[t].ctx.start(&stacks[(size_t)t * kStack], kStack);
    fibers[t].state = READY;
  }
  std::vector<int> order(n);
  for (int t = 0; t < n; ++t) order[t] = t;
  for (;;) {
    if (rng) std::shuffle(order.begin(), order.end(), *rng);
    for (int t : order) {
      if (fibers[t].state != READY) continue;
      current = t;
      threadIdx = {(unsigned)t, 0, 0};
      jump(scheduler, fibers[t].ctx);
      if (!error.empty()) return;
    }
    bool released = false, waiting_warp = false, done = false, barrier = false;
    for (int w = 0; w * 32 < n; ++w) released |= release_warp(w, n);
    if (!error.empty()) return;
    if (released) continue;
    for (int t = 0; t < n; ++t) {
      waiting_warp |= fibers[t].state == AT_WARP;
      barrier |= fibers[t].state == AT_BARRIER;
      done |= fibers[t].state == DONE;
    }
    if (waiting_warp) {
      fail("a warp operation that some lane of its warp never reaches");
      return;
    }
    if (!barrier) return;  // every thread has finished
    if (done) {
      fail("__syncthreads not reached by every thread of the block");
      return;
    }
    for (int t = 1; t < n; ++t) {
      if (fibers[t].site != fibers[0].site) {
        fail("the threads of a block wait at different __syncthreads");
        return;
      }
    }
    for (int t = 0; t < n; ++t) fibers[t].state = READY;
    shared_words.next_epoch();  // the barrier orders what came before it
  }
}

}  // namespace gc_emu

extern "C" long long gc_emu_bad_index(long long i, long long n) {
  char what[160];
  snprintf(what, sizeof what, "an out-of-bounds access: element %lld of a buffer of %lld "
           "(thread %u)", i, n, threadIdx.x);
  gc_emu::fail(what);
  return 0;
}

extern "C" void gc_emu_misaligned(const void* p, unsigned align) {
  char what[160];
  snprintf(what, sizeof what, "a misaligned vector access: address %p is not a multiple of "
           "%u bytes (thread %u)", p, align, threadIdx.x);
  gc_emu::fail(what);
}

extern "C" void* gc_emu_page(int shared, const void* p) {
  using namespace gc_emu;
  return shared ? (void*)shared_words.page(p) : (void*)global_words.page(p);
}

static unsigned gc_emu_readers(unsigned readers, unsigned me) {  // (as emulator.h's)
  if (!readers || readers == me) return me;
  unsigned w = (me - 1) / 32;
  if (readers == gc_emu::kSeveral) return gc_emu::kSeveral;
  unsigned theirs = readers <= 1024 ? (readers - 1) / 32 : readers - gc_emu::kWarpReaders;
  return theirs == w ? gc_emu::kWarpReaders + w : gc_emu::kSeveral;
}

// Checks the access emulator.h found in conflict at `p` (its record not yet updated):
// records it where a __syncwarp orders the two, reports the race otherwise.
extern "C" void gc_emu_race(int shared, const void* p, int write) {
  using namespace gc_emu;
  char what[200];
  if (!shared) {
    snprintf(what, sizeof what, "conflicting writes: blocks %u and %u write one element "
             "of a global buffer in one launch, without atomics", global_words.at(p) - 1,
             gc_emu_block - 1);
    fail(what);
    return;
  }
  SharedRecord& r = shared_words.at(p);
  unsigned me = threadIdx.x + 1, warp = threadIdx.x / 32, now = gc_emu_warp_syncs[warp];
  // Ordered: the other access came from this warp, before a __syncwarp it has completed.
  auto ordered = [&](unsigned who, unsigned syncs) {
    unsigned theirs = who <= 1024 ? (who - 1) / 32 : who == kSeveral ? ~0u : who - kWarpReaders;
    return theirs == warp && now > syncs;
  };
  bool after_write = r.writer && r.writer != me, after_read = write && r.reader && r.reader != me;
  if ((!after_write || ordered(r.writer, r.writer_syncs)) &&
      (!after_read || ordered(r.reader, r.reader_syncs))) {
    if (write) {
      r.writer = me;
      r.writer_syncs = now;
      r.reader = 0;  // (the reads came before this write)
    } else {
      r.reader = gc_emu_readers(r.reader, me);
      r.reader_syncs = now;
    }
    return;
  }
  bool wrote = after_write && !ordered(r.writer, r.writer_syncs);
  unsigned other = wrote ? r.writer : r.reader;
  char who[32] = "several threads";
  if (other <= 1024) snprintf(who, sizeof who, "thread %u", other - 1);
  snprintf(what, sizeof what, "a shared-memory race: thread %u %s a __shared__ word that "
           "%s %s between two barriers, without atomics", me - 1, write ? "writes" : "reads",
           who, wrote ? "wrote" : "read");
  fail(what);
}

extern "C" void gc_emu_syncthreads() {
  gc_emu::fibers[gc_emu::current].site = __builtin_return_address(0);
  gc_emu::park(gc_emu::AT_BARRIER);
}

extern "C" unsigned long long gc_emu_warp(int op, unsigned mask, unsigned long long value,
                                          int arg) {
  using namespace gc_emu;
  Fiber& f = fibers[current];
  f.op = (WarpOp)op;
  f.arg = arg;
  f.mask = mask;
  f.send = value;
  f.site = __builtin_return_address(0);
  park(AT_WARP);
  return fiber_mode ? fibers[current].recv : value;
}

// The launcher the runtime calls: every block (in a shuffled order when seed != 0), its
// threads as fibers when the kernel meets at barriers, as plain calls otherwise.
extern "C" int gc_emu_launch(gc_emu::Kernel k, unsigned gx, unsigned gy, unsigned gz,
                             unsigned block, int sync, void* const* slots, int* status,
                             unsigned seed) {
  using namespace gc_emu;
  error.clear();
  kernel = k;
  kernel_slots = slots;
  kernel_status = status;
  fiber_mode = sync != 0;
  gridDim = {gx, gy, gz};
  blockDim = {block, 1, 1};
  std::mt19937 rng(seed);
  std::vector<unsigned long long> blocks((size_t)gx * gy * gz);
  for (size_t b = 0; b < blocks.size(); ++b) blocks[b] = b;
  if (seed) std::shuffle(blocks.begin(), blocks.end(), rng);
  std::vector<unsigned> threads(block);
  for (unsigned t = 0; t < block; ++t) threads[t] = seed ? block - 1 - t : t;
  if (global_words.pages.size() > 4096) global_words.reset();  // (bounds the records' memory)
  global_words.next_epoch();
  for (unsigned long long b : blocks) {
    blockIdx = {(unsigned)(b % gx), (unsigned)(b / gx % gy), (unsigned)(b / gx / gy)};
    gc_emu_block = (unsigned)b + 1;
    shared_words.next_epoch();  // each block has its own shared memory
    if (fiber_mode) {
      run_fibers((int)block, seed ? &rng : nullptr);
    } else {
      for (unsigned t : threads) {
        threadIdx = {t, 0, 0};
        k(slots, status);
        if (!error.empty()) break;
      }
    }
    if (!error.empty()) return 1;
  }
  return 0;
}

extern "C" const char* gc_emu_error() { return gc_emu::error.c_str(); }

// graphc's CUDA emulation header: the CUDA built-ins that generated kernels use, for the
// host C++ compiler (force-included before the kernels' source). The scheduler behind the
// barriers and warp operations lives in emulator.cpp, compiled once and loaded first.
#include <math.h>
#include <stdint.h>
#include <string.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // blocks run one after another: one copy serves them all

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };
extern "C" uint3 threadIdx, blockIdx;
extern "C" dim3 blockDim, gridDim;

// (emulator.cpp) the calling thread waits at a block barrier; at a warp operation, whose
// result (the bits of the source lane's value) it returns
extern "C" void gc_emu_syncthreads();
extern "C" unsigned long long gc_emu_warp(int op, unsigned mask, unsigned long long value,
                                          int arg);
enum { GC_SHFL_DOWN, GC_SHFL_UP, GC_SHFL_XOR, GC_SHFL_IDX, GC_SYNCWARP };

// Out-of-bounds accesses are reported (and element 0 used instead, so none is made).
extern "C" long long gc_emu_bad_index(long long i, long long n);
static inline long long gc_emu_index(long long i, long long n) {
  return (unsigned long long)i < (unsigned long long)n ? i : gc_emu_bad_index(i, n);
}
#define GC_IX(i, n) gc_emu_index((i), (n))

// Every element of a global buffer or a __shared__ array is reached through a reference
// that tells reads from writes, so that races are reported (emulator.cpp keeps a record
// per word): for shared memory, two threads touching a word between two barriers, at least
// one writing; for global memory, two blocks of a launch writing one element. Atomics take
// the raw address (unary &) and are not checked: they are the sanctioned way to share.
struct GcEmuPages {  // recent pages of records (emulator.cpp fills them)
  uintptr_t key[16];
  void* records[16];
};
extern "C" GcEmuPages gc_emu_shared_pages, gc_emu_global_pages;
extern "C" unsigned gc_emu_block;  // the running block + 1
extern "C" void* gc_emu_page(int shared, const void* p);
extern "C" void gc_emu_race(int shared, const void* p, int write);
// The record of byte address p: four words (shared: writer, reader, and the __syncwarp
// counts of their warps when they came) or one (global: writer); threads and blocks + 1,
// 0 none; readers 0x10000 + w: several, all of warp w; ~0u: several, of several warps.
static inline unsigned* gc_emu_record(int shared, const void* p) {
  GcEmuPages& pages = shared ? gc_emu_shared_pages : gc_emu_global_pages;
  uintptr_t a = (uintptr_t)p, key = a / 4096;
  void* base = pages.key[key % 16] == key ? pages.records[key % 16] : gc_emu_page(shared, p);
  return (unsigned*)base + (a % 4096) * (shared ? 4 : 1);
}
extern "C" unsigned gc_emu_warp_syncs[32];  // the __syncwarps each warp has completed
static inline unsigned gc_emu_readers(unsigned readers, unsigned me) {
  if (!readers || readers == me) return me;
  unsigned w = (me - 1) / 32;
  if (readers == ~0u) return ~0u;
  unsigned theirs = readers <= 1024 ? (readers - 1) / 32 : readers - 0x10000;
  return theirs == w ? 0x10000 + w : ~0u;
}
struct GcGlobalHook {
  static void read(const void*) {}  // (cross-block read/write races are not checked)
  static void write(const void* p) {
    unsigned* r = gc_emu_record(0, p);
    if (*r && *r != gc_emu_block) gc_emu_race(0, p, 1);
    else *r = gc_emu_block;
  }
};
struct GcSharedHook {
  static void access(const void* p, bool write) {
    unsigned* r = gc_emu_record(1, p);
    unsigned me = threadIdx.x + 1;
    unsigned now = gc_emu_warp_syncs[threadIdx.x / 32];
    if ((r[0] && r[0] != me) || (write && r[1] && r[1] != me)) {
      gc_emu_race(1, p, write);  // (unless a __syncwarp of one warp orders the two)
    } else if (write) {
      r[0] = me;
      r[2] = now;
    } else {
      r[1] = gc_emu_readers(r[1], me);
      r[3] = now;
    }
  }
  static void read(const void* p) { access(p, false); }
  static void write(const void* p) { access(p, true); }
};
// CUDA's vector types (a vector's elements are checked one by one, as scalar accesses are).
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) longlong2 { long long x, y; };
template <class T> struct GcElement { static const unsigned size = sizeof(T); };
template <> struct GcElement<float2> { static const unsigned size = 4; };
template <> struct GcElement<float4> { static const unsigned size = 4; };
template <> struct GcElement<double2> { static const unsigned size = 8; };
template <> struct GcElement<int2> { static const unsigned size = 4; };
template <> struct GcElement<int4> { static const unsigned size = 4; };
template <> struct GcElement<longlong2> { static const unsigned size = 8; };

// A vector access must be aligned to its size on a GPU: reported here.
extern "C" void gc_emu_misaligned(const void* p, unsigned align);
template <class T, class Hook> struct GcRef {
  T* p;
  void aligned() const {
    if (GcElement<T>::size != sizeof(T) && (uintptr_t)p % alignof(T))
      gc_emu_misaligned(p, alignof(T));
  }
  operator T() const {
    aligned();
    for (unsigned o = 0; o < sizeof(T); o += GcElement<T>::size) Hook::read((char*)p + o);
    T v;
    memcpy(&v, p, sizeof(T));  // (no aligned instruction, even where it was reported)
    return v;
  }
  T* operator&() const { return p; }
  GcRef& operator=(T v) {
    aligned();
    for (unsigned o = 0; o < sizeof(T); o += GcElement<T>::size) Hook::write((char*)p + o);
    memcpy(p, &v, sizeof(T));
    return *this;
  }
  // (the default would copy the pointer, not the element)
  GcRef& operator=(const GcRef& o) { return *this = (T)o; }
  template <class U> GcRef& operator+=(U v) { return *this = (T)(T(*this) + v); }
  template <class U> GcRef& operator-=(U v) { return *this = (T)(T(*this) - v); }
  template <class U> GcRef& operator*=(U v) { return *this = (T)(T(*this) * v); }
  template <class U> GcRef& operator/=(U v) { return *this = (T)(T(*this) / v); }
};
template <class T> static inline GcRef<T, GcGlobalHook> gc_emu_global(T& x) { return {&x}; }
template <class T> static inline GcRef<T, GcSharedHook> gc_emu_shared(T& x) { return {&x}; }
#define GC_GLOBAL(x) gc_emu_global(x)
#define GC_SHARED(x) gc_emu_shared(x)

template <class T> static inline T gc_emu_shuffle(int op, unsigned mask, T v, int arg) {
  unsigned long long bits = 0;
  memcpy(&bits, &v, sizeof(T));
  bits = gc_emu_warp(op, mask, bits, arg);
  memcpy(&v, &bits, sizeof(T));
  return v;
}
static inline void __syncthreads() { gc_emu_syncthreads(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
  gc_emu_warp(GC_SYNCWARP, mask, 0, 0);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d) {
  return gc_emu_shuffle(GC_SHFL_DOWN, mask, v, (int)d);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d) {
  return gc_emu_shuffle(GC_SHFL_UP, mask, v, (int)d);
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int m) {
  return gc_emu_shuffle(GC_SHFL_XOR, mask, v, m);
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src) {
  return gc_emu_shuffle(GC_SHFL_IDX, mask, v, src);
}

// Threads of a block never run at once here: atomics are plain read-modify-writes (on the
// raw address: not reported as races).
template <class T> static inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
static inline int atomicCAS(int* p, int compare, int v) {
  int old = *p;
  if (old == compare) *p = v;
  return old;
}
static inline float __int_as_float(int bits) { float f; memcpy(&f, &bits, 4); return f; }
static inline double __longlong_as_double(long long bits) {
  double d; memcpy(&d, &bits, 8); return d;
}


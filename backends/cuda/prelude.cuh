// graphc's CUDA prelude: the scalar helpers generated kernels call (no includes, so NVRTC
// and the emulator's host compiler read the same text).
#define GC_DEV __device__ __forceinline__
#ifndef GC_IX
#define GC_IX(i, n) (i)  // element i of a buffer of n (the emulator checks the bounds)
#endif
#ifndef GC_GLOBAL
#define GC_GLOBAL(x) (x)  // an element of a global buffer (the emulator checks for races)
#define GC_SHARED(x) (x)  // an element of a __shared__ array (likewise)
#endif

// Integer arithmetic wraps, as numpy's (signed overflow is undefined in C).
GC_DEV int gc_add(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
GC_DEV int gc_sub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
GC_DEV int gc_mul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
GC_DEV long long gc_add(long long a, long long b) {
  return (long long)((unsigned long long)a + (unsigned long long)b); }
GC_DEV long long gc_sub(long long a, long long b) {
  return (long long)((unsigned long long)a - (unsigned long long)b); }
GC_DEV long long gc_mul(long long a, long long b) {
  return (long long)((unsigned long long)a * (unsigned long long)b); }
GC_DEV bool gc_add(bool a, bool b) { return a || b; }
GC_DEV bool gc_mul(bool a, bool b) { return a && b; }
GC_DEV int gc_abs(int a) { return a < 0 ? gc_sub(0, a) : a; }
GC_DEV long long gc_abs(long long a) { return a < 0 ? gc_sub(0LL, a) : a; }
GC_DEV int gc_lshr(int a, int b) { return (int)((unsigned)a >> (unsigned)b); }
GC_DEV long long gc_lshr(long long a, long long b) {
  return (long long)((unsigned long long)a >> (unsigned long long)b); }

// numpy.maximum / minimum: a nan in either argument gives nan.
template <class T> GC_DEV T gc_maximum(T a, T b) { return (a >= b || a != a) ? a : b; }
template <class T> GC_DEV T gc_minimum(T a, T b) { return (a <= b || a != a) ? a : b; }

// Integer power by squaring; a negative exponent gives 0, or +-1 for a base of +-1.
template <class T> GC_DEV T gc_ipow(T base, T e) {
  if (e < 0) return base == 1 ? (T)1 : base == -1 ? ((e & 1) ? (T)-1 : (T)1) : (T)0;
  T acc = 1;
  while (e > 0) {
    if (e & 1) acc = gc_mul(acc, base);
    base = gc_mul(base, base);
    e >>= 1;
  }
  return acc;
}

// numpy's astype, except that floats to ints saturate (nan: 0).
template <class D, class S> struct GcCast { GC_DEV static D run(S x) { return (D)x; } };
template <class S> struct GcCast<bool, S> { GC_DEV static bool run(S x) { return x != 0; } };
template <class S> struct GcSat {
  GC_DEV static long long run64(S x) {
    double v = (double)x;
    if (v != v) return 0;
    if (v >= 9223372036854775807.0) return 9223372036854775807LL;
    if (v <= -9223372036854775808.0) return -9223372036854775807LL - 1;
    return (long long)v;
  }
  GC_DEV static int run32(S x) {
    double v = (double)x;
    if (v != v) return 0;
    if (v >= 2147483647.0) return 2147483647;
    if (v <= -2147483648.0) return -2147483647 - 1;
    return (int)v;
  }
};
template <> struct GcCast<long long, float> {
  GC_DEV static long long run(float x) { return GcSat<float>::run64(x); } };
template <> struct GcCast<long long, double> {
  GC_DEV static long long run(double x) { return GcSat<double>::run64(x); } };
template <> struct GcCast<int, float> {
  GC_DEV static int run(float x) { return GcSat<float>::run32(x); } };
template <> struct GcCast<int, double> {
  GC_DEV static int run(double x) { return GcSat<double>::run32(x); } };
template <class D, class S> GC_DEV D gc_cast(S x) { return GcCast<D, S>::run(x); }

// The status word: the first failing kernel's number (1 + its index) stays.
GC_DEV void gc_fail(int* status, int code) { atomicCAS(status, 0, code); }

// Adds that many threads may make to one element.
GC_DEV void gc_atomic_add(float* p, float v) { atomicAdd(p, v); }
GC_DEV void gc_atomic_add(double* p, double v) { atomicAdd(p, v); }
GC_DEV void gc_atomic_add(int* p, int v) { atomicAdd(p, v); }
GC_DEV void gc_atomic_add(long long* p, long long v) {
  atomicAdd((unsigned long long*)p, (unsigned long long)v); }
GC_DEV void gc_atomic_add(bool* p, bool v) {  // (bools add as "or"; never contended in practice)
  if (v) *(volatile bool*)p = true; }

// argmax's order: the larger value, a nan before any number, the first index on ties.
template <class T> GC_DEV bool gc_argmax_better(T v, long long i, T best, long long bi) {
  if (v != v) return best == best || i < bi;
  if (best != best) return false;
  return v > best || (v == best && i < bi);
}

// sort's order: numbers ascending, nan last.
template <class T> GC_DEV bool gc_sort_less(T a, T b) {
  return a == a && (b != b || a < b);
}

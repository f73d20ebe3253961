/* dist.c: runtime choice of the distance kernels, and vector norms.
 *
 * Owns the dispatch: which of dist_ops_scalar / _avx2 / _avx512 this process
 * uses, picked once by dist_init() and never changed afterwards, so callers
 * may cache the function pointers they get. Does not own the kernels
 * themselves (dist_<isa>.c). An ISA is used only when both the CPU has it
 * (cpuid) and the OS saves its registers across context switches (XCR0 via
 * XGETBV); without the second check an AVX-512 instruction would fault, or
 * its upper register halves be lost, on a kernel that has not enabled it.
 * QUIVER_SIMD=scalar|avx2|avx512 lowers the choice, never raises it.
 * Invariant: nothing here calls into dist_avx*.c before cpu_runs() says yes. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>

#include "base/log.h"
#include "vec/dist.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define DIST_X86 1
#endif

enum isa_level { ISA_SCALAR = 0, ISA_AVX2, ISA_AVX512 };

static const dist_ops *const level_ops[] = {
    [ISA_SCALAR] = &dist_ops_scalar,
    [ISA_AVX2] = &dist_ops_avx2,
    [ISA_AVX512] = &dist_ops_avx512,
};

#ifdef DIST_X86
/* XCR0 bits: 1 SSE, 2 AVX (upper YMM), 5 opmask, 6 upper ZMM0-15,
 * 7 ZMM16-31. */
#define XCR0_AVX 0x06u
#define XCR0_AVX512 0xe6u

/* The OS-enabled register state, or 0 when the OS does not use XSAVE (then
 * XGETBV itself would fault). Inline asm so this file needs no -mxsave. */
static uint64_t os_xcr0(void) {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
  if (!(ecx & bit_OSXSAVE)) return 0;
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

/* The highest level this CPU and OS run. dist_avx512.c is compiled with
 * -mavx2 -mfma too, so the compiler may use those there: require them. */
static enum isa_level cpu_level(void) {
  __builtin_cpu_init();
  uint64_t xcr0 = os_xcr0();
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
              (xcr0 & XCR0_AVX) == XCR0_AVX;
  if (!avx2) return ISA_SCALAR;
  bool avx512 = __builtin_cpu_supports("avx512f") &&
                __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512dq") &&
                __builtin_cpu_supports("avx512vl") &&
                (xcr0 & XCR0_AVX512) == XCR0_AVX512;
  return avx512 ? ISA_AVX512 : ISA_AVX2;
}
#else
static enum isa_level cpu_level(void) { return ISA_SCALAR; }
#endif

/* The level named `name`, or -1. */
static int parse_level(const char *name) {
  if (strcasecmp(name, "scalar") == 0) return ISA_SCALAR;
  if (strcasecmp(name, "avx2") == 0) return ISA_AVX2;
  if (strcasecmp(name, "avx512") == 0) return ISA_AVX512;
  return -1;
}

const dist_ops *dist_choose(const char *simd_cap) {
  int level = (int)cpu_level();
  if (simd_cap != NULL && simd_cap[0] != '\0') {
    int cap = parse_level(simd_cap);
    if (cap < 0)
      qv_log(QV_LOG_WARN, "vec",
             "QUIVER_SIMD=%s: unknown, expected scalar, avx2 or avx512; "
             "ignoring it",
             simd_cap);
    else if (cap < level)
      level = cap;
  }
  return level_ops[level];
}

const dist_ops *dist_ops_isa(const char *isa) {
  if (isa == NULL) return NULL;
  int want = parse_level(isa);
  if (want < 0 || want > (int)cpu_level()) return NULL;
  return level_ops[want];
}

/* Written once under `init_once`; read without the lock on the hot path. */
static _Atomic(const dist_ops *) chosen;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_chosen(void) {
  const char *env = getenv("QUIVER_SIMD");
  const dist_ops *ops = dist_choose(env);
  qv_log(QV_LOG_INFO, "vec", "distance kernels: %s%s%s", ops->isa,
         env && env[0] ? ", QUIVER_SIMD=" : "", env && env[0] ? env : "");
  atomic_store_explicit(&chosen, ops, memory_order_release);
}

void dist_init(void) { pthread_once(&init_once, init_chosen); }

const dist_ops *dist_ops_get(void) {
  const dist_ops *ops = atomic_load_explicit(&chosen, memory_order_acquire);
  if (ops != NULL) return ops;
  dist_init();
  return atomic_load_explicit(&chosen, memory_order_acquire);
}

vec_dist_fn dist_fn(const dist_ops *ops, vec_metric m) {
  switch (m) {
  case VEC_L2SQ: return ops->l2sq;
  case VEC_NEG_DOT: return ops->neg_dot;
  case VEC_L1: return ops->l1;
  }
  return NULL; /* not a vec_metric: the caller's bug */
}

/* Sum of squares in double: exact enough that normalising twice is a no-op
 * to within one float rounding, and no overflow for any finite float. */
static double norm_double(const float *v, size_t dim) {
  double s = 0;
  for (size_t i = 0; i < dim; i++) s += (double)v[i] * v[i];
  return sqrt(s);
}

float vec_norm(const float *v, size_t dim) {
  return (float)norm_double(v, dim);
}

/* Zero vectors have no direction and stay zero; a norm of inf or NaN means
 * the input was not finite, which callers reject before storing, so leave
 * it alone rather than turn it into NaNs here. */
void vec_normalize(float *v, size_t dim) {
  double n = norm_double(v, dim);
  if (n == 0.0 || !isfinite(n)) return;
  for (size_t i = 0; i < dim; i++) v[i] = (float)(v[i] / n);
}

/* quant_cpu.c: the one-time SIMD choice for src/quant/ and the top-k sort.
 *
 * Owns quant_isa_chosen(): cpuid + XGETBV, capped by $QUIVER_SIMD, decided
 * once under pthread_once and never changed, so callers may cache the
 * kernel tables they get. Duplicates the small check of src/vec/dist.c
 * rather than reaching into it (its helpers are static), with the same rule:
 * a level counts only when the CPU has every feature its files are compiled
 * for and the OS saves the matching register state (XCR0).
 * Invariant: nothing calls an AVX2/AVX-512 kernel before this file said the
 * level runs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>

#include "base/log.h"
#include "quant/quant.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define QUANT_X86 1
#endif

#ifdef QUANT_X86
#define XCR0_AVX 0x06u    /* SSE + upper YMM */
#define XCR0_AVX512 0xe6u /* + opmask, upper ZMM0-15, ZMM16-31 */

static uint64_t os_xcr0(void) {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
  if (!(ecx & bit_OSXSAVE)) return 0; /* XGETBV would fault */
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

/* The *_avx2.c files are built with -mavx2 -mfma -mf16c (which implies
 * POPCNT in GCC), the *_avx512.c files with those plus F/BW/VL/DQ. */
static quant_isa cpu_level_probe(void) {
  __builtin_cpu_init();
  uint64_t xcr0 = os_xcr0();
  bool avx2 = __builtin_cpu_supports("avx2") &&
              __builtin_cpu_supports("fma") &&
              __builtin_cpu_supports("popcnt") &&
              (xcr0 & XCR0_AVX) == XCR0_AVX;
  unsigned eax, ebx, ecx, edx;
  if (avx2 && __get_cpuid(1, &eax, &ebx, &ecx, &edx))
    avx2 = (ecx & bit_F16C) != 0;
  else
    avx2 = false;
  if (!avx2) return QUANT_ISA_SCALAR;
  bool avx512 = __builtin_cpu_supports("avx512f") &&
                __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512dq") &&
                __builtin_cpu_supports("avx512vl") &&
                (xcr0 & XCR0_AVX512) == XCR0_AVX512;
  return avx512 ? QUANT_ISA_AVX512 : QUANT_ISA_AVX2;
}

/* The probes run cpuid and xgetbv, which trap to the hypervisor in a
 * virtual machine (microseconds each): the *_ops_get() a search calls per
 * query must not repeat them, so the answers are kept after the first call
 * (racing first calls compute the same values). */
static _Atomic int level_cache = -1, vnni_cache = -1, vpopcnt_cache = -1;

static quant_isa cpu_level(void) {
  int v = atomic_load_explicit(&level_cache, memory_order_relaxed);
  if (v < 0) atomic_store(&level_cache, v = (int)cpu_level_probe());
  return (quant_isa)v;
}

bool quant_cpu_has_vnni(void) {
  int v = atomic_load_explicit(&vnni_cache, memory_order_relaxed);
  if (v < 0) {
    __builtin_cpu_init();
    v = cpu_level() == QUANT_ISA_AVX512 && __builtin_cpu_supports("avx512vnni");
    atomic_store(&vnni_cache, v);
  }
  return v != 0;
}

bool quant_cpu_has_vpopcntdq(void) {
  int v = atomic_load_explicit(&vpopcnt_cache, memory_order_relaxed);
  if (v < 0) {
    __builtin_cpu_init();
    v = cpu_level() == QUANT_ISA_AVX512 && __builtin_cpu_supports("avx512vpopcntdq");
    atomic_store(&vpopcnt_cache, v);
  }
  return v != 0;
}
#else
static quant_isa cpu_level(void) { return QUANT_ISA_SCALAR; }
bool quant_cpu_has_vnni(void) { return false; }
bool quant_cpu_has_vpopcntdq(void) { return false; }
#endif

static const char *const isa_names[QUANT_ISA_COUNT] = {"scalar", "avx2",
                                                        "avx512"};

const char *quant_isa_name(quant_isa isa) {
  return (unsigned)isa < QUANT_ISA_COUNT ? isa_names[isa] : "?";
}

bool quant_isa_runs(quant_isa isa) {
  return (unsigned)isa < QUANT_ISA_COUNT && isa <= cpu_level();
}

static _Atomic int chosen = -1;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void) {
  quant_isa level = cpu_level();
  const char *env = getenv("QUIVER_SIMD");
  if (env != NULL && env[0] != '\0') {
    int cap = -1;
    for (int i = 0; i < QUANT_ISA_COUNT; i++)
      if (strcasecmp(env, isa_names[i]) == 0) cap = i;
    if (cap < 0)
      qv_log(QV_LOG_WARN, "quant",
             "QUIVER_SIMD=%s: unknown, expected scalar, avx2 or avx512; "
             "ignoring it",
             env);
    else if (cap < (int)level)
      level = (quant_isa)cap;
  }
  qv_log(QV_LOG_INFO, "quant", "quantized kernels: %s", isa_names[level]);
  atomic_store(&chosen, (int)level);
}

quant_isa quant_isa_chosen(void) {
  int c = atomic_load_explicit(&chosen, memory_order_acquire);
  if (c >= 0) return (quant_isa)c;
  pthread_once(&chosen_once, choose);
  return (quant_isa)atomic_load(&chosen);
}

static int hit_cmp(const void *pa, const void *pb) {
  const quant_hit *a = pa, *b = pb;
  if (a->dist < b->dist) return -1;
  if (a->dist > b->dist) return 1;
  return (a->row > b->row) - (a->row < b->row);
}

uint32_t quant_topk_sort(quant_topk *t) {
  qsort(t->h, t->n, sizeof *t->h, hit_cmp);
  return t->n;
}

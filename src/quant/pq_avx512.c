/* pq_avx512.c: product-quantizer lookup-table kernels built with the
 * AVX-512 flags.
 *
 * Owns pq_ops_avx512: pq_kern.h's table kernels compiled at this width (the
 * loop over 256 centroids vectorizes fully). ADC uses pq.c's plain-load
 * kernels, which measured faster than gathers (see pq.c). Only pq.c hands
 * the table out, after quant_cpu.c checked the CPU.
 * Invariant: tables equal the scalar ones up to float rounding (FMA). */
#include "quant/pq.h"

#define PQ_KERN_SUFFIX avx512
#include "quant/pq_kern.h"

const pq_ops pq_ops_avx512 = {
    .lut_l2 = lut_l2_avx512,
    .lut_neg_dot = lut_neg_dot_avx512,
    .adc = pq_adc_scalar,
    .adc_batch = pq_adc_batch_scalar,
    .isa = "avx512",
};

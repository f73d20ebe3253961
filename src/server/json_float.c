/* json_float.c: float32 -> shortest decimal text for responses (scores and
 * vector components).
 *
 * Owns jsonio_format_f32. Every search response carries k scores and a
 * with_vector response dim components; the general path (snprintf "%.Ng"
 * for growing N, each read back with strtof until one round-trips) cost ~5 %
 * of a search request's server time. Here the candidate with p significant
 * digits is m = round(|f| * 10^(p-1-e)) computed in double, and it is
 * accepted when its value lies strictly inside the interval of reals that
 * round to f — half-way to each neighbouring float, bounds that are exact
 * in double — with a margin far wider than the double rounding error of
 * the candidate, so an accepted string always reads back as f. When no
 * candidate of up to 9 digits is clearly inside (ties, extreme exponents)
 * the general path decides. Invariant: the output reads back (strtof) as
 * exactly f, and is never longer than the general path's. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "server/json_io.h"

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The general path: shortest "%.Ng" that reads back as f (rare: only
 * extreme exponents and near-ties come here). */
static size_t format_slow(float f, char *buf) {
  for (int p = 1; p <= 9; p++) {
    snprintf(buf, JSONIO_F32_MAX, "%.*g", p, (double)f);
    if (strtof(buf, NULL) == f) break;
  }
  if (strpbrk(buf, ".e") == NULL) strcat(buf, ".0"); /* stays a float */
  return strlen(buf);
}

/* digits[0..nd) with decimal exponent e (value = d.ddd x 10^e), as JSON. */
static size_t emit(char *buf, bool neg, const char *digits, int nd, int e) {
  char *w = buf;
  if (neg) *w++ = '-';
  if (e >= 0 && e < 10) { /* ddd.ddd or ddd000.0 */
    for (int i = 0; i <= e; i++) *w++ = i < nd ? digits[i] : '0';
    *w++ = '.';
    if (nd > e + 1) {
      memcpy(w, digits + e + 1, (size_t)(nd - e - 1));
      w += nd - e - 1;
    } else {
      *w++ = '0';
    }
  } else if (e < 0 && e >= -5) { /* 0.000ddd */
    *w++ = '0';
    *w++ = '.';
    for (int i = -1; i > e; i--) *w++ = '0';
    memcpy(w, digits, (size_t)nd);
    w += nd;
  } else { /* d.ddde-12 */
    *w++ = digits[0];
    if (nd > 1) {
      *w++ = '.';
      memcpy(w, digits + 1, (size_t)(nd - 1));
      w += nd - 1;
    }
    w += snprintf(w, 8, "e%d", e);
  }
  *w = 0;
  return (size_t)(w - buf);
}

size_t jsonio_format_f32(float f, char *buf) {
  if (f == 0.0f) return (size_t)snprintf(buf, JSONIO_F32_MAX, signbit(f) ? "-0.0" : "0.0");
  bool neg = f < 0;
  float a = neg ? -f : f;
  double ad = a;
  double lo = (ad + (double)nextafterf(a, 0.0f)) / 2;
  double hi = isinf(nextafterf(a, INFINITY)) ? ad + (ad - lo)
                                             : (ad + (double)nextafterf(a, INFINITY)) / 2;
  int e = (int)floor(log10(ad));
  if (e < -30 || e > 30) goto slow;
  for (int p = 1; p <= 9; p++) {
    int s = p - 1 - e; /* m = a * 10^s */
    if (s > 22 || s < -22) goto slow;
    double m = nearbyint(s >= 0 ? ad * pow10_exact[s] : ad / pow10_exact[-s]);
    int ee = e;
    if (m >= pow10_exact[p]) { /* a rounded up to the next power of ten */
      m /= 10;
      ee++;
    }
    if (m < pow10_exact[p - 1]) continue; /* log10 was off; more digits */
    int t = ee - p + 1;                   /* value = m * 10^t */
    if (t > 22 || t < -22) goto slow;
    double v = t >= 0 ? m * pow10_exact[t] : m / pow10_exact[-t];
    double margin = v * 0x1p-50; /* the candidate is off by <= 2^-53 */
    bool inside = v > lo + margin && v < hi - margin;
    if (!inside && t >= 0 && v < 0x1p53 && (v == lo || v == hi)) {
      /* An integer exactly half-way between two floats (v is exact here):
       * strtof rounds the tie to the even mantissa. */
      uint32_t bits;
      memcpy(&bits, &a, sizeof bits);
      inside = (bits & 1u) == 0;
    }
    if (!inside) continue;
    char digits[16];
    uint64_t mi = (uint64_t)m;
    int nd = p;
    for (int i = p - 1; i >= 0; i--) {
      digits[i] = (char)('0' + mi % 10);
      mi /= 10;
    }
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    return emit(buf, neg, digits, nd, ee);
  }
slow:
  return format_slow(f, buf);
}

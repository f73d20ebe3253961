// hnsw_vs_hnswlib.cpp: Quiver's HNSW against hnswlib on one data set, in one
// process: same vectors, same queries, same M / ef_construction, same number
// of build threads, same single search thread.
//
// Owns nothing of the library; it is a benchmark, built by bench/run_hnsw.sh
// (not by CMake) against build-hnsw/libquiver.a and Debian's header-only
// hnswlib. Reports build seconds, then for each ef the recall@10 against the
// exact ground truth and the single-thread QPS (median of 3 passes over the
// queries), and the bytes of each graph.
//
// Usage: hnsw_vs_hnswlib BASE.fvecs QUERY.fvecs GT.ivecs[.gz] [M] [EFC]
//                        [THREADS] [N_QUERIES] [BUILD_REPS]
#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <time.h>

extern "C" {
#include "index/hnsw.h"
}

namespace {

double now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Reads .fvecs/.ivecs (optionally .gz through gzip -dc) into rows of 4-byte
// values; returns false on any malformed record.
bool read_vecs(const std::string &path, std::vector<uint32_t> &out, size_t &n,
               size_t &dim) {
  bool gz = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  FILE *f = gz ? popen(("gzip -dc '" + path + "'").c_str(), "r")
               : fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  n = 0;
  dim = 0;
  int32_t d;
  bool ok = true;
  while (fread(&d, 4, 1, f) == 1) {
    if (d <= 0 || (dim != 0 && (size_t)d != dim)) {
      ok = false;
      break;
    }
    dim = (size_t)d;
    size_t at = out.size();
    out.resize(at + dim);
    if (fread(&out[at], 4, dim, f) != dim) {
      ok = false;
      break;
    }
    n++;
  }
  if (gz)
    pclose(f);
  else
    fclose(f);
  return ok && n > 0;
}

std::vector<float> as_floats(const std::vector<uint32_t> &raw) {
  std::vector<float> v(raw.size());
  memcpy(v.data(), raw.data(), raw.size() * 4);
  return v;
}

double cpu_now() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double thread_cpu_now() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr,
            "usage: %s BASE.fvecs QUERY.fvecs GT.ivecs[.gz] [M] [EFC] "
            "[THREADS] [N_QUERIES] [BUILD_REPS]\n",
            argv[0]);
    return 2;
  }
  uint32_t m = argc > 4 ? (uint32_t)atoi(argv[4]) : 16;
  uint32_t efc = argc > 5 ? (uint32_t)atoi(argv[5]) : 200;
  uint32_t n_threads = argc > 6 ? (uint32_t)atoi(argv[6]) : 2;
  size_t n_queries_max = argc > 7 ? (size_t)atol(argv[7]) : 0;
  int build_reps = argc > 8 ? atoi(argv[8]) : 1;
  if (build_reps < 1) build_reps = 1;
  const size_t k = 10;

  std::vector<uint32_t> raw_base, raw_query, gt;
  size_t n, dim, nq, qdim, ngt, gtdim;
  if (!read_vecs(argv[1], raw_base, n, dim) ||
      !read_vecs(argv[2], raw_query, nq, qdim) ||
      !read_vecs(argv[3], gt, ngt, gtdim) || qdim != dim || ngt < nq ||
      gtdim < k) {
    fprintf(stderr, "cannot read the data files\n");
    return 1;
  }
  std::vector<float> base = as_floats(raw_base), query = as_floats(raw_query);
  raw_base.clear();
  raw_base.shrink_to_fit();
  if (n_queries_max > 0 && nq > n_queries_max) nq = n_queries_max;
  printf("data: %zu x %zu base, %zu queries, k = %zu; M = %u, "
         "ef_construction = %u, %u build threads; distance isa: %s\n",
         n, dim, nq, k, m, efc, n_threads, dist_ops_get()->isa);

  // ---- builds, alternating ours and theirs so that load from other
  // processes on a shared machine hits both alike; median of the reps ------
  hnsw_params p;
  hnsw_params_init(&p);
  p.m = m;
  p.ef_construct = efc;
  p.n_threads = n_threads;
  p.seed = 100;
  hnsw *ours = nullptr;
  hnswlib::L2Space space(dim);
  hnswlib::HierarchicalNSW<float> *theirs = nullptr;
  std::vector<double> wall_ours, wall_theirs, cpu_ours, cpu_theirs;
  for (int rep = 0; rep < build_reps; rep++) {
    hnsw_free(ours);
    ours = nullptr;
    qv_err err;
    double t0 = now(), c0 = cpu_now();
    if (hnsw_build(base.data(), (uint32_t)n, (uint32_t)dim, VEC_L2SQ, &p, &ours,
                   &err) != QV_OK) {
      fprintf(stderr, "quiver build: %s\n", err.msg);
      return 1;
    }
    wall_ours.push_back(now() - t0);
    cpu_ours.push_back(cpu_now() - c0);

    // hnswlib: row 0 first, then the rest in parallel, as its Python
    // binding does.
    delete theirs;
    theirs = new hnswlib::HierarchicalNSW<float>(&space, n, m, efc, 100);
    t0 = now();
    c0 = cpu_now();
    theirs->addPoint(base.data(), 0);
    std::atomic<size_t> next(1);
    std::vector<std::thread> threads;
    for (uint32_t t = 0; t < n_threads; t++)
      threads.emplace_back([&]() {
        for (;;) {
          size_t i = next.fetch_add(1);
          if (i >= n) break;
          theirs->addPoint(base.data() + i * dim, i);
        }
      });
    for (auto &th : threads) th.join();
    wall_theirs.push_back(now() - t0);
    cpu_theirs.push_back(cpu_now() - c0);
    printf(
        "build rep %d: quiver %.2f s (cpu %.2f), hnswlib %.2f s (cpu %.2f)\n",
        rep, wall_ours.back(), cpu_ours.back(), wall_theirs.back(),
        cpu_theirs.back());
    fflush(stdout);
  }
  double build_ours = median(wall_ours), build_theirs = median(wall_theirs);

  // hnswlib's graph: level-0 link slots (inside its per-element block),
  // upper-level lists (one malloc per node above 0, rounded as it asks),
  // the per-node pointer to them and the per-node level.
  size_t theirs_links = n * theirs->size_links_level0_;
  for (size_t i = 0; i < n; i++)
    if (theirs->element_levels_[i] > 0)
      theirs_links +=
          theirs->size_links_per_element_ * theirs->element_levels_[i] + 1;
  theirs_links += n * (sizeof(char *) + sizeof(int));
  printf("build seconds (median of %d): quiver %.2f, hnswlib %.2f (ratio "
         "%.2f); cpu seconds quiver %.2f, hnswlib %.2f\n",
         build_reps, build_ours, build_theirs, build_ours / build_theirs,
         median(cpu_ours), median(cpu_theirs));
  printf("graph bytes (links + levels, not vectors): quiver %zu, hnswlib %zu "
         "(hnswlib also keeps a copy of the vectors: %zu bytes in all)\n",
         hnsw_memory_bytes(ours), theirs_links,
         n * theirs->size_data_per_element_ + theirs_links -
             n * theirs->size_links_level0_);

  // ---- search -------------------------------------------------------------
  const uint32_t efs[] = {10, 16, 20, 32, 40, 64, 80, 128, 256, 512};
  hnsw_scratch *scratch = hnsw_scratch_new();
  std::vector<hnsw_hit> hits(512);
  std::vector<uint32_t> got(nq * k);

  auto recall_of = [&](void) {
    size_t hit = 0;
    for (size_t q = 0; q < nq; q++)
      for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < k; j++)
          if (got[q * k + i] == gt[q * gtdim + j]) {
            hit++;
            break;
          }
    return (double)hit / (double)(nq * k);
  };
  // One pass over the queries; returns {wall seconds, thread cpu seconds}
  // and leaves the answers in `got`.
  auto pass_ours = [&](uint32_t ef) {
    double s0 = now(), c0 = thread_cpu_now();
    for (size_t q = 0; q < nq; q++) {
      uint32_t nh = 0;
      hnsw_search(ours, query.data() + q * dim, (uint32_t)k, ef, nullptr,
                  nullptr, scratch, hits.data(), &nh);
      for (uint32_t i = 0; i < k; i++)
        got[q * k + i] = i < nh ? hits[i].row : UINT32_MAX;
    }
    return std::make_pair(now() - s0, thread_cpu_now() - c0);
  };
  auto pass_theirs = [&](uint32_t ef) {
    theirs->setEf(ef);
    double s0 = now(), c0 = thread_cpu_now();
    for (size_t q = 0; q < nq; q++) {
      auto r = theirs->searchKnn(query.data() + q * dim, k);
      size_t i = r.size();
      for (size_t j = i; j < k; j++) got[q * k + j] = UINT32_MAX;
      while (!r.empty()) {
        got[q * k + --i] = (uint32_t)r.top().second;
        r.pop();
      }
    }
    return std::make_pair(now() - s0, thread_cpu_now() - c0);
  };

  printf("\nQPS = queries / median seconds of 3 passes, passes alternating "
         "quiver/hnswlib; 'cpu' uses this thread's cpu time instead of wall "
         "time\n");
  printf("%5s | %8s %8s %8s | %8s %8s %8s | %s\n", "ef", "q R@10", "q QPS",
         "q cpuQPS", "h R@10", "h QPS", "h cpuQPS", "QPS ratio (wall, cpu)");
  for (uint32_t ef : efs) {
    std::vector<double> wo, co, wt, ct;
    double ro = 0, rt = 0;
    for (int rep = 0; rep < 3; rep++) {
      auto a = pass_ours(ef);
      ro = recall_of();
      auto b = pass_theirs(ef);
      rt = recall_of();
      wo.push_back(a.first);
      co.push_back(a.second);
      wt.push_back(b.first);
      ct.push_back(b.second);
    }
    double qo = nq / median(wo), qco = nq / median(co);
    double qt = nq / median(wt), qct = nq / median(ct);
    printf("%5u | %8.4f %8.0f %8.0f | %8.4f %8.0f %8.0f | %.2f, %.2f\n", ef, ro,
           qo, qco, rt, qt, qct, qo / qt, qco / qct);
    fflush(stdout);
  }
  hnsw_scratch_free(scratch);
  hnsw_free(ours);
  delete theirs;
  return 0;
}

// The quantizers' hot loops, float32 on CPU (compiled on first use by vqvae/quantizers/native.py):
// the fused nearest-code search, the gather of the chosen codes, and the EMA codebook update.
//
// Search. For every row z of Z (N, D) the index of the code e (K, D) minimising ||e||² - 2 z·e (the
// squared distance less ||z||², which does not change the argmin), and that minimum. The scores
// of a tile of ROWS rows × 2 vectors of codes live in registers while they are accumulated over
// D and folded straight into a running minimum: no N × K matrix is ever written, so a search
// costs the multiply-adds and nothing else (the unfused search writes the N × K scores and reads
// them back for the row minimum, about a third of its time at N = 2,048, K = 512).
//
// Ties and order: codes are visited in increasing index and a score replaces the running minimum
// only when strictly smaller, so the first index of the minimum wins, as torch.min's does.
// NaN scores are never chosen (torch.min would return them); a row whose scores are all NaN or
// +inf gets index 0 and +inf.
//
// Portable C++ with GCC/Clang vector extensions: -march=native turns the 16-float vectors into
// AVX-512, pairs of AVX2 registers or NEON as the machine has them. Threads: OpenMP, linked to the
// runtime PyTorch itself uses, so the search shares PyTorch's thread pool.

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr int LANES = 16;  // floats per vector
constexpr int TILE = 2 * LANES;  // codes per tile
constexpr int ROWS = 6;  // rows per tile: 6 × 2 accumulators + 2 code vectors fit AVX-512's 32

typedef float vf __attribute__((vector_size(4 * LANES)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));

inline vf load(const float* p) {  // unaligned
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// One block [c0, c0 + w) of the codebook (K padded to whole tiles), as vqvae_nearest lays it out
// in the workspace: t[j·w + c] = -2 e_{c0+c}[j].
struct Block {
  const float* t;     // (D, w)
  const float* bias;  // (w,) ||e||², +inf for padding codes
  int64_t c0, w;
};

// Running minimum over one block of codes for ROWS (or fewer, R) rows starting at z; folds the
// block's minimum into best/index (strictly smaller replaces, so earlier blocks win ties).
template <int R>
inline void tile_rows(const float* z, int64_t d, const Block& b, bool first, float* best,
                      int64_t* index) {
  vf minv[R][2];
  vi mini[R][2];
  vi lane;
  for (int i = 0; i < LANES; i++) lane[i] = i;
  for (int r = 0; r < R; r++)
    for (int v = 0; v < 2; v++) {
      minv[r][v] = vf{} + INFINITY;
      mini[r][v] = vi{};
    }
  for (int64_t c = 0; c < b.w; c += TILE) {
    vf acc[R][2];
    const vf b0 = load(b.bias + c), b1 = load(b.bias + c + LANES);
    for (int r = 0; r < R; r++) {
      acc[r][0] = b0;
      acc[r][1] = b1;
    }
    const float* t = b.t + c;
    for (int64_t j = 0; j < d; j++) {  // acc[r] = ||e||² - 2 Σ_j z_r[j] e[j]
      const vf e0 = load(t + j * b.w), e1 = load(t + j * b.w + LANES);
      for (int r = 0; r < R; r++) {
        const float zr = z[r * d + j];
        acc[r][0] += zr * e0;
        acc[r][1] += zr * e1;
      }
    }
    const vi k0 = lane + static_cast<int32_t>(b.c0 + c);
    const vi k1 = k0 + LANES;
    for (int r = 0; r < R; r++) {
      const vi m0 = acc[r][0] < minv[r][0], m1 = acc[r][1] < minv[r][1];
      minv[r][0] = m0 ? acc[r][0] : minv[r][0];
      mini[r][0] = m0 ? k0 : mini[r][0];
      minv[r][1] = m1 ? acc[r][1] : minv[r][1];
      mini[r][1] = m1 ? k1 : mini[r][1];
    }
  }
  for (int r = 0; r < R; r++) {  // across lanes: the smallest value, then the smallest index
    float s = INFINITY;
    int32_t k = INT32_MAX;
    for (int v = 0; v < 2; v++)
      for (int i = 0; i < LANES; i++) {
        const float sv = minv[r][v][i];
        const int32_t kv = mini[r][v][i];
        if (sv < s || (sv == s && kv < k)) {
          s = sv;
          k = kv;
        }
      }
    if (first || s < best[r]) {
      best[r] = s;
      index[r] = k;
    }
  }
}

}  // namespace

extern "C" {

// Version of this interface; native.py checks it after loading.
int vqvae_kernels_version() { return 3; }

// Floats of workspace vqvae_nearest needs for K codes of dimension D.
int64_t vqvae_nearest_workspace(int64_t k, int64_t d) {
  const int64_t kp = (k + TILE - 1) / TILE * TILE;
  return kp * d + kp;
}

// z (n, d) and codebook (k, d) row-major float32; block: codes per block (a multiple of TILE;
// the caller sizes it so one block's codes stay in cache); work: vqvae_nearest_workspace floats.
// Writes index (n,) and best (n,) = min_e ||e||² - 2 z·e.
void vqvae_nearest(const float* z, int64_t n, const float* codebook, int64_t k, int64_t d,
                   int64_t block, float* work, int threads, int64_t* index, float* best) {
  const int64_t kp = (k + TILE - 1) / TILE * TILE;
  float* bias = work + kp * d;
  const int64_t tiles = (n + ROWS - 1) / ROWS;
#pragma omp parallel num_threads(threads)
  {
    // The codebook laid out for the tiles: block [c0, c0 + w) at work + c0·d, holding
    // t[j·w + c] = -2 e_{c0+c}[j] (padding codes 0), and bias = ||e||² (+inf for padding).
#pragma omp for schedule(static)
    for (int64_t code = 0; code < kp; code++) {
      float sq = 0.0f;
      for (int64_t j = 0; j < d && code < k; j++) sq += codebook[code * d + j] * codebook[code * d + j];
      bias[code] = code < k ? sq : INFINITY;
    }
    for (int64_t c0 = 0; c0 < kp; c0 += block) {
      const int64_t w = kp - c0 < block ? kp - c0 : block;
      float* t = work + c0 * d;
#pragma omp for schedule(static) nowait
      for (int64_t j = 0; j < d; j++)
        for (int64_t c = 0; c < w; c++)
          t[j * w + c] = c0 + c < k ? -2.0f * codebook[(c0 + c) * d + j] : 0.0f;
    }
#pragma omp barrier
    for (int64_t c0 = 0; c0 < kp; c0 += block) {
      const Block b{work + c0 * d, bias + c0, c0, kp - c0 < block ? kp - c0 : block};
      // The same static split on every block: each thread keeps its rows, so no barrier.
#pragma omp for schedule(static) nowait
      for (int64_t i = 0; i < tiles; i++) {
        const int64_t r0 = i * ROWS;
        if (r0 + ROWS <= n) {
          tile_rows<ROWS>(z + r0 * d, d, b, c0 == 0, best + r0, index + r0);
        } else {
          for (int64_t r = r0; r < n; r++)
            tile_rows<1>(z + r * d, d, b, c0 == 0, best + r, index + r);
        }
      }
    }
  }
}

// What a training step needs of the chosen codes, in one pass over the rows: codes[r] = e[index[r]]
// (n, d), diff[r] = z[r] - codes[r] (n, d) and counts[c] = #{r : index[r] = c} (k,); returns
// Σ diff², the commitment term's sum. Replaces a gather, a histogram, a difference and a dot.
double vqvae_gather(const float* z, int64_t n, const float* codebook, int64_t k, int64_t d,
                    const int64_t* index, int threads, float* codes, float* diff,
                    int64_t* counts) {
  double total = 0.0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : total)
  for (int64_t r = 0; r < n; r++) {
    const float* e = codebook + index[r] * d;
    const float* x = z + r * d;
    float* q = codes + r * d;
    float* g = diff + r * d;
    float sq = 0.0f;
    for (int64_t j = 0; j < d; j++) {
      q[j] = e[j];
      g[j] = x[j] - e[j];
      sq += g[j] * g[j];
    }
    total += sq;
  }
  for (int64_t c = 0; c < k; c++) counts[c] = 0;
  for (int64_t r = 0; r < n; r++) counts[index[r]]++;
  return total;
}

// EMA codebook update (van den Oord et al. 2017, appendix A.1) with Laplace smoothing, for one
// training step's vectors z (n, d), their codes index (n,) and per-code counts (k,):
//   N_i <- γ N_i + (1-γ) n_i,   m_i <- γ m_i + (1-γ) Σ_{j: index_j = i} z_j,
//   e_i = m_i / N̂_i,   N̂_i = (N_i + ε) · ΣN / (ΣN + K ε).
// One pass over z and two over the (k, d) statistics, in place of a dozen tensor operations.
void vqvae_ema_update(const float* z, const int64_t* index, int64_t n, const float* counts,
                      int64_t k, int64_t d, float decay, float eps, float* cluster_size,
                      float* embed_sum, float* codebook) {
  const float w = 1.0f - decay;
  for (int64_t i = 0; i < k * d; i++) embed_sum[i] *= decay;
  for (int64_t r = 0; r < n; r++) {
    float* m = embed_sum + index[r] * d;
    const float* x = z + r * d;
    for (int64_t j = 0; j < d; j++) m[j] += w * x[j];
  }
  double total = 0.0;
  for (int64_t i = 0; i < k; i++) {
    cluster_size[i] = decay * cluster_size[i] + w * counts[i];
    total += cluster_size[i];
  }
  const float shrink = static_cast<float>(total / (total + k * static_cast<double>(eps)));
  for (int64_t i = 0; i < k; i++) {
    const float smoothed = (cluster_size[i] + eps) * shrink;
    for (int64_t j = 0; j < d; j++) codebook[i * d + j] = embed_sum[i * d + j] / smoothed;
  }
}

}  // extern "C"

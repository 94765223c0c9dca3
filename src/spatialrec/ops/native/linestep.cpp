// The element-wise work of one line of the fused CPU scan (spatialrec.ops.fused), in one pass.
//
// The fused scan runs a line as one GEMM (torch's BLAS) and then about ten element-wise torch
// calls forward and twenty backward, each a full pass over the line's (B*W, 3S) gate buffer and a
// few microseconds of dispatch. These functions do each side's element-wise work in one pass,
// with the GEMMs left to torch. They read and write raw, contiguous float32 or float64 buffers
// laid out as spatialrec/ops/fused.py documents (rows m = b*W + j, S values per row and gate):
//
//   g     (M, 3S)  on entry the pre-activations [2 n_in | r_pre | z_pre] (the n rows doubled,
//                  so that tanh(v) = 2 sigmoid(2 v) - 1), on exit the gates [n | r | z]
//   ghn   (M, S)   W_hn p + b_hn of the line
//   keep  (B, W, S) what (1 - z) keeps (the prior line or the previous swept line), row stride
//                  keep_b between batch items
//   h     (B, W, S) the new line, row stride h_b (the interior of the padded state buffer)
//   a     (B, W, 3S) the next line's neighbour vectors [h[j-1] | h[j] | h[j+1]], zero at the
//                  ends; may be null
//
// Built by spatialrec.ops.native at first use with the machine's C++ compiler; no torch headers,
// no dependencies. The maths is docs/maths.md's; the tests compare it with the torch-op path and
// the reference backend.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// Threads. Every function takes the number of threads torch uses (torch.get_num_threads(), so
// that torch.set_num_threads governs this code too) and splits the line's rows m = b*W + j among
// them with OpenMP where the build has it (-fopenmp; torch's Linux wheels load the same libgomp,
// whose thread pool is then shared). A line below kMinParallelValues values runs on one thread:
// there the fork and join cost more than they save. Rows are independent (each writes its own
// outputs; forward_line's neighbour-vector writes go to disjoint slots), and backward_gates
// sums db per thread over a static split of the rows, combined in thread order: results depend on
// the thread count only through that split, never on timing.
constexpr int64_t kMinParallelValues = 8192;

inline int threads_for(int64_t rows, int64_t s, int64_t requested) {
#ifdef _OPENMP
    if (requested > 1 && rows * s >= kMinParallelValues) return static_cast<int>(std::min(requested, rows));
#else
    (void)rows;
    (void)s;
    (void)requested;
#endif
    return 1;
}

// body(m, t) for every row m in [0, rows), t the calling thread's index: the rows split statically
// over nt threads when nt > 1, else a plain loop (no OpenMP call at all on one thread).
template <typename Body>
inline void for_rows(int64_t rows, int nt, Body body) {
#ifdef _OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        {
            const int t = omp_get_thread_num();
#pragma omp for schedule(static)
            for (int64_t m = 0; m < rows; ++m) body(m, t);
        }
        return;
    }
#else
    (void)nt;
#endif
    for (int64_t m = 0; m < rows; ++m) body(m, 0);
}

// exp(x) for float32 in a branch-free form the compiler vectorises: x = n ln2 + r with n an
// integer and |r| <= ln2 / 2, exp(r) by Cephes' degree-6 polynomial (relative error ~1 ulp),
// 2^n from the exponent bits. x is clamped to [-87, 88] (the result stays a normal float).
inline float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float round = 12582912.0f;  // 1.5 * 2^23: adding and subtracting rounds to an integer
    float n = (x * 1.44269504088896341f + round) - round;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

inline float sigmoid(float v) { return 1.0f / (1.0f + exp_f32(-v)); }
inline double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// One row of forward_line: gn (3S) the row's pre-activations in, gates out; out (S) the new
// row, kp (S) what (1 - z) keeps (both null: gates only). Restrict-qualified parameters, as for
// gates_row.
template <typename T>
inline void forward_row(T* __restrict gn, const T* __restrict hn, const T* __restrict kp, T* __restrict out, int64_t s) {
    T* gr = gn + s;
    const T* gz = gr + s;
    // r and z are 2S consecutive values: one loop.
    for (int64_t k = 0; k < 2 * s; ++k) gr[k] = sigmoid(gr[k]);
    if (!out) {
        for (int64_t k = 0; k < s; ++k) gn[k] = T(2) * sigmoid(gn[k] + T(2) * gr[k] * hn[k]) - T(1);
        return;
    }
    for (int64_t k = 0; k < s; ++k) {
        const T n = T(2) * sigmoid(gn[k] + T(2) * gr[k] * hn[k]) - T(1);
        gn[k] = n;
        out[k] = kp[k] + gz[k] * (n - kp[k]);
    }
}

template <typename T>
void forward_line(T* __restrict g, const T* __restrict ghn, const T* __restrict keep, int64_t keep_b, T* __restrict h,
                  int64_t h_b, T* __restrict a, int64_t batch, int64_t width, int64_t s, int64_t threads) {
    const int64_t s3 = 3 * s, rows = batch * width;
    for_rows(rows, threads_for(rows, s, threads), [=](int64_t m, int) {
        const int64_t b = m / width, j = m - b * width;
        T* out = h ? h + b * h_b + j * s : nullptr;
        forward_row(g + m * s3, ghn + m * s, keep ? keep + b * keep_b + j * s : nullptr, out, s);
        if (!out || !a) return;
        // Row m's own slots and its neighbours' slots that read it: every slot has one writer.
        T* row = a + m * s3;
        std::memcpy(row + s, out, s * sizeof(T));
        if (j + 1 < width) std::memcpy(row + s3, out, s * sizeof(T));  // next column's left
        if (j > 0) std::memcpy(row - s3 + 2 * s, out, s * sizeof(T));    // previous column's right
        if (j == 0) std::memset(row, 0, s * sizeof(T));
        if (j + 1 == width) std::memset(row + 2 * s, 0, s * sizeof(T));
    });
}

// Gate gradients of one line. d (M, 4S) receives [dn_pre | dr_pre | dz_pre | dn_pre * r]; dh
// (M, S) is dL/dh of the line on entry and dh (1 - z) on exit; db (4S,) accumulates the column
// sums of d (summed in double; null: no parameter gradient).
// One row of backward_gates (restrict-qualified parameters: captured pointers would lose the
// qualifier, and the compiler then does not vectorise the loop, 3x slower as measured).
template <typename T>
inline void gates_row(const T* __restrict n, const T* __restrict hn, const T* __restrict kp, T* __restrict dhm,
                      T* __restrict dn, double* __restrict sums, int64_t s) {
    const T* r = n + s;
    const T* z = r + s;
    T* dr = dn + s;
    T* dz = dr + s;
    T* dnr = dz + s;
    for (int64_t k = 0; k < s; ++k) {
        const T gh = dhm[k];
        const T zk = z[k], rk = r[k], nk = n[k];
        const T dnk = gh * zk * (T(1) - nk * nk);
        dz[k] = gh * (nk - kp[k]) * zk * (T(1) - zk);
        dn[k] = dnk;
        dr[k] = dnk * hn[k] * rk * (T(1) - rk);
        dnr[k] = dnk * rk;
        dhm[k] = gh * (T(1) - zk);
    }
    if (sums)
        for (int64_t k = 0; k < 4 * s; ++k) sums[k] += dn[k];
}

template <typename T>
void backward_gates(const T* __restrict g, const T* __restrict ghn, const T* __restrict keep, int64_t keep_b,
                    T* __restrict dh, T* __restrict d, T* __restrict db, int64_t batch, int64_t width, int64_t s,
                    int64_t threads) {
    const int64_t s3 = 3 * s, s4 = 4 * s, rows = batch * width;
    const int nt = threads_for(rows, s, threads);
    // The line's column sums are accumulated in double, one row of s4 per thread, then added to
    // db once, in thread order.
    std::vector<double> partial(db ? static_cast<size_t>(nt * s4) : 0, 0.0);
    double* sums_at = db ? partial.data() : nullptr;
    for_rows(rows, nt, [=](int64_t m, int t) {
        const int64_t b = m / width, j = m - b * width;
        gates_row(g + m * s3, ghn + m * s, keep + b * keep_b + j * s, dh + m * s, d + m * s4,
                  sums_at ? sums_at + t * s4 : nullptr, s);
    });
    if (db) {
        for (int u = 1; u < nt; ++u)
            for (int64_t k = 0; k < s4; ++k) partial[k] += partial[u * s4 + k];
        for (int64_t k = 0; k < s4; ++k) db[k] += static_cast<T>(partial[k]);
    }
}

// prev (B, W, S) += the gradient the neighbour vectors pass back, da (B, W, 3S) shifted onto the
// columns it was read from, plus carry (M, S) when not null (the line carry's dh (1 - z)).
template <typename T>
inline void neighbours_row(T* __restrict p, const T* __restrict mid, const T* __restrict right, const T* __restrict left,
                           const T* __restrict c, int64_t s) {
    for (int64_t k = 0; k < s; ++k) {
        T v = p[k] + mid[k];
        if (right) v += right[k];
        if (left) v += left[k];
        if (c) v += c[k];
        p[k] = v;
    }
}

template <typename T>
void backward_neighbours(T* __restrict prev, const T* __restrict da, const T* __restrict carry, int64_t batch,
                         int64_t width, int64_t s, int64_t threads) {
    const int64_t s3 = 3 * s, rows = batch * width;
    for_rows(rows, threads_for(rows, s, threads), [=](int64_t m, int) {
        const int64_t j = m % width;
        neighbours_row(prev + m * s, da + m * s3 + s,
                       j + 1 < width ? da + (m + 1) * s3 : nullptr,      // column j+1 read h[j] as its left
                       j > 0 ? da + (m - 1) * s3 + 2 * s : nullptr,      // column j-1 read h[j] as its right
                       carry ? carry + m * s : nullptr, s);
    });
}

}  // namespace

extern "C" {

int spatialrec_native_abi() { return 2; }

// 1 when built with OpenMP (the functions then use up to `threads` threads), else 0.
int spatialrec_native_openmp() {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void spatialrec_forward_line_f32(float* g, const float* ghn, const float* keep, int64_t keep_b, float* h, int64_t h_b,
                                 float* a, int64_t batch, int64_t width, int64_t s, int64_t threads) {
    forward_line<float>(g, ghn, keep, keep_b, h, h_b, a, batch, width, s, threads);
}
void spatialrec_forward_line_f64(double* g, const double* ghn, const double* keep, int64_t keep_b, double* h,
                                 int64_t h_b, double* a, int64_t batch, int64_t width, int64_t s, int64_t threads) {
    forward_line<double>(g, ghn, keep, keep_b, h, h_b, a, batch, width, s, threads);
}
void spatialrec_backward_gates_f32(const float* g, const float* ghn, const float* keep, int64_t keep_b, float* dh,
                                   float* d, float* db, int64_t batch, int64_t width, int64_t s, int64_t threads) {
    backward_gates<float>(g, ghn, keep, keep_b, dh, d, db, batch, width, s, threads);
}
void spatialrec_backward_gates_f64(const double* g, const double* ghn, const double* keep, int64_t keep_b, double* dh,
                                   double* d, double* db, int64_t batch, int64_t width, int64_t s, int64_t threads) {
    backward_gates<double>(g, ghn, keep, keep_b, dh, d, db, batch, width, s, threads);
}
void spatialrec_backward_neighbours_f32(float* prev, const float* da, const float* carry, int64_t batch, int64_t width,
                                        int64_t s, int64_t threads) {
    backward_neighbours<float>(prev, da, carry, batch, width, s, threads);
}
void spatialrec_backward_neighbours_f64(double* prev, const double* da, const double* carry, int64_t batch,
                                        int64_t width, int64_t s, int64_t threads) {
    backward_neighbours<double>(prev, da, carry, batch, width, s, threads);
}

}  // extern "C"

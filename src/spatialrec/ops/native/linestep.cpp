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

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

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

template <typename T>
void forward_line(T* __restrict g, const T* __restrict ghn, const T* __restrict keep, int64_t keep_b, T* __restrict h,
                  int64_t h_b, T* __restrict a, int64_t batch, int64_t width, int64_t s) {
    const int64_t s3 = 3 * s;
    for (int64_t b = 0; b < batch; ++b) {
        for (int64_t j = 0; j < width; ++j) {
            const int64_t m = b * width + j;
            T* gn = g + m * s3;
            T* gr = gn + s;
            T* gz = gr + s;
            const T* hn = ghn + m * s;
            const T* kp = keep ? keep + b * keep_b + j * s : nullptr;
            T* out = h ? h + b * h_b + j * s : nullptr;
            // r and z are 2S consecutive values: one loop.
            for (int64_t k = 0; k < 2 * s; ++k) gr[k] = sigmoid(gr[k]);
            if (!out) {
                for (int64_t k = 0; k < s; ++k) gn[k] = T(2) * sigmoid(gn[k] + T(2) * gr[k] * hn[k]) - T(1);
                continue;
            }
            for (int64_t k = 0; k < s; ++k) {
                const T n = T(2) * sigmoid(gn[k] + T(2) * gr[k] * hn[k]) - T(1);
                gn[k] = n;
                out[k] = kp[k] + gz[k] * (n - kp[k]);
            }
            if (!a) continue;
            T* row = a + m * s3;
            std::memcpy(row + s, out, s * sizeof(T));
            if (j + 1 < width) std::memcpy(row + s3, out, s * sizeof(T));         // next column's left
            if (j > 0) std::memcpy(row - s3 + 2 * s, out, s * sizeof(T));           // previous column's right
            if (j == 0) std::memset(row, 0, s * sizeof(T));
            if (j + 1 == width) std::memset(row + 2 * s, 0, s * sizeof(T));
        }
    }
}

// Gate gradients of one line. d (M, 4S) receives [dn_pre | dr_pre | dz_pre | dn_pre * r]; dh
// (M, S) is dL/dh of the line on entry and dh (1 - z) on exit; db (4S,) accumulates the column
// sums of d (summed in double; null: no parameter gradient).
template <typename T>
void backward_gates(const T* __restrict g, const T* __restrict ghn, const T* __restrict keep, int64_t keep_b,
                    T* __restrict dh, T* __restrict d, T* __restrict db, int64_t batch, int64_t width, int64_t s) {
    const int64_t s3 = 3 * s, s4 = 4 * s;
    // The line's column sums are accumulated in double, then added to db once.
    double* sums = db ? new double[s4]() : nullptr;
    for (int64_t b = 0; b < batch; ++b) {
        for (int64_t j = 0; j < width; ++j) {
            const int64_t m = b * width + j;
            const T* n = g + m * s3;
            const T* r = n + s;
            const T* z = r + s;
            const T* hn = ghn + m * s;
            const T* kp = keep + b * keep_b + j * s;
            T* dhm = dh + m * s;
            T* dn = d + m * s4;
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
                for (int64_t k = 0; k < s4; ++k) sums[k] += dn[k];
        }
    }
    if (sums) {
        for (int64_t k = 0; k < s4; ++k) db[k] += static_cast<T>(sums[k]);
        delete[] sums;
    }
}

// prev (B, W, S) += the gradient the neighbour vectors pass back, da (B, W, 3S) shifted onto the
// columns it was read from, plus carry (M, S) when not null (the line carry's dh (1 - z)).
template <typename T>
void backward_neighbours(T* __restrict prev, const T* __restrict da, const T* __restrict carry, int64_t batch,
                         int64_t width, int64_t s) {
    const int64_t s3 = 3 * s;
    for (int64_t b = 0; b < batch; ++b) {
        for (int64_t j = 0; j < width; ++j) {
            const int64_t m = b * width + j;
            T* p = prev + m * s;
            const T* mid = da + m * s3 + s;
            const T* right = j + 1 < width ? da + (m + 1) * s3 : nullptr;  // column j+1 read h[j] as its left
            const T* left = j > 0 ? da + (m - 1) * s3 + 2 * s : nullptr;   // column j-1 read h[j] as its right
            const T* c = carry ? carry + m * s : nullptr;
            for (int64_t k = 0; k < s; ++k) {
                T v = p[k] + mid[k];
                if (right) v += right[k];
                if (left) v += left[k];
                if (c) v += c[k];
                p[k] = v;
            }
        }
    }
}

}  // namespace

extern "C" {

int spatialrec_native_abi() { return 1; }

void spatialrec_forward_line_f32(float* g, const float* ghn, const float* keep, int64_t keep_b, float* h, int64_t h_b,
                                 float* a, int64_t batch, int64_t width, int64_t s) {
    forward_line<float>(g, ghn, keep, keep_b, h, h_b, a, batch, width, s);
}
void spatialrec_forward_line_f64(double* g, const double* ghn, const double* keep, int64_t keep_b, double* h,
                                 int64_t h_b, double* a, int64_t batch, int64_t width, int64_t s) {
    forward_line<double>(g, ghn, keep, keep_b, h, h_b, a, batch, width, s);
}
void spatialrec_backward_gates_f32(const float* g, const float* ghn, const float* keep, int64_t keep_b, float* dh,
                                   float* d, float* db, int64_t batch, int64_t width, int64_t s) {
    backward_gates<float>(g, ghn, keep, keep_b, dh, d, db, batch, width, s);
}
void spatialrec_backward_gates_f64(const double* g, const double* ghn, const double* keep, int64_t keep_b, double* dh,
                                   double* d, double* db, int64_t batch, int64_t width, int64_t s) {
    backward_gates<double>(g, ghn, keep, keep_b, dh, d, db, batch, width, s);
}
void spatialrec_backward_neighbours_f32(float* prev, const float* da, const float* carry, int64_t batch, int64_t width,
                                        int64_t s) {
    backward_neighbours<float>(prev, da, carry, batch, width, s);
}
void spatialrec_backward_neighbours_f64(double* prev, const double* da, const double* carry, int64_t batch,
                                        int64_t width, int64_t s) {
    backward_neighbours<double>(prev, da, carry, batch, width, s);
}

}  // extern "C"

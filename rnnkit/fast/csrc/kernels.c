/* rnnkit's native kernels (declared in kernels.h): the elementwise work of a step of each recurrence, and the
   whole step loops with their matrix products. The formulas and the layout of the stored factors are those of
   rnnkit/fast/lstm.py, gru.py and rnn.py (the same recurrences written with torch operations); the layer-norm
   statistics follow torch.native_layer_norm (biased variance, rstd = 1 / sqrt(var + eps)).

   A step's elementwise work as torch operations is 10-20 calls of a few microseconds of dispatch each, plus a
   pass over memory each; here it is one call that reads each value once and writes each result once. */
#include <math.h>
#include <stddef.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.h"

/* Rows are independent: a step of at least parallel_min values is split over the OpenMP threads (torch's own
   runtime, whose threads are awake after the step's matrix product), each thread a contiguous block of rows.
   A row's arithmetic does not depend on the thread that computes it. The tests lower the threshold, so that
   their small steps run on two threads too. */
static idx parallel_min = 16384;

void set_parallel_min(idx values) { parallel_min = values; }

int row_threads(idx n, idx H) {
#ifdef _OPENMP
    if (n * H < parallel_min) return 1;
    int t = omp_get_max_threads();
    return t < n ? t : (int)n;
#else
    (void)n; (void)H;
    return 1;
#endif
}

#define ROWS_IN_PARALLEL _Pragma("omp parallel for schedule(static) num_threads(row_threads(n, H))")

/* The logistic sigmoid as 1/2 tanh(x/2) + 1/2, the same function: it cannot overflow, its results are never
   subnormal (below -17 it is exactly 0, above 17 exactly 1, within float32 rounding of the true values), and a NaN
   argument still gives NaN, as torch's sigmoid does. The textbook 1 / (1 + exp(-x)) overflows to 1 / inf for
   x < -88.7, which -ffast-math's approximate reciprocal turns into NaN (issue 17: rnnkit.GRU gave NaN on raw pixel
   values where torch.nn.GRU did not); clamping x would hide a NaN; 1 / (1 + e) or e / (1 + e) with e = exp(-|x|)
   is as fast at ordinary arguments but sends large ones down glibc's slow scalar path and through subnormal
   arithmetic. Measured: benchmarks/results/fast-path-notes.md. */
static inline float sigm(float x) { return 0.5f * tanhf(0.5f * x) + 0.5f; }

/* LSTM, one step, n rows. a: pre-activations (i, f, g, o), 4H wide; c: c_{t-1} in, c_t out; h: h_t out;
   fac (may be NULL): [g i(1-i), c_{t-1} f(1-f), i(1-g^2), h(1-o), o - h tanh(c_t), f], 6H wide. */
void lstm_forward(idx n, idx H, const float *a, idx sa, float *c, idx sc, float *h, idx sh, float *fac, idx sf) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *ar = a + r * sa;
        float *cr = c + r * sc, *hr = h + r * sh;
        float *fr = fac ? fac + r * sf : NULL;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float i = sigm(ar[k]), f = sigm(ar[H + k]), g = tanhf(ar[2 * H + k]), o = sigm(ar[3 * H + k]);
            float cp = cr[k], cn = f * cp + i * g, tc = tanhf(cn), hv = o * tc;
            cr[k] = cn;
            hr[k] = hv;
            if (fr) {
                fr[k] = g * i * (1.0f - i);
                fr[H + k] = cp * f * (1.0f - f);
                fr[2 * H + k] = i * (1.0f - g * g);
                fr[3 * H + k] = hv * (1.0f - o);
                fr[4 * H + k] = o - hv * tc;
                fr[5 * H + k] = f;
            }
        }
    }
}

/* LSTM backward, one step. dh = dh_run + dout; dc = dc_run + dh A; gates' gradients [dc P_i, dc P_f, dc P_g,
   dh P_o] into dg (4H wide); dc_run <- dc f. */
void lstm_backward(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, float *dc_run, idx sc,
                   const float *fac, idx sf, float *dg, idx sg) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *dr = dh_run + r * sr, *dor = dout + r * so, *fr = fac + r * sf;
        float *cr = dc_run + r * sc, *gr = dg + r * sg;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float dh = dr[k] + dor[k];
            float dc = cr[k] + dh * fr[4 * H + k];
            gr[k] = dc * fr[k];
            gr[H + k] = dc * fr[H + k];
            gr[2 * H + k] = dc * fr[2 * H + k];
            gr[3 * H + k] = dh * fr[3 * H + k];
            cr[k] = dc * fr[5 * H + k];
        }
    }
}

/* Layer-norm LSTM, one step (Ba et al. 2016): a = LN(xp; g_ih) + b + LN(rec; g_hh), where xp = W_ih x (raw; its
   normalisation is fused here rather than a separate pass over all steps) and b = b_ih + b_hh (zeros without
   biases); gates; c_t; s = LN(c_t; g_c, b_c); h = o tanh(s). c in/out; cs (may be NULL): c_t copy; stats (may be
   NULL): mean and rstd of rec, of c_t and of xp, 6 per row; fac as in lstm_forward with tanh(s) in place of
   tanh(c_t). */
void ln_lstm_forward(idx n, idx H, const float *rec, idx srec, const float *xp, idx sx, const float *g_ih,
                     const float *b, const float *g_hh, const float *g_c, const float *b_c, float eps, float *c,
                     idx sc, float *h, idx sh, float *fac, idx sf, float *cs, idx scs, float *stats) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *rr = rec + r * srec, *xr = xp + r * sx;
        float *cr = c + r * sc, *hr = h + r * sh;
        float *fr = fac ? fac + r * sf : NULL;
        float sum = 0.0f, sq = 0.0f, csum = 0.0f, csq = 0.0f, xsum = 0.0f, xsq = 0.0f;
        #pragma omp simd reduction(+:sum, xsum)
        for (idx k = 0; k < 4 * H; k++) { sum += rr[k]; xsum += xr[k]; }
        float mean = sum / (float)(4 * H), xmean = xsum / (float)(4 * H);
        #pragma omp simd reduction(+:sq, xsq)
        for (idx k = 0; k < 4 * H; k++) {
            float d = rr[k] - mean, e = xr[k] - xmean;
            sq += d * d;
            xsq += e * e;
        }
        float rstd = 1.0f / sqrtf(sq / (float)(4 * H) + eps), xrstd = 1.0f / sqrtf(xsq / (float)(4 * H) + eps);
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float ai = g_ih[k] * (xr[k] - xmean) * xrstd + b[k] + g_hh[k] * (rr[k] - mean) * rstd;
            float af = g_ih[H + k] * (xr[H + k] - xmean) * xrstd + b[H + k]
                       + g_hh[H + k] * (rr[H + k] - mean) * rstd;
            float ag = g_ih[2 * H + k] * (xr[2 * H + k] - xmean) * xrstd + b[2 * H + k]
                       + g_hh[2 * H + k] * (rr[2 * H + k] - mean) * rstd;
            float i = sigm(ai), f = sigm(af), g = tanhf(ag);
            float cp = cr[k], cn = f * cp + i * g;
            cr[k] = cn;
            if (fr) {
                fr[k] = g * i * (1.0f - i);
                fr[H + k] = cp * f * (1.0f - f);
                fr[2 * H + k] = i * (1.0f - g * g);
                fr[5 * H + k] = f;
            }
        }
        #pragma omp simd reduction(+:csum)
        for (idx k = 0; k < H; k++) { csum += cr[k]; }
        float cmean = csum / (float)H;
        #pragma omp simd reduction(+:csq)
        for (idx k = 0; k < H; k++) { float d = cr[k] - cmean; csq += d * d; }
        float crstd = 1.0f / sqrtf(csq / (float)H + eps);
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float o = sigm(g_ih[3 * H + k] * (xr[3 * H + k] - xmean) * xrstd + b[3 * H + k]
                           + g_hh[3 * H + k] * (rr[3 * H + k] - mean) * rstd);
            float ts = tanhf(g_c[k] * (cr[k] - cmean) * crstd + b_c[k]);
            float hv = o * ts;
            hr[k] = hv;
            if (fr) {
                fr[3 * H + k] = hv * (1.0f - o);
                fr[4 * H + k] = o - hv * ts;
            }
            if (cs) { cs[r * scs + k] = cr[k]; }
        }
        if (stats) {
            float *st = stats + 6 * r;
            st[0] = mean; st[1] = rstd; st[2] = cmean; st[3] = crstd; st[4] = xmean; st[5] = xrstd;
        }
    }
}

/* Layer-norm LSTM backward, one step: through h = o tanh(LN(c)), LN(c)'s backward, the gates, LN(rec)'s and
   LN(xp)'s backward. dxp: dL/d xp (4H, xp raw as in ln_lstm_forward); drec: dL/d rec (4H); dc_run <- dc f; the
   gains' and shifts' gradients are added to acc_hh (4H), acc_gc (H), acc_bc (H), acc_ih (4H), acc_b (4H). */
void ln_lstm_backward(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, float *dc_run, idx sc,
                      const float *fac, idx sf, const float *rec, idx srec, const float *xp, idx sx, const float *cs,
                      idx scs, const float *stats, const float *g_ih, const float *g_hh, const float *g_c,
                      float *dxp, idx sg, float *drec, idx sdrec, float *acc_ih, float *acc_b, float *acc_hh,
                      float *acc_gc, float *acc_bc, float *scratch) {
    /* scratch: row_threads(n, H) blocks of 16H zeros, one per thread: the row's dh and d_shown (2H), then the
       thread's sums of the gains' and shifts' gradients (4H + H + H + 4H + 4H), added to acc_* in thread order
       after. The gate gradients are computed into dxp's row, then replaced by LN(xp)'s backward of them. */
    int threads = row_threads(n, H);
    #pragma omp parallel num_threads(threads) if (threads > 1)
    {
#ifdef _OPENMP
    float *own = scratch + 16 * H * (idx)omp_get_thread_num();
#else
    float *own = scratch;
#endif
    float *dhs = own, *dss = own + H, *sum_hh = own + 2 * H, *sum_gc = own + 6 * H, *sum_bc = own + 7 * H;
    float *sum_ih = own + 8 * H, *sum_b = own + 12 * H;
    #pragma omp for schedule(static)
    for (idx r = 0; r < n; r++) {
        const float *dr = dh_run + r * sr, *dor = dout + r * so, *fr = fac + r * sf, *rr = rec + r * srec;
        const float *cr = cs + r * scs, *st = stats + 6 * r, *xr = xp + r * sx;
        float *ccr = dc_run + r * sc, *gr = dxp + r * sg, *drr = drec + r * sdrec;
        float mean = st[0], rstd = st[1], cmean = st[2], crstd = st[3];
        float m1 = 0.0f, m2 = 0.0f;
        #pragma omp simd reduction(+:m1, m2)
        for (idx k = 0; k < H; k++) {
            float dh = dr[k] + dor[k], ds = dh * fr[4 * H + k];
            float xhat = (cr[k] - cmean) * crstd, dy = ds * g_c[k];
            dhs[k] = dh;
            dss[k] = ds;
            m1 += dy;
            m2 += dy * xhat;
            sum_gc[k] += ds * xhat;
            sum_bc[k] += ds;
        }
        float mean1 = m1 / (float)H, mean2 = m2 / (float)H;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float xhat = (cr[k] - cmean) * crstd;
            float dc = ccr[k] + crstd * (dss[k] * g_c[k] - mean1 - xhat * mean2);
            gr[k] = dc * fr[k];
            gr[H + k] = dc * fr[H + k];
            gr[2 * H + k] = dc * fr[2 * H + k];
            gr[3 * H + k] = dhs[k] * fr[3 * H + k];
            ccr[k] = dc * fr[5 * H + k];
        }
        float n1 = 0.0f, n2 = 0.0f;
        #pragma omp simd reduction(+:n1, n2)
        for (idx k = 0; k < 4 * H; k++) {
            float xhat = (rr[k] - mean) * rstd, dy = gr[k] * g_hh[k];
            n1 += dy;
            n2 += dy * xhat;
            sum_hh[k] += gr[k] * xhat;
        }
        float nmean1 = n1 / (float)(4 * H), nmean2 = n2 / (float)(4 * H);
        #pragma omp simd
        for (idx k = 0; k < 4 * H; k++) {
            float xhat = (rr[k] - mean) * rstd;
            drr[k] = rstd * (gr[k] * g_hh[k] - nmean1 - xhat * nmean2);
        }
        float xmean = st[4], xrstd = st[5], p1 = 0.0f, p2 = 0.0f;
        #pragma omp simd reduction(+:p1, p2)
        for (idx k = 0; k < 4 * H; k++) {
            float xhat = (xr[k] - xmean) * xrstd, dy = gr[k] * g_ih[k];
            p1 += dy;
            p2 += dy * xhat;
            sum_ih[k] += gr[k] * xhat;
            sum_b[k] += gr[k];
        }
        float pmean1 = p1 / (float)(4 * H), pmean2 = p2 / (float)(4 * H);
        #pragma omp simd
        for (idx k = 0; k < 4 * H; k++) {
            float xhat = (xr[k] - xmean) * xrstd;
            gr[k] = xrstd * (gr[k] * g_ih[k] - pmean1 - xhat * pmean2);
        }
    }
    }
    for (int t = 0; t < threads; t++) {
        const float *own = scratch + 16 * H * (idx)t;
        for (idx k = 0; k < 4 * H; k++) {
            acc_hh[k] += own[2 * H + k];
            acc_ih[k] += own[8 * H + k];
            acc_b[k] += own[12 * H + k];
        }
        for (idx k = 0; k < H; k++) { acc_gc[k] += own[6 * H + k]; acc_bc[k] += own[7 * H + k]; }
    }
}

/* GRU (reset after), one step. rec = W_hh h + b_hh (r, z, n blocks); h = n + z (h_prev - n);
   fac (may be NULL): [(h - n)(1 - z), (1 - z)(1 - n^2), rec_n r(1 - r), r, z], 5H wide. */
void gru_forward(idx n, idx H, const float *rec, idx srec, const float *xp, idx sx, const float *hp, idx shp,
                 float *h, idx sh, float *fac, idx sf) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *rr = rec + r * srec, *xr = xp + r * sx, *pr = hp + r * shp;
        float *hr = h + r * sh;
        float *fr = fac ? fac + r * sf : NULL;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float rg = sigm(xr[k] + rr[k]), z = sigm(xr[H + k] + rr[H + k]);
            float cand = tanhf(xr[2 * H + k] + rg * rr[2 * H + k]);
            float hv = cand + z * (pr[k] - cand);
            hr[k] = hv;
            if (fr) {
                fr[k] = (hv - cand) * (1.0f - z);
                fr[H + k] = (1.0f - z) * (1.0f - cand * cand);
                fr[2 * H + k] = rr[2 * H + k] * rg * (1.0f - rg);
                fr[3 * H + k] = rg;
                fr[4 * H + k] = z;
            }
        }
    }
}

/* GRU (reset after) backward, one step. dh = dh_run + dout; dxp = [da_r, da_z, da_n]; drec = [da_r, da_z,
   da_n r]; carry <- z dh (the caller adds drec W_hh). carry may be dh_run. */
void gru_backward(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, const float *fac, idx sf,
                  float *dxp, idx sx, float *drec, idx srec, float *carry, idx sc) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *dr = dh_run + r * sr, *dor = dout + r * so, *fr = fac + r * sf;
        float *xr = dxp + r * sx, *rr = drec + r * srec, *cr = carry + r * sc;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float dh = dr[k] + dor[k];
            float dz = dh * fr[k], dn = dh * fr[H + k], dr_ = dn * fr[2 * H + k];
            xr[k] = dr_; xr[H + k] = dz; xr[2 * H + k] = dn;
            rr[k] = dr_; rr[H + k] = dz; rr[2 * H + k] = dn * fr[3 * H + k];
            cr[k] = fr[4 * H + k] * dh;
        }
    }
}

/* GRU (reset before, Cho et al. 2014), first half of a step: in place sigma on the (r, z) pre-activations in
   rz (2H wide); reset = r h_prev. */
void rb_gates(idx n, idx H, float *rz, idx srz, const float *hp, idx shp, float *reset, idx sreset) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        float *zr = rz + r * srz, *er = reset + r * sreset;
        const float *pr = hp + r * shp;
        #pragma omp simd
        for (idx k = 0; k < 2 * H; k++) { zr[k] = sigm(zr[k]); }
        #pragma omp simd
        for (idx k = 0; k < H; k++) { er[k] = zr[k] * pr[k]; }
    }
}

/* Second half: cand = tanh(pre) in place, h = cand + z (h_prev - cand); fac (may be NULL): F_z, F_n and
   F_r = h_prev r(1 - r) into the first 3H of the 5H row whose last 2H hold r, z already (rz points there). */
void rb_forward(idx n, idx H, float *cand, idx scand, const float *rz, idx srz, const float *hp, idx shp,
                float *h, idx sh, float *fac, idx sf) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        float *nr = cand + r * scand, *hr = h + r * sh;
        const float *zr = rz + r * srz, *pr = hp + r * shp;
        float *fr = fac ? fac + r * sf : NULL;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float cv = tanhf(nr[k]), z = zr[H + k], rg = zr[k];
            float hv = cv + z * (pr[k] - cv);
            nr[k] = cv;
            hr[k] = hv;
            if (fr) {
                fr[k] = (hv - cv) * (1.0f - z);
                fr[H + k] = (1.0f - z) * (1.0f - cv * cv);
                fr[2 * H + k] = pr[k] * rg * (1.0f - rg);
            }
        }
    }
}

/* Reset-before backward, first half: dh = dh_run + dout (kept in dh_out); [da_z, da_n] into dxp's last 2H. */
void rb_backward_gates(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, const float *fac,
                       idx sf, float *dxp, idx sx, float *dh_out, idx sd) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *dr = dh_run + r * sr, *dor = dout + r * so, *fr = fac + r * sf;
        float *xr = dxp + r * sx, *hr = dh_out + r * sd;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float dh = dr[k] + dor[k];
            hr[k] = dh;
            xr[H + k] = dh * fr[k];
            xr[2 * H + k] = dh * fr[H + k];
        }
    }
}

/* Second half, given d_reset = da_n W_hn: da_r = d_reset F_r into dxp's first H; carry = z dh + r d_reset
   (the caller adds [da_r, da_z] W_hrz). */
void rb_backward_reset(idx n, idx H, const float *d_reset, idx sdr, const float *dh, idx sd, const float *fac,
                       idx sf, float *dxp, idx sx, float *carry, idx sc) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *er = d_reset + r * sdr, *hr = dh + r * sd, *fr = fac + r * sf;
        float *xr = dxp + r * sx, *cr = carry + r * sc;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            xr[k] = er[k] * fr[2 * H + k];
            cr[k] = fr[4 * H + k] * hr[k] + fr[3 * H + k] * er[k];
        }
    }
}
/* Whole sequences: the step loops of rnnkit.fast with every step's matrix product in C too, through the BLAS
   sgemm_ that torch's own matrix products call (gemm; see kernels.h). For small steps, where a step's work is a few
   microseconds and Python's per-step slicing and calls cost more. Buffers are contiguous (T, B, F) arrays;
   rows[t] = n_t, the rows still running at step t (longest first). */
/* c (n x F, row stride sc) = beta c + a (n x K, row stride sa) w^T, w (F x K) row-major: torch.addmm(c, a, w.t()). */
static void times_wt_rows(sgemm_fn gemm, idx n, idx F, idx K, const float *a, idx sa, const float *w, float beta,
                          float *c, idx sc) {
    const float one = 1.0f;
    gemm("T", "N", &F, &n, &K, &one, w, &K, a, &sa, &beta, c, &sc);
}

static void times_wt(sgemm_fn gemm, idx n, idx F, idx K, const float *a, const float *w, float beta, float *c) {
    times_wt_rows(gemm, n, F, K, a, K, w, beta, c, F);
}

/* c (n x K, row stride sc) = beta c + a (n x F, row stride sa) w, w (F x K) row-major: torch.mm(a, w). */
static void times_w_rows(sgemm_fn gemm, idx n, idx F, idx K, const float *a, idx sa, const float *w, float beta,
                         float *c, idx sc) {
    const float one = 1.0f;
    gemm("N", "N", &K, &n, &F, &one, w, &K, a, &sa, &beta, c, &sc);
}

static void times_w(sgemm_fn gemm, idx n, idx F, idx K, const float *a, const float *w, float beta, float *c) {
    times_w_rows(gemm, n, F, K, a, F, w, beta, c, K);
}

/* Copy columns [0, width) of n rows (row stride sfrom) into rows of stride sto. */
static void copy_rows(idx n, idx width, const float *from, idx sfrom, float *to, idx sto) {
    for (idx r = 0; r < n; r++) {
        for (idx k = 0; k < width; k++) { to[r * sto + k] = from[r * sfrom + k]; }
    }
}

/* GRU (reset after) forward over all steps: rec = W_hh h_{t-1} + b_hh (b may be NULL), then gru_forward.
   hs: (T + 1, B, H) with h_0 in hs[0]; fac (may be NULL): (T, B, 5H); rec: scratch (B, 3H). */
void gru_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                          const float *b, const float *xp, float *hs, float *fac, float *rec) {
    for (idx t = 0; t < steps; t++) {
        idx n = rows[t];
        if (b) {
            for (idx r = 0; r < n; r++) {
                for (idx k = 0; k < 3 * H; k++) { rec[r * 3 * H + k] = b[k]; }
            }
        }
        times_wt(gemm, n, 3 * H, H, hs + t * B * H, w, b ? 1.0f : 0.0f, rec);
        gru_forward(n, H, rec, 3 * H, xp + t * B * 3 * H, 3 * H, hs + t * B * H, H, hs + (t + 1) * B * H, H,
                    fac ? fac + t * B * 5 * H : NULL, 5 * H);
    }
}

/* Its backward: dh_run (B, H) holds dL/dh_T in, dL/dh_0 out; dout (T, B, H); dxp and drec (T, B, 3H), rows past
   n_t left as they are (the caller zeroes them). */
void gru_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                           const float *dout, const float *fac, float *dxp, float *drec, float *dh_run) {
    for (idx t = steps - 1; t >= 0; t--) {
        idx n = rows[t];
        float *dr = drec + t * B * 3 * H;
        gru_backward(n, H, dh_run, H, dout + t * B * H, H, fac + t * B * 5 * H, 5 * H, dxp + t * B * 3 * H, 3 * H,
                     dr, 3 * H, dh_run, H);
        times_w(gemm, n, 3 * H, H, dr, w, 1.0f, dh_run);  /* + dL/d(W_hh h_{t-1}) W_hh */
    }
}

/* Elman RNN, one step in place: h = phi(h) over n rows, phi = relu if relu else tanh. */
static void rnn_activate(idx n, idx H, float *h, idx relu) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        float *hr = h + r * H;
        if (relu) {
            #pragma omp simd
            for (idx k = 0; k < H; k++) { hr[k] = hr[k] > 0.0f ? hr[k] : 0.0f; }
        } else {
            #pragma omp simd
            for (idx k = 0; k < H; k++) { hr[k] = tanhf(hr[k]); }
        }
    }
}

/* Its backward, one step: dpre = (dh_run + dout) phi'(pre), from h = phi(pre): relu' = [h > 0], tanh' = 1 - h^2. */
static void rnn_backward_step(idx n, idx H, const float *dh_run, const float *dout, const float *h, float *dpre,
                              idx relu) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *dr = dh_run + r * H, *dor = dout + r * H, *hr = h + r * H;
        float *pr = dpre + r * H;
        if (relu) {
            #pragma omp simd
            for (idx k = 0; k < H; k++) { pr[k] = hr[k] > 0.0f ? dr[k] + dor[k] : 0.0f; }
        } else {
            #pragma omp simd
            for (idx k = 0; k < H; k++) { pr[k] = (dr[k] + dor[k]) * (1.0f - hr[k] * hr[k]); }
        }
    }
}

/* Elman RNN forward over all steps: h_t = phi(xp_t + W_hh h_{t-1}) (xp holds both biases); hs as in
   gru_sequence_forward. */
void rnn_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                          const float *xp, float *hs, idx relu) {
    for (idx t = 0; t < steps; t++) {
        idx n = rows[t];
        float *h = hs + (t + 1) * B * H;
        copy_rows(n, H, xp + t * B * H, H, h, H);
        times_wt(gemm, n, H, H, hs + t * B * H, w, 1.0f, h);
        rnn_activate(n, H, h, relu);
    }
}

/* Its backward: dpre (T, B, H): dL/d(pre-activation), rows past n_t left as they are; dh_run as in
   gru_sequence_backward. */
void rnn_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                           const float *dout, const float *hs, float *dpre, float *dh_run, idx relu) {
    for (idx t = steps - 1; t >= 0; t--) {
        idx n = rows[t];
        float *dp = dpre + t * B * H;
        rnn_backward_step(n, H, dh_run, dout + t * B * H, hs + (t + 1) * B * H, dp, relu);
        times_w(gemm, n, H, H, dp, w, 0.0f, dh_run);  /* dL/dh_{t-1} = dpre W_hh */
    }
}

/* Reset-before GRU forward over all steps (xp holds b_ih + b_hh): [r, z] = sigma(xp_rz + W_hrz h_{t-1}) and
   reset = r h_{t-1} (rb_gates), cand = xp_n + W_hn reset, then rb_forward. fac (may be NULL): (T, B, 5H), r and z
   in each row's last 2H; resets (may be NULL): (T, B, H), every step's reset kept for dW_hn; scratch: (B, 4H). */
void rb_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w, const float *xp,
                         float *hs, float *fac, float *resets, float *scratch) {
    for (idx t = 0; t < steps; t++) {
        idx n = rows[t];
        const float *x = xp + t * B * 3 * H, *hp = hs + t * B * H;
        float *f = fac ? fac + t * B * 5 * H : NULL;
        float *rz = f ? f + 3 * H : scratch;
        idx srz = f ? 5 * H : 2 * H;
        float *reset = resets ? resets + t * B * H : scratch + B * 2 * H, *cand = scratch + B * 3 * H;
        copy_rows(n, 2 * H, x, 3 * H, rz, srz);
        times_wt_rows(gemm, n, 2 * H, H, hp, H, w, 1.0f, rz, srz);
        rb_gates(n, H, rz, srz, hp, H, reset, H);
        copy_rows(n, H, x + 2 * H, 3 * H, cand, H);
        times_wt_rows(gemm, n, H, H, reset, H, w + 2 * H * H, 1.0f, cand, H);
        rb_forward(n, H, cand, H, rz, srz, hp, H, hs + (t + 1) * B * H, H, f, 5 * H);
    }
}

/* Its backward: dxp (T, B, 3H), rows past n_t left as they are; dh_run as in gru_sequence_backward; scratch:
   (B, 2H). Per step: rb_backward_gates, d_reset = da_n W_hn, rb_backward_reset, dh_run += [da_r, da_z] W_hrz. */
void rb_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w, const float *dout,
                          const float *fac, float *dxp, float *dh_run, float *scratch) {
    float *dh = scratch, *d_reset = scratch + B * H;
    for (idx t = steps - 1; t >= 0; t--) {
        idx n = rows[t];
        const float *f = fac + t * B * 5 * H;
        float *dx = dxp + t * B * 3 * H;
        rb_backward_gates(n, H, dh_run, H, dout + t * B * H, H, f, 5 * H, dx, 3 * H, dh, H);
        times_w_rows(gemm, n, H, H, dx + 2 * H, 3 * H, w + 2 * H * H, 0.0f, d_reset, H);
        rb_backward_reset(n, H, d_reset, H, dh, H, f, 5 * H, dx, 3 * H, dh_run, H);
        times_w_rows(gemm, n, 2 * H, H, dx, 3 * H, w, 1.0f, dh_run, H);
    }
}

/* LSTM forward over all steps: a = xp_t + W_hh h_{t-1}, then lstm_forward. c (B, H): c_0 in, each row's last
   c out; hs as above; fac (may be NULL): (T, B, 6H); a: scratch (B, 4H). */
void lstm_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                           const float *xp, float *hs, float *c, float *fac, float *a) {
    for (idx t = 0; t < steps; t++) {
        idx n = rows[t];
        const float *x = xp + t * B * 4 * H;
        for (idx k = 0; k < n * 4 * H; k++) { a[k] = x[k]; }
        times_wt(gemm, n, 4 * H, H, hs + t * B * H, w, 1.0f, a);
        lstm_forward(n, H, a, 4 * H, c, H, hs + (t + 1) * B * H, H, fac ? fac + t * B * 6 * H : NULL, 6 * H);
    }
}

/* Its backward: dh_run, dc_run (B, H): dL/dh_T, dL/dc_T in, dL/dh_0, dL/dc_0 out; dg: (T, B, 4H). */
void lstm_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                            const float *dout, const float *fac, float *dg, float *dh_run, float *dc_run) {
    for (idx t = steps - 1; t >= 0; t--) {
        idx n = rows[t];
        float *g = dg + t * B * 4 * H;
        lstm_backward(n, H, dh_run, H, dout + t * B * H, H, dc_run, H, fac + t * B * 6 * H, 6 * H, g, 4 * H);
        times_w(gemm, n, 4 * H, H, g, w, 0.0f, dh_run);  /* dL/dh_{t-1} = dgates W_hh */
    }
}
/* Layer-norm LSTM forward over all steps: rec_t = W_hh h_{t-1} (rec + t rec_step: the steps' own rows, kept for
   the backward, or rec_step 0: one scratch block), then ln_lstm_forward. xp (T, B, 4H) = W_ih x; hs, c as in
   lstm_sequence_forward; fac (T, B, 6H), cs (T, B, H), stats (T, B, 6): NULL without gradients. */
void ln_lstm_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                              const float *xp, const float *g_ih, const float *b, const float *g_hh,
                              const float *g_c, const float *b_c, float eps, float *hs, float *c, float *fac,
                              float *cs, float *stats, float *rec, idx rec_step) {
    for (idx t = 0; t < steps; t++) {
        idx n = rows[t];
        float *r = rec + t * rec_step;
        times_wt(gemm, n, 4 * H, H, hs + t * B * H, w, 0.0f, r);
        ln_lstm_forward(n, H, r, 4 * H, xp + t * B * 4 * H, 4 * H, g_ih, b, g_hh, g_c, b_c, eps, c, H,
                        hs + (t + 1) * B * H, H, fac ? fac + t * B * 6 * H : NULL, 6 * H, cs ? cs + t * B * H : NULL,
                        H, stats ? stats + t * B * 6 : NULL);
    }
}

/* Its backward: dxp (T, B, 4H): dL/d xp; drec (T, B, 4H): dL/d rec_t; dh_run, dc_run as in
   lstm_sequence_backward; the gains' and shifts' gradients added to acc_*; scratch: row_threads(B, H) x 16H,
   zeroed here before each step (see ln_lstm_backward). */
void ln_lstm_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                               const float *dout, const float *fac, const float *rec, const float *xp,
                               const float *cs, const float *stats, const float *g_ih, const float *g_hh,
                               const float *g_c, float *dxp, float *drec, float *dh_run, float *dc_run,
                               float *acc_ih, float *acc_b, float *acc_hh, float *acc_gc, float *acc_bc,
                               float *scratch) {
    for (idx t = steps - 1; t >= 0; t--) {
        idx n = rows[t], used = (idx)row_threads(n, H) * 16 * H;
        float *dr = drec + t * B * 4 * H;
        for (idx k = 0; k < used; k++) { scratch[k] = 0.0f; }
        ln_lstm_backward(n, H, dh_run, H, dout + t * B * H, H, dc_run, H, fac + t * B * 6 * H, 6 * H,
                         rec + t * B * 4 * H, 4 * H, xp + t * B * 4 * H, 4 * H, cs + t * B * H, H, stats + t * B * 6,
                         g_ih, g_hh, g_c, dxp + t * B * 4 * H, 4 * H, dr, 4 * H, acc_ih, acc_b, acc_hh, acc_gc,
                         acc_bc, scratch);
        times_w(gemm, n, 4 * H, H, dr, w, 0.0f, dh_run);  /* dL/dh_{t-1} = dL/d rec_t W_hh */
    }
}
